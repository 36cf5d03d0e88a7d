"""The launcher of ``kernels/binary_cross_entropy.cu`` (contract: ``fastloss.backends``)."""

from fastloss.backends.cuda import elementwise

binary_cross_entropy = elementwise.fused("binary_cross_entropy")
