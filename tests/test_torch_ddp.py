"""fastloss.torch.cross_entropy trains a DistributedDataParallel model as F.cross_entropy does.

Two processes (gloo, CPU, float64) each see their shard of every batch; DDP averages their
gradients. Training with fastloss's loss and with PyTorch's must end with the same parameters,
on both ranks, and equal to one process training on the whole batches.
"""

import socket
import time
from datetime import timedelta

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

import fastloss.torch as ft  # noqa: E402

if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("this PyTorch has no gloo backend for torch.distributed", allow_module_level=True)

WORLD_SIZE = 2
STEPS = 5
ROWS_PER_RANK = 8  # rows of each step's batch on one rank
FEATURES, HIDDEN, CLASSES = 12, 32, 7
LOSSES = {"torch": F.cross_entropy, "fastloss": ft.cross_entropy}
TIMEOUT_S = 60


def _dataset():
    """Inputs and class labels of every step's whole batch, the same in every process."""
    generator = torch.Generator().manual_seed(1234)
    rows = STEPS * WORLD_SIZE * ROWS_PER_RANK
    inputs = torch.randn(rows, FEATURES, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, CLASSES, (rows,), generator=generator)
    return inputs, labels


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, CLASSES)
    ).double()


def _train(model, loss_fn, rows_of_step):
    """SGD with momentum over ``STEPS`` steps; step s uses ``rows_of_step(s)``."""
    inputs, labels = _dataset()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    for step in range(STEPS):
        rows = rows_of_step(step)
        optimizer.zero_grad()
        loss_fn(model(inputs[rows]), labels[rows]).backward()
        optimizer.step()


def _rank_main(rank, port, out_dir):
    """One DDP rank: train with each loss on this rank's shards, save the final parameters."""
    torch.set_num_threads(1)  # two ranks share the machine's cores
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE,
        timeout=timedelta(seconds=TIMEOUT_S),
    )
    try:
        results = {}
        for name, loss_fn in LOSSES.items():
            model = _model()
            ddp_model = DistributedDataParallel(model)

            def shard(step, rank=rank):
                start = (step * WORLD_SIZE + rank) * ROWS_PER_RANK
                return slice(start, start + ROWS_PER_RANK)

            _train(ddp_model, loss_fn, shard)
            results[name] = [p.detach().clone() for p in model.parameters()]
        torch.save(results, f"{out_dir}/rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run_ranks(out_dir):
    """Spawn the ranks and wait for them; a rank's error or a hang fails the test."""
    context = mp.spawn(_rank_main, args=(_free_port(), str(out_dir)), nprocs=WORLD_SIZE,
                       join=False)
    deadline = time.monotonic() + TIMEOUT_S + 30
    try:
        while not context.join(timeout=max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                pytest.fail(f"the DDP ranks did not finish within {TIMEOUT_S + 30} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
                process.join()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """``[rank 0's results, rank 1's]``: ``{loss name: final parameters}``."""
    out_dir = tmp_path_factory.mktemp("ddp")
    _run_ranks(out_dir)
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]


def _whole_batch_reference():
    """The parameters one process reaches on the whole batches, where DDP's averaging of the
    ranks' equal-sized mean losses' gradients is the mean over all rows."""
    model = _model()
    rows = WORLD_SIZE * ROWS_PER_RANK
    _train(model, F.cross_entropy, lambda step: slice(step * rows, (step + 1) * rows))
    return [p.detach() for p in model.parameters()]


def test_fastloss_and_torch_losses_train_ddp_to_the_same_parameters(ranks):
    fastloss_params, torch_params = ranks[0]["fastloss"], ranks[0]["torch"]
    assert len(fastloss_params) == len(torch_params) == 4
    for fastloss_param, torch_param in zip(fastloss_params, torch_params, strict=True):
        assert fastloss_param.dtype == torch.float64
        torch.testing.assert_close(fastloss_param, torch_param, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_ddp_ranks_end_with_identical_parameters(ranks, loss):
    for rank0_param, rank1_param in zip(ranks[0][loss], ranks[1][loss], strict=True):
        torch.testing.assert_close(rank0_param, rank1_param, rtol=0, atol=0)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_ddp_matches_one_process_on_the_whole_batches(ranks, loss):
    initial = [p.detach() for p in _model().parameters()]
    reference = _whole_batch_reference()
    for ddp_param, reference_param, initial_param in zip(
        ranks[0][loss], reference, initial, strict=True
    ):
        assert (ddp_param - initial_param).abs().max() > 1e-3  # training moved it
        torch.testing.assert_close(ddp_param, reference_param, rtol=1e-12, atol=1e-12)
