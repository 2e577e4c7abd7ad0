"""Metrics synchronised across processes (Gloo) equal the metrics of one process over all data."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from scenemtl.metrics import BoundaryMetric, ConfusionMatrixMetric, DepthMetric, NormalsMetric, SaliencyMetric


def data():
    g = torch.Generator().manual_seed(0)
    return {
        "semseg": (torch.randint(0, 4, (4, 6, 6), generator=g), torch.randint(0, 4, (4, 6, 6), generator=g)),
        "depth": (torch.rand(4, 1, 6, 6, generator=g) * 5, torch.rand(4, 1, 6, 6, generator=g) * 5),
        "normals": (torch.randn(4, 3, 6, 6, generator=g), torch.randn(4, 3, 6, 6, generator=g)),
        "saliency": (torch.rand(4, 1, 6, 6, generator=g), (torch.rand(4, 1, 6, 6, generator=g) > 0.5).float()),
        "edge": (torch.rand(4, 1, 24, 32, generator=g), (torch.rand(4, 1, 24, 32, generator=g) > 0.8).float()),
    }


def make():
    return {
        "semseg": ConfusionMatrixMetric(4),
        "depth": DepthMetric(),
        "normals": NormalsMetric(),
        "saliency": SaliencyMetric(),
        "edge": BoundaryMetric(max_dist=0.05),
    }


def worker(rank: int, world: int, init: str, queue) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    metrics = make()
    for name, (pred, target) in data().items():
        for i in range(rank, 4, world):  # each process sees half, one image per batch
            metrics[name].update(pred[i : i + 1], target[i : i + 1])
        metrics[name].sync()
    queue.put((rank, {name: m.compute() for name, m in metrics.items()}))
    dist.destroy_process_group()


def test_two_processes_give_the_one_process_numbers(tmp_path):
    single = make()
    for name, (pred, target) in data().items():
        single[name].update(pred, target)
    expected = {name: m.compute() for name, m in single.items()}
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    init = f"file://{tmp_path / 'rendezvous'}"
    processes = [context.Process(target=worker, args=(rank, 2, init, queue)) for rank in range(2)]
    for p in processes:
        p.start()
    results = dict(queue.get() for _ in processes)
    for p in processes:
        p.join(timeout=60)
        assert p.exitcode == 0
    for rank in range(2):
        for task, values in expected.items():
            for key, value in values.items():
                # counts are integers and real sums fixed point: the numbers agree to the last bit
                got = results[rank][task][key]
                assert got == value or (value != value and got != got), (rank, task, key)
