r"""Symmetric normalisation of relation scores on a sparse pattern."""
import torch
from torch import Tensor


def relation_norm(edge_index: Tensor, edge_attr: Tensor,
                  num_nodes: int) -> Tensor:
    r"""Normalises every view's scores as
    :math:`\mathbf{A} = \mathbf{D}^{-1/2} \mathbf{R} \mathbf{D}^{-1/2}`,
    with :math:`\mathbf{D}` the weighted degree on the pattern, per view.

    A node of zero (or negative) degree gets :math:`D^{-1/2} = 0`, as
    :func:`~torch_geometric.nn.conv.gcn_conv.gcn_norm` does for isolated
    nodes; the default score maps keep every degree positive.

    Args:
        edge_index (torch.Tensor): :math:`(2, |\mathcal{E}|)`.
        edge_attr (torch.Tensor): Scores :math:`(|\mathcal{E}|, M)`.
        num_nodes (int): :math:`N`.

    Returns:
        :math:`(|\mathcal{E}|, M)`.
    """
    # Not torch_geometric.nn.conv.gcn_conv.gcn_norm (1.06x this time,
    # forward and backward at 2.1M edges,
    # benchmarks/results/library_replacements.md): its pow(-0.5) then
    # masked_fill gives NaN gradients at nodes of zero degree and NaN at
    # negative degrees (raw cosine scores), where this gives 0.
    row, col = edge_index[0], edge_index[1]
    deg = edge_attr.new_zeros(num_nodes, edge_attr.size(-1))
    deg = deg.index_add(0, row, edge_attr)
    positive = deg > 0
    tiny = torch.finfo(deg.dtype).tiny
    dinv = torch.where(positive, deg.clamp_min(tiny).rsqrt(),
                       torch.zeros_like(deg))
    return dinv[row] * edge_attr * dinv[col]
