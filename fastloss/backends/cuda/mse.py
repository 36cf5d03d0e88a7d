"""MSE on the GPU: the launcher of ``kernels/mse.cu`` (contract: ``fastloss.backends``)."""

from fastloss.backends.cuda import elementwise

mse = elementwise.fused("mse")
