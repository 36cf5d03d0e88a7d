"""fastloss.torch.vocab_parallel_cross_entropy on 2 and 4 gloo processes against
torch.nn.functional.cross_entropy of the gathered logits: loss, gradient, communication.
Its edge cases run their ranks as threads of this process over a stand-in all-reduce."""

import re
import socket
import threading

import numpy as np
import pytest
from conftest import confident_rows, max_ulps

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import torch.multiprocessing as mp  # noqa: E402
from torch.autograd import forward_ad  # noqa: E402

import fastloss._class_shards  # noqa: E402,F401  (else imported by the ranks' threads)
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
    # Nine numbers a rank (width, N, options, the labels' sum, count and range), the row
    # maxima, then each row's logits at the max, sum of the rest and target gap in one call.
    assert calls == [9 * len(widths), ROWS, 3 * ROWS], message


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
    with pytest.raises(TypeError, match="float64; got ndarray of float32$"):
        flt.vocab_parallel_cross_entropy(logits.numpy(), labels)
    with pytest.raises(TypeError, match=r"\(not uint64\); got list$"):
        flt.vocab_parallel_cross_entropy(logits, [0, 1, 2, 0])
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


# ---------------------------------------------------------------------------------------
# Edge cases, the ranks as threads: torch.distributed's rank, world size, backend and
# all_reduce stand in for a process group (an all-reduce over a barrier, which a rank left
# alone in a collective breaks after BARRIER_TIMEOUT_S: a failure, never a hang).

BARRIER_TIMEOUT_S = 3


class _ThreadWorld:
    """``size`` ranks as threads: ``run(monkeypatch, call)`` calls ``call(rank)`` on each
    rank's thread and returns each rank's result or exception."""

    def __init__(self, size):
        self.size = size
        self.barrier = threading.Barrier(size, timeout=BARRIER_TIMEOUT_S)
        self.slots = [None] * size
        self.local = threading.local()

    def all_reduce(self, tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
        self.slots[self.local.rank] = tensor.clone()
        self.barrier.wait()
        stacked = torch.stack(self.slots)
        reduced = stacked.amax(0) if op == dist.ReduceOp.MAX else stacked.sum(0)
        self.barrier.wait()  # every rank has read the slots
        tensor.copy_(reduced)

    def run(self, monkeypatch, call):
        monkeypatch.setattr(dist, "is_initialized", lambda: True)
        monkeypatch.setattr(dist, "get_world_size", lambda group=None: self.size)
        monkeypatch.setattr(dist, "get_rank", lambda group=None: self.local.rank)
        monkeypatch.setattr(dist, "get_backend", lambda group=None: "gloo")
        monkeypatch.setattr(dist, "all_reduce", self.all_reduce)
        results = [None] * self.size

        def rank_main(rank):
            self.local.rank = rank
            try:
                results[rank] = call(rank)
            except BaseException as exc:  # noqa: BLE001 - reported per rank
                results[rank] = exc

        threads = [threading.Thread(target=rank_main, args=(rank,)) for rank in range(self.size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=4 * BARRIER_TIMEOUT_S)
        return results


def _randn(*shape):
    """Seeded float64 normal values."""
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def _shards(logits, widths):
    starts = [sum(widths[:rank]) for rank in range(len(widths) + 1)]
    return [logits[:, starts[r]:starts[r + 1]] for r in range(len(widths))]


def _on_threads(monkeypatch, logits, labels_of_rank, widths, **options):
    """Every rank's vocab_parallel_cross_entropy (or exception) of its shard of ``logits``."""
    shards = _shards(logits, widths)
    return _ThreadWorld(len(widths)).run(monkeypatch, lambda rank: flt.vocab_parallel_cross_entropy(
        shards[rank], labels_of_rank(rank), **options))


def test_targets_that_differ_in_their_first_row_are_a_value_error(monkeypatch):
    # Count, lowest and highest label agree: only the position-weighted sum tells these
    # apart, and only if the first row has a weight.
    logits = _randn(3, 5)
    labels = {0: torch.tensor([0, 0, 2]), 1: torch.tensor([2, 0, 2])}
    for rank, result in enumerate(_on_threads(monkeypatch, logits, labels.get, [2, 3])):
        assert isinstance(result, ValueError), (rank, result)
        assert "same target; its summary differs" in str(result)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_batch_of_ignored_rows_is_cross_entropys_result(monkeypatch, reduction):
    # No label kept, so none to check: the loss is F.cross_entropy's (NaN for "mean").
    logits = _randn(4, 5)
    labels = torch.full((4,), -100)
    want = torch.nn.functional.cross_entropy(logits, labels, reduction=reduction)
    for got in _on_threads(monkeypatch, logits, lambda rank: labels, [2, 3],
                           reduction=reduction):
        assert isinstance(got, torch.Tensor), got
        torch.testing.assert_close(got, want, equal_nan=True)


def test_rank_refused_by_a_transform_tells_the_others(monkeypatch):
    # Rank 0 calls under torch.func.grad (NotImplementedError there): the other ranks learn
    # of it in the first exchange and raise, instead of waiting for rank 0 in a collective.
    logits, labels = _randn(4, 5), torch.tensor([0, 1, 4, 2])
    shards = _shards(logits, [2, 3])

    def call(rank):
        def loss(z):
            return flt.vocab_parallel_cross_entropy(z, labels)
        return torch.func.grad(loss)(shards[rank]) if rank == 0 else loss(shards[rank])

    results = _ThreadWorld(2).run(monkeypatch, call)
    assert isinstance(results[0], NotImplementedError), results[0]
    assert isinstance(results[1], ValueError), results[1]
    assert "rank(s) [0] refused their arguments" in str(results[1])


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_logits_far_from_zero(monkeypatch, reduction):
    # Rows near 1000 on every shard: the rows' reference is their maximum over the ranks (a
    # sum of the ranks' maxima, 2000, would make every exp(z - M) 0 and the loss inf).
    logits = 1000 + _randn(6, 5)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    want = torch.nn.functional.cross_entropy(logits, labels, reduction=reduction)
    for got in _on_threads(monkeypatch, logits, lambda rank: labels, [2, 3],
                           reduction=reduction):
        assert isinstance(got, torch.Tensor), got
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_a_confident_rows_loss_and_label_gradient_keep_their_digits(monkeypatch, dtype):
    # Each row's label holds its max logit (tied in a third of the rows, on the same rank
    # or another) and its loss log(1 + s) and label gradient -s / (1 + s) run from about
    # 1e-26 to 0.5 (conftest.confident_rows): ranks that summed s into the max's 1 kept
    # them to an ulp of 1, as F.cross_entropy does.
    rows, widths = 128, [30, 0, 45, 25]
    logits, labels, excess = confident_rows(rows, sum(widths), dtype, seed=1)
    shards = _shards(torch.from_numpy(logits), widths)

    def call(rank):
        shard = shards[rank].clone().requires_grad_()
        loss = flt.vocab_parallel_cross_entropy(shard, torch.from_numpy(labels),
                                                reduction="none")
        loss.sum().backward()
        return loss.detach(), shard.grad

    results = _ThreadWorld(len(widths)).run(monkeypatch, call)
    for rank, result in enumerate(results):
        assert isinstance(result, tuple), result
        assert max_ulps(result[0].numpy(), np.log1p(excess), dtype) <= 6, rank
    grad = torch.cat([grad for _, grad in results], dim=1).numpy()
    assert max_ulps(grad[np.arange(rows), labels], -excess / (1 + excess), dtype) <= 6


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_takes_16_bit_logits(monkeypatch, dtype):
    logits = _randn(6, 5)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    want = torch.nn.functional.cross_entropy(logits.to(dtype).double(), labels).to(dtype)
    shards = _shards(logits.to(dtype), [2, 3])
    results = _ThreadWorld(2).run(monkeypatch, lambda rank: flt.vocab_parallel_cross_entropy(
        shards[rank].clone().requires_grad_(), labels))
    for got in results:
        assert isinstance(got, torch.Tensor), got
        assert got.dtype == dtype
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("ignore_index", [5, 2**62])
def test_ignore_index_past_the_classes(monkeypatch, ignore_index):
    # An ignore_index at or past k is no class: its rows are ignored, never "outside [0, k)".
    logits = _randn(4, 5)
    labels = torch.tensor([0, ignore_index, 4, 2])
    want = torch.nn.functional.cross_entropy(logits, labels, ignore_index=ignore_index)
    for got in _on_threads(monkeypatch, logits, lambda rank: labels, [2, 3],
                           ignore_index=ignore_index):
        assert isinstance(got, torch.Tensor), got
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("rows", [1, 2])
def test_bad_label_of_a_short_batch_is_a_value_error(monkeypatch, rows):
    # A batch of one row is checked too: a label outside [0, k) is a ValueError on every
    # rank, not a silently wrong loss.
    logits = _randn(rows, 5)
    labels = torch.full((rows,), 7)
    for result in _on_threads(monkeypatch, logits, lambda rank: labels, [2, 3]):
        assert isinstance(result, ValueError), result
        assert "class index 7, outside [0, 5)" in str(result)
