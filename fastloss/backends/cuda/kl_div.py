"""The launcher of ``kernels/kl_div.cu`` (contract: ``fastloss.backends``)."""

from fastloss.backends.cuda import elementwise

kl_div = elementwise.fused("kl_div")
