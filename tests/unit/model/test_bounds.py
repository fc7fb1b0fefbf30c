"""Request bounds: just under each passes, just over fails with a message naming it."""

from __future__ import annotations

import pytest

from jobd.jobs.manager import validate_spec
from jobd.model import bounds
from jobd.model.errors import InvalidArgument
from jobd.model.job import JobSpec

B = bounds


def spec(
    argv: list[str] | None = None, env: dict[str, str] | None = None, cwd: str = "/"
) -> JobSpec:
    return JobSpec(argv=tuple(argv or ["true"]), env=env or {}, cwd=cwd)


def env_of(entries: int, total: int) -> dict[str, str]:
    """``entries`` variables whose KEY=VALUE forms add up to ``total`` bytes."""
    keys = [f"K{i}" for i in range(entries)]
    used = sum(len(k) + 1 for k in keys)
    env = dict.fromkeys(keys, "")
    env[keys[0]] = "v" * (total - used)
    return env


CASES = {
    "argv entries": (
        spec(["true"] * B.MAX_ARGV_ENTRIES), spec(["true"] * (B.MAX_ARGV_ENTRIES + 1)), "argv has"
    ),
    "argv bytes": (
        spec(["true", "a" * (B.MAX_ARGV_BYTES - 4)]),
        spec(["true", "a" * (B.MAX_ARGV_BYTES - 3)]),
        "bytes in all",
    ),
    "argv bytes, multibyte": (
        spec(["true", "é" * ((B.MAX_ARGV_BYTES - 4) // 2)]),
        spec(["true", "é" * ((B.MAX_ARGV_BYTES - 4) // 2 + 1)]),
        "argv has",
    ),
    "argv[0] length": (
        spec(["/" + "x" * (B.MAX_PATH_BYTES - 1)]), spec(["/" + "x" * B.MAX_PATH_BYTES]), "argv[0]"
    ),
    "env entries": (
        spec(env=env_of(B.MAX_ENV_ENTRIES, 10000)),
        spec(env=env_of(B.MAX_ENV_ENTRIES + 1, 10000)),
        "env has",
    ),
    "env bytes": (
        spec(env=env_of(3, B.MAX_ENV_BYTES)), spec(env=env_of(3, B.MAX_ENV_BYTES + 1)), "env has"
    ),
    "cwd length": (
        spec(cwd="/" + "d" * (B.MAX_PATH_BYTES - 1)), spec(cwd="/" + "d" * B.MAX_PATH_BYTES), "cwd"
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_bound(name: str) -> None:
    under, over, named = CASES[name]
    validate_spec(under)
    with pytest.raises(InvalidArgument, match="the most is") as info:
        validate_spec(over)
    assert named in str(info.value)


def test_owner_filter() -> None:
    bounds.check_owner("o" * B.MAX_OWNER_BYTES)
    with pytest.raises(InvalidArgument, match="owner filter is 257 bytes; the most is 256"):
        bounds.check_owner("o" * (B.MAX_OWNER_BYTES + 1))


def test_job_ids() -> None:
    assert bounds.job_id_plausible("0b6c3e1a-9a4e-4b8e-8f51-1b8f0c2d9e7a")
    assert bounds.job_id_plausible("f" * B.MAX_JOB_ID_BYTES)
    assert not bounds.job_id_plausible("f" * (B.MAX_JOB_ID_BYTES + 1))
    assert not bounds.job_id_plausible("0B6C")  # ids are lower case
    assert not bounds.job_id_plausible("../x")
    assert not bounds.job_id_plausible("a\0")
    assert bounds.shown_job_id("x" * 1000) == "x" * B.MAX_JOB_ID_BYTES + "..."


def test_a_summary_of_argv_fits_its_budget_and_says_what_was_left_out() -> None:
    assert bounds.summarize_argv(["ls", "-l"], 64) == ["ls", "-l"]
    summary = bounds.summarize_argv(["prog", "a" * 100, "b"], 64)
    assert summary[0] == "prog" and summary[-1] == "... (3 arguments, 105 bytes in all)"
    assert sum(len(a) for a in summary) <= 64
    assert bounds.summarize_argv(summary, 64) == summary  # a summary summarized is itself
    assert bounds.summarize_argv(["é" * 100], 40)[0] == "é" * 2  # cut on a character
    assert bounds.summarize_env({"A": "1"}) == {"A": "1"}
    assert bounds.summarize_env({"A": "x" * 5000}) == {}
