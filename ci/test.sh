#!/usr/bin/env bash
# The test command: sets up everything the tests need on a fresh Debian machine, then runs pytest.
#   bash ci/test.sh [pytest arguments]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if ! python3 -m venv --help >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test,kubernetes]'

# Real batch systems, sshd and Kubernetes for the tests that need them (idempotent; ci/README.md).
bash ci/all.sh
# Headless Chromium for the dashboard test (idempotent).
bash ci/browser/install.sh
for f in ci/state/slurm/env.sh ci/state/sge/env.sh ci/state/kubernetes/env.sh ci/state/slurm-multinode/env.sh; do
  if [ -f "$f" ]; then . "$f"; fi
done

export PATH="$root/.venv/bin:$PATH"
# Lint and type checks on the package (configured in pyproject.toml): a finding fails the run.
.venv/bin/ruff check jobqueue
.venv/bin/mypy
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
