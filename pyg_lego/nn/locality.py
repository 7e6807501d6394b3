r"""Node relabelling for memory locality.

A kNN graph numbers its nodes in no useful order, so every step of a pass
over it (a walk to a neighbour's row, a gathered feature row) lands in
another cache line once the graph outgrows the caches. The passes that
gather at random run on a renumbered copy of the pattern instead, and map
their values back.
"""
import numpy as np
import torch
from torch import Tensor

from pyg_lego.data.similarity import id_dtype

#: Patterns with at least this many edges are relabelled for the masked
#: power; smaller ones fit the caches as they are.
RELABEL_MIN_EDGES = 1 << 17

#: Propagated views of at least this many bytes (N x d features) are
#: relabelled for each call. Relabelled over not, forward and backward, 3
#: views x 128 float32 (benchmark graphs): 1.18x at 8,000 nodes (3.9 MiB
#: per view), 0.83x at 16,000 (7.8 MiB; on another VM the forward's
#: relabelling cost 0.17 s and saved 0.03 s there), 0.42x at 32,000
#: (15.6 MiB); at 64,000 it saved 0.74 s of the forward for 0.30 s.
RELABEL_MIN_FEATURE_BYTES = 8 * 2**20


class Relabel:
    r"""A coalesced :obj:`edge_index` with its nodes renumbered in reverse
    Cuthill-McKee order of the symmetrised pattern (SciPy), which keeps
    the neighbours of a node close to it in the numbering, and so the rows
    a pass visits close together in memory.

    The maps are 32-bit where the sizes fit.

    Attributes:
        order (torch.Tensor): The input node of every new label.
        edge_perm (torch.Tensor): The input edge id of every position of
            the relabelled pattern.
        edge_rank (torch.Tensor): The inverse: the relabelled position of
            every input edge.
        edge_index (torch.Tensor): The relabelled pattern, coalesced.
    """

    def __init__(self, edge_index: Tensor, num_nodes: int):
        row, col = edge_index[0], edge_index[1]
        order = _rcm_order(row, col, num_nodes)
        rank = _inverse(order)
        row, col = rank[row], rank[col]
        edge_perm = torch.sort(row * num_nodes + col).indices
        self.edge_index = torch.stack([row[edge_perm], col[edge_perm]])
        # The maps in 32 bits where they fit (index_select takes them): at
        # 39M edges the two edge maps are 0.6 GB in 64 bits.
        ids = id_dtype(num_nodes, row.numel())
        self.order, self._rank = order.to(ids), rank.to(ids)
        self.edge_perm = edge_perm.to(ids)
        self.edge_rank = _inverse(edge_perm).to(ids)

    def nodes(self, x: Tensor) -> Tensor:
        r"""Node values :math:`(N, \ldots)` in the relabelled order."""
        return _Permute.apply(x, self.order, self._rank)

    def edges(self, values: Tensor) -> Tensor:
        r"""Edge values :math:`(|\mathcal{E}|, \ldots)` in the relabelled
        order."""
        return _Permute.apply(values, self.edge_perm, self.edge_rank)

    def input_edges(self, values: Tensor) -> Tensor:
        r"""Relabelled edge values back in the input order."""
        return _Permute.apply(values, self.edge_rank, self.edge_perm)


class _Permute(torch.autograd.Function):
    r"""``x[perm]`` whose gradient is a gather by the inverse permutation:
    autograd's own, an accumulating scatter, took most of the time the
    relabelling saved in the backward pass."""

    @staticmethod
    def forward(ctx, x: Tensor, perm: Tensor, inverse: Tensor) -> Tensor:
        ctx.save_for_backward(inverse)
        return x.index_select(0, perm)

    @staticmethod
    def backward(ctx, grad: Tensor):
        inverse, = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


def _rcm_order(row: Tensor, col: Tensor, num_nodes: int) -> Tensor:
    import scipy.sparse as sp
    from scipy.sparse.csgraph import reverse_cuthill_mckee
    adj = sp.csr_matrix((np.ones(row.numel(), dtype=np.int8),
                         (row.numpy(), col.numpy())),
                        shape=(num_nodes, num_nodes))
    return torch.from_numpy(reverse_cuthill_mckee(
        adj, symmetric_mode=False).astype(np.int64))


def _inverse(perm: Tensor) -> Tensor:
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    return inv
