#!/usr/bin/env bash
# PBS/Torque-compatible qsub/qstat/qdel/... on top of the SLURM test cluster, from Debian's
# slurm-wlm-torque package. That package conflicts with gridengine-client in apt, so it is
# not installed: it is unpacked (dpkg -x) into ci/state/pbs/root, and ci/state/pbs/bin gets
# symlinks to its wrappers and to sbatch/salloc/srun/... (the perl wrappers run
# $FindBin::Bin/sbatch). Use it with:  . ci/state/pbs/env.sh   (puts that bin dir first on PATH)
#
#   ci/pbs/start.sh                 ensure SLURM runs, unpack, verify qsub + qstat
#   ci/pbs/start.sh --install-only  only install/unpack (for image builds)
set -euo pipefail
CI_SYSTEM=pbs
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"

if [ "${1:-}" = --install-only ]; then
    "$CI_DIR/slurm/start.sh" --install-only
else
    "$CI_DIR/slurm/start.sh" || die "SLURM (ci/slurm/start.sh) is needed and failed to start"
fi

# Runtime dependencies of slurm-wlm-torque (perl bindings + Switch.pm), all installable.
apt_install libslurm-perl libslurmdb-perl libswitch-perl

ROOT=$STATE/root
BIN=$STATE/bin
WRAPPERS="qsub qstat qdel qalter qhold qrls qrerun pbsnodes generate_pbs_nodefile"
SLURM_CMDS="sbatch salloc srun squeue scancel scontrol sinfo sacct"

# The unpacked wrappers must match the installed SLURM version (they use its perl API).
want=$(dpkg-query -W -f='${Version}' slurm-client)
have=$(cat "$ROOT/.version" 2>/dev/null || true)
if [ "$want" != "$have" ] || [ ! -x "$ROOT/usr/bin/qsub" ]; then
    log "unpacking slurm-wlm-torque $want into $ROOT"
    dl=$STATE/download
    rm -rf "$dl" "$ROOT"
    mkdir -p "$dl" "$ROOT"
    # apt drops privileges to _apt for downloads; let it write here.
    chown _apt "$dl" 2>/dev/null || true
    if ! (cd "$dl" && apt-get download -q "slurm-wlm-torque=$want" >"$STATE/download.log" 2>&1); then
        log "apt-get update (download failed with the current package lists)"
        apt-get update -qq >&2 || die "apt-get update failed"
        (cd "$dl" && apt-get download -q "slurm-wlm-torque=$want" >"$STATE/download.log" 2>&1) ||
            { tail_logs "$STATE/download.log"; die "apt-get download slurm-wlm-torque=$want failed"; }
    fi
    dpkg -x "$dl"/slurm-wlm-torque_*.deb "$ROOT"
    echo "$want" >"$ROOT/.version"
    rm -rf "$dl"
fi

mkdir -p "$BIN"
for w in $WRAPPERS; do
    ln -sfn "$ROOT/usr/bin/$w" "$BIN/$w"
done
for c in $SLURM_CMDS; do
    p=$(command -v "$c") || die "$c not found (is slurm-client installed?)"
    ln -sfn "$p" "$BIN/$c"
done

for w in qsub qstat qdel pbsnodes; do
    perl -c "$BIN/$w" >"$STATE/perl-c.log" 2>&1 ||
        { tail_logs "$STATE/perl-c.log"; die "perl -c $BIN/$w failed (missing perl module?)"; }
done

cat >"$STATE/env.sh" <<EOF
# Source this (bash/sh) to get the PBS/Torque commands (qsub, qstat, qdel, pbsnodes, ...)
# that drive the SLURM test cluster:  . ci/state/pbs/env.sh
# It puts them first on PATH, so they shadow Grid Engine's /usr/bin/qsub etc.
case ":\$PATH:" in
    *":$BIN:"*) ;;
    *) PATH="$BIN:\$PATH"; export PATH ;;
esac
EOF
[ "${1:-}" = --install-only ] && exit 0

# ---------------------------------------------------------------- smoke test
tmp=$STATE/smoke
mkdir -p "$tmp"
rm -f "$tmp"/*
printf '#!/bin/sh\ntrue\n' >"$tmp/pbs-smoke.sh"
out=$(cd "$tmp" && PATH="$BIN:$PATH" qsub -N pbs-smoke pbs-smoke.sh 2>&1) ||
    die "qsub pbs-smoke.sh failed: $out"
[[ "$out" =~ ^[0-9]+$ ]] || die "qsub printed '$out', expected a numeric job id"
jobid=$out
st=$(PATH="$BIN:$PATH" qstat "$jobid" 2>&1) || die "qstat $jobid failed: $st"
grep -qE "^${jobid}[ .]" <<<"$st" || die "qstat $jobid does not show the job: $st"
log "ready: . $STATE/env.sh; qsub returned job $jobid and qstat shows it"
