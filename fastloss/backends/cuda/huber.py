"""The launcher of ``kernels/huber.cu`` (contract: ``fastloss.backends``)."""

from fastloss.backends.cuda import elementwise

huber = elementwise.fused("huber")
