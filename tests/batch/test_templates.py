"""Job scripts, without a batch system: golden files, where each setting lands, quoting,
template errors, and the messages for bad settings.

Regenerate the golden files after an intended change with
``JOBQUEUE_UPDATE_GOLDEN=1 python -m pytest tests/batch/test_templates.py`` and read the diff.
"""
import os
import re
import shlex
from pathlib import Path

import pytest

from jobqueue import config
from jobqueue.batch import script
from jobqueue.config import ConfigError

GOLDEN = Path(__file__).with_name("golden")
UPDATE_GOLDEN = bool(os.environ.get("JOBQUEUE_UPDATE_GOLDEN"))   # read before fixtures clear it
SYSTEMS = ("slurm", "pbs", "sge")
TEMPLATES = {"slurm": "slurm.sh.j2", "pbs": "pbs.sh.j2", "sge": "sge.sh.j2"}
FIXED = dict(scheduler_address="tcp://10.1.2.3:8786", token_file="/home/alice/.jobqueue/c.token",
             python="/opt/conda/bin/python3", log_directory="/home/alice/logs", death_timeout=60.0)

FULL = dict(cores=8, memory="32GB", processes=2, queue="normal", account="proj42",
            walltime=90, job_name="sim", job_extra_directives=["--extra-directive"],
            job_directives_skip=[], job_script_prologue=["module load python/3.11",
                                                         "source ~/venv/bin/activate"],
            worker_extra_args=["--host", "10.0.0.9"], interface="ib0",
            local_directory="/scratch/alice", shebang="#!/bin/bash -l", death_timeout="2m")
FULL_EXTRA = {"slurm": dict(job_cpu=16, job_mem="40GB"),
              "pbs": dict(resource_spec="select=1:ncpus=8:mem=30gb:ngpus=1"),
              "sge": dict(resource_spec="h_vmem=4G,mem_free=4G")}


def render(kind, **arguments):
    settings = script.settings(kind, arguments)
    fixed = dict(FIXED)
    if settings.get("death_timeout"):
        fixed["death_timeout"] = settings["death_timeout"]
    if settings.get("log_directory"):
        fixed["log_directory"] = settings["log_directory"]
    if settings.get("python"):
        fixed["python"] = settings["python"]
    return script.render(settings.get("template") or TEMPLATES[kind],
                         script.context(settings, **fixed))


def check_golden(name, text):
    path = GOLDEN / name
    if UPDATE_GOLDEN:
        path.write_text(text)
    assert path.exists(), f"no golden file {path}; run with JOBQUEUE_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from its golden file"


def worker_argv(text):
    """The argv of the script's `exec python -m jobqueue worker ...` line, as bash would split
    it (the job id variable left as a placeholder)."""
    line = text[text.index("exec "):].split("\n\n")[0].replace("\\\n", " ")
    return shlex.split(line.replace("${JOBQUEUE_JOB_ID}", "ID"))[1:]


def directives(text, prefix):
    return [line[len(prefix) + 1:] for line in text.splitlines() if line.startswith(prefix + " ")]


@pytest.fixture
def isolated_config(tmp_path, monkeypatch):
    """Package defaults only: empty site and user config directories, no JOBQUEUE_* variables."""
    for name in list(os.environ):
        if name.startswith("JOBQUEUE_"):
            monkeypatch.delenv(name)
    (tmp_path / "etc").mkdir()
    monkeypatch.setattr(config, "SITE_DIRS", [str(tmp_path / "etc")])
    monkeypatch.setattr(config, "USER_DIRS", [str(tmp_path / "user")])
    monkeypatch.setattr(config, "DASK_FILES", [])
    config.refresh()
    yield tmp_path
    config.refresh()


PREFIX = {"slurm": "#SBATCH", "pbs": "#PBS", "sge": "#$"}

# -------------------------------------------------------------------------------- golden files


@pytest.mark.parametrize("kind", SYSTEMS)
def test_golden_defaults(isolated_config, kind):
    check_golden(f"{kind}-default.sh", render(kind, cores=4, memory="16GB"))


@pytest.mark.parametrize("kind", SYSTEMS)
def test_golden_every_setting(isolated_config, kind):
    check_golden(f"{kind}-full.sh", render(kind, **FULL, **FULL_EXTRA[kind]))


@pytest.mark.parametrize("kind", SYSTEMS)
def test_rendering_is_deterministic(isolated_config, kind):
    assert render(kind, **FULL) == render(kind, **FULL)

# ------------------------------------------------------------------ where each setting lands


LANDS = [
    # (system, settings, directive that must appear)
    ("slurm", {}, "-J jobqueue-worker"),
    ("slurm", {"job_name": "sim"}, "-J sim"),
    ("slurm", {"queue": "gpu"}, "-p gpu"),
    ("slurm", {"account": "proj"}, "-A proj"),
    ("slurm", {"project": "proj"}, "-A proj"),
    ("slurm", {"walltime": "01:30:00"}, "-t 01:30:00"),
    ("slurm", {"walltime": "90m"}, "-t 01:30:00"),
    ("slurm", {}, "--cpus-per-task=4"),
    ("slurm", {"job_cpu": 6}, "--cpus-per-task=6"),
    ("slurm", {}, "--mem=15259M"),
    ("slurm", {"job_mem": "20GiB"}, "--mem=20480M"),
    ("slurm", {"log_directory": "/data/logs"}, "-o /data/logs/%x-%j.out"),
    ("slurm", {"job_extra_directives": ["--gres=gpu:1"]}, "--gres=gpu:1"),
    ("pbs", {}, "-N jobqueue-worker"),
    ("pbs", {"queue": "workq"}, "-q workq"),
    ("pbs", {"account": "proj"}, "-A proj"),
    ("pbs", {}, "-l select=1:ncpus=4:mem=15259mb"),
    ("pbs", {"resource_spec": "nodes=1:ppn=4"}, "-l nodes=1:ppn=4"),
    ("pbs", {"walltime": 3600}, "-l walltime=01:00:00"),
    ("pbs", {}, "-j oe"),
    ("pbs", {"job_extra_directives": ["-l place=excl"]}, "-l place=excl"),
    ("sge", {}, "-N jobqueue-worker"),
    ("sge", {"queue": "all.q"}, "-q all.q"),
    ("sge", {"account": "proj"}, "-P proj"),
    ("sge", {}, "-pe smp 4"),
    ("sge", {}, "-l mem_free=3815M"),
    ("sge", {"resource_spec": "h_vmem=4G"}, "-l h_vmem=4G"),
    ("sge", {"walltime": "2h"}, "-l h_rt=02:00:00"),
    ("sge", {"log_directory": "/data/logs"}, "-o /data/logs/"),
    ("sge", {}, "-cwd"),
    ("sge", {"job_extra_directives": ["-l gpu=1"]}, "-l gpu=1"),
]


@pytest.mark.parametrize("kind, settings, expected", LANDS,
                         ids=[f"{k}-{'-'.join(s) or 'default'}-{e}" for k, s, e in LANDS])
def test_setting_lands_in_its_directive(isolated_config, kind, settings, expected):
    text = render(kind, **{"cores": 4, "memory": "16GB", **settings})
    assert expected in directives(text, PREFIX[kind])


@pytest.mark.parametrize("kind", SYSTEMS)
def test_worker_command_carries_each_setting(isolated_config, kind):
    text = render(kind, cores=8, memory="32GB", processes=2, python="/opt/py/bin/python",
                  death_timeout="2m", interface="ib0", worker_extra_args=["--host", "10.0.0.9"])
    argv = worker_argv(text)
    assert argv[:5] == ["/opt/py/bin/python", "-m", "jobqueue", "worker", "tcp://10.1.2.3:8786"]
    options = dict(zip(argv[5::2], argv[6::2]))
    assert options == {"--nthreads": "4", "--nworkers": "2", "--memory-limit": "16000000000",
                       "--name": "jobqueue-worker-ID", "--death-timeout": "120",
                       "--interface": "ib0", "--host": "10.0.0.9",
                       # default walltime 30 min: retire 10% (3 min) early, spread over 90 s
                       "--lifetime": "1620", "--lifetime-stagger": "90"}


# ------------------------------------------------------------------------------------ walltime

WALLTIMES = [
    # (given, SLURM's -t, PBS's walltime= and Grid Engine's h_rt=): a bare number is what each
    # system reads: minutes for SLURM, seconds for PBS and Grid Engine
    (60, "01:00:00", "00:01:00"),
    ("60", "01:00:00", "00:01:00"),
    (90.5, "01:30:30", "00:01:31"),
    ("01:30:00", "01:30:00", "01:30:00"),
    ("1:30:00", "01:30:00", "01:30:00"),
    ("45:00", "00:45:00", "00:45:00"),           # MM:SS everywhere
    ("1h30m", "01:30:00", "01:30:00"),
    ("90m", "01:30:00", "01:30:00"),
    ("3600s", "01:00:00", "01:00:00"),
    ("2 days", "48:00:00", "48:00:00"),
    ("1-12", "36:00:00", "36:00:00"),            # D-HH as in SLURM
    ("0-00:30:00", "00:30:00", "00:30:00"),
]


@pytest.mark.parametrize("given, slurm, others", WALLTIMES)
def test_walltime_means_what_each_batch_system_means(isolated_config, given, slurm, others):
    expected = {"slurm": f"-t {slurm}", "pbs": f"-l walltime={others}",
                "sge": f"-l h_rt={others}"}
    for kind in SYSTEMS:
        text = render(kind, cores=1, memory="1GB", walltime=given)
        assert expected[kind] in directives(text, PREFIX[kind]), (kind, given)


@pytest.mark.parametrize("kind", SYSTEMS)
def test_bare_walltime_from_the_environment_and_a_file(isolated_config, monkeypatch, kind):
    expected = {"slurm": "-t 02:00:00", "pbs": "-l walltime=00:02:00",
                "sge": "-l h_rt=00:02:00"}[kind]
    monkeypatch.setenv(f"JOBQUEUE_{kind.upper()}__WALLTIME", "120")
    config.refresh()
    assert expected in directives(render(kind, cores=1, memory="1GB"), PREFIX[kind])
    monkeypatch.delenv(f"JOBQUEUE_{kind.upper()}__WALLTIME")
    (isolated_config / "etc" / "site.yaml").write_text(f"{kind}:\n  walltime: 120\n")
    config.refresh()
    assert expected in directives(render(kind, cores=1, memory="1GB"), PREFIX[kind])


@pytest.mark.parametrize("kind, bare", [("slurm", "minutes (90, as SLURM reads --time=90)"),
                                        ("pbs", "seconds (30, 1.5)"),
                                        ("sge", "seconds (30, 1.5)")])
@pytest.mark.parametrize("given", ["soon", "1:2:3:4", "00:61:00", "-5", "1h30", 0])
def test_bad_walltime_is_refused_with_the_forms_each_system_accepts(isolated_config, kind,
                                                                     bare, given):
    with pytest.raises(ConfigError) as e:
        render(kind, cores=1, memory="1GB", walltime=given)
    message = str(e.value)
    assert message.startswith(f"argument: {kind}.walltime: ")
    if given != 0:
        assert f"cannot read {given!r} as a duration" in message
        assert f"use {bare}" in message and "HH:MM:SS" in message and "1h30m" in message
    else:
        assert "must be positive" in message


@pytest.mark.parametrize("walltime,lifetime,stagger", [
    ("00:02:00", "90", "15"),      # margin at least 30 s
    ("01:00:00", "3240", "180"),   # 10%
    ("24:00:00", "85800", "300"),  # margin at most 10 min
])
def test_workers_retire_before_walltime(isolated_config, walltime, lifetime, stagger):
    options = dict(zip(*(lambda a: (a[5::2], a[6::2]))(worker_argv(
        render("slurm", cores=1, memory="1GB", walltime=walltime)))))
    assert (options["--lifetime"], options["--lifetime-stagger"]) == (lifetime, stagger)


@pytest.mark.parametrize("kind", SYSTEMS)
def test_prologue_and_local_directory_come_before_the_worker(isolated_config, kind):
    text = render(kind, cores=1, memory="1GB", job_script_prologue=["module load python"],
                  local_directory="/scratch/me")
    assert text.index("module load python\n") < text.index("exec ")
    assert "export TMPDIR=/scratch/me" in text
    assert text.index("export TMPDIR=/scratch/me") < text.index("exec ")


@pytest.mark.parametrize("kind", SYSTEMS)
def test_token_is_read_from_its_file_never_written(isolated_config, kind):
    text = render(kind, cores=1, memory="1GB")
    assert "JOBQUEUE_TOKEN=$(cat /home/alice/.jobqueue/c.token)" in text
    assert "export JOBQUEUE_TOKEN\n" in text
    assert "JOBQUEUE_TOKEN" not in " ".join(worker_argv(text))


@pytest.mark.parametrize("kind, skip, gone", [("slurm", "--mem", "--mem="),
                                              ("pbs", "select=", "select="),
                                              ("sge", "-pe smp", "-pe smp")])
def test_directives_skip_drops_generated_lines_only(isolated_config, kind, skip, gone):
    text = render(kind, cores=4, memory="16GB", job_directives_skip=[skip],
                  job_extra_directives=[f"{gone}KEEP"])
    lines = directives(text, PREFIX[kind])
    assert [line for line in lines if gone in line] == [f"{gone}KEEP"]


def test_sge_one_core_asks_for_no_parallel_environment(isolated_config):
    assert not any("-pe" in d for d in directives(render("sge", cores=1, memory="1GB"), "#$"))


def test_processes_split_cores_and_memory(isolated_config):
    argv = worker_argv(render("slurm", cores=12, memory="12GB"))
    options = dict(zip(argv[5::2], argv[6::2]))
    assert (options["--nworkers"], options["--nthreads"]) == ("4", "3")
    assert options["--memory-limit"] == str(3 * 10 ** 9)


@pytest.mark.parametrize("cores, processes, expected", [
    # dask-jobqueue 0.9's split (distributed's nprocesses_nthreads): processes = cores up to 4,
    # then the smallest divisor of cores that is at least its square root
    (1, None, (1, 1)), (2, None, (2, 1)), (3, None, (3, 1)), (4, None, (4, 1)),
    (5, None, (5, 1)), (6, None, (3, 2)), (7, None, (7, 1)), (8, None, (4, 2)),
    (9, None, (3, 3)), (12, None, (4, 3)), (16, None, (4, 4)), (32, None, (8, 4)),
    (36, None, (6, 6)), (40, None, (8, 5)),
    (8, 8, (8, 1)), (8, 1, (1, 8)), (8, 3, (3, 2)),
])
def test_split_cores(cores, processes, expected):
    assert script.split_cores(cores, processes) == expected

# -------------------------------------------------------------------------------------- quoting


HOSTILE = "x'; touch /tmp/pwned; echo '$(reboot)`id`"


@pytest.mark.parametrize("kind", SYSTEMS)
def test_hostile_values_stay_one_word(isolated_config, kind):
    text = render(kind, cores=2, memory="2GB", python=f"/opt/my python/{HOSTILE}",
                  worker_extra_args=["--local-directory", HOSTILE], interface="eth0 $(id)")
    argv = worker_argv(text)
    assert argv[0] == f"/opt/my python/{HOSTILE}"
    assert argv[-1] == HOSTILE
    assert argv[argv.index("--interface") + 1] == "eth0 $(id)"


@pytest.mark.parametrize("kind", SYSTEMS)
def test_hostile_directive_values_are_quoted(isolated_config, kind):
    text = render(kind, cores=2, memory="2GB", queue="debug; rm -rf ~", account="a b",
                  log_directory="/tmp/my logs")
    lines = directives(text, PREFIX[kind])
    assert [shlex.split(d) for d in lines if "rm -rf" in d][0][1] == "debug; rm -rf ~"
    assert [shlex.split(d) for d in lines if "a b" in d][0][1] == "a b"
    if kind != "pbs":    # PBS output paths are set by running qsub in the log directory
        out = [shlex.split(d) for d in lines if "my logs" in d][0][1]
        assert out.startswith("/tmp/my logs/")


@pytest.mark.parametrize("key", ["queue", "account", "log_directory", "resource_spec"])
def test_quotes_in_directive_values_are_refused(isolated_config, key):
    # sbatch reads '-o '/tmp/it'"'"'s'' as /tmp/it's: no quoting can carry a quote there
    with pytest.raises(ConfigError, match=rf"sge\.{key.replace('_', '-')}: .* quote character"):
        render("sge", cores=1, memory="1GB", **{key: "/tmp/it's"})


@pytest.mark.parametrize("key", ["queue", "account", "python", "log_directory", "job_name",
                                 "resource_spec", "shebang"])
def test_newlines_are_refused(isolated_config, key):
    kind = "pbs" if key == "resource_spec" else "slurm"
    with pytest.raises(ConfigError, match=rf"{kind}\.{key.replace('_', '-')}: .*newline"):
        render(kind, cores=1, memory="1GB", **{key: "#!/bin/sh\n#SBATCH --wrap=evil"})


def test_newline_in_a_list_item_is_refused(isolated_config):
    with pytest.raises(ConfigError, match=r"slurm\.job-extra-directives: item .*newline"):
        render("slurm", cores=1, memory="1GB", job_extra_directives=["--a\n#SBATCH --b"])

# ------------------------------------------------------------------------------ site templates


def test_site_template_can_include_the_worker_part(isolated_config, tmp_path):
    template = tmp_path / "site.sh.j2"
    template.write_text("#!/bin/bash\n#SITE --cores={{ cores }}\nJOBQUEUE_JOB_ID=$MYID\n"
                        "{% include 'worker.sh.j2' %}")
    text = render("slurm", cores=3, memory="1GB", template=str(template))
    assert text.startswith("#!/bin/bash\n#SITE --cores=3\n")
    assert worker_argv(text)[:4] == ["/opt/conda/bin/python3", "-m", "jobqueue", "worker"]


def test_the_readme_site_template_renders(isolated_config, tmp_path):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    template = tmp_path / "slurm-site.sh.j2"
    template.write_text(readme.split("```jinja\n")[1].split("```")[0])
    text = render("slurm", cores=2, memory="1GB", template=str(template))
    assert "--qos=jobqueue" in directives(text, "#SBATCH")
    assert "--mem=954M" in directives(text, "#SBATCH")
    assert worker_argv(text)[2:4] == ["jobqueue", "worker"]


def test_template_from_the_config_file(isolated_config, tmp_path):
    template = tmp_path / "site.sh.j2"
    template.write_text("#!/bin/sh\necho {{ job_name }}\n")
    (isolated_config / "etc" / "site.yaml").write_text(f"sge:\n  template: {template}\n")
    config.refresh()
    assert render("sge", cores=1, memory="1GB") == "#!/bin/sh\necho jobqueue-worker\n"


def test_undefined_variable_is_an_error(isolated_config, tmp_path):
    template = tmp_path / "bad.sh.j2"
    template.write_text("#!/bin/sh\n#SBATCH --qos={{ qos }}\n")
    with pytest.raises(script.JobScriptError, match=r"bad\.sh\.j2: 'qos' is undefined") as e:
        render("slurm", cores=1, memory="1GB", template=str(template))
    assert "scheduler_address" in str(e.value)      # the message lists the variables


def test_template_syntax_error_names_file_and_line(isolated_config, tmp_path):
    template = tmp_path / "broken.sh.j2"
    template.write_text("#!/bin/sh\n\n{% if cores %}\necho\n")
    with pytest.raises(script.JobScriptError, match=r"broken\.sh\.j2, line \d"):
        render("slurm", cores=1, memory="1GB", template=str(template))

# ---------------------------------------------------------------------------- bad settings


@pytest.mark.parametrize("arguments, message", [
    ({"memory": "1GB"}, r"slurm\.cores: is required"),
    ({"cores": 2}, r"slurm\.memory: is required"),
    ({"cores": 0, "memory": "1GB"}, r"argument: slurm\.cores: must be at least 1"),
    ({"cores": 2, "memory": "lots"}, r"argument: slurm\.memory: cannot read 'lots' as a size"),
    ({"cores": 2, "memory": "1GB", "processes": 3},
     r"argument: slurm\.processes: must be between 1 and cores \(2\)"),
    ({"cores": 2, "memory": "1GB", "coress": 3}, r"slurm\.coress: unknown setting; did you mean "
                                                  r"'cores'"),
    ({"cores": 2, "memory": "1GB", "walltime": "soon"},
     r"argument: slurm\.walltime: cannot read 'soon' as a duration"),
    ({"cores": 2, "memory": "1GB", "job_name": "my job"},
     r"argument: slurm\.job-name: 'my job' is not a job name"),
    ({"cores": 2, "memory": "1GB", "job_name": "1st"}, r"slurm\.job-name: '1st' is not a job"),
    ({"cores": 2, "memory": "1GB", "shebang": "bash"}, r"slurm\.shebang: must start with #!"),
    ({"cores": 2, "memory": "1GB", "template": "/no/such.j2"},
     r"slurm\.template: /no/such\.j2: no such file"),
    ({"cores": 2, "memory": "1GB", "job_array": "yes"}, r"slurm\.job-array: 'yes' is not true or "
                                                        r"false"),
    ({"cores": 2, "memory": "1GB", "job_extra_directives": "--exclusive"},
     r"slurm\.job-extra-directives: '--exclusive' is not a list"),
    ({"cores": 2, "memory": "1GB", "max_jobs": 0}, r"slurm\.max-jobs: must be at least 1"),
    ({"cores": 2, "memory": "1GB", "poll_interval": 0}, r"slurm\.poll-interval: must be positive"),
])
def test_bad_settings_are_named(isolated_config, arguments, message):
    with pytest.raises(ConfigError, match=message):
        script.settings("slurm", arguments)


def test_every_problem_is_reported_at_once(isolated_config):
    with pytest.raises(ConfigError) as e:
        script.settings("pbs", {"cores": 0, "memory": "1kB", "job_name": "a b"})
    assert len(e.value.problems) == 3


def test_problem_in_a_config_file_names_the_file_and_line(isolated_config):
    path = isolated_config / "etc" / "site.yaml"
    path.write_text("sge:\n  cores: 4\n  processes: 8\n")
    config.refresh()
    with pytest.raises(ConfigError, match=re.escape(f"{path}:3: sge.processes: must be between")):
        script.settings("sge", {"memory": "4GB"})


def test_missing_setting_from_a_config_file_is_fine(isolated_config):
    (isolated_config / "etc" / "site.yaml").write_text("slurm:\n  cores: 4\n  memory: 8GB\n")
    config.refresh()
    assert "--cpus-per-task=4" in directives(render("slurm"), "#SBATCH")
