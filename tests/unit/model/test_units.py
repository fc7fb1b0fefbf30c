"""Sizes and CPU amounts as people write them, and back."""

from __future__ import annotations

import pytest

from jobd.cgroups import (
    format_size,
    parse_cpu,
    parse_size,
)

MiB = 1 << 20




@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1048576", 1048576),
        ("512K", 512 << 10),
        ("256M", 256 << 20),
        ("256m", 256 << 20),
        ("1G", 1 << 30),
        ("1GiB", 1 << 30),
        ("1.5G", 3 << 29),
        ("2T", 2 << 40),
        (" 10M ", 10 << 20),
        ("0", 0),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "12X", "-1M", "1.5", "1e3", "10 MB extra", "0.1K"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "cores"), [("0.5", 0.5), ("2", 2.0), ("50%", 0.5), ("250m", 0.25)]
)
def test_parse_cpu(text: str, cores: float) -> None:
    assert parse_cpu(text) == cores


@pytest.mark.parametrize("text", ["", "0", "-1", "half", "nan", "inf", "0%"])
def test_parse_cpu_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid CPU limit"):
        parse_cpu(text)


def test_format_size() -> None:
    assert format_size(100 * MiB) == "100 MiB"
    assert format_size(3 << 29) == "1.5 GiB"
    assert format_size(512) == "512 B"


