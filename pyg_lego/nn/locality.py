r"""Node relabelling for memory locality.

A kNN graph numbers its nodes in no useful order, so every step of a pass
over it (a walk to a neighbour's row, a gathered feature row) lands in
another cache line once the graph outgrows the caches. The passes that
gather at random run on a renumbered copy of the pattern instead, and map
their values back.
"""
from typing import Optional

import torch
from torch import Tensor

from pyg_lego.data.similarity import CSRPattern, id_dtype

#: Patterns with at least this many edges are relabelled where the
#: relabelling is built once and reused: for the masked power (numba) and
#: the propagated mode of a :obj:`cached` conv (the propagated mode also
#: relabels per call past :data:`RELABEL_MIN_FEATURE_BYTES`); smaller ones
#: fit the caches as they are. benchmarks/results/switches.md, masked power
#: (numba, P = 3, M = 3, forward and backward) on a kNN graph of 1,017,940
#: edges (26,000 nodes, 3 views, k = 16, numbered at random): relabelled
#: once and reused (cached=True) 1.31x, kept; relabelled per call 0.58x
#: (slower), so an uncached conv runs the masked power as numbered.
RELABEL_MIN_EDGES = 1 << 17

#: Propagated views of at least this many bytes (N x d features) are
#: relabelled for each call. benchmarks/results/switches.md, forward and
#: backward, 3 views x 128 float32 on a kNN graph (k = 16, numbered at
#: random): 1.10x at 64,000 nodes (31.2 MiB per view), at the 10% bar;
#: sizes between this threshold and 31.2 MiB are not measured there.
RELABEL_MIN_FEATURE_BYTES = 8 * 2**20

#: Groups of at most this many nodes are left in the input order by
#: :class:`Relabel` (from 4 to 256, an edge's median span was 104 to 114
#: labels at 64,000 nodes in a one-off run: the groups' own order hardly
#: matters).
LEAF_SIZE = 256


class Relabel:
    r"""A coalesced :obj:`edge_index` with its nodes renumbered in
    :func:`locality_order` (or in a given :obj:`order`), which keeps the
    neighbours of a node close to it in the numbering, and so the rows a
    pass visits close together in memory.

    The maps are 32-bit where the sizes fit.

    Attributes:
        order (torch.Tensor): The input node of every new label.
        edge_perm (torch.Tensor): The input edge id of every position of
            the relabelled pattern.
        edge_rank (torch.Tensor): The inverse: the relabelled position of
            every input edge.
        edge_index (torch.Tensor): The relabelled pattern, coalesced.
    """

    def __init__(self, edge_index: Tensor, num_nodes: int,
                 order: Optional[Tensor] = None):
        row, col = edge_index[0], edge_index[1]
        if order is None:
            order = locality_order(edge_index, num_nodes,
                                   leaf_size=LEAF_SIZE)
        rank = _inverse(order)
        row, col = rank[row], rank[col]
        # Not coalesce or sort_edge_index: neither returns the permutation
        # (benchmarks/results/library_replacements.md, unmatched pieces).
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


def locality_order(edge_index: Tensor, num_nodes: int, dim: int = 8,
                   iterations: int = 10, leaf_size: int = 256,
                   seed: int = 0) -> Tensor:
    r"""The nodes of a coalesced :obj:`edge_index` in an order that keeps
    the neighbours of a node close to it: each node gets :obj:`dim` random
    values, smoothed by :obj:`iterations` rounds of averaging over its
    neighbours (centred and rescaled after each, so that they settle on the
    slowly mixing directions of the graph: its communities), and the nodes
    are then split at the median of the coordinate of largest spread,
    group by group, until no group has more than :obj:`leaf_size` nodes.

    On the benchmark's kNN graphs (3 views, k = 16) an edge's median span
    :math:`|i - j|` in this numbering was 92, 104 and 233 at 16,000, 64,000
    and 1M nodes, where reverse Cuthill-McKee's was 268, 3,007 and 77,542;
    a CSR product with 128 columns took 0.61x RCM's time at 64,000 nodes
    and 0.75x at 1M (``benchmarks/locality.py``).

    Args:
        edge_index (torch.Tensor): The pattern, sorted by row.
        num_nodes (int): The number of nodes :math:`N`.
        dim (int, optional): Random values per node. (default: :obj:`8`)
        iterations (int, optional): Rounds of neighbour averaging.
            (default: :obj:`10`)
        leaf_size (int, optional): Groups of at most this many nodes are
            not split further. (default: :obj:`256`)
        seed (int, optional): Seed of the random values; the order is a
            function of the pattern and the seed, and draws nothing from
            torch's global generator. (default: :obj:`0`)

    Returns:
        The input node of every new label, :math:`(N,)`.
    """
    row, col = edge_index[0], edge_index[1]
    device = edge_index.device
    deg = torch.bincount(row, minlength=num_nodes)
    # Row-normalised adjacency: one product averages over the neighbours.
    mean = CSRPattern(row, col, num_nodes, num_nodes).matrix(
        deg.clamp(min=1).to(torch.float).reciprocal()[row])
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(num_nodes, dim, generator=gen, device=device)
    # Two buffers in turn: the loop allocates nothing per round.
    y = torch.empty_like(x)
    for _ in range(iterations):
        torch.mm(mean, x, out=y)
        x, y = y, x
        x.sub_(x.mean(0)).div_(x.norm(dim=0).clamp_(min=1e-30))
    del mean, y
    squared = x * x
    # The values stay in node order; each level sorts the node ids.
    order = torch.arange(num_nodes, device=device)
    group = torch.zeros(num_nodes, dtype=torch.long, device=device)
    size, num_groups = num_nodes, 1
    while size > leaf_size:
        # Per group, the coordinate of largest variance.
        sums = x.new_zeros(num_groups, dim).index_add_(0, group, x)
        squares = x.new_zeros(num_groups, dim).index_add_(0, group, squared)
        count = torch.bincount(group, minlength=num_groups)
        var = squares - sums * sums / count.clamp(min=1).unsqueeze(-1)
        key = x.gather(1, var.argmax(1)[group].unsqueeze(-1)).squeeze(-1)
        # Sorted by that coordinate within each group, groups kept apart.
        order = torch.argsort(key, stable=True)
        order = order[torch.argsort(group[order], stable=True)]
        sorted_group = group[order]
        rank = torch.arange(num_nodes, device=device) - \
            (torch.cumsum(count, 0) - count)[sorted_group]
        group[order] = 2 * sorted_group + \
            (2 * rank >= count[sorted_group]).long()
        size, num_groups = (size + 1) // 2, 2 * num_groups
    return order


def _inverse(perm: Tensor) -> Tensor:
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=perm.device)
    return inv
