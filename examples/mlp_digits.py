"""A NumPy MLP in crysx_nn's style, trained on scikit-learn's digits with fastloss.

The network is crysx_nn's: lists of weights (out, in) and biases, a forward
feed that keeps every layer's input z and output a, and a back propagation
that turns dLoss/d(output) into weight updates. The difference is the output
layer: it is linear ('Identity'), and one call to
``fastloss.softmax_cross_entropy_with_grad`` gives the mean loss and its
gradient ``(softmax(z) - y) / N`` with respect to the logits, where crysx_nn
computes Softmax, the gradient -y/p of the cross-entropy of probabilities,
and multiplies it by the (N, k, k) softmax Jacobian. ``--compare-jacobian``
times three ways of getting that gradient: crysx_nn's, crysx_nn's with the
Jacobian product replaced by ``fastloss.softmax_backward`` (no (N, k, k)
array), and the fused cross-entropy gradient.

    python examples/mlp_digits.py [--epochs 40] [--backend numba|numpy|cuda]
    python examples/mlp_digits.py --compare-jacobian

``--backend cuda`` runs the same loop on CuPy arrays.
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np

import fastloss
from fastloss import _registry
from fastloss.compat import crysx


def array_module(backend: str):
    if backend == "cuda":
        import cupy

        return cupy
    return np


def load_digits_split(seed: int, test_fraction: float = 0.2):
    """Standardised 8x8 digit images, one-hot labels, and a fixed train/test split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise SystemExit("this example needs scikit-learn: pip install scikit-learn") from exc
    digits = load_digits()
    images = digits.data / 16.0
    images = (images - images.mean(axis=0)) / (images.std(axis=0) + 1e-8)
    labels = digits.target
    order = np.random.default_rng(seed).permutation(len(labels))
    test = order[: int(len(labels) * test_fraction)]
    train = order[len(test):]
    onehot = np.eye(10)[labels]
    return images[train], onehot[train], images[test], labels[test]


def init_params(sizes, rng, dtype):
    """He-initialised weights (out, in) and zero biases, as crysx_nn's initParams('He')."""
    weights = [rng.normal(0.0, np.sqrt(2.0 / n_in), (n_out, n_in)).astype(dtype)
               for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)]
    biases = [np.zeros(n_out, dtype) for n_out in sizes[1:]]
    return weights, biases


def forward_feed(x, weights, biases):
    """Layer outputs ``a`` (input first, logits last) and pre-activations ``z``."""
    a, z = [x], []
    for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
        z.append(a[-1] @ w.T + b)
        last = layer == len(weights) - 1
        a.append(z[-1] if last else z[-1] * (z[-1] > 0))  # ReLU, then Identity on the output
    return a, z


def back_propagation(a, z, weights, biases, learning_rate, dloss_dlogits):
    """SGD step from dLoss/dlogits: the output layer is linear, so delta starts there."""
    delta = dloss_dlogits
    for layer in range(len(weights) - 1, -1, -1):
        grad_w = delta.T @ a[layer]
        grad_b = delta.sum(axis=0)
        if layer:
            delta = (delta @ weights[layer]) * (z[layer - 1] > 0)
        weights[layer] -= learning_rate * grad_w
        biases[layer] -= learning_rate * grad_b


def train(args):
    xp = array_module(args.backend)
    dtype = np.dtype(args.dtype)
    x_train, y_train, x_test, labels_test = load_digits_split(args.seed)
    rng = np.random.default_rng(args.seed)
    weights, biases = init_params([x_train.shape[1], args.hidden, 10], rng, dtype)
    weights = [xp.asarray(w) for w in weights]
    biases = [xp.asarray(b) for b in biases]
    x_train, y_train = xp.asarray(x_train, dtype), xp.asarray(y_train, dtype)

    losses = []
    start = time.perf_counter()
    for _ in range(args.epochs):
        order = xp.asarray(rng.permutation(len(x_train)))
        epoch_loss = 0.0
        batches = range(0, len(x_train), args.batch_size)
        for offset in batches:
            batch = order[offset:offset + args.batch_size]
            a, z = forward_feed(x_train[batch], weights, biases)
            loss, dloss_dlogits = fastloss.softmax_cross_entropy_with_grad(
                a[-1], y_train[batch], backend=args.backend
            )
            epoch_loss += loss  # stays on the device for CuPy: no sync per batch
            back_propagation(a, z, weights, biases, args.learning_rate, dloss_dlogits)
        losses.append(float(epoch_loss) / len(batches))
    seconds = time.perf_counter() - start

    logits = forward_feed(xp.asarray(x_test, dtype), weights, biases)[0][-1]
    predicted = logits.argmax(axis=1)
    predicted = predicted.get() if xp is not np else predicted
    accuracy = float(np.mean(predicted == labels_test))
    return losses, accuracy, seconds


# --- crysx_nn's path to dLoss/dlogits, kept here only to measure it ----------


def seeds_softmax_jacobian_delta(logits, targets):
    """crysx_nn: Softmax, CCE_loss_grad = -t/p, then the (N, k, k) Jacobian product."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = shifted / shifted.sum(axis=1, keepdims=True)
    dloss_dp = crysx.CCE_loss_grad(p, targets)
    eye = np.eye(p.shape[1], dtype=np.float32)
    diagonal = np.einsum("ij,jk->ijk", p, eye).astype(np.float32)
    outer = np.einsum("ij,ik->ijk", p, p).astype(np.float32)
    jacobian = diagonal - outer
    return np.einsum("ijk,ik->ij", jacobian, dloss_dp.astype(np.float32))


def vjp_delta(logits, targets):
    """crysx_nn's path with the Jacobian product replaced by the fused vector-Jacobian
    product: fastloss.softmax, CCE_loss_grad, then fastloss.softmax_backward."""
    p = fastloss.softmax(logits)
    return crysx.softmax_backward(p, crysx.CCE_loss_grad(p, targets).astype(p.dtype))


def _best_time(function, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def compare_jacobian(shapes, repeats, seed=0):
    """Rows of (N, k, seeds seconds, VJP seconds, fused seconds, Jacobian bytes, max
    |difference| of the VJP path and of the fused gradient from the seeds' path)."""
    rng = np.random.default_rng(seed)
    rows = []
    for samples, classes in shapes:
        logits = rng.normal(0.0, 2.0, (samples, classes)).astype(np.float32)
        targets = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, samples)]
        fused = fastloss.softmax_cross_entropy_grad(logits, targets, reduction="sum")
        seeds = seeds_softmax_jacobian_delta(logits, targets)
        difference = float(np.max(np.abs(fused - seeds)))
        vjp_difference = float(np.max(np.abs(vjp_delta(logits, targets) - seeds)))
        seeds_seconds = _best_time(
            functools.partial(seeds_softmax_jacobian_delta, logits, targets), repeats
        )
        vjp_seconds = _best_time(functools.partial(vjp_delta, logits, targets), repeats)
        fused_seconds = _best_time(
            functools.partial(
                fastloss.softmax_cross_entropy_grad, logits, targets, reduction="sum"
            ),
            repeats,
        )
        # Two (N, k, k) float32 temporaries and the Jacobian they make.
        jacobian_bytes = 3 * samples * classes * classes * 4
        rows.append((samples, classes, seeds_seconds, vjp_seconds, fused_seconds, jacobian_bytes,
                     vjp_difference, difference))
    return rows


def print_comparison(rows):
    print("dLoss/dlogits: crysx_nn's (N, k, k) Jacobian product; the same with fastloss's "
          "softmax_backward (VJP); fastloss's fused cross-entropy gradient")
    print(f"{'N':>6} {'k':>5} {'Jacobian path':>14} {'VJP':>10} {'fused':>10} {'x VJP':>7} "
          f"{'x fused':>8} {'Jacobian':>12} {'VJP |diff|':>10} {'fused |diff|':>12}")
    for samples, classes, seeds, vjp, fused, nbytes, vjp_difference, difference in rows:
        print(f"{samples:>6} {classes:>5} {seeds * 1e3:>11.3f} ms {vjp * 1e3:>7.3f} ms "
              f"{fused * 1e3:>7.3f} ms {seeds / vjp:>6.1f}x {seeds / fused:>7.1f}x "
              f"{nbytes / 2**20:>8.2f} MiB {vjp_difference:>10.1e} {difference:>12.1e}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--epochs", type=int, default=40,
                        help="passes over the training images")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="images per SGD step")
    parser.add_argument("--hidden", type=int, default=64,
                        help="units in the hidden ReLU layer")
    parser.add_argument("--learning-rate", type=float, default=0.05,
                        help="SGD step size")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                        help="floating-point type of the weights and images")
    parser.add_argument("--backend", default="numba", choices=["numba", "numpy", "cuda"],
                        help="fastloss backend of the loss; cuda also keeps the arrays on the GPU, "
                             "as CuPy arrays")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the train/test split, initial weights and batch order")
    parser.add_argument("--compare-jacobian", action="store_true",
                        help="time crysx_nn's Jacobian path against the fused gradient and exit")
    parser.add_argument("--repeats", type=int, default=20,
                        help="timed calls per shape with --compare-jacobian; the best one counts")
    args = parser.parse_args(argv)
    available, reason = _registry.backend_status(args.backend)
    if not available:
        if args.backend == "cuda" and not reason.startswith("no CUDA device"):
            reason = f"no CUDA device: {reason}"
        parser.error(f"--backend {args.backend} cannot run here: {reason}")

    if args.compare_jacobian:
        rows = compare_jacobian([(32, 10), (1024, 10), (8192, 10), (1024, 100)], args.repeats)
        print_comparison(rows)
        return {"comparison": rows}

    losses, accuracy, seconds = train(args)
    print(f"backend={args.backend} dtype={args.dtype}: {args.epochs} epochs in {seconds:.2f} s")
    print("mean training loss per epoch:", " ".join(f"{loss:.4f}" for loss in losses))
    print(f"test accuracy: {accuracy:.2%}")
    return {"losses": losses, "accuracy": accuracy, "seconds": seconds}


if __name__ == "__main__":
    main()
