r"""Sparse-dense product whose gradient stays on the sparsity pattern."""
import torch
from torch import Tensor


class CSRMatmul(torch.autograd.Function):
    r""":math:`\mathbf{Y} = \mathbf{A} \mathbf{X}` for a CSR matrix
    :math:`\mathbf{A}` given by its structure and a differentiable
    :obj:`values` vector.

    :func:`torch.sparse.mm` takes the gradient of a sparse operand through a
    dense :math:`N \times N` matrix; here it is the sampled product

    .. math::
        \nabla \mathbf{A}_{ij} = \langle \nabla \mathbf{Y}_i,
        \mathbf{X}_j \rangle \quad \text{for } (i, j) \in \mathcal{E},

    one :func:`torch.sparse.sampled_addmm` on the pattern, and
    :math:`\nabla \mathbf{X} = \mathbf{A}^\top \nabla \mathbf{Y}`.
    """

    @staticmethod
    def forward(ctx, values: Tensor, crow: Tensor, col: Tensor, x: Tensor,
                num_cols: int) -> Tensor:
        adj = torch.sparse_csr_tensor(crow, col, values,
                                      (crow.numel() - 1, num_cols),
                                      check_invariants=False)
        ctx.save_for_backward(values, crow, col, x)
        ctx.num_cols = num_cols
        return torch.sparse.mm(adj, x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        values, crow, col, x = ctx.saved_tensors
        shape = (crow.numel() - 1, ctx.num_cols)
        grad = grad.contiguous()
        grad_values = grad_x = None
        if ctx.needs_input_grad[0]:
            pattern = torch.sparse_csr_tensor(crow, col,
                                              torch.zeros_like(values), shape,
                                              check_invariants=False)
            grad_values = torch.sparse.sampled_addmm(
                pattern, grad, x.t(), beta=0.0).values()
        if ctx.needs_input_grad[3]:
            adj = torch.sparse_csr_tensor(crow, col, values, shape,
                                          check_invariants=False)
            grad_x = torch.sparse.mm(adj.t(), grad)
        return grad_values, None, None, grad_x, None


def csr_matmul(adj: Tensor, x: Tensor, values: Tensor) -> Tensor:
    r"""The product of the CSR pattern of :obj:`adj` carrying :obj:`values`
    (:math:`(|\mathcal{E}|,)`, differentiable) with :obj:`x`
    :math:`(N, d)`, without a dense gradient (see :class:`CSRMatmul`)."""
    return CSRMatmul.apply(values, adj.crow_indices(), adj.col_indices(), x,
                           adj.size(1))
