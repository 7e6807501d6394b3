r"""Similarity Network Fusion (Wang et al., "Similarity network fusion for
aggregating data types on a genomic scale", Nature Methods 2014) on a sparse
shared pattern: the multi-view graph baseline that fuses by cross-diffusion
instead of learning."""
import torch
from torch import Tensor

from pyg_lego.data.validation import check_edge_index
from pyg_lego.nn.sparsify import reverse_edges

#: Cross-diffusion rounds (the paper uses 10 to 20).
SNF_ROUNDS = 20


def full_normalize(w: Tensor, edge_index: Tensor, num_nodes: int) -> Tensor:
    r"""SNF's status matrix :math:`\mathbf{P}` of affinities :obj:`w` on a
    pattern: :math:`P_{ij} = W_{ij} / (2 \sum_{k \ne i} W_{ik})` off the
    diagonal and :math:`P_{ii} = 1/2` (on the pattern's self-loops)."""
    row, col = edge_index
    loop = row == col
    off = w.masked_fill(loop, 0.0)
    deg = off.new_zeros(num_nodes).index_add(0, row, off)
    p = off / (2.0 * deg.clamp_min(torch.finfo(w.dtype).tiny))[row]
    return torch.where(loop, torch.full_like(p, 0.5), p)


def local_kernel(w: Tensor, edge_index: Tensor, num_nodes: int,
                 k: int) -> Tensor:
    r"""SNF's kNN kernel :math:`\mathbf{S}`: each row keeps its :obj:`k`
    largest affinities (its self-loop included, ties to the earlier edge),
    normalised to sum to 1; 0 on the other edges."""
    row = edge_index[0]
    order = torch.argsort(w, descending=True, stable=True)
    order = order[torch.argsort(row[order], stable=True)]
    count = torch.bincount(row, minlength=num_nodes)
    start = torch.cumsum(count, 0) - count
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=w.device) - \
        start[row[order]]
    s = w * (rank < k).to(w.dtype)
    total = s.new_zeros(num_nodes).index_add(0, row, s)
    return s / total.clamp_min(torch.finfo(w.dtype).tiny)[row]


def _lookup(matrix: Tensor, edge_index: Tensor, num_nodes: int) -> Tensor:
    r"""The entries of a coalesced sparse matrix on the edges of a pattern
    (0 where it has none)."""
    idx, val = matrix.indices(), matrix.values()
    if val.numel() == 0:
        return val.new_zeros(edge_index.size(1))
    key = idx[0] * num_nodes + idx[1]  # sorted: the matrix is coalesced
    query = edge_index[0] * num_nodes + edge_index[1]
    pos = torch.searchsorted(key, query).clamp_max(key.numel() - 1)
    return torch.where(key[pos] == query, val[pos], val.new_zeros(()))


def _sparse(edge_index: Tensor, value: Tensor, num_nodes: int) -> Tensor:
    keep = value != 0
    return torch.sparse_coo_tensor(edge_index[:, keep], value[keep],
                                   (num_nodes, num_nodes),
                                   check_invariants=False).coalesce()


def masked_triple(s: Tensor, q: Tensor, edge_index: Tensor,
                  num_nodes: int) -> Tensor:
    r""":math:`(\mathbf{S} \mathbf{Q} \mathbf{S}^\top)_{ij}` on the edges
    :math:`(i, j)` of the pattern, from two sparse products. :math:`\mathbf{S}`
    has :math:`k` entries per row, so the products hold at most :math:`k`
    and :math:`k^2` times the pattern's non-zeros, and never more than
    :math:`N^2`: a baseline for the data sets of the comparison, not for
    millions of nodes."""
    smat = _sparse(edge_index, s, num_nodes)
    t = torch.sparse.mm(smat, _sparse(edge_index, q, num_nodes))
    u = torch.sparse.mm(t, smat.t()).coalesce()
    return _lookup(u, edge_index, num_nodes)


def snf(edge_index: Tensor, affinity: Tensor, num_nodes: int, k: int = 10,
        rounds: int = SNF_ROUNDS) -> Tensor:
    r"""Similarity Network Fusion of :math:`M` views' affinities on one
    shared pattern :math:`\mathcal{E}` (symmetric, with self-loops):

    .. math::
        \mathbf{P}_m \leftarrow \mathrm{mask}_{\mathcal{E}}\Big(
        \mathbf{S}_m \Big(\frac{1}{M - 1} \sum_{l \ne m} \mathbf{P}_l\Big)
        \mathbf{S}_m^\top\Big)

    for :obj:`rounds` rounds, all views at once, each :math:`\mathbf{P}_m`
    then made symmetric and renormalised by :func:`full_normalize`;
    :math:`\mathbf{P}_m` starts as :func:`full_normalize` of the view's
    affinities and :math:`\mathbf{S}_m` is their :func:`local_kernel`. The
    fused graph is the mean of the :math:`\mathbf{P}_m`. On the complete
    pattern the mask does nothing and this is the cross-diffusion of Wang
    et al. (2014); on a kNN pattern the diffusion stays on the pattern's
    edges. A single view is returned normalised, without diffusion.

    Args:
        edge_index (torch.Tensor): The pattern :math:`(2, |\mathcal{E}|)`.
        affinity (torch.Tensor): Affinities :math:`(|\mathcal{E}|, M)`, e.g.
            the :obj:`score_map="snf"` scores of
            :func:`~pyg_lego.build_relation_graph`.
        num_nodes (int): :math:`N`.
        k (int, optional): Neighbours of the local kernel. (default: :obj:`10`)
        rounds (int, optional): Diffusion rounds. (default: :obj:`20`)

    Returns:
        The fused weights :math:`(|\mathcal{E}|,)`.
    """
    check_edge_index(edge_index, num_nodes)
    if affinity.dim() != 2 or affinity.size(0) != edge_index.size(1):
        raise ValueError(f"affinity must have shape [{edge_index.size(1)}, "
                         f"M], got {list(affinity.shape)}")
    if k < 1 or rounds < 0:
        raise ValueError(f"need k >= 1 and rounds >= 0, got k={k}, "
                         f"rounds={rounds}")
    num_views = affinity.size(1)
    rev = reverse_edges(edge_index, num_nodes)
    if bool((rev < 0).any()):
        raise ValueError("snf needs a symmetric pattern")
    w = affinity.clamp_min(0.0)
    p = [full_normalize(w[:, m], edge_index, num_nodes)
         for m in range(num_views)]
    s = [local_kernel(w[:, m], edge_index, num_nodes, k)
         for m in range(num_views)]
    for _ in range(rounds if num_views > 1 else 0):
        total = sum(p)
        new = []
        for m in range(num_views):
            q = (total - p[m]) / (num_views - 1)
            pm = masked_triple(s[m], q, edge_index, num_nodes)
            pm = (pm + pm[rev]) / 2.0
            new.append(full_normalize(pm, edge_index, num_nodes))
        p = new
    return sum(p) / num_views
