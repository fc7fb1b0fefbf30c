"""Builds jobd's compiled launcher with the package; everything else is in pyproject.toml.

The launcher (jobd/launch/launch.c) is a freestanding program on x86_64 and a plain libc one
elsewhere. Where it cannot be built (no C compiler) the install still succeeds: jobs that need
only cgroups start through a /bin/sh stand-in, and jobs that need namespaces or another account
cannot start. ``jobd --check`` says which it found.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
from pathlib import Path

from setuptools import Command, Distribution, setup
from setuptools.command.build import build

SOURCE = Path("jobd/launch/launch.c")
NAME = "jobd-launch"
FREESTANDING = ["-O2", "-Wall", "-ffreestanding", "-fno-stack-protector", "-fno-builtin",
                "-nostdlib", "-static"]
WITH_LIBC = ["-O2", "-Wall", "-DJOBD_LIBC"]


def flags() -> list[str]:
    """Freestanding where launch.c has its own system calls (x86_64), else against libc."""
    return FREESTANDING if platform.machine() == "x86_64" else WITH_LIBC


class build_launcher(Command):
    """Compile the launcher next to the package's modules (in place for editable installs)."""

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
        command = [*shlex.split(os.environ.get("CC", "cc")), *flags(), "-o", str(partial),
                   str(SOURCE)]
        self.announce(" ".join(command), level=2)
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError as exc:
            self.warn(f"{NAME} not built ({exc}); jobs that need namespaces or another "
                      "account will not start")
            return
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            self.warn(f"{NAME} not built; jobs that need namespaces or another account "
                      f"will not start:\n"
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


class build_with_launcher(build):
    sub_commands = [*build.sub_commands, ("build_launcher", None)]


class BinaryDistribution(Distribution):
    """The wheel holds a compiled program, so it is tagged for its platform."""

    def has_ext_modules(self) -> bool:
        return True


setup(
    cmdclass={"build": build_with_launcher, "build_launcher": build_launcher},
    distclass=BinaryDistribution,
)
