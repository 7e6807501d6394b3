r"""The two-step-path index of the masked matrix power."""
from typing import Optional

import torch
from torch import Tensor

#: Default number of candidate paths examined at once.
DEFAULT_PATH_CHUNK = 1 << 22


def csr_rowptr(row: Tensor, num_nodes: int) -> Tensor:
    deg = torch.bincount(row, minlength=num_nodes)
    rowptr = torch.zeros(num_nodes + 1, dtype=torch.long, device=row.device)
    torch.cumsum(deg, 0, out=rowptr[1:])
    return rowptr


def two_hop_paths(edge_index: Tensor, num_nodes: Optional[int] = None,
                  chunk_size: int = DEFAULT_PATH_CHUNK) -> Tensor:
    r"""All two-step paths :math:`i \to l \to j` that are closed by an edge
    :math:`(i, j)` of the pattern, as edge ids.

    For a coalesced :obj:`edge_index` (sorted by row, then column, no
    duplicates), returns :obj:`path_index` :math:`(3, |\mathcal{P}|)` whose
    columns are ``(id of (i, l), id of (l, j), id of (i, j))``. The masked
    power then is one gather-multiply-scatter over these paths:

    .. math::
        \mathbf{R}^{(p)}_{ij} = \sum_{(i, l), (l, j), (i, j) \in \mathcal{E}}
        \mathbf{R}^{(p-1)}_{il} \mathbf{A}_{lj}

    Candidates are enumerated in chunks of at most :obj:`chunk_size` (plus
    one row's worth), so the work space is bounded whatever the degrees are;
    the result itself is :math:`O(|\mathcal{P}|)`.
    """
    row, col = edge_index[0], edge_index[1]
    num_edges = row.numel()
    if num_nodes is None:
        num_nodes = int(edge_index.max()) + 1 if num_edges > 0 else 0
    device = row.device
    empty = torch.empty(3, 0, dtype=torch.long, device=device)
    if num_edges == 0:
        return empty
    key = row * num_nodes + col
    rowptr = csr_rowptr(row, num_nodes)
    deg = rowptr[1:] - rowptr[:-1]
    # Candidate count of each first edge (i, l) is the out-degree of l.
    count = deg[col]
    ends = torch.cumsum(count, 0)
    # Cut the first edges into runs of at most chunk_size candidates (a run
    # holds at least one edge, so a single huge row may exceed it).
    cuts = torch.searchsorted(
        ends, torch.arange(chunk_size, max(chunk_size, int(ends[-1])),
                           chunk_size, device=device), right=True)
    cuts = torch.unique(torch.cat([cuts.new_tensor([0, num_edges]), cuts]))
    parts = []
    for start, stop in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
        cnt = count[start:stop]
        e1 = torch.arange(start, stop, device=device).repeat_interleave(cnt)
        if e1.numel() == 0:
            continue
        first = torch.cumsum(cnt, 0) - cnt
        offset = torch.arange(e1.numel(), device=device) - \
            first.repeat_interleave(cnt)
        e2 = rowptr[col[e1]] + offset
        want = row[e1] * num_nodes + col[e2]
        pos = torch.searchsorted(key, want).clamp_max(num_edges - 1)
        hit = key[pos] == want
        parts.append(torch.stack([e1[hit], e2[hit], pos[hit]]))
    return torch.cat(parts, dim=1) if parts else empty
