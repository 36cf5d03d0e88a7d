"""Train one small PyTorch model twice: with torch's cross_entropy and with fastloss's.

Both runs start from the same weights and see the same batches, so their loss
curves should agree to rounding; the script prints both curves and their
largest difference. It then times forward+backward of each loss on a larger
batch of logits, eagerly and compiled with ``torch.compile(fullgraph=True)``
(the default Inductor backend; fastloss's losses are custom ops, so they
compile without a graph break), and prints the four times and the ratios
fastloss / torch. Warm-up calls, which compile, are not timed. Compiling
takes seconds to tens of seconds on a small machine; ``--no-compile`` skips
the compiled rows.

    python examples/torch_training.py [--steps 100] [--device cpu|cuda] [--no-compile]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import fastloss.torch as fltorch


def make_data(samples, features, classes, generator):
    centers = torch.randn(classes, features, generator=generator) * 0.3
    labels = torch.randint(0, classes, (samples,), generator=generator)
    inputs = centers[labels] + torch.randn(samples, features, generator=generator)
    return inputs, labels


def make_model(features, hidden, classes, seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, classes)
    )


def train(loss_fn, args, device, dtype):
    """Mean loss per step of SGD with ``loss_fn(logits, labels)``."""
    generator = torch.Generator().manual_seed(args.seed)
    inputs, labels = make_data(args.samples, args.features, args.classes, generator)
    inputs, labels = inputs.to(device, dtype), labels.to(device)
    model = make_model(args.features, args.hidden, args.classes, args.seed).to(device, dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.learning_rate, momentum=0.9)
    batches = torch.randperm(args.samples, generator=generator).to(device).split(args.batch_size)
    curve = []
    for step in range(args.steps):
        batch = batches[step % len(batches)]
        optimizer.zero_grad()
        loss = loss_fn(model(inputs[batch]), labels[batch])
        loss.backward()
        optimizer.step()
        curve.append(loss.item())
    return curve


def time_forward_backward(loss_fn, logits, labels, repeats, device, warmups=2):
    """Best wall time of ``loss_fn(logits, labels).backward()`` over ``repeats`` calls, in
    seconds, after ``warmups`` untimed calls (which compile, or warm caches)."""
    best = float("inf")
    for call in range(warmups + repeats):
        logits.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        loss_fn(logits, labels).backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if call >= warmups:
            best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--steps", type=int, default=100,
                        help="SGD steps of each training run")
    parser.add_argument("--samples", type=int, default=1024,
                        help="size of the synthetic training set")
    parser.add_argument("--features", type=int, default=32,
                        help="input features per sample")
    parser.add_argument("--hidden", type=int, default=64,
                        help="units in the hidden ReLU layer")
    parser.add_argument("--classes", type=int, default=10,
                        help="classes of the training set, i.e. the model's outputs")
    parser.add_argument("--batch-size", type=int, default=128,
                        help="samples per SGD step")
    parser.add_argument("--learning-rate", type=float, default=0.05,
                        help="SGD step size, with momentum 0.9")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                        help="floating-point type of the model, data and timed logits")
    parser.add_argument("--device", default="cpu",
                        help="torch device to train and time on, e.g. cpu, cuda, cuda:1")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the data, initial weights, batch order and timed logits")
    parser.add_argument("--bench-rows", type=int, default=4096,
                        help="rows (samples) of the logits timed after training")
    parser.add_argument("--bench-classes", type=int, default=1000,
                        help="columns (classes) of the logits timed after training")
    parser.add_argument("--repeats", type=int, default=10,
                        help="timed forward+backward calls per loss after warm-up; "
                             "the best one counts")
    parser.add_argument("--no-compile", action="store_true",
                        help="time the losses eagerly only, skipping torch.compile's rows "
                             "(compiling takes seconds to tens of seconds)")
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this PyTorch sees no CUDA device")

    torch_curve = train(F.cross_entropy, args, device, dtype)
    fastloss_curve = train(fltorch.cross_entropy, args, device, dtype)
    difference = max(abs(a - b) for a, b in zip(torch_curve, fastloss_curve, strict=True))
    print(f"{'step':>5} {'torch':>12} {'fastloss':>12}")
    for step in range(0, args.steps, max(1, args.steps // 10)):
        print(f"{step:>5} {torch_curve[step]:>12.8f} {fastloss_curve[step]:>12.8f}")
    print(f"largest difference over {args.steps} steps: {difference:.2e}")

    generator = torch.Generator().manual_seed(args.seed)
    logits = torch.randn(args.bench_rows, args.bench_classes, generator=generator)
    logits = logits.to(device, dtype).requires_grad_()
    labels = torch.randint(0, args.bench_classes, (args.bench_rows,), generator=generator)
    labels = labels.to(device)
    losses = {"torch": F.cross_entropy, "fastloss": fltorch.cross_entropy}
    modes = ["eager"] if args.no_compile else ["eager", "compiled"]
    times = {}
    for mode in modes:
        for name, loss_fn in losses.items():
            if mode == "compiled":
                loss_fn = torch.compile(loss_fn, fullgraph=True)
            times[f"{name} {mode}"] = time_forward_backward(
                loss_fn, logits, labels, args.repeats, device
            )
    print(f"forward+backward of cross-entropy on ({args.bench_rows}, {args.bench_classes}) "
          f"{args.dtype} logits on {device}, best of {args.repeats} after warm-up:")
    for name in ("torch", "fastloss"):
        for mode in modes:
            print(f"  {f'{name} {mode}':>17}: {times[f'{name} {mode}'] * 1e3:8.3f} ms")
    ratios = {mode: times[f"fastloss {mode}"] / times[f"torch {mode}"] for mode in modes}
    for mode, ratio in ratios.items():
        print(f"  fastloss {mode} / torch {mode}: {ratio:.2f}")
    return {"torch": torch_curve, "fastloss": fastloss_curve, "difference": difference,
            "times": times, "ratios": ratios}


if __name__ == "__main__":
    main()
