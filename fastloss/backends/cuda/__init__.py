"""CUDA backend: NVRTC-compiled kernels from ``kernels/`` launched on CuPy arrays.

Importing this package imports nothing from CuPy; ``_arrays.available()``
says whether the backend can run here, and why not.
"""
