"""The launcher of ``kernels/binary_cross_entropy_with_logits.cu``
(contract: ``fastloss.backends``)."""

from fastloss.backends.cuda import elementwise

binary_cross_entropy_with_logits = elementwise.fused("binary_cross_entropy_with_logits")
