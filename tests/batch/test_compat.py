"""What a dask-jobqueue 0.9 user writes, read as they mean it: its old parameter names (with a
FutureWarning naming ours), ``project`` beside ``account``, its processes x threads split."""
import re
import warnings

import pytest

from jobqueue.batch import script
from jobqueue.config import ConfigError

from test_templates import directives, isolated_config, render, worker_argv  # noqa: F401

OLD_NAMES = [
    ("env_extra", ["module load python"], "job_script_prologue"),
    ("job_extra", ["--exclusive"], "job_extra_directives"),
    ("extra", ["--lifetime", "1h"], "worker_extra_args"),
    ("header_skip", ["--mem"], "job_directives_skip"),
]


@pytest.mark.parametrize("kind", ["slurm", "pbs", "sge"])
@pytest.mark.parametrize("old, value, new", OLD_NAMES)
def test_old_name_is_read_as_the_new_one_with_a_future_warning(isolated_config, kind, old,
                                                               value, new):
    with pytest.warns(FutureWarning, match=rf"{old} is dask-jobqueue's old name for {new}") as w:
        settings = script.settings(kind, {"cores": 2, "memory": "1GB", old: value})
    assert settings[new] == value
    assert w[0].filename == __file__          # attributed to the caller, not to jobqueue
    assert settings == script.settings(kind, {"cores": 2, "memory": "1GB", new: value})


def test_old_names_land_in_the_job_script(isolated_config):
    with pytest.warns(FutureWarning):
        text = render("slurm", cores=2, memory="2GB", env_extra=["module load python"],
                      job_extra=["--exclusive"], header_skip=["--mem"])
    assert "\nmodule load python\n" in text
    assert "--exclusive" in directives(text, "#SBATCH")
    assert not any("--mem" in d for d in directives(text, "#SBATCH"))


def test_new_name_wins_over_the_old_one_with_a_warning(isolated_config):
    with pytest.warns(FutureWarning, match=r"both are given: job_extra=\['--a'\] is ignored"):
        settings = script.settings("pbs", {"cores": 2, "memory": "1GB", "job_extra": ["--a"],
                                           "job_extra_directives": ["--b"]})
    assert settings["job_extra_directives"] == ["--b"]


def test_job_extra_is_not_taken_for_job_array(isolated_config):
    with pytest.warns(FutureWarning):
        script.settings("slurm", {"cores": 2, "memory": "1GB", "job_extra": ["--x"]})
    with pytest.raises(ConfigError) as e:
        script.settings("slurm", {"cores": 2, "memory": "1GB", "job_extras": ["--x"]})
    assert "job_array" not in str(e.value)


def test_old_names_are_only_batch_settings(isolated_config):
    from jobqueue import config
    with pytest.raises(ConfigError, match=r"argument: local\.extra: unknown setting"):
        config.resolve("local", {"extra": ["--x"]})


def test_account_wins_over_project_with_a_warning(isolated_config):
    with pytest.warns(FutureWarning, match=r"account='a' and project='b' .* account wins"):
        text = render("slurm", cores=2, memory="1GB", account="a", project="b")
    assert "-A a" in directives(text, "#SBATCH")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert script.settings("sge", {"cores": 2, "memory": "1GB", "project": "p"})[
            "account"] == "p"


@pytest.mark.parametrize("cores, workers, threads", [
    (1, 1, 1), (2, 2, 1), (4, 4, 1), (6, 3, 2), (8, 4, 2), (10, 5, 2), (12, 4, 3), (24, 6, 4)])
def test_job_script_splits_cores_as_dask_jobqueue(isolated_config, cores, workers, threads):
    argv = worker_argv(render("pbs", cores=cores, memory="12GB"))
    options = dict(zip(argv[5::2], argv[6::2]))
    assert (int(options["--nworkers"]), int(options["--nthreads"])) == (workers, threads)
    assert re.search(rf"ncpus={cores}\b", render("pbs", cores=cores, memory="12GB"))
