#!/usr/bin/env bash
# Install (if missing) and start every test system: slurm, sge, pbs (wrappers on slurm), sshd,
# kubernetes (built once per machine into /var/cache/jobqueue-ci: about 9 minutes the first time),
# slurm-multinode (SLURM in containers on the same dockerd; its images take about a minute once).
# Idempotent; each system's start script exits at once if it is already running.
# Afterwards, source the env files you need (see ci/README.md):
#   . ci/state/slurm/env.sh; . ci/state/sge/env.sh; . ci/state/pbs/env.sh; . ci/state/kubernetes/env.sh
#   . ci/state/slurm-multinode/env.sh
set -uo pipefail
CI_DIR=$(cd "$(dirname "$0")" && pwd)
t0=$SECONDS
for sys in slurm sge pbs sshd kubernetes slurm-multinode; do
    t=$SECONDS
    if ! "$CI_DIR/$sys/start.sh"; then
        echo "[all] FAILED: $sys (ci/$sys/start.sh exited non-zero, see its messages above and ci/state/$sys/)" >&2
        exit 1
    fi
    echo "[all] $sys ready ($((SECONDS - t)) s)" >&2
done
echo "[all] all systems running ($((SECONDS - t0)) s)" >&2
