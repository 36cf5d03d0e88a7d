"""One module per loss, named after it, each defining ``SPEC`` (a ``peers.Spec``).

``peers.spec(loss)`` finds ``fastloss.bench.specs.<loss>`` by name; a loss without one is an
error. A new loss's benchmarks are one module here.
"""
