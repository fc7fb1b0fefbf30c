"""jobd's packages import one way, and only the API touches the wire libraries.

As trio's own tests keep its ``_core`` from importing what is built on it: a package may import
from the packages below it, never from one above. From the bottom:

    model < cgroups < policy < launch < jobs < api < the entry and wiring (jobd/*.py)

``jobd.v1`` (the generated messages and stubs) counts as the API's. The model imports the
standard library only. KNOWN would list an import that must break these rules for a while,
with what removes it; an entry that no longer holds fails, so the list only shrinks. It is
empty.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

JOBD = Path(__file__).resolve().parents[2] / "jobd"
LAYERS = ["model", "cgroups", "policy", "launch", "jobs", "api"]
TOP = len(LAYERS)  # jobd/*.py: the entry point, the server's wiring, the config
WIRE = ("grpclib", "h2", "hpack", "hyperframe", "google.protobuf", "trio_asyncio")
WIRE_ROOTS = ("grpclib", "h2", "hpack", "hyperframe", "google", "trio_asyncio")

KNOWN: dict[tuple[str, str], str] = {}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(JOBD.rglob("*.py")):
        parts = path.relative_to(JOBD.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) < 3 and not (JOBD / parts[-1]).is_dir():
        return TOP
    package = parts[1]
    return LAYERS.index("api") if package == "v1" else LAYERS.index(package)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code (``from jobd import x``: jobd.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module.startswith("jobd"):
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def broken_rules() -> set[tuple[str, str]]:
    known = modules()
    api = LAYERS.index("api")
    broken = set()
    for module, path in known.items():
        for name in imports(path):
            # ``from jobd.x import Name`` also yields jobd.x.Name, which is no module: skipped.
            if name in known and layer(name) > layer(module):
                broken.add((module, name))
            for wire in WIRE:
                if (name == wire or name.startswith(wire + ".")) and layer(module) != api:
                    broken.add((module, wire))
    return broken


def test_every_module_has_a_layer() -> None:
    for module in modules():
        assert 0 <= layer(module) <= TOP, module


def test_imports_point_down_and_only_the_api_touches_the_wire() -> None:
    broken = broken_rules()
    assert broken - set(KNOWN) == set(), "new imports against the layering"
    assert set(KNOWN) - broken == set(), "fixed: take these out of KNOWN"


@pytest.mark.parametrize("module", [m for m in modules() if layer(m) == 0])
def test_the_model_imports_the_standard_library_only(module: str) -> None:
    outside = {name for name in imports(modules()[module])
               if name.split(".")[0] not in sys.stdlib_module_names
               and not name.startswith("jobd.model")}  # fmt: skip
    assert outside == set()


def test_reading_the_configuration_loads_no_wire_library() -> None:
    # `jobd --check` and a SIGHUP's parse need no grpclib, h2 or protobuf: the [connections]
    # limits are policy (jobd.policy.connections), enforced by the API.
    code = ("import sys, jobd.config\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {WIRE_ROOTS!r}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)  # fmt: skip
    assert result.stdout.strip() == "[]"
