"""Every reader checks a finished run against its manifest: a changed file is one line naming it and the
command that rebuilds it, and that command, run as written, rebuilds it."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import textwrap

import pytest
from test_trust import flip_a_byte as flip
from test_trust import invoke

import nasengine
from bench.common import json_lines
from nasengine.errors import NasEngineError
from nasengine.rundir.lock import LOCK_NAME
from nasengine.rundir.manifest import Tampered


def cut_in_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def raise_a_score(path):
    """A hand edit that keeps the history well-formed: the first candidate's score made the best."""
    lines = path.read_text().splitlines()
    lines[0] = re.sub(r'"score": [-0-9.e]+', '"score": 0.99', lines[0])
    path.write_text("\n".join(lines) + "\n")


def files_and_times(folder):
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


READERS = {
    "show": lambda run: ["show", run],
    "report": lambda run: ["report", run],
    "export": lambda run: ["export", run, "--format", "safetensors", "--image-size", "64"],
}
SLOW = pytest.mark.slow  # python -m bench.corruption covers every kind of file; make test keeps two
DAMAGES = [
    ("search/history.jsonl", cut_in_half, "nasengine search {run} --redo", ()),
    ("search/history.jsonl", raise_a_score, "nasengine search {run} --redo", SLOW),
    ("retrain/best/test.json", flip, "nasengine retrain {run} --redo", ()),
    ("pretrain/log.jsonl", flip, "nasengine pretrain {run} --redo", SLOW),
    ("finetune/supernet.pt", cut_in_half, "nasengine finetune {run} --redo", SLOW),
]


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize(
    "name, damage, hint",
    [pytest.param(n, d, h, marks=m, id=f"{n}-{d.__name__}") for n, d, h, m in DAMAGES],
)
def test_every_reader_names_a_changed_file_and_its_redo(smoke_run_copy, reader, name, damage, hint):
    damage(smoke_run_copy / name)
    lock = smoke_run_copy / LOCK_NAME
    before = files_and_times(smoke_run_copy)
    with pytest.raises(Tampered) as info:
        invoke(*READERS[reader](smoke_run_copy))
    if reader == "report":  # a writer: it took the run's lock, and wrote its pid into the lock file
        before[LOCK_NAME] = lock.stat().st_mtime_ns
    message = str(info.value)
    assert message.startswith(f"{smoke_run_copy / name} changed after its phase finished") and "\n" not in message
    assert message.endswith(hint.format(run=smoke_run_copy))
    assert files_and_times(smoke_run_copy) == before  # refused before it wrote anything


def test_the_suggested_redo_rebuilds_the_history_as_it_was(smoke_run, smoke_run_copy):
    history = smoke_run_copy / "search" / "history.jsonl"
    cut_in_half(history)
    with pytest.raises(Tampered) as info:
        invoke("show", smoke_run_copy)
    command = shlex.split(str(info.value).rsplit("; redo it: ", 1)[1])
    invoke(*command[1:], "--quiet")
    assert json_lines(history) == json_lines(smoke_run / "search" / "history.jsonl")
    invoke("show", smoke_run_copy)  # whole again (the later phases were redone by the command's run)


def test_the_backbone_of_a_changed_checkpoint_is_refused(smoke_run_copy):
    flip(smoke_run_copy / "retrain" / "best" / "finetune" / "checkpoint.pt")
    with pytest.raises(NasEngineError, match=r"retrain/best/finetune/checkpoint.pt"):
        nasengine.backbone(run=smoke_run_copy)


def test_an_unfinished_report_is_named_and_written_again_by_the_hint(smoke_run_copy):
    (smoke_run_copy / "report" / "done.json").unlink()
    with pytest.raises(Tampered, match=r"report is unfinished .* write it again: nasengine report ") as info:
        invoke("show", smoke_run_copy)
    command = shlex.split(str(info.value).rsplit(": ", 1)[1])
    invoke(*command[1:])
    assert (smoke_run_copy / "report" / "done.json").exists()
    invoke("show", smoke_run_copy)


def test_report_waits_for_the_process_that_holds_the_run_and_show_reads_it(smoke_run_copy):
    """While a run writes (here: a process holding its lock), ``report`` is refused before it writes and
    ``show`` reads the run without taking a report being rewritten for a damaged one."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import time
                from nasengine.rundir.lock import RunLock
                RunLock({str(smoke_run_copy)!r}).acquire()
                print("held", flush=True)
                time.sleep(120)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        (smoke_run_copy / "report" / "done.json").unlink()  # as while the holder rewrites its report
        before = files_and_times(smoke_run_copy)
        with pytest.raises(NasEngineError, match=r"is in use by another nasengine process \(pid \d+"):
            invoke("report", smoke_run_copy)
        invoke("show", smoke_run_copy)
        assert files_and_times(smoke_run_copy) == before
    finally:
        holder.kill()
        holder.wait()


def test_a_deleted_done_json_of_a_retrained_networks_training_is_noticed_and_rebuilt(smoke_run, smoke_run_copy):
    done = smoke_run_copy / "retrain" / "best" / "finetune" / "done.json"
    done.unlink()
    for reader in ("show", "report", "run"):
        arguments = ["run", "--out", smoke_run_copy] if reader == "run" else [reader, smoke_run_copy]
        with pytest.raises(Tampered) as info:
            invoke(*arguments)
        assert str(info.value).startswith(f"{done} is missing, but its finished phase")
    command = shlex.split(str(info.value).rsplit(": ", 1)[1])
    assert command == ["nasengine", "retrain", str(smoke_run_copy), "--redo"]
    invoke(*command[1:], "--quiet")
    test = "retrain/best/test.json"
    assert json_lines_free(smoke_run_copy / test) == json_lines_free(smoke_run / test)


def json_lines_free(path):
    """A JSON file's content without wall-clock fields."""
    import json

    from bench.common import comparable

    return comparable(json.loads(path.read_text()))


def test_report_refuses_to_rewrite_a_report_whose_phases_lost_their_manifest(smoke_run_copy):
    (smoke_run_copy / "retrain" / "done.json").unlink()
    with pytest.raises(Tampered) as info:
        invoke("report", smoke_run_copy)
    message = str(info.value)
    assert message.startswith(f"{smoke_run_copy / 'retrain' / 'done.json'} is missing, but ")
    command = shlex.split(message.rsplit(": ", 1)[1])
    assert command == ["nasengine", "retrain", str(smoke_run_copy), "--redo"]
    invoke(*command[1:], "--quiet")
    invoke("report", smoke_run_copy)
    invoke("show", smoke_run_copy)
