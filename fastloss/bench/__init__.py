"""``python -m fastloss bench``: the benchmark report, shipped with the package.

``report`` times every loss's contenders (``peers``) and prints the tables; ``specs.<loss>``
declares one loss's inputs, bytes moved, float64 reference and peers; ``dask_report`` times
``fastloss.dask`` on local clusters. Only NumPy and Numba are imported up front: every other
peer (PyTorch, CuPy, Matplotlib, Dask) is imported when it runs, and left out where missing.
"""
