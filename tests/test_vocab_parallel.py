"""fastloss.torch.vocab_parallel_cross_entropy on 2 and 4 gloo processes against
torch.nn.functional.cross_entropy of the gathered logits: loss, gradient, communication."""

import re
import socket

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import torch.multiprocessing as mp  # noqa: E402
from torch.autograd import forward_ad  # noqa: E402

import fastloss.torch as flt  # noqa: E402

ROWS = 29
# Shard widths per world size: contiguous class ranges in rank order, not all equal, one
# rank holding none.
WIDTHS = {2: [7, 12], 4: [5, 0, 12, 1]}
# (dtype, options); the float64 cases hold to 1e-12, float32 to its own precision.
CASES = [
    (torch.float64, {}),
    (torch.float64, {"reduction": "sum"}),
    (torch.float64, {"reduction": "none"}),
    (torch.float64, {"label_smoothing": 0.2}),
    (torch.float64, {"label_smoothing": 0.1, "reduction": "none", "ignore_index": 4}),
    (torch.float64, {"ignore_index": 3, "reduction": "sum"}),
    (torch.float32, {"label_smoothing": 0.1}),
]
TOLERANCE = {torch.float64: {"rtol": 1e-12, "atol": 1e-14},
             torch.float32: {"rtol": 1e-5, "atol": 1e-7}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _inputs(classes, dtype, options, seed):
    generator = torch.Generator().manual_seed(seed)
    logits = (4 * torch.randn(ROWS, classes, generator=generator, dtype=torch.float64))
    labels = torch.randint(0, classes, (ROWS,), generator=generator)
    labels[::5] = options.get("ignore_index", -100)
    return logits.to(dtype), labels


def _check_case(rank, widths, dtype, options, seed):
    start, classes = sum(widths[:rank]), sum(widths)
    logits, labels = _inputs(classes, dtype, options, seed)
    whole = logits.clone().requires_grad_()
    want = torch.nn.functional.cross_entropy(whole, labels, **options)
    want.sum().backward()

    shard = logits[:, start:start + widths[rank]].clone().requires_grad_()
    calls = []
    all_reduce = dist.all_reduce

    def recording_all_reduce(tensor, *args, **kwargs):
        calls.append(tensor.numel())
        return all_reduce(tensor, *args, **kwargs)

    dist.all_reduce = recording_all_reduce
    try:
        loss = flt.vocab_parallel_cross_entropy(shard, labels, **options)
    finally:
        dist.all_reduce = all_reduce
    loss.sum().backward()
    message = f"rank {rank} of {len(widths)}, {dtype}, {options}"
    torch.testing.assert_close(loss, want.detach(), **TOLERANCE[dtype], msg=message)
    torch.testing.assert_close(shard.grad, whole.grad[:, start:start + widths[rank]],
                               **TOLERANCE[dtype], msg=message)
    # Nine numbers a rank (width, N, options, the labels' sum, count and range), then three
    # all-reduces of N numbers.
    assert calls == [9 * len(widths), ROWS, ROWS, ROWS], message


def _check_no_grad_and_errors(rank, widths):
    start, classes = sum(widths[:rank]), sum(widths)
    logits, labels = _inputs(classes, torch.float64, {}, seed=99)
    shard = logits[:, start:start + widths[rank]]
    with torch.no_grad():
        loss = flt.vocab_parallel_cross_entropy(shard.requires_grad_(), labels)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, labels),
                               rtol=1e-12, atol=0)
    leaf = shard.detach().requires_grad_()
    loss = flt.vocab_parallel_cross_entropy(leaf, labels)
    with pytest.raises(RuntimeError, match="vocab_parallel_cross_entropy does not support "
                                           "double backward.*cross_entropy of the gathered"):
        torch.autograd.grad(loss, leaf, create_graph=True)
    # The same bad label on every rank: every rank raises, on a GPU too (no NaN rows).
    for bad in (classes, -5, 2**63 - 1):
        wrong = labels.clone()
        wrong[3] = bad
        with pytest.raises(ValueError, match=rf"class index {bad}, outside \[0, {classes}\)"):
            flt.vocab_parallel_cross_entropy(shard, wrong)
    # Targets that differ between ranks: the same error on every rank, never a hang in the
    # next collective (or a rank with a bad label alone, raising while the others wait).
    # Rank 0 with a bad label (or two labels swapped), the others with the right ones.
    assert labels[3] != labels[4]
    for bad, other in ((classes, labels[3]), (labels[4], labels[3])):
        wrong = labels.clone()
        if rank == 0:
            wrong[3], wrong[4] = bad, other
        with pytest.raises(ValueError, match="same target; its summary differs"):
            flt.vocab_parallel_cross_entropy(shard, wrong)
    # A bad label on rank 1 alone, with rank 0's weighted sum and count: its range tells.
    wrong = labels.clone()
    wrong[1] = wrong[3] = 0
    if rank == 1:
        wrong[1], wrong[3] = 2, -1  # positions 2 and 4: 2 * 2 - 4 * 1 = 0
    with pytest.raises(ValueError, match="same target; its summary differs"):
        flt.vocab_parallel_cross_entropy(shard, wrong)
    # -0.0 is 0.0.
    flt.vocab_parallel_cross_entropy(shard, labels, label_smoothing=-0.0 if rank else 0.0)
    with pytest.raises(ValueError, match=r"no class \(k = 0\)"):  # every rank's shard empty
        flt.vocab_parallel_cross_entropy(shard[:, :0], torch.full_like(labels, -100))
    # A rank out of step with the others: the same error on every rank, never a hang.
    world = len(widths)
    rows = [ROWS] * world
    rows[-1] -= 1
    with pytest.raises(ValueError, match=rf"same N; got N = \[{', '.join(map(str, rows))}\]"):
        flt.vocab_parallel_cross_entropy(shard[:rows[rank]], labels[:rows[rank]])
    # Rank 0's option against the others': ignore_index's two a float64 would round to one.
    for name, first, other in (("reduction", "mean", "sum"), ("ignore_index", 2**62, 2**62 + 1),
                               ("label_smoothing", 0.0, 0.25)):
        values = re.escape(str([first] + [other] * (world - 1)))
        with pytest.raises(ValueError, match=f"same {name}; got {name} = {values}"):
            flt.vocab_parallel_cross_entropy(shard, labels, **{name: other if rank else first})
    # A rank whose own checks refuse its call raises its error; the others learn of it in
    # the exchange and raise too.
    for refusing, error, match, wrong in (
        (0, TypeError, "target must be a torch.Tensor of integer",
         {"target": labels.double()}),
        (world - 1, ValueError, "reduction must be", {"reduction": "bogus"}),
        (0, TypeError, "dense CPU or CUDA", {"logits_shard": shard.to("meta"),
                                              "target": labels.to("meta")}),
        (world - 1, TypeError, "group must be", {"group": object()}),
    ):
        call = {"logits_shard": shard, "target": labels}
        if rank == refusing:
            call.update(wrong)
        else:
            error, match = ValueError, rf"rank\(s\) \[{refusing}\] refused their arguments"
        with pytest.raises(error, match=match):
            flt.vocab_parallel_cross_entropy(**call)


def _worker(rank, world, port):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        widths = WIDTHS[world]
        for seed, (dtype, options) in enumerate(CASES):
            _check_case(rank, widths, dtype, options, seed)
        _check_case(rank, [6] * world, torch.float64, {"label_smoothing": 0.3}, seed=50)
        _check_no_grad_and_errors(rank, widths)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def forkserver():
    """Processes forked from one server that imported torch once: a fresh process per rank
    (no thread pool inherited from this one), without paying torch's import per rank."""
    mp.set_forkserver_preload(["torch", "fastloss.torch", __name__])
    return "forkserver"


@pytest.mark.parametrize("world", sorted(WIDTHS))
def test_matches_cross_entropy_of_the_gathered_logits(forkserver, world):
    mp.start_processes(_worker, args=(world, _free_port()), nprocs=world, join=True,
                       start_method=forkserver)


# forward_ad.make_dual loads its decompositions with the deprecated torch.jit.script.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_bad_arguments_name_the_argument():
    logits, labels = torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)
    with pytest.raises(TypeError, match="logits_shard must be a torch.Tensor of float16"):
        flt.vocab_parallel_cross_entropy(logits.long(), labels)
    with pytest.raises(TypeError, match="logits_shard must be a torch.Tensor of float16"):
        flt.vocab_parallel_cross_entropy(logits.to(torch.float8_e4m3fn), labels)
    for other in (logits.to_sparse(), logits.to("meta")):
        with pytest.raises(TypeError, match="logits_shard must be a dense CPU or CUDA tensor"):
            flt.vocab_parallel_cross_entropy(other, labels.to(other.device))
    with pytest.raises(ValueError, match="logits_shard must be 2-D"):
        flt.vocab_parallel_cross_entropy(logits[0], labels)
    with pytest.raises(TypeError, match="target must be a torch.Tensor of integer"):
        flt.vocab_parallel_cross_entropy(logits, labels.double())
    # .long() would wrap a uint64 label of 2**64 - 100 to an ignored -100.
    with pytest.raises(TypeError, match=r"integer class indices \(not uint64\)"):
        flt.vocab_parallel_cross_entropy(
            logits, torch.tensor([0, 2**64 - 100, 1, 2], dtype=torch.uint64))
    with pytest.raises(TypeError, match="group must be a torch.distributed ProcessGroup"):
        flt.vocab_parallel_cross_entropy(logits, labels, group="x")
    with pytest.raises(ValueError, match=r"target must have shape \(N,\) = \(4,\)"):
        flt.vocab_parallel_cross_entropy(logits, labels[:3])
    with pytest.raises(ValueError, match="reduction must be"):
        flt.vocab_parallel_cross_entropy(logits, labels, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        flt.vocab_parallel_cross_entropy(logits, labels, label_smoothing=-0.1)
    with pytest.raises(NotImplementedError, match="torch.func transforms"):
        torch.func.grad(lambda z: flt.vocab_parallel_cross_entropy(z, labels))(logits)
    with forward_ad.dual_level():  # a tangent would be dropped, as if the derivative were 0
        dual = forward_ad.make_dual(logits, torch.ones_like(logits))
        with pytest.raises(NotImplementedError, match="forward-mode AD"):
            flt.vocab_parallel_cross_entropy(dual, labels)
    if not dist.is_initialized():
        with pytest.raises(RuntimeError, match="init_process_group"):
            flt.vocab_parallel_cross_entropy(logits, labels)
