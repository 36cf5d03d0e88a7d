"""Linear regression by gradient descent on the MSE, with fastloss.mse_with_grad.

Model: h = theta0 + theta1 * x. Loss: J = mean((h - y)**2). One fused call
gives J and dJ/dh = 2 (h - y) / N; the chain rule through h gives

    dJ/dtheta0 = sum(dJ/dh),    dJ/dtheta1 = sum(dJ/dh * x)

and the update rule is theta <- theta - learning_rate * dJ/dtheta. The run
stops when a step moves theta by less than ``--tol`` and checks the result
against np.linalg.lstsq's solution.

    python examples/linear_regression_gd.py [--samples 200] [--steps 20000]
"""

from __future__ import annotations

import argparse

import numpy as np

import fastloss


def make_data(samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 3.0, samples)
    y = 1.5 + 2.0 * x + rng.normal(0.0, 0.3, samples)
    return x, y


def gradient_descent(x, y, learning_rate: float, steps: int, tol: float):
    """``(theta, losses)`` after at most ``steps`` updates."""
    theta = np.zeros(2)
    losses = []
    for _ in range(steps):
        h = theta[0] + theta[1] * x
        loss, dloss_dh = fastloss.mse_with_grad(h, y)
        losses.append(float(loss))
        step = learning_rate * np.array([dloss_dh.sum(), dloss_dh @ x])
        theta -= step
        if np.max(np.abs(step)) < tol:
            break
    return theta, losses


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--samples", type=int, default=200,
                        help="number of (x, y) points drawn around y = 1.5 + 2 x")
    parser.add_argument("--steps", type=int, default=20000,
                        help="most gradient-descent updates to make")
    parser.add_argument("--learning-rate", type=float, default=0.1,
                        help="step size: theta <- theta - learning_rate * dJ/dtheta")
    parser.add_argument("--tol", type=float, default=1e-10,
                        help="stop once an update moves every theta by less than this")
    args = parser.parse_args(argv)

    x, y = make_data(args.samples)
    theta, losses = gradient_descent(x, y, args.learning_rate, args.steps, args.tol)
    design = np.stack([np.ones_like(x), x], axis=1)
    exact = np.linalg.lstsq(design, y, rcond=None)[0]
    error = float(np.max(np.abs(theta - exact)))

    print(f"steps: {len(losses)}   loss: {losses[0]:.6f} -> {losses[-1]:.6f}")
    print(f"gradient descent: theta0 = {theta[0]:.8f}, theta1 = {theta[1]:.8f}")
    print(f"np.linalg.lstsq:  theta0 = {exact[0]:.8f}, theta1 = {exact[1]:.8f}")
    print(f"max |difference| = {error:.2e} ({'within' if error < 1e-4 else 'NOT within'} 1e-4)")
    return {"theta": theta, "lstsq": exact, "error": error, "losses": losses}


if __name__ == "__main__":
    main()
