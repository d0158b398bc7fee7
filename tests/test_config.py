"""Tests for jobqueue.config: layers, environment, profiles, validation messages, units."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import write  # the env fixture comes from conftest.py too

from jobqueue import config
from jobqueue.config import ConfigError




def user_file(root: Path, name="user.yaml") -> Path:
    return root / "home" / ".config" / "jobqueue" / name


# ------------------------------------------------------------------------------------------- layers

def test_defaults(env):
    assert config.get("scheduler.allowed-failures") == 3
    assert config.get("scheduler.worker-ttl") == 300.0
    assert config.get("worker.death-timeout") == 60.0
    assert config.get("worker.memory.pause") == 0.8
    assert config.get("slurm.walltime") == 1800.0
    assert config.get("slurm.job-array") is True
    assert config.get("scheduler-address") is None
    assert config.get("local.memory-limit") == "auto"
    assert config.get("profiles") == {}
    assert config.source("slurm.walltime") == "default"


def test_each_layer_overrides_the_one_before(env, monkeypatch):
    site = write(env / "etc" / "site.yaml", """\
        slurm:
          queue: site
          account: physics
        """)
    assert config.get("slurm.queue") == "site"
    assert config.source("slurm.queue") == f"{site}:2"

    user = write(user_file(env), """\
        slurm:
          queue: user
        """)
    config.refresh()
    assert config.get("slurm.queue") == "user"
    assert config.source("slurm.queue") == f"{user}:2"
    assert config.get("slurm.account") == "physics"          # untouched keys keep the lower layer
    assert config.source("slurm.account") == f"{site}:3"

    explicit = write(env / "explicit.yaml", "slurm:\n  queue: explicit\n")
    monkeypatch.setenv("JOBQUEUE_CONFIG", str(explicit))
    config.refresh()
    assert config.get("slurm.queue") == "explicit"
    assert config.source("slurm.queue") == f"{explicit}:2"

    monkeypatch.setenv("JOBQUEUE_SLURM__QUEUE", "env")
    config.refresh()
    assert config.get("slurm.queue") == "env"
    assert config.source("slurm.queue") == "JOBQUEUE_SLURM__QUEUE"

    assert config.resolve("slurm", {"queue": "arg"})["queue"] == "arg"
    assert config.resolve("slurm", {"queue": None})["queue"] == "env"   # None means "not given"
    assert config.resolve("slurm", {})["account"] == "physics"


def test_site_files_sorted_and_dir_in_jobqueue_config(env, monkeypatch):
    write(env / "etc" / "20-late.yaml", "slurm:\n  queue: late\n")
    write(env / "etc" / "10-early.yaml", "slurm:\n  queue: early\n  account: early\n")
    assert config.get("slurm.queue") == "late"
    assert config.get("slurm.account") == "early"

    confdir = env / "confdir"
    write(confdir / "a.yaml", "adaptive:\n  wait-count: 5\n")
    write(confdir / "b.yaml", "adaptive:\n  wait-count: 6\n")
    write(confdir / "notes.txt", "not: config: at all")
    monkeypatch.setenv("JOBQUEUE_CONFIG", str(confdir))
    config.refresh()
    assert config.get("adaptive.wait-count") == 6


def test_missing_jobqueue_config_path(env, monkeypatch):
    monkeypatch.setenv("JOBQUEUE_CONFIG", str(env / "nope.yaml"))
    with pytest.raises(ConfigError, match=r"JOBQUEUE_CONFIG=.*nope\.yaml: no such file"):
        config.get("slurm.queue")


def test_empty_section_and_empty_file_change_nothing(env):
    write(user_file(env), "slurm:\n  # queue: debug\n")
    write(user_file(env, "empty.yaml"), "# nothing yet\n")
    assert config.get("slurm.walltime") == 1800.0


def test_refresh_rereads(env):
    assert config.get("adaptive.wait-count") == 3
    write(user_file(env), "adaptive:\n  wait-count: 9\n")
    assert config.get("adaptive.wait-count") == 3         # cached
    config.refresh()
    assert config.get("adaptive.wait-count") == 9


# -------------------------------------------------------------------------------------- environment

def test_environment_form(env, monkeypatch):
    monkeypatch.setenv("JOBQUEUE_SCHEDULER__WORKER_TTL", "30s")
    monkeypatch.setenv("JOBQUEUE_SCHEDULER__ALLOWED_FAILURES", "7")
    monkeypatch.setenv("JOBQUEUE_WORKER__MEMORY__PAUSE", "0.5")
    monkeypatch.setenv("JOBQUEUE_SLURM__JOB_EXTRA_DIRECTIVES", "[--exclusive, --gres=gpu:1]")
    monkeypatch.setenv("JOBQUEUE_SCHEDULER_ADDRESS", "tcp://10.0.0.1:8786")
    monkeypatch.setenv("JOBQUEUE_TOKEN", "secret")               # not configuration: ignored
    assert config.get("scheduler.worker-ttl") == 30.0
    assert config.source("scheduler.worker-ttl") == "JOBQUEUE_SCHEDULER__WORKER_TTL"
    assert config.get("scheduler.allowed-failures") == 7
    assert config.get("worker.memory.pause") == 0.5
    assert config.get("worker.memory.terminate") == 0.95
    assert config.get("slurm.job-extra-directives") == ["--exclusive", "--gres=gpu:1"]
    assert config.get("scheduler-address") == "tcp://10.0.0.1:8786"
    assert config.source("scheduler-address") == "JOBQUEUE_SCHEDULER_ADDRESS"


def test_environment_unknown_key_names_the_variable(env, monkeypatch):
    monkeypatch.setenv("JOBQUEUE_SLURM__QUEU", "debug")
    with pytest.raises(ConfigError) as info:
        config.get("slurm.queue")
    message = str(info.value)
    assert "JOBQUEUE_SLURM__QUEU" in message and "slurm.queu" in message
    assert "did you mean 'queue'?" in message


def test_environment_bad_value(env, monkeypatch):
    monkeypatch.setenv("JOBQUEUE_SCHEDULER__ALLOWED_FAILURES", "many")
    with pytest.raises(ConfigError, match=r"JOBQUEUE_SCHEDULER__ALLOWED_FAILURES: "
                                          r"scheduler\.allowed-failures: 'many' is not a whole number"):
        config.get("scheduler.port")


# ------------------------------------------------------------------------------------------ resolve

def test_resolve_converts_and_uses_python_names(env):
    settings = config.resolve("slurm", {"memory": "32GB", "walltime": "1-00:00:00", "cores": 8,
                                        "job-extra-directives": ["--exclusive"]})
    assert settings["memory"] == 32_000_000_000
    assert settings["walltime"] == 86400.0
    assert settings["cores"] == 8
    assert settings["job_extra_directives"] == ["--exclusive"]
    assert settings["poll_interval"] == 2.0
    assert settings["shebang"] == "#!/usr/bin/env bash"
    assert all("-" not in key for key in settings)
    assert config.resolve("slurm", {"job_extra_directives": ["-x"]})["job_extra_directives"] == ["-x"]


def test_resolve_nested_section(env):
    worker = config.resolve("worker", {"death_timeout": "2m"})
    assert worker["death_timeout"] == 120.0
    assert worker["memory"] == {"pause": 0.8, "terminate": 0.95}


def test_resolve_unknown_argument(env):
    with pytest.raises(ConfigError) as info:
        config.resolve("slurm", {"job_extra_directive": ["-x"]})
    message = str(info.value)
    assert message.startswith("argument:")
    assert "job_extra_directive" in message
    assert "did you mean 'job_extra_directives'?" in message


def test_resolve_bad_argument_value(env):
    with pytest.raises(ConfigError, match=r"argument: slurm\.memory: cannot read 'lots' as a size"):
        config.resolve("slurm", {"memory": "lots"})
    with pytest.raises(ConfigError, match=r"argument: pbs\.walltime: cannot read 'soon' as a duration"):
        config.resolve("pbs", {"walltime": "soon"})


def test_resolve_unknown_section(env):
    with pytest.raises(ConfigError, match="did you mean 'slurm'"):
        config.resolve("slrum", {})


# ----------------------------------------------------------------------------------------- profiles

PROFILES = textwrap.dedent("""\
    profiles:
      gpu:
        kind: slurm
        queue: gpu
        memory: 64GB
        job-extra-directives: [--gres=gpu:1]
      big-pbs:
        kind: pbs
        queue: large
    """)


def test_profile_applies_on_top_of_section(env):
    write(user_file(env), "slurm:\n  queue: normal\n  account: physics\n")
    write(user_file(env, "profiles.yaml"), PROFILES)
    plain = config.resolve("slurm", {})
    assert plain["queue"] == "normal"
    gpu = config.resolve("slurm", {}, profile="gpu")
    assert gpu["queue"] == "gpu"
    assert gpu["memory"] == 64_000_000_000
    assert gpu["job_extra_directives"] == ["--gres=gpu:1"]
    assert gpu["account"] == "physics"
    # arguments win over the profile
    assert config.resolve("slurm", {"queue": "debug"}, profile="gpu")["queue"] == "debug"


def test_profile_wrong_kind(env):
    path = write(user_file(env), PROFILES)
    with pytest.raises(ConfigError) as info:
        config.resolve("slurm", {}, profile="big-pbs")
    message = str(info.value)
    assert f"{path}:8" in message and "big-pbs" in message and "pbs" in message


def test_profile_unknown_name(env):
    write(user_file(env), PROFILES)
    with pytest.raises(ConfigError, match="no profile 'gpus'; did you mean 'gpu'?"):
        config.resolve("slurm", {}, profile="gpus")


def test_profile_unknown_key_and_missing_kind(env):
    path = write(user_file(env), """\
        profiles:
          gpu:
            kind: slurm
            queu: gpu
          nokind:
            queue: x
        """)
    with pytest.raises(ConfigError) as info:
        config.get("profiles")
    problems = info.value.problems
    assert f"{path}:4: profiles.gpu.queu: unknown key; did you mean 'queue'?" in problems
    assert any(f"{path}:5: profiles.nokind: kind must be one of" in p for p in problems)


def test_profile_of_kind_batch_serves_every_batch_system_and_no_other(env):
    path = write(user_file(env), """\
        profiles:
          big:
            kind: batch
            cores: 16
            job-cpu: 32
            resource-spec: select=1:ncpus=16
          bad:
            kind: batch
            cors: 16
        """)
    with pytest.raises(ConfigError) as info:       # keys are checked against all three
        config.get("profiles")
    assert info.value.problems == [f"{path}:9: profiles.bad.cors: unknown key; did you mean "
                                   f"'cores'?"]
    write(user_file(env), "profiles:\n  big:\n    kind: batch\n    cores: 16\n"
                          "    walltime: 90\n")
    config.refresh()
    # each system reads the values as its own (a bare walltime: SLURM minutes, PBS seconds)
    assert config.resolve("slurm", {}, profile="big")["walltime"] == 5400
    assert config.resolve("pbs", {}, profile="big")["walltime"] == 90
    assert config.resolve("sge", {}, profile="big")["cores"] == 16
    with pytest.raises(ConfigError, match="profile 'big' is for batch, it cannot configure "
                                          "local"):
        config.resolve("local", {}, profile="big")


# ------------------------------------------------------------------------------------- file errors

def test_unknown_key_names_file_line_key_and_suggestion(env):
    path = write(user_file(env), """\
        slurm:
          queue: debug
          walltme: "01:00:00"
        """)
    with pytest.raises(ConfigError) as info:
        config.get("slurm.queue")
    assert str(info.value) == f"{path}:3: slurm.walltme: unknown key; did you mean 'walltime'?"


def test_underscore_spelling_in_yaml_gets_the_dashed_suggestion(env):
    path = write(user_file(env), "slurm:\n  job_extra_directives: []\n")
    with pytest.raises(ConfigError, match="did you mean 'job-extra-directives'"):
        config.get("slurm")
    assert config.validate_file(path) == [
        f"{path}:2: slurm.job_extra_directives: unknown key; did you mean 'job-extra-directives'?"]


def test_unknown_section(env):
    path = write(user_file(env), "slrum:\n  queue: x\n")
    with pytest.raises(ConfigError, match=rf"{path}:1: slrum: unknown key; did you mean 'slurm'\?"):
        config.get("slurm")


def test_bad_size_message(env):
    path = write(user_file(env), "pbs:\n  memory: lots\n")
    with pytest.raises(ConfigError) as info:
        config.get("pbs.memory")
    message = str(info.value)
    assert message.startswith(f"{path}:2: pbs.memory: cannot read 'lots' as a size")
    assert "32GB" in message and "GiB" in message


def test_bad_time_message(env):
    path = write(user_file(env), "sge:\n  walltime: forever\n")
    with pytest.raises(ConfigError) as info:
        config.get("sge.walltime")
    message = str(info.value)
    assert message.startswith(f"{path}:2: sge.walltime: cannot read 'forever' as a duration")
    assert "HH:MM:SS" in message and "90m" in message


def test_bad_types(env):
    path = write(user_file(env), """\
        local:
          processes: maybe
          n-workers: 2.5
        slurm:
          job-extra-directives: --exclusive
          job-name: null
        """)
    problems = config.validate_file(path)
    assert problems == [
        f"{path}:2: local.processes: 'maybe' is not true or false",
        f"{path}:3: local.n-workers: 2.5 is not a whole number",
        f"{path}:5: slurm.job-extra-directives: '--exclusive' is not a list of strings; "
        "write [a, b] or one '- item' per line",
        f"{path}:6: slurm.job-name: null is not allowed here; give a string",
    ]
    with pytest.raises(ConfigError, match="4 problems"):
        config.get("slurm")


def test_yaml_syntax_error_names_file_and_line(env):
    path = write(user_file(env), "slurm:\n  queue: debug\n  account: [physics\n")
    with pytest.raises(ConfigError) as info:
        config.get("slurm.queue")
    message = str(info.value)
    assert message.startswith(f"{path}:")
    assert "invalid YAML" in message
    line = int(message[len(str(path)) + 1:].split(":")[0])
    assert line in (3, 4)


def test_yaml_syntax_error_bad_indent(env):
    path = write(user_file(env), "slurm:\n  queue: debug\n account: x\n")
    with pytest.raises(ConfigError, match=rf"^{path}:3: invalid YAML"):
        config.get("slurm.queue")


def test_duplicate_key(env):
    path = write(user_file(env), "slurm:\n  queue: a\n  queue: b\n")
    with pytest.raises(ConfigError, match=rf"{path}:3: slurm.queue: duplicate key \(first at line 2\)"):
        config.get("slurm.queue")


def test_top_level_must_be_mapping(env):
    path = write(user_file(env), "- slurm\n")
    with pytest.raises(ConfigError, match=rf"{path}:1: a config file is a mapping"):
        config.get("slurm")


# ---------------------------------------------------------------------------------- get and source

def test_get_missing_key(env):
    with pytest.raises(KeyError, match="alowed-failures.*did you mean 'scheduler.allowed-failures'"):
        config.get("scheduler.alowed-failures")
    assert config.get("scheduler.nothing", 5) == 5
    assert config.get("scheduler.allowed_failures") == 3      # underscores are accepted too


def test_get_returns_copies(env):
    config.get("slurm.job-extra-directives").append("x")
    config.get("slurm")["queue"] = "x"
    assert config.get("slurm.job-extra-directives") == []
    assert config.get("slurm.queue") is None


def test_source_of_list_and_free_mapping(env):
    path = write(user_file(env), """\
        ssh:
          connect-options:
            known_hosts: null
            port: 2222
        """)
    assert config.get("ssh.connect-options") == {"known_hosts": None, "port": 2222}
    assert config.source("ssh.connect-options.port") == f"{path}:4"
    with pytest.raises(KeyError):
        config.source("ssh.nothing")


def test_path_expands_home(env):
    write(user_file(env), "slurm:\n  log-directory: ~/logs\n")
    assert config.get("slurm.log-directory") == str(env / "home" / "logs")


# -------------------------------------------------------------------------------- show and validate

def test_show(env, monkeypatch):
    path = write(user_file(env), "slurm:\n  queue: debug\n")
    monkeypatch.setenv("JOBQUEUE_ADAPTIVE__WAIT_COUNT", "4")
    text = config.show(sources=False)
    assert "  queue: debug\n" in text and "#" not in text.split("shebang")[0]
    import yaml
    assert yaml.safe_load(text)["slurm"]["walltime"] == "00:30:00"
    with_sources = config.show(sources=True)
    lines = with_sources.splitlines()
    assert lines[0].startswith("# layers, later wins: default, ") and "environment" in lines[0]
    assert any(line.startswith("  queue: debug") and line.endswith(f"# {path}:2") for line in lines)
    assert any(line.startswith("  wait-count: 4") and line.endswith("# JOBQUEUE_ADAPTIVE__WAIT_COUNT")
               for line in lines)
    assert any(line.startswith("  allowed-failures: 3") and line.endswith("# default")
               for line in lines)
    assert yaml.safe_load(with_sources) == yaml.safe_load(text)


def test_validate_file(env):
    good = write(env / "good.yaml", PROFILES + "slurm:\n  memory: 32 GiB\n  walltime: '2-00:00:00'\n")
    assert config.validate_file(good) == []
    missing = env / "missing.yaml"
    assert config.validate_file(missing)[0].startswith(f"{missing}: cannot read the config file")
    bad = write(env / "bad.yaml", "slurm: [\n")
    assert "invalid YAML" in config.validate_file(bad)[0]


def test_package_defaults_match_schema(env):
    """Every schema key has a documented default, every default a type; null defaults are nullable."""
    import yaml
    defaults = yaml.safe_load(config.DEFAULTS_FILE.read_text())

    def check(tree, schema, path):
        assert set(tree) == set(schema), path
        for key, spec in schema.items():
            if isinstance(spec, dict):
                check(tree[key], spec, path + (key,))
            elif tree[key] is None:
                assert spec.endswith("?"), path + (key,)
    check(defaults, config.SCHEMA, ())
    text = config.DEFAULTS_FILE.read_text()
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            assert "#" in line, f"undocumented default: {line!r}"
    assert config.validate_file(config.DEFAULTS_FILE) == []


def test_import_reads_nothing():
    """Importing the module is cheap: no file is read and nothing heavy is imported."""
    script = textwrap.dedent(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("cfg", {str(Path(config.__file__))!r})
        cfg = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cfg)
        assert cfg._STATE is None
        heavy = {{"asyncio", "tornado", "difflib", "subprocess", "psutil"}} & set(sys.modules)
        assert not heavy, heavy
    """)
    subprocess.run([sys.executable, "-c", script], check=True)


# ------------------------------------------------------------------------------------------- units

@pytest.mark.parametrize("text, expected", [
    ("32GB", 32 * 10**9), ("32 GB", 32 * 10**9), ("32GiB", 32 * 2**30), ("32 GiB", 32 * 2**30),
    ("1.5T", int(1.5 * 2**40)), ("512M", 512 * 2**20), ("100kB", 100_000), ("4G", 4 * 2**30),
    ("4g", 4 * 2**30), ("2 MiB", 2 * 2**20), ("1PB", 10**15), ("10 B", 10), ("1e3", 1000),
    (" 7 ", 7), (0, 0), (1024, 1024), (2.5e9, 2_500_000_000),
])
def test_parse_bytes(text, expected):
    assert config.parse_bytes(text) == expected


@pytest.mark.parametrize("bad, reason", [
    ("lots", "expected a number and a unit"), ("32 XB", "unknown unit 'XB'"), ("", "expected a number"),
    ("GB", "expected a number"), (-1, "positive"), (None, "expected text or a number"),
    (True, "expected text or a number"), ("1 2 GB", "expected a number"),
])
def test_parse_bytes_errors(bad, reason):
    with pytest.raises(ValueError) as info:
        config.parse_bytes(bad)
    assert reason in str(info.value)
    assert "32GB" in str(info.value) and "KiB" in str(info.value)      # says what is allowed


@pytest.mark.parametrize("n, text", [
    (32 * 10**9, "32.00 GB"), (100_000, "100.00 kB"), (512, "512 B"), (1.5e12, "1.50 TB"),
    (950 * 10**6, "0.95 GB"), (0, "0 B"),
])
def test_format_bytes(n, text):
    assert config.format_bytes(n) == text


@pytest.mark.parametrize("value, seconds", [
    ("01:00:00", 3600), ("90m", 5400), ("1h30m", 5400), ("45s", 45), ("2 days", 172800),
    ("1-00:00:00", 86400), ("0-00:30", 1800), ("2-12", 216000), ("30:00", 1800), ("90:00", 5400),
    ("48:00:00", 172800), ("5 minutes", 300), ("1.5h", 5400), ("500ms", 0.5),
    ("1 hour, 30 minutes", 5400), ("1w", 604800), ("00:00:01.5", 1.5), ("30", 30), (30, 30),
    (1.5, 1.5), (0, 0),
])
def test_parse_timedelta(value, seconds):
    assert config.parse_timedelta(value) == seconds
    assert isinstance(config.parse_timedelta(value), float)


@pytest.mark.parametrize("bad, reason", [
    ("soon", ""), ("5 parsecs", "unknown unit 'parsecs'"), ("1:75:00", "below 60"),
    ("00:00:60", "below 60"), ("1:2:3:4", ""), ("", ""), (-5, "positive"),
    (None, "expected text or a number"), ("1-", ""),
    (float("inf"), "positive"),
])
def test_parse_timedelta_errors(bad, reason):
    with pytest.raises(ValueError) as info:
        config.parse_timedelta(bad)
    message = str(info.value)
    assert reason in message
    assert "HH:MM:SS" in message and "1h30m" in message and "D-HH:MM:SS" in message


@pytest.mark.parametrize("seconds, text", [
    (3600, "01:00:00"), (0, "00:00:00"), (59.2, "00:01:00"), (172800, "48:00:00"), (5430, "01:30:30"),
    ("1-00:00:00", "24:00:00"),
])
def test_format_walltime(seconds, text):
    assert config.format_walltime(seconds) == text


# ------------------------------------------------------------------- dask-jobqueue's config files

# The shape of dask-jobqueue 0.9's jobqueue.yaml as sites copy it: nulls for "not set", its
# defaults, its old names, sections for systems we do not run.
DASK_JOBQUEUE_YAML = """\
jobqueue:
  slurm:
    name: dask-worker
    cores: 16
    memory: "64 GB"
    processes: null
    interface: ib0
    death-timeout: 60
    local-directory: /scratch/$USER
    extra: null
    worker-command: "distributed.cli.dask_worker"
    worker-extra-args: ["--lifetime", "55m"]
    shebang: "#!/usr/bin/env bash"
    queue: normal
    project: oldproj
    account: null
    walltime: '01:00:00'
    env-extra: ['module load python']
    job-script-prologue: []
    job-cpu: null
    job-mem: null
    job-extra: ['--exclusive']
    job-extra-directives: []
    job-directives-skip: []
    log-directory: null
    scheduler-options: {interface: ib1, dashboard_address: ":8788"}
    shared-temp-directory: /shared/tmp
    nanny: false
  pbs:
    name: dask-worker
    cores: null
    memory: null
    resource-spec: "select=1:ncpus=24"
    header-skip: ['-j oe']
  lsf:
    cores: null
    memory: null
"""


def dask_file(env, where="home") -> Path:
    path = (env / "home" / ".config" / "dask" / "jobqueue.yaml" if where == "home"
            else env / "etc" / "dask" / "jobqueue.yaml")
    return write(path, DASK_JOBQUEUE_YAML)


def line_of(path, text) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_dask_jobqueue_file_is_read_with_its_keys_translated(env):
    path = dask_file(env)
    with pytest.warns(Warning) as caught:
        slurm = config.resolve("slurm")
    assert (slurm["job_name"], slurm["cores"], slurm["memory"]) == ("dask-worker", 16, 64 * 10**9)
    assert slurm["interface"] == "ib0" and slurm["queue"] == "normal"
    assert slurm["account"] == "oldproj" and slurm["walltime"] == 3600.0
    assert slurm["job_script_prologue"] == ["module load python"]
    assert slurm["job_extra_directives"] == ["--exclusive"]
    assert slurm["worker_extra_args"] == ["--lifetime", "55m"]
    assert slurm["processes"] is None                  # null: not set, our default stays
    pbs = config.resolve("pbs")
    assert pbs["resource_spec"] == "select=1:ncpus=24" and pbs["job_directives_skip"] == ["-j oe"]
    messages = {(w.category, str(w.message)) for w in caught}
    env_extra = line_of(path, "env-extra")
    assert (FutureWarning, f"{path}:{env_extra}: jobqueue.slurm.env-extra is dask-jobqueue's "
            "old name for job-script-prologue; read as slurm.job-script-prologue") in messages
    # scheduler-options and shared-temp-directory are carried as they are
    assert slurm["scheduler_options"] == {"interface": "ib1", "dashboard_address": ":8788"}
    assert slurm["shared_temp_directory"] == "/shared/tmp"
    nanny = line_of(path, "nanny")
    assert (UserWarning, f"{path}:{nanny}: jobqueue.slurm.nanny: jobqueue has "
            "no such setting; ignored (value False)") in messages
    # its defaults for settings we do not have, its nulls, and lsf's empty section: no warning
    assert not [m for _, m in messages if "worker-command" in m or "scheduler-options" in m
                or "shared-temp" in m or "lsf" in m or "job-cpu" in m]
    assert all(w.filename == __file__ for w in caught)


def test_our_files_win_over_dask_jobqueue_files(env):
    dask_file(env, "etc")
    write(user_file(env), "slurm:\n  queue: debug\n")
    with pytest.warns(Warning):
        slurm = config.resolve("slurm", {"cores": 4})
    assert slurm["queue"] == "debug" and slurm["cores"] == 4 and slurm["memory"] == 64 * 10**9


def test_config_show_sources_names_the_dask_jobqueue_file_and_key(env):
    path = dask_file(env)
    with pytest.warns(Warning):
        text = config.show(sources=True)
    assert text.splitlines()[0] == (f"# layers, later wins: default, {path} (dask-jobqueue, "
                                    "translated)")
    prologue = [line for line in text.splitlines() if line.startswith("  job-script-prologue:")]
    assert prologue[0].endswith(f"# {path}:{line_of(path, 'env-extra')} (dask-jobqueue "
                                "jobqueue.slurm.env-extra)")


def test_bad_value_in_a_dask_jobqueue_file_names_its_line(env):
    path = write(env / "home" / ".config" / "dask" / "jobqueue.yaml",
                 "jobqueue:\n  sge:\n    memory: lots\n")
    with pytest.raises(ConfigError, match=rf"{path}:3 \(dask-jobqueue jobqueue\.sge\.memory\): "
                                          r"sge\.memory: cannot read 'lots' as a size"):
        config.get("sge.memory")
