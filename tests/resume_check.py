"""A shared check for resumable training loops: interrupted then resumed equals uninterrupted."""

import json

import pytest
import torch


def assert_resume_matches(run, tmp_path, stop_at: int, iterations: int) -> None:
    """``run(directory, stop_at=None)`` trains into ``directory`` and returns the model's state dict,
    raising KeyboardInterrupt at iteration ``stop_at`` when given. The resumed run must end with the same
    weights and a log of exactly one line per iteration."""
    whole = run(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "split", stop_at=stop_at)
    resumed = run(tmp_path / "split")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    # the same bytes too: the saved figures and the optimizer state do not depend on the interruption
    assert (tmp_path / "split" / "checkpoint.pt").read_bytes() == (tmp_path / "whole" / "checkpoint.pt").read_bytes()
    lines = (tmp_path / "split" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == list(range(1, iterations + 1))
