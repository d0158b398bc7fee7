"""Reading batch-system output into JobStates, without a batch system.

The outputs are real: captured from SLURM 22.05, Grid Engine 8.1.9 and SLURM's Torque-compatible
wrappers on the CI machine (see /work/shared/notes). The PBS Pro sample follows its documented
``qstat -f`` format and is marked as such.
"""
import pytest

from jobqueue.batch.pbs import PBS
from jobqueue.batch.sge import GridEngine
from jobqueue.batch.slurm import Slurm
from jobqueue.batch.status import (JobState, JobStatus, Pending, expand_ranges,
                                   parse_pbs_qstat, parse_pbs_qstat_f, parse_pbs_qsub,
                                   parse_qacct, parse_sacct, parse_sbatch, parse_sge_errors,
                                   parse_sge_qsub, parse_sge_verify, parse_sge_xml, parse_squeue,
                                   sacct_unavailable, slurm_pending)

P, R, F, X, C, T, U = (JobState.PENDING, JobState.RUNNING, JobState.FINISHED, JobState.FAILED,
                       JobState.CANCELLED, JobState.TIMEOUT, JobState.UNKNOWN)


def states(parsed):
    return {k: (v.state, v.reason) for k, v in parsed.items()}

# ---------------------------------------------------------------------------------------- SLURM


# squeue -h -r -t all -j 6,7,99999 -o '%i|%F|%K|%T|%r' (captured with %A, a column left out)
SQUEUE_RUNNING = """\
6|6|N/A|RUNNING|None
7_0|7|0|RUNNING|None
7_1|7|1|RUNNING|None
7_2|7|2|RUNNING|None
7_3|7|3|RUNNING|None
"""
# an array of 12 one-CPU tasks on 8 CPUs, then scancel of the array (without -r: pending range)
SQUEUE_PENDING = """\
28_8|28|8|PENDING|Resources
28_9|28|9|PENDING|Resources
28_7|28|7|RUNNING|None
28_0|28|0|RUNNING|None
"""
SQUEUE_AFTER_SCANCEL = """\
28_[8-11]|28|8-11|CANCELLED|Resources
28_7|28|7|COMPLETING|None
28_0|28|0|COMPLETING|None
"""
SQUEUE_ENDED = """\
11|11|N/A|FAILED|NonZeroExitCode
12|12|N/A|FAILED|BadConstraints
5|5|N/A|COMPLETED|None
49|49|N/A|FAILED|JobLaunchFailure
50|50|N/A|TIMEOUT|None
"""


# sacct -n -P -X -j 1,2,3,113,114,115,116 -o JobID,State,ExitCode, SLURM 22.05 with slurmdbd:
# --wrap true; exit 3; scancel of a running job; -t 1 sleep 300; 400 MB with --mem=100M
# (OverMemoryKill); an array of 12 on 8 CPUs, scancelled (its pending tasks as one range);
# kill -9 $$
SACCT_ENDED = """\
1|COMPLETED|0:0
2|FAILED|3:0
3|CANCELLED by 0|0:0
113|TIMEOUT|0:0
114|FAILED|0:9
116|FAILED|0:9
115_0|CANCELLED by 0|0:0
115_6|CANCELLED by 0|0:0
115_[7-11]|CANCELLED by 0|0:0
"""


def test_sacct_end_states_and_exit_codes():
    parsed = parse_sacct(SACCT_ENDED)
    assert states(parsed) == {
        "1": (F, "exit code 0 (sacct)"), "2": (X, "exit code 3 (sacct)"),
        "3": (C, "cancelled by uid 0, exit code 0 (sacct)"),
        "113": (T, "time limit reached, exit code 0 (sacct)"),
        "114": (X, "exit code 0, signal 9 (sacct)"), "116": (X, "exit code 0, signal 9 (sacct)"),
        "115_0": (C, "cancelled by uid 0, exit code 0 (sacct)"),
        "115_6": (C, "cancelled by uid 0, exit code 0 (sacct)"),
        **{f"115_{i}": (C, "cancelled by uid 0, exit code 0 (sacct)") for i in range(7, 12)}}
    assert parsed["3"].native == "CANCELLED" and parsed["113"].native == "TIMEOUT"


def test_sacct_running_unknown_and_noise():
    parsed = parse_sacct("7|RUNNING|0:0\n8|WARPED|0:0\n\nnot a line\n9|NODE_FAIL|0:0\n")
    assert states(parsed) == {"7": (R, "(sacct)"),
                              "8": (U, "unknown SLURM state WARPED (sacct)"),
                              "9": (X, "node failure, exit code 0 (sacct)")}


def test_sacct_without_accounting_says_why():
    assert sacct_unavailable(1, "sacct: error: Slurm accounting storage is disabled\n") == \
        "SLURM accounting storage is disabled, so sacct cannot say how it ended"
    assert sacct_unavailable(0, "") is None
    assert sacct_unavailable(1, "sacct: error: slurmdbd: Connection refused") is None
    slurm = Slurm()
    assert slurm.accounting_argv("43_2") == ["sacct", "-n", "-P", "-X", "-j", "43", "-o",
                                             "JobID,State,ExitCode"]
    assert slurm.parse_accounting("43_2|FAILED|1:0\n") == {
        "43_2": JobStatus(X, "exit code 1 (sacct)", "FAILED")}


def test_squeue_jobs_and_array_tasks():
    parsed = parse_squeue(SQUEUE_RUNNING)
    assert states(parsed) == {"6": (R, ""), "7_0": (R, ""), "7_1": (R, ""), "7_2": (R, ""),
                              "7_3": (R, "")}
    assert parsed["7_0"].native == "RUNNING"


def test_squeue_pending_reason():
    parsed = parse_squeue(SQUEUE_PENDING)
    assert parsed["28_8"] == JobStatus(P, "Resources", "PENDING")
    assert parsed["28_7"].state is R


def test_squeue_pending_range_is_expanded():
    parsed = parse_squeue(SQUEUE_AFTER_SCANCEL)
    assert sorted(parsed) == ["28_0", "28_10", "28_11", "28_7", "28_8", "28_9"]
    assert parsed["28_10"].state is C
    assert states(parsed)["28_7"] == (R, "completing")


def test_squeue_ended_jobs():
    assert states(parse_squeue(SQUEUE_ENDED)) == {
        "11": (X, "NonZeroExitCode"), "12": (X, "BadConstraints"), "5": (F, ""),
        "49": (X, "JobLaunchFailure"), "50": (T, "time limit reached")}


@pytest.mark.parametrize("native, state", [
    ("PENDING", P), ("REQUEUED", P), ("REQUEUE_HOLD", P), ("SUSPENDED", P), ("CONFIGURING", R),
    ("RUNNING", R), ("COMPLETING", R), ("STAGE_OUT", R), ("COMPLETED", F), ("FAILED", X),
    ("NODE_FAIL", X), ("BOOT_FAIL", X), ("OUT_OF_MEMORY", X), ("DEADLINE", X),
    ("CANCELLED", C), ("PREEMPTED", C), ("TIMEOUT", T), ("SOMETHING_NEW", U),
])
def test_slurm_state_table(native, state):
    assert parse_squeue(f"1|1|N/A|{native}|None")["1"].state is state


def test_unknown_slurm_state_keeps_the_code():
    status = parse_squeue("1|1|N/A|WEIRD|Maintenance")["1"]
    assert status.state is U and status.reason == "unknown SLURM state WEIRD (Maintenance)"


def test_squeue_ignores_blank_and_foreign_lines():
    assert parse_squeue("\n\nslurm_load_jobs error: Invalid job id specified\n") == {}


@pytest.mark.parametrize("reason, kind", [
    ("Priority", Pending.WAIT), ("Resources", Pending.WAIT), ("None", Pending.WAIT),
    ("BeginTime", Pending.WAIT), ("Dependency", Pending.WAIT), ("", Pending.WAIT),
    ("AssocMaxJobsLimit", Pending.WAIT), ("QOSMaxJobsPerUserLimit", Pending.WAIT),
    ("QOSMaxCpuPerUserLimit", Pending.WAIT),
    ("PartitionConfig", Pending.NEVER), ("PartitionNodeLimit", Pending.NEVER),
    ("PartitionTimeLimit", Pending.NEVER), ("InvalidAccount", Pending.NEVER),
    ("InvalidQOS", Pending.NEVER), ("DependencyNeverSatisfied", Pending.NEVER),
    ("BadConstraints", Pending.NEVER), ("AssocMaxCpuPerJobLimit", Pending.NEVER),
    ("AssocMaxWallDurationPerJobLimit", Pending.NEVER), ("QOSMaxMemoryPerJob", Pending.NEVER),
    ("QOSMaxNodePerJobLimit", Pending.NEVER), ("QOSMinCpuNotSatisfied", Pending.NEVER),
    ("ReqNodeNotAvail, UnavailableNodes:vm", Pending.BLOCKED), ("NodeDown", Pending.BLOCKED),
    ("PartitionDown", Pending.BLOCKED), ("JobHeldUser", Pending.BLOCKED),
    ("JobHeldAdmin", Pending.BLOCKED), ("AssocGrpCpuLimit", Pending.BLOCKED),
    ("QOSGrpNodeLimit", Pending.BLOCKED),
])
def test_slurm_pending_reasons(reason, kind):
    verdict = slurm_pending(reason)
    assert verdict.kind is kind
    assert verdict.why.startswith(reason)
    assert bool(verdict.remedy) == (kind is not Pending.WAIT)


def test_slurm_pending_remedies_name_the_setting():
    assert "walltime=" in slurm_pending("PartitionTimeLimit").remedy
    assert "walltime=" in slurm_pending("QOSMaxWallDurationPerJobLimit").remedy
    assert "cores=" in slurm_pending("PartitionConfig").remedy
    assert "cores=" in slurm_pending("AssocMaxCpuPerJobLimit").remedy
    assert "account=" in slurm_pending("InvalidAccount").remedy


@pytest.mark.parametrize("text, expected", [("43\n", "43"), ("43;cluster\n", "43"),
                                            ("sbatch: warning: x\n44\n", "44")])
def test_sbatch_parsable(text, expected):
    assert parse_sbatch(text) == expected


@pytest.mark.parametrize("text", ["", "Submitted batch job 43", "abc"])
def test_sbatch_garbage(text):
    with pytest.raises(ValueError, match="job id"):
        parse_sbatch(text)


def test_slurm_argv():
    s = Slurm()
    assert s.submit_argv("/t/x.sh", None) == ["sbatch", "--parsable", "/t/x.sh"]
    assert s.submit_argv("/t/x.sh", 5, ["--qos=low"]) == ["sbatch", "--parsable", "--array=0-4",
                                                           "--qos=low", "/t/x.sh"]
    # an array's tasks write output files named after the ids squeue shows (43_1, not 45)
    assert s.submit_argv("/t/x.sh", 5, [], "/l") == [
        "sbatch", "--parsable", "--array=0-4", "--output=/l/%x-%A_%a.out", "/t/x.sh"]
    assert s.submit_argv("/t/x.sh", None, [], "/l") == ["sbatch", "--parsable", "/t/x.sh"]
    assert s.array_ids("43", 3) == ["43_0", "43_1", "43_2"]
    argv = s.status_argv(["43_0", "43_1", "9", "100", "43_2"])
    assert argv[argv.index("-j") + 1] == "9,43,100"
    assert s.cancel_argv(["43_0", "9"], ["--signal=TERM"]) == ["scancel", "--signal=TERM",
                                                                "43_0", "9"]
    assert s.status_ok(1, "slurm_load_jobs error: Invalid job id specified\n")
    assert not s.status_ok(1, "slurm_load_jobs error: Unable to contact slurm controller\n")
    assert s.log_paths("/l", "w", "43_1") == ["/l/w-43_1.out"]
    assert s.log_paths("/l", "w", "46") == ["/l/w-46.out"]

# --------------------------------------------------------------------------------- Grid Engine


SGE_XML = """\
<?xml version='1.0'?>
<job_info  xmlns:xsd="http://arc.liv.ac.uk/repos/darcs/sge/source/dist/util/resources/schemas/qstat/qstat.xsd">
  <queue_info>
    <job_list state="running">
      <JB_job_number>5</JB_job_number>
      <JAT_prio>0.25000</JAT_prio>
      <JB_name>sgetest</JB_name>
      <JB_owner>root</JB_owner>
      <state>r</state>
      <JAT_start_time>2026-11-27T07:47:31</JAT_start_time>
      <queue_name>all.q@vm</queue_name>
      <slots>1</slots>
    </job_list>
    <job_list state="running">
      <JB_job_number>6</JB_job_number>
      <JAT_prio>0.25000</JAT_prio>
      <JB_name>sgetest</JB_name>
      <JB_owner>root</JB_owner>
      <state>r</state>
      <JAT_start_time>2026-11-27T07:47:31</JAT_start_time>
      <queue_name>all.q@vm</queue_name>
      <slots>1</slots>
      <tasks>2</tasks>
    </job_list>
    <job_list state="running">
      <JB_job_number>19</JB_job_number>
      <JAT_prio>0.50000</JAT_prio>
      <JB_name>jobqueue-worker</JB_name>
      <JB_owner>root</JB_owner>
      <state>dr</state>
      <JAT_start_time>2026-11-27T07:58:02</JAT_start_time>
      <queue_name>all.q@vm</queue_name>
      <slots>1</slots>
      <tasks>2</tasks>
    </job_list>
  </queue_info>
  <job_info>
    <job_list state="pending">
      <JB_job_number>9</JB_job_number>
      <JAT_prio>0.25000</JAT_prio>
      <JB_name>sgetest</JB_name>
      <JB_owner>root</JB_owner>
      <state>qw</state>
      <JB_submission_time>2026-11-27T07:47:38</JB_submission_time>
      <queue_name></queue_name>
      <slots>1</slots>
      <tasks>3-12:1</tasks>
    </job_list>
    <job_list state="pending">
      <JB_job_number>10</JB_job_number>
      <JAT_prio>0.00000</JAT_prio>
      <JB_name>sgetest</JB_name>
      <JB_owner>root</JB_owner>
      <state>hqw</state>
      <JB_submission_time>2026-11-27T07:47:38</JB_submission_time>
      <queue_name></queue_name>
      <slots>1</slots>
    </job_list>
    <job_list state="pending">
      <JB_job_number>21</JB_job_number>
      <JAT_prio>0.50000</JAT_prio>
      <JB_name>eqwtest</JB_name>
      <JB_owner>root</JB_owner>
      <state>Eqw</state>
      <JB_submission_time>2026-11-27T08:00:07</JB_submission_time>
      <queue_name></queue_name>
      <slots>1</slots>
    </job_list>
  </job_info>
</job_info>"""

SGE_XML_EMPTY = """\
<?xml version='1.0'?>
<job_info  xmlns:xsd="http://arc.liv.ac.uk/repos/darcs/sge/source/dist/util/resources/schemas/qstat/qstat.xsd">
  <queue_info>
  </queue_info>
  <job_info>
  </job_info>
</job_info>"""


def test_sge_xml():
    parsed = parse_sge_xml(SGE_XML)
    assert states(parsed) == {
        "5": (R, ""), "6.2": (R, ""), "19.2": (C, "being deleted"),
        **{f"9.{i}": (P, "queued") for i in range(3, 13)}, "10": (P, "on hold"),
        "21": (X, "error state (qstat -j shows the reason)")}
    assert parsed["21"].cancel and not parsed["10"].cancel
    assert parsed["10"].native == "hqw"


def test_sge_xml_empty():
    assert parse_sge_xml(SGE_XML_EMPTY) == {} and parse_sge_xml("") == {}


@pytest.mark.parametrize("code, state", [
    ("qw", P), ("hqw", P), ("hRwq", P), ("t", R), ("r", R), ("Rr", R), ("s", P), ("S", P),
    ("T", P), ("dr", C), ("dt", C), ("Eqw", X), ("Ehqw", X), ("z", U),
])
def test_sge_state_table(code, state):
    xml = (f"<job_info><queue_info><job_list><JB_job_number>1</JB_job_number><state>{code}"
           "</state></job_list></queue_info></job_info>")
    assert parse_sge_xml(xml)["1"].state is state


@pytest.mark.parametrize("text, expected", [
    ("3-12:1", list(range(3, 13))), ("10,12", [10, 12]), ("1-7:2", [1, 3, 5, 7]),
    ("5", [5]), ("3-5:1,9", [3, 4, 5, 9]), ("4-9%4", [4, 5, 6, 7, 8, 9]), ("", []),
])
def test_expand_ranges(text, expected):
    assert expand_ranges(text) == expected


@pytest.mark.parametrize("text, expected", [("12\n", "12"), ("28.1-4:1\n", "28"),
                                            ("Your job 12 (\"name\") has been submitted\n12\n",
                                             "12")])
def test_sge_qsub_terse(text, expected):
    assert parse_sge_qsub(text) == expected


def test_sge_qsub_garbage():
    with pytest.raises(ValueError, match="job id"):
        parse_sge_qsub("Unable to run job: error: no suitable queues\nExiting.\n")


QACCT = """\
==============================================================
qname        all.q               
hostname     vm                  
jobname      sgetest             
jobnumber    5                   
taskid       undefined
failed       100 : assumedly after job
exit_status  137                  (Killed)
ru_wallclock 12s
==============================================================
jobname      jobqueue-worker     
jobnumber    18                  
taskid       1                   
failed       0    
exit_status  127                 
==============================================================
jobname      jobqueue-worker     
jobnumber    18                  
taskid       2                   
failed       0    
exit_status  0                 
==============================================================
jobname      rttest              
jobnumber    22                  
taskid       undefined
failed       37  : qmaster enforced h_rt, h_cpu, or h_vmem limit
exit_status  137                  (Killed)
"""


def test_qacct():
    assert states(parse_qacct(QACCT)) == {
        "5": (C, "killed (exit status 137, failed 100: assumedly after job)"),
        "18.1": (X, "exit status 127"), "18.2": (F, "exit status 0"),
        "22": (T, "failed 37: qmaster enforced h_rt, h_cpu, or h_vmem limit")}


def test_qacct_not_found():
    assert parse_qacct("error: job id 9 not found\n") == {}


QSTAT_J = """\
==============================================================
job_number:                 23
exec_file:                  job_scripts/23
owner:                      root
job_name:                   jobqueue-worker
job-array tasks:            1-2:1
error reason          1:      11/27/2026 08:00:41 [0:26465]: error: can't open output file "/nonexistent/dir/": No such file or directory
error reason          2:      11/27/2026 08:00:40 [0:26464]: error: can't open output file "/nonexistent/dir/": No such file or directory
scheduling info:            Job is in error state
"""


def test_sge_error_reasons():
    why = parse_sge_errors(QSTAT_J)
    reason = "error: can't open output file \"/nonexistent/dir/\": No such file or directory"
    assert why == {"23": reason, "23.1": reason, "23.2": reason}


# qalter -w v ID (Grid Engine 8.1.9): the job checked against an empty cluster
QALTER_NEVER_PE = """\
Job 2 cannot run in PE "smp" because it only offers 0 slots
verification: no suitable queues
"""
QALTER_NEVER_MEMORY = """\
Job 5 (-l mem_free=500G) cannot run at host "vm" because it offers only hc:mem_free=21.186G
verification: no suitable queues
"""
QALTER_POSSIBLE = "verification: found possible assignment with 2 slots\n"
QALTER_RUNNING = "verification: job is already running or is held\n"


def test_sge_verification():
    assert parse_sge_verify(1, QALTER_NEVER_PE) == \
        'cannot run in PE "smp" because it only offers 0 slots'
    assert parse_sge_verify(1, QALTER_NEVER_MEMORY) == \
        '(-l mem_free=500G) cannot run at host "vm" because it offers only hc:mem_free=21.186G'
    assert parse_sge_verify(0, QALTER_POSSIBLE) is None
    assert parse_sge_verify(0, QALTER_RUNNING) is None
    assert parse_sge_verify(1, 'denied: job "3" does not exist\n') is None
    verdict = GridEngine().parse_verify(1, QALTER_NEVER_PE, "")
    assert verdict.kind is Pending.NEVER and "cores=" in verdict.remedy
    assert GridEngine().pending("on hold").kind is Pending.BLOCKED
    assert GridEngine().pending("queued").kind is Pending.WAIT


def test_grid_engine_argv():
    g = GridEngine()
    assert g.submit_argv("/t/x.sh", 4) == ["qsub", "-terse", "-t", "1-4", "/t/x.sh"]
    assert g.submit_argv("/t/x.sh", None, ["-w", "e"]) == ["qsub", "-terse", "-w", "e", "/t/x.sh"]
    assert g.array_ids("28", 3) == ["28.1", "28.2", "28.3"]
    assert g.status_argv(["1", "2"]) == ["qstat", "-xml"]
    assert g.accounting_argv("28.3") == ["qacct", "-j", "28"]
    assert g.explain_argv(["23.1", "23.2", "5"]) == ["qstat", "-j", "23,5"]
    assert g.log_paths("/l", "w", "28.3") == ["/l/w.o28.3"]


@pytest.mark.parametrize("rc, out, ok", [
    (0, "root has deleted job 82\n", True),
    (1, "root has registered the job 80 for deletion\ndenied: job \"99999\" does not exist\n",
     True),
    (1, "denied: job \"99999\" does not exist\n", True),
    (1, "error: commlib error: got select error (Connection refused)\n", False),
])
def test_grid_engine_cancel_of_ended_jobs_is_fine(rc, out, ok):
    assert GridEngine().cancel_ok(rc, out, "") is ok

# ---------------------------------------------------------------------------------------- PBS


# qstat -f 1 16 from slurm-wlm-torque (tab-indented, few fields)
TORQUE_QSTAT_F = """\
Job Id:\t1
\tJob_Name = ci-smoke
\tJob_Owner = root@localhost
\tjob_state = C
\tqueue = debug
\tqtime = Fri Nov 27 07:44:03 2026
\tmtime = Fri Nov 27 07:44:04 2026
\tctime = Fri Nov 27 07:44:04 2026
\texec_host = vm/1
\tPriority = 4294901759
\teuser = root(0)
\tegroup = root(0)
\tResource_List.walltime = 8760:00:00
\tResource_List.nodect = 1
\tResource_List.ncpus = 1

Job Id:\t16
\tJob_Name = pbstest
\tJob_Owner = root@localhost
\tjob_state = R
\tqueue = debug
\tqtime = Fri Nov 27 07:47:52 2026
\tmtime = Fri Nov 27 07:47:53 2026
\texec_host = vm/1
\tPriority = 4294901747

Job Id:\t17
\tJob_Name = pbstest
\tjob_state = Q
\tqueue = debug
"""

# PBS Pro / OpenPBS `qstat -x -f` (format from its documentation: 4-space indent, server suffix,
# comment with the scheduler's reason, Exit_status for finished jobs, wrapped long values)
PBSPRO_QSTAT_F = """\
Job Id: 1201.pbsserver
    Job_Name = jobqueue-worker
    Job_Owner = alice@login1.example.org
    job_state = Q
    queue = workq
    server = pbsserver
    comment = Not Running: Insufficient amount of resource: ncpus (R: 8 A: 4 T: 4
        )
    Variable_List = PBS_O_HOME=/home/alice,PBS_O_LANG=en_US.UTF-8,
\tPBS_O_LOGNAME=alice

Job Id: 1202.pbsserver
    Job_Name = jobqueue-worker
    job_state = F
    Exit_status = 0

Job Id: 1203.pbsserver
    job_state = F
    Exit_status = 127

Job Id: 1204.pbsserver
    job_state = H
"""


def test_torque_wrapper_qstat_f():
    assert states(parse_pbs_qstat_f(TORQUE_QSTAT_F)) == {
        "1": (F, "completed; qstat shows no exit status"), "16": (R, ""), "17": (P, "queued")}


def test_pbs_pro_qstat_f():
    parsed = parse_pbs_qstat_f(PBSPRO_QSTAT_F)
    assert states(parsed) == {
        "1201.pbsserver": (P, "Not Running: Insufficient amount of resource: ncpus (R: 8 A: 4 "
                              "T: 4)"),
        "1202.pbsserver": (F, "exit status 0"), "1203.pbsserver": (X, "exit status 127"),
        "1204.pbsserver": (P, "held")}


def test_pbs_adapter_matches_ids_with_and_without_server():
    parsed = PBS().parse_status(PBSPRO_QSTAT_F)
    assert PBS().status_key("1201.pbsserver") in parsed
    assert PBS().worker_id("1201.pbsserver") == "1201"


TORQUE_QSTAT = """\
Job id              Name             Username        Time Use S Queue          
------------------- ---------------- --------------- -------- - ---------------
1                   ci-smoke         root            00:00:00 C debug          
16                  pbstest          root            00:00:00 R debug          
19                  pbstest          root            00:00:00 Q debug          
"""


def test_torque_qstat_table():
    assert {k: v.state for k, v in parse_pbs_qstat(TORQUE_QSTAT).items()} == {"1": F, "16": R,
                                                                            "19": P}


@pytest.mark.parametrize("text, expected", [("52\n", "52"), ("1201.pbsserver\n", "1201.pbsserver"),
                                            ("1300[].pbsserver\n", "1300[].pbsserver")])
def test_pbs_qsub(text, expected):
    assert parse_pbs_qsub(text) == expected


def test_pbs_qsub_error_text_is_not_an_id():
    text = ("There was an error running the Slurm sbatch command.\nThe command was:\n"
            "'/x/sbatch -p nosuch /t/jobqueue-worker 2>&1'\nand the output was:\n"
            "'sbatch: error: invalid partition specified: nosuch\n'\n")
    with pytest.raises(ValueError, match="job id"):
        parse_pbs_qsub(text)


def test_pbs_pro_comment_that_says_never():
    p = PBS()
    assert p.pending("Can Never Run: Insufficient amount of resource: ncpus (R: 16 A: 8 "
                     "T: 8)").kind is Pending.NEVER
    assert p.pending("Not Running: Insufficient amount of resource: ncpus").kind is Pending.WAIT
    assert p.pending("queued").kind is Pending.WAIT


def test_pbs_argv():
    p = PBS()
    assert p.submit_argv("/t/w", None, ["-V"]) == ["qsub", "-V", "/t/w"]
    with pytest.raises(ValueError):
        p.submit_argv("/t/w", 3)
    assert p.status_argv(["16", "17"]) == ["qstat", "-f", "16", "17"]
    assert p.status_ok(153, "") and not p.status_ok(2, "qstat: Unknown option")
    assert p.script_name("sim") == "sim" and p.submit_cwd("/logs") == "/logs"
    assert p.log_paths("/l", "sim", "16.server") == ["/l/sim.o16", "/l/sim.e16"]
    assert p.cancel_ok(1, "", "") is True           # the wrappers' qdel: rc = ids that failed
    assert p.cancel_ok(153, "", "qdel: Unknown Job Id 1201.pbsserver\n") is True
    assert p.cancel_ok(1, "", "qdel: Server could not connect\n") is False


def test_pure_modules_import_no_io():
    import subprocess
    import sys

    code = ("import sys, jobqueue.batch.status, jobqueue.batch.script, jobqueue.batch.system; "
            "print(sorted(m for m in ('asyncio', 'subprocess', 'tornado', 'psutil') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
