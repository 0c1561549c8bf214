"""Every command an error message suggests works as written: each test provokes the error, takes the
command out of the message and runs it, then shows that what was refused now works.

(The hints of damaged runs are followed in ``test_manifest.py``, the divergence hint in ``test_trust.py``,
the full disk's in ``test_bad_inputs.py`` and VOC's class list in ``test_data_validation.py``.)"""

from __future__ import annotations

import re
import shlex
import shutil

import pytest
from click.testing import CliRunner

from nasengine.cli import cli
from nasengine.errors import NasEngineError
from nasengine.rundir.records import read_json

QUOTED = re.compile(r"'(nasengine [^']+)'")


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def refused(*args) -> str:
    with pytest.raises(NasEngineError) as info:
        invoke(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


def suggested(message: str) -> list[list[str]]:
    """The ``'nasengine ...'`` commands quoted in ``message``, as argument lists without ``nasengine``."""
    return [shlex.split(command)[1:] for command in QUOTED.findall(message)]


def without(run, *folders):
    for folder in folders:
        shutil.rmtree(run / folder)
    return run


@pytest.mark.slow
def test_export_before_retraining_suggests_retrain_or_run_and_both_work(smoke_run_copy, tmp_path):
    run = without(smoke_run_copy, "retrain", "report")
    other = shutil.copytree(run, tmp_path / "other")
    export = ["export", run, "--format", "safetensors", "--image-size", "64", "--out", tmp_path / "export"]
    retrain, whole = suggested(refused(*export))
    assert retrain == ["retrain", str(run)] and whole == ["run", "--out", str(run)]
    invoke(*retrain, "--quiet")
    invoke(*export)
    invoke(*[str(other) if part == str(run) else part for part in whole], "--quiet")  # the whole protocol, resumed
    assert (other / "report" / "done.json").is_file()


@pytest.mark.slow
def test_export_of_an_architecture_not_retrained_suggests_a_run_that_trains_it(smoke_run_copy, tmp_path):
    arch = "1," * 19 + "1"
    export = ["--arch", arch, "--format", "safetensors", "--image-size", "64", "--out", tmp_path / "export"]
    (command,) = suggested(refused("export", smoke_run_copy, *export))
    assert command == ["run", "--config", str(smoke_run_copy / "config.toml"), "--arch", arch, "--out", "NEW_DIR"]
    invoke(*command[:-1], tmp_path / "new", "--quiet")
    invoke("export", tmp_path / "new", *export)


def test_retraining_another_architecture_over_a_finished_retrain_suggests_redo(smoke_run, smoke_run_copy):
    arch = "1," * 19 + "1"
    message = refused("retrain", smoke_run_copy, "--arch", arch)  # it returned the old network's result before
    command = shlex.split(message.rsplit(" in its place: ", 1)[1])
    assert command == ["nasengine", "retrain", str(smoke_run_copy), "--arch", arch, "--redo"]
    invoke(*command[1:], "--quiet")
    assert read_json(smoke_run_copy / "retrain" / "best" / "test.json")["arch"] == [1] * 20


@pytest.mark.slow
def test_what_needs_a_search_suggests_it(smoke_run_copy, tmp_path):
    run = without(smoke_run_copy, "search", "retrain", "report")
    for command in (["retrain", run], ["rank-check", run, "-n", "2"], ["report", run, "--compare", run]):
        assert suggested(refused(*command)) == [["search", str(run)]], command
    invoke("search", run, "--quiet")
    invoke("retrain", run, "--quiet")
    invoke("report", run)


@pytest.mark.slow
def test_a_phase_before_its_inputs_suggests_the_phase_it_needs(smoke_run_copy):
    run = without(smoke_run_copy, "finetune", "search", "retrain", "report")
    (command,) = suggested(refused("search", run))
    assert command == ["finetune", str(run)]
    invoke(*command, "--quiet")
    invoke("search", run, "--quiet")


@pytest.mark.slow
def test_a_random_baseline_compared_with_an_unfinished_run_suggests_finishing_it(smoke_run_copy, tmp_path):
    run = without(smoke_run_copy, "retrain", "report")
    baseline = ["random-baseline", "--preset", "smoke", "-n", "1", "--compare", run, "--out", tmp_path / "b"]
    (command,) = suggested(refused(*baseline, "--quiet"))
    assert command == ["retrain", str(run)]
    invoke(*command, "--quiet")
    invoke(*baseline, "--quiet")


@pytest.mark.slow
def test_a_phase_command_on_a_folder_that_is_no_run_suggests_starting_one(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (command,) = suggested(refused("pretrain", folder))
    assert command == ["run", "--out", str(folder)]
    invoke(*command, "--preset", "smoke", "--quiet")  # as written, with the smallest preset for the test
    invoke("pretrain", folder)
