"""Adapters that give fastloss's kernels the call conventions of other libraries.

- ``fastloss.compat.crysx``: crysx_nn's ``MSE_loss`` / ``MSE_loss_grad`` and a
  fused softmax cross-entropy, for ``nn_optimize(errorFunc=..., gradErrorFunc=...)``.

PyTorch has its own module, ``fastloss.torch``.
"""
