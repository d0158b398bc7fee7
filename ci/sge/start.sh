#!/usr/bin/env bash
# Install (if missing) and start a single-host (Son of) Grid Engine 8.1.9: sge_qmaster + sge_execd.
# Idempotent: if everything is already running with the same setup, exits 0 at once.
#
#   ci/sge/start.sh                 install + configure + start + smoke test (qsub -b y -N t true)
#   ci/sge/start.sh --install-only  only install the packages (for image builds)
#
# Debian's layout is kept: SGE_ROOT=/var/lib/gridengine, cell "default", spool in
# /var/spool/gridengine (the Berkeley DB spool is created by the package). Our config
# inputs, pid files and links to the daemons' message logs live in ci/state/sge/.
set -euo pipefail
CI_SYSTEM=sge
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"

HOST=$(hostname -s)
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
COMMON=$SGE_ROOT/$SGE_CELL/common

if ! pkg_installed gridengine-master || ! pkg_installed gridengine-exec || ! pkg_installed gridengine-client; then
    # Without shared/gridenginemaster, act_qmaster ends up empty.
    debconf-set-selections <<EOF
gridengine-common shared/gridengineconfig boolean true
gridengine-common shared/gridenginecell string default
gridengine-common shared/gridenginemaster string $HOST
gridengine-master shared/gridengineconfig boolean true
gridengine-master shared/gridenginecell string default
gridengine-master shared/gridenginemaster string $HOST
gridengine-exec shared/gridengineconfig boolean true
gridengine-exec shared/gridenginecell string default
gridengine-exec shared/gridenginemaster string $HOST
gridengine-client shared/gridengineconfig boolean true
gridengine-client shared/gridenginecell string default
gridengine-client shared/gridenginemaster string $HOST
EOF
fi
apt_install gridengine-master gridengine-exec gridengine-client
[ "${1:-}" = --install-only ] && exit 0

RUN=$STATE/run
CONF=$STATE/conf
LOGD=$STATE/log
QMASTER_SPOOL=/var/spool/gridengine/qmaster
STAMP="$(script_stamp "$0")-$HOST"
qmaster_pid=$RUN/qmaster.pid
execd_pid=$RUN/execd.pid
mkdir -p "$RUN" "$CONF" "$LOGD"

# "all.q@HOST" is ready when it has a load value and no state flags (u = unknown, E, d, ...).
queue_ready() {
    qstat -f -q "all.q@$HOST" 2>/dev/null |
        awk -v q="all.q@$HOST" '$1 == q && NF == 5 && $4 != "-NA-" { ok = 1 } END { exit !ok }'
}

# ---------------------------------------------------------------- fast path
if pid_alive "$qmaster_pid" sge_qmaster && pid_alive "$execd_pid" sge_execd &&
    [ "$(cat "$STATE/stamp" 2>/dev/null)" = "$STAMP" ] && qconf -sh >/dev/null 2>&1; then
    log "already running (qmaster pid $(cat "$qmaster_pid"), execd pid $(cat "$execd_pid"))"
    exit 0
fi

# ---------------------------------------------------------------- stop leftovers
# (daemons of an older setup, or started by the init scripts / another checkout)
stop_pidfile "$execd_pid" sge_execd 30
stop_pidfile "$qmaster_pid" sge_qmaster 30
for f in /var/spool/gridengine/execd/*/execd.pid /var/run/gridengine/execd.pid; do
    stop_pidfile "$f" sge_execd 30 "sge_execd (old)"
done
for f in "$QMASTER_SPOOL/qmaster.pid" /var/run/gridengine/qmaster.pid; do
    stop_pidfile "$f" sge_qmaster 30 "sge_qmaster (old)"
done
rm -f "$STATE/stamp"

# ---------------------------------------------------------------- before qmaster starts
# The host name resolves to 127.0.0.1, which reverse-resolves to "localhost"; without
# this alias clients get "access denied: client IP resolved to host name localhost".
# Must be in place before sge_qmaster starts.
echo "$HOST" >"$COMMON/act_qmaster"
if [ "$HOST" != localhost ]; then
    echo "$HOST localhost" >"$COMMON/host_aliases"
else
    rm -f "$COMMON/host_aliases"
fi
chown sgeadmin:sgeadmin "$COMMON/act_qmaster" "$COMMON/host_aliases" 2>/dev/null || true

# ---------------------------------------------------------------- qmaster
log "starting sge_qmaster"
rm -f "$QMASTER_SPOOL/qmaster.pid"
/usr/sbin/sge_qmaster || { tail_logs "$QMASTER_SPOOL/messages"; die "sge_qmaster failed to start"; }
ln -sfn "$QMASTER_SPOOL/messages" "$LOGD/qmaster.messages"
if ! wait_until 30 qconf -sh; then
    tail_logs "$QMASTER_SPOOL/messages"
    die "sge_qmaster did not answer 'qconf -sh' within 30 s"
fi
wait_until 5 test -s "$QMASTER_SPOOL/qmaster.pid" || die "no $QMASTER_SPOOL/qmaster.pid"
cp "$QMASTER_SPOOL/qmaster.pid" "$qmaster_pid"

# ---------------------------------------------------------------- configuration
MEM_FREE_M=$(awk '/^MemTotal:/ {printf "%d", $2 * 0.9 / 1024}' /proc/meminfo)

# Global configuration (file name = config name). min_uid/min_gid 0: root may submit.
cat >"$CONF/global" <<EOF
execd_spool_dir              /var/spool/gridengine/execd
mailer                       /bin/true
xterm                        /usr/bin/xterm
load_sensor                  none
prolog                       none
epilog                       none
shell_start_mode             unix_behavior
login_shells                 bash,sh,ksh,csh,tcsh
min_uid                      0
min_gid                      0
user_lists                   none
xuser_lists                  none
projects                     none
xprojects                    none
enforce_project              false
enforce_user                 auto
load_report_time             00:00:10
max_unheard                  00:01:00
reschedule_unknown           00:00:00
loglevel                     log_warning
administrator_mail           none
set_token_cmd                none
pag_cmd                      none
token_extend_time            none
shepherd_cmd                 none
qmaster_params               none
execd_params                 ENABLE_ADDGRP_KILL=TRUE
reporting_params             accounting=true reporting=false flush_time=00:00:15 joblog=false sharelog=00:00:00 accounting_flush_time=00:00:00
finished_jobs                100
gid_range                    65400-65500
qlogin_command               builtin
qlogin_daemon                builtin
rlogin_command               builtin
rlogin_daemon                builtin
rsh_command                  builtin
rsh_daemon                   builtin
max_aj_instances             2000
max_aj_tasks                 75000
max_u_jobs                   0
max_jobs                     0
auto_user_oticket            0
auto_user_fshare             0
auto_user_default_project    none
auto_user_delete_time        86400
delegated_file_staging       false
reprioritize                 0
jsv_url                      none
jsv_allowed_mod              ac,h,i,e,o,j,M,N,p,w
EOF

# Scheduler: 1 s interval, schedule on submit/finish, no load adjustments.
cat >"$CONF/sched" <<EOF
algorithm                         default
schedule_interval                 0:0:1
maxujobs                          0
queue_sort_method                 load
job_load_adjustments              NONE
load_adjustment_decay_time        0:0:0
load_formula                      np_load_avg
schedd_job_info                   true
flush_submit_sec                  1
flush_finish_sec                  1
params                            none
reprioritize_interval             0:0:0
halftime                          168
usage_weight_list                 cpu=1.000000,mem=0.000000,io=0.000000
compensation_factor               5.000000
weight_user                       0.250000
weight_project                    0.250000
weight_department                 0.250000
weight_job                        0.250000
weight_tickets_functional         0
weight_tickets_share              0
share_override_tickets            TRUE
share_functional_shares           TRUE
max_functional_jobs_to_schedule   200
report_pjob_tickets               TRUE
max_pending_tasks_per_job         50
halflife_decay_list               none
policy_hierarchy                  OFS
weight_ticket                     0.500000
weight_waiting_time               0.278000
weight_deadline                   3600000.000000
weight_urgency                    0.500000
weight_priority                   0.000000
max_reservation                   0
default_duration                  INFINITY
EOF

cat >"$CONF/pe_smp" <<EOF
pe_name            smp
slots              9999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    \$pe_slots
control_slaves     FALSE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
EOF

# mem_free is consumable (default 0); the host offers 90 % of RAM. h_vmem stays
# requestable (enforced as ulimit -v) but not consumable: a consumable h_vmem with
# default 0 would SIGKILL every job that does not request it.
cat >"$CONF/exechost" <<EOF
hostname              $HOST
load_scaling          NONE
complex_values        mem_free=${MEM_FREE_M}M
user_lists            NONE
xuser_lists           NONE
projects              NONE
xprojects             NONE
usage_scaling         NONE
report_variables      NONE
EOF

cat >"$CONF/queue_all.q" <<EOF
qname                 all.q
hostlist              $HOST
seq_no                0
load_thresholds       NONE
suspend_thresholds    NONE
nsuspend              1
suspend_interval      00:05:00
priority              0
min_cpu_interval      00:05:00
processors            UNDEFINED
qtype                 BATCH INTERACTIVE
ckpt_list             NONE
pe_list               smp
rerun                 FALSE
slots                 8
tmpdir                /tmp
shell                 /bin/bash
prolog                NONE
epilog                NONE
shell_start_mode      unix_behavior
starter_method        NONE
suspend_method        NONE
resume_method         NONE
terminate_method      NONE
notify                00:00:60
owner_list            NONE
user_lists            NONE
xuser_lists           NONE
subordinate_list      NONE
complex_values        NONE
projects              NONE
xprojects             NONE
calendar              NONE
initial_state         default
s_rt                  INFINITY
h_rt                  INFINITY
s_cpu                 INFINITY
h_cpu                 INFINITY
s_fsize               INFINITY
h_fsize               INFINITY
s_data                INFINITY
h_data                INFINITY
s_stack               INFINITY
h_stack               INFINITY
s_core                INFINITY
h_core                INFINITY
s_rss                 INFINITY
h_rss                 INFINITY
s_vmem                INFINITY
h_vmem                INFINITY
EOF

# qconf prints e.g. "... already exists" / "changed"; keep that out of the way.
q() { "$@" >>"$LOGD/qconf.log" 2>&1 || { tail_logs "$LOGD/qconf.log"; die "failed: $*"; }; }
: >"$LOGD/qconf.log"
q qconf -Mconf "$CONF/global"
q qconf -Msconf "$CONF/sched"
qconf -sc | awk '$1 == "mem_free" { $6 = "YES"; $7 = "0" } { print }' >"$CONF/complex"
q qconf -Mc "$CONF/complex"
qconf -sh 2>/dev/null | grep -qx "$HOST" || q qconf -ah "$HOST"
qconf -ss 2>/dev/null | grep -qx "$HOST" || q qconf -as "$HOST"
if qconf -sp smp >/dev/null 2>&1; then q qconf -Mp "$CONF/pe_smp"; else q qconf -Ap "$CONF/pe_smp"; fi
if qconf -se "$HOST" >/dev/null 2>&1; then q qconf -Me "$CONF/exechost"; else q qconf -Ae "$CONF/exechost"; fi
if qconf -sq all.q >/dev/null 2>&1; then q qconf -Mq "$CONF/queue_all.q"; else q qconf -Aq "$CONF/queue_all.q"; fi

# ---------------------------------------------------------------- leftovers
# Jobs live in Debian's spool across restarts; an earlier run's jobs (or one stuck deleting
# after its execd was killed) would take slots or put the queue in error. This queue belongs
# to the test machine: clear it before the execd starts.
if [ -n "$(qstat -u '*' 2>/dev/null)" ]; then
    log "removing leftover jobs from the queue"
    qdel -f -u '*' >/dev/null 2>&1 || true
fi
rm -rf /var/spool/gridengine/execd/*/active_jobs/* 2>/dev/null || true

# ---------------------------------------------------------------- execd
log "starting sge_execd"
/usr/sbin/sge_execd || die "sge_execd failed to start"
sleep 1
qmod -cq all.q >/dev/null 2>&1 || true   # clear an error state left by a killed job
if ! wait_until 30 queue_ready; then
    qstat -f >&2 || true
    tail_logs "$QMASTER_SPOOL/messages" /var/spool/gridengine/execd/*/messages
    die "queue instance all.q@$HOST did not become ready within 30 s"
fi
f=
for p in /var/spool/gridengine/execd/*/execd.pid; do
    if pid_alive "$p" sge_execd; then f=$p; fi
done
[ -n "$f" ] || die "no live sge_execd pid file under /var/spool/gridengine/execd/"
cp "$f" "$execd_pid"
ln -sfn "$(dirname "$f")/messages" "$LOGD/execd.messages"

# ---------------------------------------------------------------- smoke test
out=$(cd /tmp && qsub -terse -b y -N t -o /dev/null -e /dev/null true 2>&1) ||
    die "qsub -b y -N t true failed: $out"
jobid=${out%%.*}
if ! wait_until 60 sh -c "! qstat -j $jobid"; then
    qstat -j "$jobid" >&2 || true
    tail_logs "$QMASTER_SPOOL/messages" "$LOGD/execd.messages"
    qdel "$jobid" >/dev/null 2>&1 || true
    die "smoke job $jobid (qsub -b y -N t true) did not finish within 60 s"
fi
acct_ok() { qacct -j "$jobid" 2>/dev/null | awk '$1 == "exit_status" && $2 == "0" { ok = 1 } END { exit !ok }'; }
if ! wait_until 15 acct_ok; then
    qacct -j "$jobid" >&2 || true
    tail_logs "$LOGD/execd.messages"
    die "smoke job $jobid (qsub -b y -N t true) did not finish with exit_status 0"
fi

cat >"$STATE/env.sh" <<EOF
# Sourced by users of the Grid Engine test cluster (bash/sh): . ci/state/sge/env.sh
# Optional: Debian's SGE commands (/usr/bin/qsub, qstat, qconf, ...) default to these values.
export SGE_ROOT=$SGE_ROOT
export SGE_CELL=$SGE_CELL
EOF
echo "$STAMP" >"$STATE/stamp"
log "running: all.q@$HOST ready (8 slots, PE smp), smoke job $jobid finished with exit_status 0"
