"""Regenerate the Python modules for the jobd.v1 API from proto/.

Run through ``nox -s proto``; ``python proto/gen.py OUTDIR`` writes elsewhere (the freshness
test compares such a copy with the committed one).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
REPO = PROTO_ROOT.parent
SOURCES = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in PROTO_ROOT.rglob("*.proto"))
GENERATED = ("jobs_pb2.py", "jobs_pb2.pyi", "jobs_grpc.py")


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # protoc finds its plugins (grpclib, mypy-protobuf) on PATH: use this environment's.
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = os.pathsep.join([bindir, os.environ.get("PATH", "")])
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--mypy_out={out}",
        f"--grpclib_python_out={out}",
        *SOURCES,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO)
