r"""Adaptive score maps: cosine similarities turned into affinities whose
bandwidth follows each node's own neighbourhood, so that related pairs score
near 1 and unrelated pairs near 0 in dense and sparse regions alike.

The affine map :math:`(1 + s) / 2` keeps every score in a narrow band
(unrelated pairs of standardised features sit near 0.5), which a weighted sum
of views barely separates. The two maps here rescale the cosine distance
:math:`\rho_{ij} = \sqrt{2 - 2 s_{ij}}` (the Euclidean distance of the unit
rows) by per-node scales read off the pattern:

- :obj:`"local"`, the self-tuning affinity of Zelnik-Manor and Perona
  ("Self-Tuning Spectral Clustering", NIPS 2004), with :math:`\sigma_i` the
  distance of node :math:`i` to its :math:`k`-th nearest neighbour:

  .. math::
      \phi(s_{ij}) = \exp\Big(-\frac{\rho_{ij}^2}{\sigma_i \sigma_j}\Big)

- :obj:`"snf"`, the scaled exponential kernel of Similarity Network Fusion
  (Wang et al., "Similarity network fusion for aggregating data types on a
  genomic scale", Nature Methods 2014), with :math:`\bar\rho_i` the mean
  distance of :math:`i` to its :math:`k` nearest neighbours and
  :math:`\mu = 0.5`, as its reference implementation evaluates it (a
  Gaussian of width :math:`\mu \varepsilon_{ij}`, without the normalising
  constant, so that a self-loop scores 1):

  .. math::
      \varepsilon_{ij} = \frac{\bar\rho_i + \bar\rho_j + \rho_{ij}}{3},
      \qquad \phi(s_{ij}) = \exp\Big(-\frac{\rho_{ij}^2}
      {2 \mu^2 \varepsilon_{ij}^2}\Big)

The neighbours are those of node :math:`i` on the pattern, ranked by this
view's distance. The pattern holds every view's own kNN edges, so for an
exact kNN pattern they are the view's :math:`k` nearest neighbours. Nodes
with fewer than :math:`k` neighbours on the pattern use all they have. The
scales are gathered from the edge distances, so the scores stay
differentiable with respect to the features.
"""
from typing import Tuple

import torch
from torch import Tensor
from torch_geometric.index import index2ptr

#: The score maps whose bandwidth is set per node from the pattern.
ADAPTIVE_MAPS = ('local', 'snf')
#: SNF's kernel width :math:`\mu` (its authors' recommended 0.3 to 0.8).
SNF_MU = 0.5
#: Smallest bandwidth, so that duplicate nodes do not divide by zero.
SCALE_EPS = 1e-6


def neighbour_distances(dist: Tensor, edge_index: Tensor, num_nodes: int,
                        k: int) -> Tuple[Tensor, Tensor]:
    r"""Per node, the distance to its :math:`k`-th nearest neighbour on the
    pattern and the mean distance to its :math:`k` nearest (self-loops
    excluded; fewer neighbours than :math:`k`: all of them; none: 0).

    Args:
        dist (torch.Tensor): Edge distances :math:`(|\mathcal{E}|,)`.
        edge_index (torch.Tensor): The pattern :math:`(2, |\mathcal{E}|)`.
        num_nodes (int): :math:`N`.
        k (int): Neighbours.

    Returns:
        :obj:`(kth, mean)`, each :math:`(N,)`.
    """
    row, col = edge_index
    off = row != col
    row, d = row[off], dist[off]
    # Rows in order, distances ascending within each row (two stable sorts).
    order = torch.argsort(d.detach(), stable=True)
    order = order[torch.argsort(row[order], stable=True)]
    row, d = row[order], d[order]
    # The rows are sorted: PyG's CSR pointer gives their counts and starts
    # (0.50x the time of bincount and cumsum at 2.1M edges,
    # benchmarks/results/library_replacements.md).
    ptr = index2ptr(row, num_nodes)
    count, start = ptr.diff(), ptr[:-1]
    rank = torch.arange(row.numel(), device=row.device) - start[row]
    near = rank < k
    used = count.clamp_max(k)
    total = d.new_zeros(num_nodes).index_add(0, row[near], d[near])
    mean = total / used.clamp_min(1).to(d.dtype)
    last = rank == (used[row] - 1)
    kth = d.new_zeros(num_nodes).index_add(0, row[last], d[last])
    return kth, mean


def adaptive_score_map(s: Tensor, edge_index: Tensor, num_nodes: int, k: int,
                       score_map: str) -> Tensor:
    r"""Maps raw cosine similarities :obj:`s` :math:`(|\mathcal{E}|,)` on a
    pattern to the adaptive affinities :obj:`"local"` or :obj:`"snf"` (see
    the module's documentation), with bandwidths from each node's :obj:`k`
    nearest neighbours on the pattern."""
    if score_map not in ADAPTIVE_MAPS:
        raise ValueError(f"score_map must be one of {ADAPTIVE_MAPS}, got "
                         f"{score_map!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    sq = (2.0 - 2.0 * s).clamp_min(0.0)
    # sqrt has an infinite derivative at 0 (self-loops, duplicates): the
    # distance enters the kernel squared, so only the scales need it, and
    # there a floor keeps the gradient finite.
    dist = sq.clamp_min(SCALE_EPS**2).sqrt()
    kth, mean = neighbour_distances(dist, edge_index, num_nodes, k)
    row, col = edge_index
    if score_map == 'local':
        scale = kth.clamp_min(SCALE_EPS)
        return torch.exp(-sq / (scale[row] * scale[col]))
    eps = ((mean[row] + mean[col] + dist) / 3.0).clamp_min(SCALE_EPS)
    return torch.exp(-sq / (2.0 * SNF_MU**2 * eps**2))
