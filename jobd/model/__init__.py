"""The model: a job and its values (spec, state, outcome; the resources it may use and used;
its namespaces), the errors every layer raises, the bounds on what a client may send, units.
Standard library only (tests/unit/test_layering.py)."""
