"""The launcher of ``kernels/l1.cu`` (contract: ``fastloss.backends``)."""

from fastloss.backends.cuda import elementwise

l1 = elementwise.fused("l1")
