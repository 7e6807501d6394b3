r"""Sparse-dense product whose gradient stays on the sparsity pattern."""
import torch
from torch import Tensor

from pyg_lego.data.similarity import CSRPattern


class CSRMatmul(torch.autograd.Function):
    r""":math:`\mathbf{Y} = \mathbf{A} \mathbf{X}` for a CSR matrix
    :math:`\mathbf{A}` given by its :class:`~pyg_lego.data.similarity.
    CSRPattern` and a differentiable :obj:`values` vector.

    :func:`torch.sparse.mm` takes the gradient of a sparse operand through a
    dense :math:`N \times N` matrix; here it is the sampled product

    .. math::
        \nabla \mathbf{A}_{ij} = \langle \nabla \mathbf{Y}_i,
        \mathbf{X}_j \rangle \quad \text{for } (i, j) \in \mathcal{E},

    one :func:`torch.sparse.sampled_addmm` on the pattern, and
    :math:`\nabla \mathbf{X} = \mathbf{A}^\top \nabla \mathbf{Y}`, a CSR
    product with the pattern's cached transpose.
    """

    @staticmethod
    def forward(ctx, values: Tensor, pattern: CSRPattern,
                x: Tensor) -> Tensor:
        ctx.save_for_backward(values, x)
        ctx.pattern = pattern
        return torch.sparse.mm(pattern.matrix(values.detach()), x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        values, x = ctx.saved_tensors
        grad = grad.contiguous()
        grad_values = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_values = torch.sparse.sampled_addmm(
                ctx.pattern.matrix(torch.zeros_like(values)), grad, x.t(),
                beta=0.0).values()
        if ctx.needs_input_grad[2]:
            grad_x = torch.sparse.mm(ctx.pattern.transposed(values), grad)
        return grad_values, None, grad_x


def csr_matmul(pattern: CSRPattern, x: Tensor, values: Tensor) -> Tensor:
    r"""The product of :obj:`pattern` carrying :obj:`values`
    (:math:`(|\mathcal{E}|,)`, differentiable) with :obj:`x`
    :math:`(N, d)`, without a dense gradient (see :class:`CSRMatmul`)."""
    return CSRMatmul.apply(values, pattern, x)
