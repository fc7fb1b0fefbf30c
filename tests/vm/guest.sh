#!/bin/sh
# Runs inside the test VM as root under systemd, from the host's checkout (read-only at
# /vm/src); writes what the host checks into /vm/out. Part 1 runs jobd's cgroup, isolation,
# run-as and limits tests on this kernel's cgroup v2; part 2 installs jobd as an operator
# would and drives the systemd service with jobctl.
set -u
src=/vm/src out=/vm/out
export PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8
echo "kernel: $(uname -r); cgroup v2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
echo "systemd: $(systemctl --version | head -1)"

# Part 1. pytest runs in the root group, which the "no internal processes" rule exempts, so
# the in-process backends it builds can hand controllers down as jobd at the root would.
echo $$ >/sys/fs/cgroup/cgroup.procs
cd "$src"
# jobd's console scripts (jobctl, jobd) in the test venv; the package itself imports from src.
/opt/jobd-test/bin/pip install -q --no-index --no-deps "$out"/dist/jobd-*.whl
set --  # pytest's arguments from the host, one a line
while IFS= read -r arg; do set -- "$@" "$arg"; done <"$out/pytest.args"
/opt/jobd-test/bin/python -m pytest -p no:cacheprovider -q -rs \
    --junitxml="$out/pytest.xml" -o junit_family=xunit1 "$@"
echo $? >"$out/pytest.rc"

# Part 2, from a clean working directory as an operator would be.
cd /
/usr/bin/python3 "$src/tests/vm/operator_check.py" "$src" "$out"
echo $? >"$out/operator.rc"
