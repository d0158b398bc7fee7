"""jobqueue.node: addresses, private files, the worker command line."""
import argparse
import json
import os
import shlex
import stat
import subprocess
import sys

import psutil
import pytest

from jobqueue import node
from jobqueue.core.scheduler import Scheduler
from jobqueue.core import loop as loop_mod

NOBODY = 65534


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- private files ------------------------------------------------------------------------------

def test_private_directory_and_file_are_ours_alone(env):
    path = node.private_path("c.token")
    directory = os.path.dirname(path)
    assert directory == os.path.expanduser("~/.jobqueue") and mode(directory) == 0o700
    node.write_private(path, "secret")
    assert mode(path) == 0o600 and open(path).read() == "secret"
    node.write_private(path, "again")      # a file of ours left by an earlier run: replaced
    assert open(path).read() == "again" and mode(path) == 0o600
    os.chmod(directory, 0o755)             # loosened by hand: tightened again
    node.private_path("x")
    assert mode(directory) == 0o700
    node.remove_private(path)
    node.remove_private(path)              # gone already: fine
    assert not os.path.exists(path)


def test_a_reader_sees_the_whole_file_or_none(tmp_path):
    """The text is renamed into place: the path never names an empty or half-written file (a
    client polling for a scheduler file read one as invalid JSON), and nothing else is left."""
    path = str(tmp_path / "scheduler.json")
    seen = []

    def spy_rename(src, dst, _rename=os.rename):
        seen.append((os.path.exists(dst), os.path.getsize(src)))   # just before the rename
        _rename(src, dst)

    import unittest.mock
    with unittest.mock.patch.object(node.os, "rename", spy_rename):
        node.write_private(path, "x" * 100_000)
    assert seen == [(False, 100_000)] and os.listdir(tmp_path) == ["scheduler.json"]
    assert open(path).read() == "x" * 100_000


def test_planted_symlink_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "attacker-reads-this"
    target.write_text("")
    planted = tmp_path / "scheduler.json"
    planted.symlink_to(target)
    with pytest.raises(node.PrivateFileError, match=r"scheduler.json exists and is a symlink: "
                                                    r"refusing to write the token through it"):
        node.write_scheduler_file(str(planted), "tcp://127.0.0.1:1", "secret")
    assert target.read_text() == "" and planted.is_symlink()


def test_planted_file_of_another_user_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o1777)               # like /tmp
    planted = shared / "scheduler.json"
    planted.write_text("")
    os.chmod(planted, 0o666)
    os.chown(planted, NOBODY, NOBODY)      # the tests run as root, as CI does
    with pytest.raises(node.PrivateFileError, match=rf"belongs to uid {NOBODY}, not to you"):
        node.write_scheduler_file(str(planted), "tcp://127.0.0.1:1", "secret")
    assert planted.read_text() == ""


def test_private_directory_of_another_user_or_a_symlink_is_refused(env, tmp_path):
    home = os.path.expanduser("~")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, os.path.join(home, ".jobqueue"))
    with pytest.raises(node.PrivateFileError, match="is not a directory .a symlink or a file"):
        node.private_path("c.token")
    os.unlink(os.path.join(home, ".jobqueue"))
    os.mkdir(os.path.join(home, ".jobqueue"), 0o700)
    os.chown(os.path.join(home, ".jobqueue"), NOBODY, NOBODY)
    with pytest.raises(node.PrivateFileError, match=rf"belongs to uid {NOBODY}"):
        node.private_path("c.token")


def test_scheduler_refuses_a_planted_scheduler_file(tmp_path):
    """Issue 14's attack: another user creates the scheduler file first to read the token."""
    target = tmp_path / "theirs"
    target.write_text("")
    planted = tmp_path / "scheduler.json"
    planted.symlink_to(target)
    s = Scheduler("secret", scheduler_file=str(planted))
    with pytest.raises(node.PrivateFileError, match="symlink"):
        loop_mod.sync(s.start(), 10)
    assert s.status == "closed" and target.read_text() == "" and planted.is_symlink()
    out = subprocess.run([sys.executable, "-m", "jobqueue", "scheduler", "--port", "0",
                          "--host", "127.0.0.1", "--scheduler-file", str(planted)],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, JOBQUEUE_TOKEN="secret"))
    assert out.returncode == 1 and "refusing to write the token through it" in out.stderr
    assert target.read_text() == ""


def test_scheduler_file_round_trip(tmp_path):
    path = node.write_scheduler_file(str(tmp_path / "s.json"), "tcp://h:1", "tok")
    assert json.loads(open(path).read()) == {"address": "tcp://h:1", "token": "tok"}
    assert node.read_scheduler_file(path) == ("tcp://h:1", "tok") and mode(path) == 0o600


def test_batch_commands_never_see_the_token(monkeypatch):
    monkeypatch.setenv("JOBQUEUE_TOKEN", "secret")
    env = node.environment_without_secrets()
    assert "JOBQUEUE_TOKEN" not in env and env["PATH"] == os.environ["PATH"]


# -- addresses -----------------------------------------------------------------------------------

def test_addresses():
    assert node.interface_address("lo") == "127.0.0.1"
    with pytest.raises(ValueError, match="no network interface 'nope0'"):
        node.interface_address("nope0")
    assert node.route_source("127.0.0.1") == "127.0.0.1"
    assert node.choose_address("10.1.2.3", "lo") == "10.1.2.3"
    assert node.choose_address(None, "lo") == "127.0.0.1"
    assert node.choose_address(toward="127.0.0.1") == "127.0.0.1"
    assert node.choose_address("0.0.0.0") == node.public_address()
    assert node.public_address() in {a.address for addresses in psutil.net_if_addrs().values()
                                     for a in addresses} | {"127.0.0.1"}


# -- the worker command line ---------------------------------------------------------------------

def parse(argv, nanny=True):
    p = argparse.ArgumentParser()
    node.add_worker_arguments(p, nanny=nanny)
    return p.parse_args(argv)


def test_worker_command_round_trips_through_both_parsers():
    cmd = node.WorkerCommand("tcp://10.0.0.1:8786", nthreads=4, nworkers=2,
                             memory_limit=16_000_000_000, name="job-1", death_timeout=120.0,
                             lifetime=3300.0, lifetime_stagger=60.0, interface="ib0")
    assert cmd.args() == ["worker", "tcp://10.0.0.1:8786", "--nthreads", "4", "--nworkers", "2",
                          "--memory-limit", "16000000000", "--name", "job-1",
                          "--death-timeout", "120", "--lifetime", "3300",
                          "--lifetime-stagger", "60", "--interface", "ib0"]
    assert node.WorkerCommand.from_args(parse(cmd.args()[1:])) == cmd
    one = node.WorkerCommand("tcp://h:1", nthreads=2, memory_limit=10, memory_pause=0.5,
                             heartbeat_interval=0.25)
    process = one.process_argv("python")
    assert process[:3] == ["python", "-m", "jobqueue.core.worker"]
    assert node.WorkerCommand.from_args(parse(process[3:], nanny=False)) == one
    # sizes and durations are read the same way by both
    args = parse(["tcp://h:1", "--memory-limit", "4GB", "--death-timeout", "2m"], nanny=False)
    assert (args.memory_limit, args.death_timeout) == (4_000_000_000, 120.0)


def test_worker_command_resolves_auto_and_config(env, monkeypatch):
    monkeypatch.setenv("JOBQUEUE_WORKER__DEATH_TIMEOUT", "45s")
    cmd = node.WorkerCommand("tcp://h:1", nthreads="auto", nworkers=2, memory_limit="auto",
                             interface="lo").resolved()
    assert cmd.nthreads == max(1, node.cpu_count() // 2)
    assert cmd.memory_limit == psutil.virtual_memory().total // 2
    assert cmd.host == "127.0.0.1" and cmd.death_timeout == 45.0
    assert cmd.heartbeat_interval == 1.0 and cmd.memory_pause == 0.8


def test_bad_worker_options_are_refused_with_the_reason(capsys):
    with pytest.raises(SystemExit):
        parse(["tcp://h:1", "--memory-limit", "lots"])
    assert "cannot read 'lots' as a size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["tcp://h:1", "--nthreads", "auto"], nanny=False)
    with pytest.raises(SystemExit):
        parse(["tcp://h:1", "--memory-pause", "2"])
    assert "between 0 and 1" in capsys.readouterr().err


def test_resources_and_preload_round_trip_through_both_parsers():
    cmd = node.WorkerCommand("tcp://h:1", name="w", resources={"GPU": 2, "MEM": 0.5},
                             preload=("site_setup", "/opt/setup.py"))
    args = cmd.args()
    assert args[args.index("--resources") + 1] == "GPU=2,MEM=0.5"
    assert [args[i + 1] for i, a in enumerate(args) if a == "--preload"] == [
        "site_setup", "/opt/setup.py"]
    assert node.WorkerCommand.from_args(parse(args[1:])) == cmd
    process = cmd.process_argv("python")            # each worker process gets both
    assert node.WorkerCommand.from_args(parse(process[3:], nanny=False)) == cmd


def test_shell_line_quotes_every_value_but_expands_the_name():
    cmd = node.WorkerCommand("tcp://h:1", nthreads=2, name="job-${JOBQUEUE_JOB_ID}",
                             interface="ib0")
    line = cmd.shell("/opt/my python", extra=["--preload", "a b"])
    assert line == ("'/opt/my python' -m jobqueue worker tcp://h:1 \\\n"
                    "    --nthreads 2 --name \"job-${JOBQUEUE_JOB_ID}\" --interface ib0 "
                    "--preload 'a b'")
    words = shlex.split(line.replace("\\\n", " ").replace("${JOBQUEUE_JOB_ID}", "7"))
    assert words[words.index("--name") + 1] == "job-7"
    assert cmd.shell("py", "site.worker").startswith("py -m site.worker tcp://h:1 \\\n")
