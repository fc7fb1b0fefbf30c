"""Builds jobd's compiled cgroup shim with the package; everything else is in pyproject.toml.

The shim (jobd/cgroups/shim.c) is a freestanding x86_64 program. Where it cannot be built (no
C compiler, another architecture) the install still succeeds and jobd uses its /bin/sh shim;
``jobd --check`` says which one it found.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from setuptools import Command, Distribution, setup
from setuptools.command.build import build

SOURCE = Path("jobd/cgroups/shim.c")
NAME = "jobd-shim"
FLAGS = ["-O2", "-Wall", "-ffreestanding", "-fno-stack-protector", "-fno-builtin", "-nostdlib",
         "-static"]


class build_shim(Command):
    """Compile the shim next to the package's modules (in place for editable installs)."""

    description = f"compile {SOURCE} into {NAME}"
    user_options: list[tuple[str, str | None, str]] = []

    def initialize_options(self) -> None:
        self.build_lib: str | None = None
        self.editable_mode = False
        self.built: list[str] = []

    def finalize_options(self) -> None:
        self.set_undefined_options("build_py", ("build_lib", "build_lib"))

    def run(self) -> None:
        where = SOURCE.parent if self.editable_mode else Path(self.build_lib or "", SOURCE.parent)
        where.mkdir(parents=True, exist_ok=True)
        target = where / NAME
        partial = where / f".{NAME}.partial"
        command = [*shlex.split(os.environ.get("CC", "cc")), *FLAGS, "-o", str(partial),
                   str(SOURCE)]
        self.announce(" ".join(command), level=2)
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError as exc:
            self.warn(f"{NAME} not built ({exc}); jobd will join cgroups through /bin/sh")
            return
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            self.warn(f"{NAME} not built; jobd will join cgroups through /bin/sh:\n"
                      f"{done.stderr.strip()}")
            return
        partial.replace(target)
        self.built = [str(target)]

    def get_outputs(self) -> list[str]:
        return self.built

    def get_output_mapping(self) -> dict[str, str]:
        return {}

    def get_source_files(self) -> list[str]:
        return [str(SOURCE)]


class build_with_shim(build):
    sub_commands = [*build.sub_commands, ("build_shim", None)]


class BinaryDistribution(Distribution):
    """The wheel holds a compiled program, so it is tagged for its platform."""

    def has_ext_modules(self) -> bool:
        return True


setup(
    cmdclass={"build": build_with_shim, "build_shim": build_shim},
    distclass=BinaryDistribution,
)
