from typing import Optional

import torch
from torch import Tensor

from pyg_lego.data.validation import check_edge_index, edge_facts

#: The padded per-row sort of :func:`topk_mask` runs where its table
#: (nodes x largest degree) holds at most this many times the edges;
#: beyond (a few nodes of very high degree), two sorts of all edges.
#: The padded sort gains >= 10% (benchmarks/results/switches.md).
PADDED_MAX_FILL = 4


def reverse_edges(edge_index: Tensor, num_nodes: int) -> Tensor:
    r"""The id of each edge's reverse :math:`(j, i)` in :obj:`edge_index`,
    or :obj:`-1` where the pattern lacks it (a self-loop is its own
    reverse)."""
    row, col = edge_index
    # The fast paths branch on the data, which a compiled graph cannot.
    if row.numel() > 1 and not torch.compiler.is_compiling() and \
            bool((row[1:] >= row[:-1]).all()):
        # Rows in order: the edges sorted by (col, row) are the reverses of
        # the edges in their order, where the pattern is symmetric and has
        # no duplicates; one stable sort of the columns replaces sorting
        # the keys and searching them.
        perm = torch.sort(col, stable=True)[1]
        if torch.equal(row[perm], col) and torch.equal(col[perm], row) and \
                bool(((row[1:] > row[:-1]) | (col[1:] != col[:-1])).all()):
            return perm
    # No PyG function gives each edge's reverse id (the record's list of
    # unmatched pieces, benchmarks/results/library_replacements.md).
    key = row * num_nodes + col
    sorted_key, perm = torch.sort(key)
    rkey = col * num_nodes + row
    pos = torch.searchsorted(sorted_key, rkey).clamp_max(key.numel() - 1)
    found = sorted_key[pos] == rkey
    return torch.where(found, perm[pos], torch.full_like(pos, -1))


def topk_mask(edge_index: Tensor, edge_weight: Tensor, k: int,
              num_nodes: Optional[int] = None,
              reverse: Optional[Tensor] = None) -> Tensor:
    r"""Which edges :func:`TopKSparsify` keeps: per node its :obj:`k`
    heaviest edges other than its self-loop (ties: the earlier edge), then
    made symmetric (an edge stays where either end selected it), and every
    self-loop.

    Args:
        edge_index (torch.Tensor): Edges :math:`(2, |\mathcal{E}|)`.
        edge_weight (torch.Tensor): Weights :math:`(|\mathcal{E}|,)` or
            :math:`(|\mathcal{E}|, C)` (each channel selects its own edges).
        k (int): Edges kept per node.
        num_nodes (int, optional): :math:`N`.
        reverse (torch.Tensor, optional): :func:`reverse_edges` of
            :obj:`edge_index`, where it is reused across calls.

    Duplicate edges count once, with the largest weight of their copies,
    and are kept or dropped together.

    Returns:
        Booleans of the shape of :obj:`edge_weight`.
    """
    num_nodes = _num_nodes(edge_index, num_nodes)
    unique = _unique_edges(edge_index, num_nodes)
    if unique is not None:
        edges, inverse = unique
        w = edge_weight.detach()
        best = w.new_full((edges.size(1), ) + tuple(w.shape[1:]),
                          float('-inf'))
        best.index_reduce_(0, inverse, w, 'amax')
        return topk_mask(edges, best, k, num_nodes)[inverse]
    if edge_weight.dim() == 2:
        rev = reverse if reverse is not None else \
            reverse_edges(edge_index, num_nodes)
        return torch.stack([topk_mask(edge_index, edge_weight[:, c], k,
                                      num_nodes, rev)
                            for c in range(edge_weight.size(1))], dim=-1)
    if reverse is None:
        reverse = reverse_edges(edge_index, num_nodes)
    row, col = edge_index
    loop = row == col
    # Heaviest first within a row; self-loops last, so that they take no
    # place among the k.
    key = edge_weight.detach().masked_fill(loop, float('-inf'))
    # bincount, not torch_geometric.index.index2ptr (0.49x the time on
    # sorted rows, benchmarks/results/library_replacements.md): the rows
    # may come in any order here, and index2ptr needs them sorted.
    count = torch.bincount(row, minlength=num_nodes)
    start = torch.cumsum(count, 0) - count
    chosen = _row_ranks_below(key, row, count, start, k) & ~loop
    by_reverse = torch.zeros_like(chosen)
    has = reverse >= 0
    by_reverse[has] = chosen[reverse[has]]
    return chosen | by_reverse | loop


def _unique_edges(edge_index: Tensor, num_nodes: int):
    r"""The distinct edges (coalesced) and each edge's id among them, where
    :obj:`edge_index` repeats an edge; :obj:`None` otherwise (and inside a
    compiled graph, which is given coalesced edges)."""
    # torch_geometric.utils.coalesce returns no inverse map; with a
    # searchsorted for it, it took 4.39x the time at 4.1M edges
    # (benchmarks/results/library_replacements.md).
    if edge_index.size(1) < 2 or torch.compiler.is_compiling() or \
            edge_facts(edge_index)[2]:
        return None
    key = edge_index[0] * num_nodes + edge_index[1]
    uniq, inverse = torch.unique(key, return_inverse=True)
    if uniq.numel() == key.numel():
        return None
    return torch.stack([uniq // num_nodes, uniq % num_nodes]), inverse


def _row_ranks_below(key: Tensor, row: Tensor, count: Tensor, start: Tensor,
                     k: int) -> Tensor:
    r"""Whether each edge is among the :obj:`k` largest :obj:`key` of its
    row (ties: the earlier edge)."""
    num = key.numel()
    width = 0 if torch.compiler.is_compiling() or not count.numel() else \
        int(count.max())
    if num > 1 and not torch.compiler.is_compiling() and \
            count.numel() * width <= PADDED_MAX_FILL * num and \
            bool((row[1:] >= row[:-1]).all()):
        # Rows in order (a coalesced pattern): each row sorted on its own
        # in a padded [N, max degree] table, the padding after every edge.
        pos = torch.arange(num, device=key.device) - start[row]
        table = key.new_full((count.numel(), width), float('-inf'))
        table[row, pos] = key
        top = torch.sort(table, dim=1, descending=True,
                         stable=True)[1][:, :k]
        taken = torch.zeros(count.numel(), width, dtype=torch.bool,
                            device=key.device)
        taken.scatter_(1, top, True)
        return taken[row, pos]
    order = torch.argsort(key, descending=True, stable=True)
    order = order[torch.argsort(row[order], stable=True)]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(num, device=key.device) - start[row[order]]
    return rank < k


def _num_nodes(edge_index: Tensor, num_nodes: Optional[int]) -> int:
    if num_nodes is not None:
        return num_nodes
    if torch.compiler.is_compiling():
        return int(edge_index.max()) + 1 if edge_index.numel() else 0
    return edge_facts(edge_index)[1] + 1


class TopKSparsify(torch.nn.Module):
    r"""Keeps per node the :math:`k` heaviest edges of a fused graph, made
    symmetric, with every self-loop; the weights of the other edges become 0,

    .. math::
        \mathbf{G}'_{ij} = \mathbf{G}_{ij} \cdot \big[\, i = j \;\lor\;
        j \in \mathrm{top}_k(\mathbf{G}_{i, :}) \;\lor\;
        i \in \mathrm{top}_k(\mathbf{G}_{j, :}) \,\big]

    (the top-:math:`k` among a node's edges other than its self-loop; ties
    go to the earlier edge), so the output stays on the input's
    :obj:`edge_index` and any PyG layer that sums weighted messages
    (:class:`~torch_geometric.nn.conv.GCNConv`,
    :class:`~torch_geometric.nn.conv.GraphConv`, APPNP, SGC) sees exactly the
    sparsified graph. Copies of one edge (an uncoalesced input) count once,
    with their largest weight. The selection is a step function: gradients
    flow to the kept weights, none to the dropped ones. :func:`drop_zero_edges`
    removes the dropped edges where a smaller :obj:`edge_index` is wanted.

    The union of the views' kNN graphs holds several times :math:`k` edges
    per node, most of them chosen by a single view; the fused weights rank
    them by all views at once, and keeping the top of that ranking keeps the
    edges the views agree on.

    Args:
        k (int): Edges kept per node (before symmetrisation).

    Shapes:
        - **input:** edge indices :math:`(2, |\mathcal{E}|)`, fused weights
          :math:`(|\mathcal{E}|,)` or :math:`(|\mathcal{E}|, C)` (each
          channel keeps its own edges)
        - **output:** weights of the input's shape
    """

    def __init__(self, k: int):
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        self.k = k

    def forward(self, edge_index: Tensor, edge_weight: Tensor,
                num_nodes: Optional[int] = None) -> Tensor:
        if edge_weight.dim() not in (1, 2) or \
                edge_weight.size(0) != edge_index.size(-1):
            num = edge_index.size(-1)
            raise ValueError(f"edge_weight must have shape [{num}] or "
                             f"[{num}, C] for {num} edges, got "
                             f"{list(edge_weight.shape)}")
        # Shape and dtype only: a range check would wait for the device.
        check_edge_index(edge_index)
        mask = topk_mask(edge_index, edge_weight, self.k, num_nodes)
        return edge_weight * mask.to(edge_weight.dtype)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(k={self.k})'


def drop_zero_edges(edge_index: Tensor, edge_weight: Tensor):
    r"""The edges whose weight is non-zero in some channel, and their
    weights: the pattern of a sparsified graph without its dropped edges.

    Returns:
        :obj:`(edge_index, edge_weight)`.
    """
    nonzero = edge_weight != 0
    keep = nonzero if edge_weight.dim() == 1 else nonzero.any(dim=-1)
    return edge_index[:, keep], edge_weight[keep]
