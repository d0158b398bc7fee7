#!/usr/bin/env bash
# Stop everything ci/all.sh started (by pid files), including sshd instances in network
# namespaces. Goes on after a failure; exits non-zero if any stop script failed.
set -uo pipefail
CI_DIR=$(cd "$(dirname "$0")" && pwd)
rc=0
"$CI_DIR/slurm-multinode/stop.sh" || { echo "[stop-all] FAILED: slurm-multinode" >&2; rc=1; }
"$CI_DIR/kubernetes/stop.sh" || { echo "[stop-all] FAILED: kubernetes" >&2; rc=1; }
"$CI_DIR/sshd/stop.sh" --all || { echo "[stop-all] FAILED: sshd" >&2; rc=1; }
"$CI_DIR/pbs/stop.sh" || { echo "[stop-all] FAILED: pbs" >&2; rc=1; }
"$CI_DIR/sge/stop.sh" || { echo "[stop-all] FAILED: sge" >&2; rc=1; }
"$CI_DIR/slurm/stop.sh" || { echo "[stop-all] FAILED: slurm" >&2; rc=1; }
exit $rc
