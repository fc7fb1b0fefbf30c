"""The docs fit and hold together: the README and BENCHMARKS stay short, every relative link
leads to a file, and the example configuration is one jobd's own parser accepts."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from jobd.config import TOP_LEVEL_KEYS, load

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "jobd.example.toml"
PAGES = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("name", ["README.md", "BENCHMARKS.md"])
def test_the_front_pages_fit_in_8_kb(name: str) -> None:
    assert len((ROOT / name).read_bytes()) <= 8 * 1024


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file(page: Path) -> None:
    targets = [t for t in LINK.findall(page.read_text()) if not re.match(r"[a-z]+:", t)]
    missing = [t for t in targets if not (page.parent / t).exists()]
    assert missing == []


def test_the_example_configuration_loads_and_shows_every_setting() -> None:
    config, _ = load(["--config", str(EXAMPLE)])
    assert config.listen == ("0.0.0.0", 9090)
    assert set(tomllib.loads(EXAMPLE.read_text())) == TOP_LEVEL_KEYS
