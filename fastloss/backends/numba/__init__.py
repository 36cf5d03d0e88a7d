"""Numba backend: parallel, deterministic CPU kernels."""
