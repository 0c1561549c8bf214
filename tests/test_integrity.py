"""No silent corruption: checksummed checkpoints, stale temporary files, strict history, the run lock."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from nasengine.errors import NasEngineError
from nasengine.rundir.atomic import atomic_write, is_stale_temp_file, remove_stale_temp_files
from nasengine.rundir.checkpoint import (
    CODE_RUNNING,
    TRAILER_LENGTH,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from nasengine.rundir.history import History, read_history
from nasengine.rundir.lock import RunLock, hold_run_lock

STATE = {"model": {"weight": torch.arange(6.0).reshape(2, 3)}, "iteration": 7}


def _assert_one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


def test_checkpoint_round_trip_is_verified(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(STATE, path)
    assert path.read_bytes()[-TRAILER_LENGTH:].startswith(b"\nNASENGINE-SHA256:")
    assert verify_checkpoint(path) is None
    state = load_checkpoint(path)
    assert torch.equal(state["model"]["weight"], STATE["model"]["weight"]) and state["iteration"] == 7
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_flipped_byte_is_refused(tmp_path):
    path = tmp_path / "pretrain" / "checkpoint.pt"
    save_checkpoint(STATE, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert verify_checkpoint(path) == "SHA-256 mismatch: the file changed after it was written"
    with pytest.raises(NasEngineError) as info:
        load_checkpoint(path, phase="pretrain")
    assert _assert_one_line(info) == (
        f"checkpoint {path} is corrupt (SHA-256 mismatch: the file changed after it was written); "
        "redo that phase: nasengine pretrain RUN_DIR --redo"
    )
    with pytest.raises(NasEngineError, match="redo that phase: nasengine PHASE RUN_DIR --redo, for the phase that"):
        load_checkpoint(path)
    (tmp_path / "config.toml").write_text("")  # inside a run directory: the command names it
    with pytest.raises(NasEngineError, match=f"redo that phase: nasengine pretrain {tmp_path} --redo$"):
        load_checkpoint(path)


def test_old_format_checkpoint_loads_unverified(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save(STATE, path)  # what nasengine wrote before the trailer
    assert verify_checkpoint(path) is None
    assert torch.equal(load_checkpoint(path)["model"]["weight"], STATE["model"]["weight"])


def test_missing_and_garbled_checkpoints_are_one_line_errors(tmp_path):
    assert verify_checkpoint(tmp_path / "absent.pt") == "it does not exist"
    with pytest.raises(NasEngineError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pt")
    path = tmp_path / "garbled.pt"
    path.write_bytes(b"not a checkpoint at all" * 10)
    assert verify_checkpoint(path) is not None  # no trailer, so verifying it means unpickling it
    with pytest.raises(NasEngineError) as info:
        load_checkpoint(path, phase="finetune")
    assert _assert_one_line(info).startswith(f"checkpoint {path} cannot be read (")
    assert _assert_one_line(info).endswith("); redo that phase: nasengine finetune RUN_DIR --redo")
    torch.save(STATE, path)
    path.write_bytes(path.read_bytes()[:-100])  # an old-format file cut short
    assert verify_checkpoint(path).startswith("RuntimeError: ")
    with pytest.raises(NasEngineError, match="cannot be read \\(RuntimeError: ") as info:
        load_checkpoint(path)
    _assert_one_line(info)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("save", [torch.save, save_checkpoint], ids=["plain", "checksummed"])
def test_code_running_pickle_is_refused_in_one_line(tmp_path, save):
    # checksummed too: a valid trailer proves nothing about who wrote the file
    marker, path = tmp_path / "pwned", tmp_path / "checkpoint.pt"
    save({"model": _Evil(marker)}, path)
    with pytest.raises(NasEngineError) as info:
        load_checkpoint(path)
    message = _assert_one_line(info)
    assert message == (
        f"checkpoint {path} holds objects other than tensors and plain data (refused: it could run code); "
        "it was not written by nasengine"
    )
    assert "weights_only" not in message
    assert verify_checkpoint(path) == (None if save is save_checkpoint else "it " + CODE_RUNNING)
    assert not marker.exists()


def test_stale_temp_files_are_removed_and_real_files_kept(tmp_path):
    stale = [
        "pretrain/.tmp-checkpoint.pt.zz99yy88",
        ".tmp-summary.json.0a_b1c2d",
        "search/.tmp-history.jsonl.q1w2e3r4",
    ]
    kept = [
        ".lock",
        "checkpoint.pt",
        "done.json",
        "config.toml",
        "search/history.jsonl",
        ".gitignore",
        "pretrain/.hidden",
        ".notes.txt.abcdefgh",
        ".config.toml.bak",
        "pretrain/supernet.pt",
    ]
    for name in stale + kept:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert remove_stale_temp_files(tmp_path) == len(stale)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == sorted(kept)
    assert remove_stale_temp_files(tmp_path) == 0


def test_killed_write_leaves_a_recognisable_temp_file(tmp_path):
    class Killed(BaseException):
        pass

    def write(handle):
        handle.write(b"partial")
        names.extend(p.name for p in tmp_path.iterdir())
        raise Killed

    names = []
    with pytest.raises(Killed):
        atomic_write(tmp_path / "checkpoint.pt", write)
    assert len(names) == 1 and names[0].startswith(".tmp-checkpoint.pt.") and is_stale_temp_file(names[0])
    assert list(tmp_path.iterdir()) == []  # an interrupted (not killed) write cleans up after itself


def _record(arch, score=0.5):
    return {"arch": list(arch), "flops": 1, "score": score}


def _lines(*records):
    return "".join(json.dumps(r) + "\n" for r in records)


def test_history_drops_a_torn_last_line(tmp_path):
    path = tmp_path / "history.jsonl"
    good = _lines(_record([0, 1]), _record([1, 1], float("nan")))
    for torn in ('{"arch": [2, 2], "sco', '{"arch": [2, 2], "score": 1.0}', '{"arch": [2, 2], "sco\n'):
        path.write_text(good + torn)
        history = History(path)
        assert len(history) == 2 and (0, 1) in history and [2, 2] not in history
        assert path.read_text() == good
    history.append(_record([3, 0]))
    assert [r["arch"] for r in read_history(path)] == [[0, 1], [1, 1], [3, 0]]


def test_history_garbled_middle_line_stops_and_keeps_the_file(tmp_path):
    path = tmp_path / "history.jsonl"
    text = _lines(_record([0, 1])) + '{"arch": [1, 1], "score"\n' + _lines(_record([2, 2]))
    path.write_text(text)
    with pytest.raises(NasEngineError) as info:
        History(path)
    message = _assert_one_line(info)
    assert message.startswith(f"{path} line 2 is not a valid history record (not valid JSON")
    assert message.endswith("; fix or delete that line, or redo the search: nasengine search RUN_DIR --redo")
    assert path.read_text() == text


@pytest.mark.parametrize(
    "line, reason",
    [
        ('{"arch": [0, 1], "flops": 1}', "no numeric 'score'"),
        ('{"arch": [0, 1], "score": null}', "no numeric 'score'"),
        ('{"arch": [0, 1], "score": "0.5"}', "no numeric 'score'"),
        ('{"score": 0.5}', "no 'arch' list of integers"),
        ('{"arch": [0, 1.5], "score": 0.5}', "no 'arch' list of integers"),
        ("[0, 1]", "a JSON list, not an object"),
        ("", "not valid JSON"),
    ],
)
def test_history_record_without_fields_stops(tmp_path, line, reason):
    path = tmp_path / "history.jsonl"
    path.write_text(_lines(_record([0, 0])) + line + "\n" + _lines(_record([2, 2])))
    with pytest.raises(NasEngineError, match=f"line 2 is not a valid history record \\({reason}") as info:
        read_history(path)
    _assert_one_line(info)


def test_history_bad_last_record_is_not_treated_as_torn(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_text(_lines(_record([0, 0])) + '{"arch": [0, 1]}\n')
    with pytest.raises(NasEngineError, match="line 2 is not a valid history record \\(no numeric 'score'"):
        History(path)


def test_history_non_utf8_stops(tmp_path):
    path = tmp_path / "history.jsonl"
    data = _lines(_record([0, 0])).encode() + b'{"arch": [1, 1], "note": "\xff\xfe", "score": 0.5}\n'
    path.write_bytes(data + _lines(_record([2, 2])).encode())
    with pytest.raises(NasEngineError) as info:
        History(path)
    assert _assert_one_line(info).startswith(f"{path} line 2 is not a valid history record (byte 27 is not UTF-8)")
    assert path.read_bytes().startswith(data)


_HOLD_IN_CHILD = textwrap.dedent("""
    import sys
    from nasengine.rundir.lock import hold_run_lock
    with hold_run_lock(sys.argv[1]):
        print("held", flush=True)
        sys.stdin.read()
""")


def test_second_process_is_refused_with_the_holder_pid(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD_IN_CHILD, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline() == "held\n"
        with pytest.raises(NasEngineError) as info:
            RunLock(tmp_path).acquire()
        message = _assert_one_line(info)
        assert message.startswith(f"{tmp_path} is in use by another nasengine process (pid {child.pid}, started ")
        assert message.endswith("); wait for it to finish or use another --out")
    finally:
        child.stdin.close()
        child.wait(timeout=60)
    with hold_run_lock(tmp_path):  # the holder has exited: the lock is free again
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


def test_the_child_is_refused_while_this_process_holds_the_lock(tmp_path):
    code = (
        "import sys\nfrom nasengine.errors import NasEngineError\nfrom nasengine.rundir.lock import RunLock\n"
        "try:\n    RunLock(sys.argv[1]).acquire()\nexcept NasEngineError as exc:\n    print(exc)\n"
    )
    with hold_run_lock(tmp_path):
        result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith(f"{tmp_path} is in use by another nasengine process (pid {os.getpid()}, started ")


def test_stale_lock_file_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".lock").write_text(json.dumps({"pid": int(dead.stdout), "host": "elsewhere", "started": "then"}))
    with hold_run_lock(tmp_path) as lock:
        assert lock.holds == 1
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert (tmp_path / ".lock").exists()  # never deleted: see nasengine.rundir.lock


def test_lock_is_reentrant_within_a_process(tmp_path):
    first = RunLock(tmp_path / "run").acquire()
    with hold_run_lock(tmp_path / "run"), hold_run_lock(tmp_path / "other" / ".." / "run"):
        first.acquire()
        first.release()
    # still held by ``first``: another process is refused until it is released
    code = "import sys\nfrom nasengine.rundir.lock import RunLock\nRunLock(sys.argv[1]).acquire()\n"
    refused = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode != 0 and "is in use by another nasengine process" in refused.stderr
    first.release()
    first.release()  # an extra release does nothing
    accepted = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True, timeout=60
    )
    assert accepted.returncode == 0, accepted.stderr
