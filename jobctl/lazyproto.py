"""Keep protobuf's pure-Python message implementation out of jobctl's start-up.

protobuf's ``descriptor_pool`` and ``internal.builder`` import
``google.protobuf.internal.python_message`` unconditionally (as of protobuf 7.36), and with
it ``text_format``, ``containers``, ``decoder``, ``pickle`` and more. With the upb backend
that pip installs on Linux, nothing reads that module: messages are built in C. Loading it
anyway costs a ``jobctl status`` ~5 ms of its ~80 ms, more than all of jobctl's own modules.

:func:`defer_python_message` registers the module with :class:`importlib.util.LazyLoader`, so
it is loaded on the first attribute anyone reads from it rather than on import. That keeps
every path correct: should some protobuf code touch it after all (a future release, say), it
is loaded right then, as if imported normally. With the pure-Python backend protobuf needs it
at once, so nothing is deferred there.

Only jobctl's command line calls this (see :func:`jobctl.cli._run`): a library user's process
keeps protobuf's own import behaviour.
"""

from __future__ import annotations

import importlib.util
import sys

PYTHON_MESSAGE = "google.protobuf.internal.python_message"


def defer_python_message() -> bool:
    """Make ``python_message`` load on first use; True if it was deferred.

    Does nothing if the module is imported already, or protobuf runs its pure-Python
    backend, or no longer has the module.
    """
    if PYTHON_MESSAGE in sys.modules:
        return False
    from google.protobuf.internal import api_implementation

    if api_implementation.Type() == "python":
        return False
    spec = importlib.util.find_spec(PYTHON_MESSAGE)
    if spec is None or spec.loader is None:
        return False
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[PYTHON_MESSAGE] = module
    spec.loader.exec_module(module)
    # `from google.protobuf.internal import python_message` finds it on the package without
    # asking the import system, which would read the module's __spec__ and so load it.
    package = sys.modules["google.protobuf.internal"]
    package.python_message = module  # type: ignore[attr-defined]
    return True
