"""DDP on CPU with the gloo backend: path-wise training across ranks and search sharded across ranks."""

import json
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nasengine import registry
from nasengine.protocol.limits import run_limits
from nasengine.protocol.path_sampling import uniform_path
from nasengine.protocol.search import run_search
from nasengine.protocol.training import train
from nasengine.settings.config import Schedule, SearchConfig

WORLD = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        space = registry.create("space", "shufflenet-small")
        task = registry.create("task", "fashion-mnist", search_size=32, calib_size=16, test_size=32)
        torch.manual_seed(0)
        supernet = space.build_supernet()
        model = task.build_model(supernet, space.out_channels)
        before = {k: v.clone() for k, v in supernet.state_dict().items()}
        arch = uniform_path(space.choices, 4, 0)
        schedule = Schedule(iterations=2, batch_size=4, lr=0.1, weight_decay=1e-3, checkpoint_every=100)
        train(
            model,
            task,
            task.dataset("train", train=True),
            schedule,
            _path(out, "train"),
            seed=0,
            device=torch.device("cpu"),
            description="ddp",
            paths=lambda it: [arch],
            activate=supernet.activate,
        )
        after = supernet.state_dict()
        inactive_changed = [
            k for k in before if ".choices." in k and not _on_path(k, arch) and not torch.equal(before[k], after[k])
        ]
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        gathered = [torch.zeros_like(flat) for _ in range(WORLD)]
        dist.all_gather(gathered, flat)

        search = SearchConfig(
            strategy="random", strategy_options={"population": 3, "generations": 1}, flops_max=300e6, batch_size=16
        )
        limits = run_limits(space, search, input_size=64)
        best = run_search(space, task, supernet, model, search, _path(out, "search"), limits=limits, seed=0)
        result = {
            "inactive_changed": inactive_changed,
            "ranks_equal": all(torch.equal(g, gathered[0]) for g in gathered),
            "best": best["arch"],
        }
        with open(f"{out}/rank{rank}.json", "w") as handle:
            json.dump(result, handle)
    finally:
        dist.destroy_process_group()


def _path(out, name):
    from pathlib import Path

    return Path(out) / name


def _on_path(key: str, arch) -> bool:
    blocks = [4, 4, 8, 4]
    positions = [(s, b) for s, n in enumerate(blocks) for b in range(n)]
    stage, block, _, choice = key.split(".")[1:5]
    return int(choice) == arch[positions.index((int(stage), int(block)))]


@pytest.mark.slow
def test_ddp_training_and_search_on_gloo(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    for result in results:
        assert result["inactive_changed"] == []
        assert result["ranks_equal"]
    assert results[0]["best"] == results[1]["best"]
    history = (tmp_path / "search" / "history.jsonl").read_text().splitlines()
    assert len(history) == 3  # every candidate once, written by rank 0 only
    assert len({tuple(json.loads(line)["arch"]) for line in history}) == 3


def _share_worker(rank: int, port: int, world: int, count: int, out: str) -> None:
    from nasengine.protocol import distributed

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    distributed._waiting = dist.new_group(backend="gloo")
    try:

        def work(item: int) -> dict:
            distributed.barrier()  # the item's group only: a barrier of the whole world would deadlock
            return {
                "item": item,
                "by": dist.get_rank(),
                "group_size": distributed.world_size(),
                "group_rank": distributed.rank(),
                "main": distributed.is_main(),
            }

        results = distributed.share_out(list(range(count)), work)
        assert distributed.world_size() == world  # the whole world again
        with open(f"{out}/rank{rank}.json", "w") as handle:
            json.dump(results, handle)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(("world", "count"), [(2, 3), (4, 2)])
def test_share_out_trains_items_side_by_side_and_every_rank_gets_every_result(tmp_path, world, count):
    mp.spawn(_share_worker, args=(_free_port(), world, count, str(tmp_path)), nprocs=world, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]
    assert all(result == results[0] for result in results)  # every rank, every result, in item order
    assert [r["item"] for r in results[0]] == list(range(count))
    size = world // min(world, count)
    for index, result in enumerate(results[0]):
        assert result["group_size"] == size and result["group_rank"] == 0 and result["main"]
        assert result["by"] == (index % min(world, count)) * size  # items round-robin over the groups
