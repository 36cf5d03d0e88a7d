"""The launcher of ``kernels/smooth_l1.cu`` (contract: ``fastloss.backends``)."""

from fastloss.backends.cuda import elementwise

smooth_l1 = elementwise.fused("smooth_l1")
