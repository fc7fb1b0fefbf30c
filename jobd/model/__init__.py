"""The model: a job and its values (spec, state, outcome), the errors every layer raises, the
bounds on what a client may send, units. Standard library only; imports nothing of jobd's
other packages but what still lives below them (see tests/test_layering.py)."""
