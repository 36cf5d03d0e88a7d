"""The launcher of ``kernels/hinge.cu`` (contract: ``fastloss.backends``)."""

from fastloss.backends.cuda import elementwise

hinge = elementwise.fused("hinge")
