r"""The two-step-path index of the masked matrix power."""
from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor

from pyg_lego.data.similarity import csr_rowptr
from pyg_lego.data.validation import check_edge_index

#: Default number of candidate paths examined at once.
DEFAULT_PATH_CHUNK = 1 << 22


class PathPlan:
    r"""How the two-step paths of a coalesced pattern are enumerated in
    chunks of at most :obj:`chunk_size` candidates (plus one row's worth).

    Candidates are the walks :math:`i \to l \to j`; a walk is a path when
    the pattern holds :math:`(i, j)`. The plan is made once (one
    device-to-host copy of the chunk bounds); iterating it yields, per chunk,
    the edge ids ``(first, second, closing)`` of ``(i, l)``, ``(l, j)`` and
    ``(i, j)`` and a hit mask. With :obj:`compact=True` the chunks hold only
    the paths (mask :obj:`None`); with :obj:`compact=False` they hold every
    candidate, ``closing`` clamped to a valid id and the mask marking the
    paths, so that a GPU loop over them never waits for the host.

    With :obj:`whole_rows=True` every chunk holds whole rows :math:`i`
    (a chunk may then exceed :obj:`chunk_size` by up to one row's
    candidates), so that all the paths closing an edge fall into one
    chunk. Either way, a chunk's closing edges are looked up among the
    edges of its own rows only, a slice of the pattern that stays in
    cache, not by a binary search over all :math:`|\mathcal{E}|` edges.
    """

    def __init__(self, edge_index: Tensor, num_nodes: int,
                 chunk_size: int = DEFAULT_PATH_CHUNK, compact: bool = True,
                 whole_rows: bool = False):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.row, self.col = edge_index[0], edge_index[1]
        self.num_nodes = num_nodes
        self.compact = compact
        num_edges = self.row.numel()
        device = self.row.device
        self.key = self.row * num_nodes + self.col
        self.rowptr = csr_rowptr(self.row, num_nodes)
        deg = self.rowptr[1:] - self.rowptr[:-1]
        # Candidate count of each first edge (i, l) is the out-degree of l.
        self.count = deg[self.col]
        ends = torch.cumsum(self.count, 0)
        total = int(ends[-1]) if num_edges > 0 else 0
        # Cut the first edges into runs of at most chunk_size candidates (a
        # run holds at least one edge, so a single huge row may exceed it).
        cuts = torch.searchsorted(
            ends, torch.arange(chunk_size, max(chunk_size, total), chunk_size,
                               device=device), right=True)
        if whole_rows:  # Each cut moves back to the start of its row.
            cuts = self.rowptr[self.row[cuts]]
        cuts = torch.unique(torch.cat([cuts.new_tensor([0, num_edges]),
                                       cuts]))
        before = torch.cat([ends.new_zeros(1), ends])
        starts, stops = cuts[:-1], cuts[1:]
        sizes = before[stops] - before[starts]
        # The edges of the rows that a chunk's first edges leave from: its
        # closing edges are among them.
        lo = self.rowptr[self.row[starts]]
        hi = self.rowptr[self.row[stops - 1] + 1]
        bounds = torch.stack([starts, stops, sizes, lo, hi], 1).tolist()
        self.chunks = [tuple(b) for b in bounds if b[2] > 0]

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self) -> Iterator[Tuple[Tensor, Tensor, Tensor,
                                         Optional[Tensor]]]:
        device = self.row.device
        for start, stop, size, lo, hi in self.chunks:
            cnt = self.count[start:stop]

            def spread(per_edge: Tensor) -> Tensor:
                return per_edge.repeat_interleave(cnt, output_size=size)
            e1 = spread(torch.arange(start, stop, device=device))
            # Per first edge (i, l): where row l starts, less the offset of
            # its first candidate, so that e2 is that plus the candidate's
            # offset in the chunk (gathers per edge, not per candidate).
            base = self.rowptr[self.col[start:stop]] - \
                (torch.cumsum(cnt, 0) - cnt)
            e2 = torch.arange(size, device=device) + spread(base)
            want = spread(self.row[start:stop] * self.num_nodes) + \
                self.col[e2]
            pos = torch.searchsorted(self.key[lo:hi], want) \
                .clamp_max(hi - lo - 1) + lo
            hit = self.key[pos] == want
            if self.compact:
                # One scan of the mask for all three (1.9x faster than three
                # masked selects, 4M candidates of which 29% hit).
                keep = hit.nonzero().squeeze(1)
                yield e1[keep], e2[keep], pos[keep], None
            else:
                yield e1, e2, pos, hit


def sort_by_closing(paths: Tensor) -> Tensor:
    r"""A path index sorted by closing edge, stably (itself if it is)."""
    closing = paths[2]
    if closing.numel() > 1 and not bool((closing[1:] >= closing[:-1]).all()):
        return paths[:, torch.sort(closing, stable=True).indices]
    return paths


def two_hop_paths(edge_index: Tensor, num_nodes: Optional[int] = None,
                  chunk_size: int = DEFAULT_PATH_CHUNK,
                  max_paths: Optional[int] = None) -> Optional[Tensor]:
    r"""All two-step paths :math:`i \to l \to j` that are closed by an edge
    :math:`(i, j)` of the pattern, as edge ids.

    For a coalesced :obj:`edge_index` (sorted by row, then column, no
    duplicates), returns :obj:`path_index` :math:`(3, |\mathcal{P}|)` whose
    columns are ``(id of (i, l), id of (l, j), id of (i, j))``. The masked
    power then is one gather-multiply-scatter over these paths:

    .. math::
        \mathbf{R}^{(p)}_{ij} = \sum_{(i, l), (l, j), (i, j) \in \mathcal{E}}
        \mathbf{R}^{(p-1)}_{il} \mathbf{A}_{lj}

    The columns are sorted by closing edge (then by first edge), so that
    the paths closing each edge form one contiguous run: the masked power
    reads them as a CSR matrix :math:`(|\mathcal{E}|, |\mathcal{E}|)`
    with one non-zero per path.

    On the CPU with numba installed, two compiled walks of the pattern
    find the paths (:func:`~pyg_lego.nn.masked_numba.enumerate_paths`: a
    count, then a fill; 4 to 10x faster at 4000 to 64,000 nodes, and the
    work space is the result's). Otherwise candidates are enumerated in
    chunks of at most :obj:`chunk_size` (plus one row's worth, see
    :class:`PathPlan`), so the work space is bounded whatever the degrees
    are; the result itself is
    :math:`O(|\mathcal{P}|)`. If :obj:`max_paths` is given and there are
    more paths, the enumeration stops early (after the count) and returns
    :obj:`None` (the caller then streams the paths instead of storing
    them).
    """
    check_edge_index(edge_index)
    num_edges = edge_index.size(1)
    if num_nodes is None:
        num_nodes = int(edge_index.max()) + 1 if num_edges > 0 else 0
    if num_edges == 0:
        return torch.empty(3, 0, dtype=torch.long, device=edge_index.device)
    from pyg_lego.nn import masked_numba
    if edge_index.device.type == 'cpu' and masked_numba.available():
        return _numba_paths(edge_index, num_nodes, max_paths)
    return _torch_paths(edge_index, num_nodes, chunk_size, max_paths)


def _numba_paths(edge_index: Tensor, num_nodes: int,
                 max_paths: Optional[int]) -> Optional[Tensor]:
    r"""The paths by the compiled walks of
    :mod:`~pyg_lego.nn.masked_numba` (4 to 10x faster than
    :func:`_torch_paths` on the CPU), in the same order."""
    from pyg_lego.nn import masked_numba
    pattern = masked_numba.Pattern(edge_index, num_nodes, reorder=False)
    found = masked_numba.enumerate_paths(pattern, max_paths)
    if found is None:
        return None
    ptr, first, second = found
    closing = torch.repeat_interleave(torch.arange(edge_index.size(1),
                                                   device=ptr.device),
                                      ptr.diff().long(),
                                      output_size=first.numel())
    return torch.stack([first.long(), second.long(), closing])


def _torch_paths(edge_index: Tensor, num_nodes: int, chunk_size: int,
                 max_paths: Optional[int]) -> Optional[Tensor]:
    r"""The paths by candidate chunks of :class:`PathPlan` (any device),
    chunks of whole rows: the paths closing an edge all come from one
    chunk, so sorting each chunk sorts the whole index, in chunk-sized
    sorts that stay in cache (at N = 64,000, sorting the 30M paths at once
    took about a fifth of the enumeration)."""
    parts, total = [], 0
    for e1, e2, pos, _ in PathPlan(edge_index, num_nodes, chunk_size,
                                   whole_rows=True):
        total += pos.numel()
        if max_paths is not None and total > max_paths:
            return None
        # Enumeration is in first-edge order; a stable sort keeps it
        # within the runs of one closing edge.
        pos, order = torch.sort(pos, stable=True)
        parts.append(torch.stack([e1[order], e2[order], pos]))
    if not parts:
        return torch.empty(3, 0, dtype=torch.long, device=edge_index.device)
    return torch.cat(parts, dim=1)
