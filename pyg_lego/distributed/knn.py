r"""Exact kNN search and kNN patterns of row-partitioned features, on
:mod:`torch.distributed`.

Each of the :math:`W` processes of a group holds a contiguous block of the
rows of the :math:`N \times d` features: rank :math:`r` holds rows
:math:`o_r, \dots, o_r + n_r - 1` with :math:`o_r = \sum_{s < r} n_s` (the
blocks may differ in size). The blocks travel around a ring of the group
(:func:`torch.distributed.batch_isend_irecv` with the two neighbouring
ranks, :math:`W - 1` steps, each step's transfer overlapping the scores of
the block already there), and every rank keeps a running top-:math:`k` of
its own rows; no process holds more than three feature blocks (its own, the
one it scores and the one arriving) or more than one block of scores.

Ties are broken by the lower global node id: of equal scores, the node with
the lower id is the nearer. The result does not depend on :math:`W` or on
how the rows are split, as long as the products give the same scores.

Every check is made on all ranks alike, after the ranks have exchanged what
they hold (sizes, widths, :obj:`k`, dtypes), so that an error is raised on
every rank instead of leaving the others waiting in a collective. No
timeout is taken here: a rank that never arrives is waited for as long as
the process group's own timeout (the :obj:`timeout` of
:func:`torch.distributed.init_process_group`) allows.
"""
import numbers
import zlib
from typing import List, Mapping, NamedTuple, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

from pyg_lego.data.knn import block_budget
from pyg_lego.data.similarity import SIMILARITIES, knn_scores, prepare
from pyg_lego.data.validation import zero_norm_rows

#: Bytes of work per score of a block: the score, the comparison masks and
#: the 32-bit running count of ties of :func:`_canonical_topk`.
_BYTES_PER_SCORE = 16

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Codes of what is wrong with a rank's input, exchanged so that every rank
# raises the same error.
_OK, _NOT_TENSOR, _NOT_2D, _NOT_FLOAT, _EMPTY, _NOT_FINITE, _ZERO_NORM, \
    _BAD_VIEWS, _MISMATCHED_ROWS = range(9)


class PartitionedKNN(NamedTuple):
    r"""The directed kNN edges ``row -> col`` of the rows one rank holds.

    Attributes:
        row (torch.Tensor): Global ids of the source nodes
            :math:`(n_r k,)`, each of the rank's rows :math:`k` times in
            order.
        col (torch.Tensor): Global ids of their neighbours :math:`(n_r k,)`,
            nearest first.
        score (torch.Tensor, optional): The similarity of each edge
            :math:`(n_r k,)` (of the unit rows for :obj:`"cosine"`);
            :obj:`None` for :obj:`"rbf"`, as in
            :func:`~pyg_lego.data.exact_knn`.
    """
    row: Tensor
    col: Tensor
    score: Optional[Tensor]


def _group_info(group) -> Tuple[int, int]:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "partitioned kNN needs an initialised torch.distributed process "
            "group: call torch.distributed.init_process_group('gloo', ...) "
            "(or 'nccl' with CUDA tensors) on every process first")
    return dist.get_rank(group), dist.get_world_size(group)


def _global_rank(group, rank: int) -> int:
    if group is None or group is dist.group.WORLD:
        return rank
    return dist.get_global_rank(group, rank)


def _gather_rows(values: List[int], group, device: torch.device) -> Tensor:
    r"""The integers :obj:`values` of every rank, :math:`(W, len)`."""
    mine = torch.tensor(values, dtype=torch.long, device=device)
    out = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, mine, group=group)
    return torch.stack(out).cpu()


def _device_of(x) -> torch.device:
    return x.device if isinstance(x, Tensor) else torch.device('cpu')


def _feature_code(x, similarity: str, zero_rows: bool) -> int:
    if not isinstance(x, Tensor):
        return _NOT_TENSOR
    if x.dim() != 2:
        return _NOT_2D
    if x.dtype not in _DTYPES:
        return _NOT_FLOAT
    if x.size(0) == 0 or x.size(1) == 0:
        return _EMPTY
    if not bool(torch.isfinite(x).all()):
        return _NOT_FINITE
    if zero_rows and similarity == 'cosine' and \
            zero_norm_rows(x).numel() > 0:
        return _ZERO_NORM
    return _OK


_MESSAGES = {
    _NOT_TENSOR: "is not a torch.Tensor of features [n_r, d]",
    _NOT_2D: "must have shape [n_r, d]",
    _NOT_FLOAT: "must be floating point (cast with .float())",
    _EMPTY: "is empty: every rank must hold at least one row of width >= 1",
    _NOT_FINITE: "contains NaN or Inf",
    _ZERO_NORM: "has a row with zero norm; cosine similarity is undefined "
                "for it",
    _BAD_VIEWS: "must be a non-empty mapping of view name -> features",
    _MISMATCHED_ROWS: "holds a different number of rows in its views: every "
                      "view must describe the rank's same rows",
}


def _check_table(table: Tensor, what: str, k: int) -> Tuple[List[int], int]:
    r"""Raises the same error on every rank from the gathered
    :obj:`table` of ``[code, n_r, d, k, dtype]`` rows; returns the block
    sizes and :math:`d`."""
    for rank, code in enumerate(table[:, 0].tolist()):
        if code != _OK:
            raise ValueError(f"{what} on rank {rank} {_MESSAGES[code]}")
    if -1 in table[:, 3].tolist():
        bad = table[:, 3].tolist().index(-1)
        raise ValueError(f"{what}: k must be a positive integer on every "
                         f"rank; rank {bad} passed an invalid k (this rank: "
                         f"{k!r})")
    sizes = table[:, 1].tolist()
    for col, name in ((2, 'feature width d'), (3, 'k'), (4, 'dtype')):
        values = table[:, col].tolist()
        if len(set(values)) > 1:
            shown = values if col != 4 else [str(_DTYPES[v]) for v in values]
            raise ValueError(f"{what}: every rank must pass the same {name}, "
                             f"got {shown} on ranks 0..{len(values) - 1}")
    num_nodes = sum(sizes)
    if not 1 <= k <= num_nodes - 1:
        raise ValueError(f"partitioned kNN needs 1 <= k <= N - 1 = "
                         f"{num_nodes - 1} (N = {num_nodes} rows over "
                         f"{len(sizes)} ranks), got k={k}")
    return sizes, int(table[0, 2])


def _check_k(k) -> int:
    r""":obj:`k` as an int, or :obj:`-1` where it is not a positive
    integer (reported after the exchange)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        return -1
    return int(k)


def _canonical_topk(s: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    r"""The :obj:`k` largest scores of every row of :obj:`s` and their
    columns, largest first; of equal scores the lower column comes first
    (and is kept where the :math:`k`-th score is tied), unlike
    :meth:`torch.Tensor.topk`, which picks any member of a tie.

    The :math:`k`-th largest score :math:`t` of a row is found by
    :meth:`~torch.Tensor.topk`; all scores above :math:`t` are kept, and
    the first of those equal to :math:`t` in column order fill the rest.
    """
    b, m = s.shape
    if k < m:
        kth = s.topk(k, dim=1).values[:, -1:]
        above = s > kth
        tied = s == kth
        need = k - above.sum(1, keepdim=True, dtype=torch.int32)
        keep = above | (tied & (tied.cumsum(1, dtype=torch.int32) <= need))
        cols = keep.nonzero()[:, 1].view(b, k)  # columns in order per row
        vals = s.gather(1, cols)
    else:
        cols = torch.arange(m, device=s.device).expand(b, m)
        vals = s
    order = vals.sort(dim=1, descending=True, stable=True).indices
    return vals.gather(1, order), cols.gather(1, order)


def _merge(vals: Tensor, ids: Tensor, new_vals: Tensor, new_ids: Tensor,
           k: int) -> Tuple[Tensor, Tensor]:
    r"""The :obj:`k` best of two candidate sets of the same rows (disjoint
    node ids), by score and then by the lower id."""
    ids, perm = torch.cat([ids, new_ids], 1).sort(dim=1)
    vals = torch.cat([vals, new_vals], 1).gather(1, perm)
    order = vals.sort(dim=1, descending=True, stable=True).indices[:, :k]
    return vals.gather(1, order), ids.gather(1, order)


def partition_sizes(n_local: int, group=None) -> List[int]:
    r"""The number of rows :math:`n_s` of every rank :math:`s` of
    :obj:`group` (one :func:`~torch.distributed.all_gather`), from which
    rank :math:`r`'s rows start at :math:`o_r = \sum_{s < r} n_s`.

    Args:
        n_local (int): The rows this rank holds.
        group (torch.distributed.ProcessGroup, optional): The process group; the default
            group if :obj:`None`. (default: :obj:`None`)
    """
    _group_info(group)
    device = torch.device('cpu')
    if dist.get_backend(group) == 'nccl':
        device = torch.device('cuda', torch.cuda.current_device())
    return _gather_rows([int(n_local)], group, device)[:, 0].tolist()


def partitioned_knn(x_local: Tensor, k: int, similarity: str = 'cosine',
                    group=None, memory_budget: Optional[int] = None
                    ) -> PartitionedKNN:
    r"""The :obj:`k` nearest other nodes, among all :math:`N` rows of the
    group's features, of each row this rank holds: the rows of
    :func:`~pyg_lego.data.exact_knn` of the whole matrix that belong to this
    rank, in global node ids.

    Rank :math:`r` holds rows :math:`o_r, \dots, o_r + n_r - 1` of the
    features (:obj:`x_local`, in rank order; see :func:`partition_sizes`).
    Every rank calls this function with its own block, the same :obj:`k`
    and :obj:`similarity`. The blocks pass around the ring of the group in
    :math:`W - 1` steps; after step :math:`t`, rank :math:`r` has scored its
    rows against the blocks of ranks :math:`r, r - 1, \dots, r - t` and
    kept, for each row :math:`i`, the :math:`k` best

    .. math::
        \mathcal{N}(i) = \operatorname{top-}k_{j \ne i} \; \big(s(\mathbf{x}_i,
        \mathbf{x}_j), -j\big)

    in lexicographic order: of equal scores the lower global id :math:`j`
    wins, whichever rank holds it. Scores are :math:`s = \hat{\mathbf{x}}_i
    \cdot \hat{\mathbf{x}}_j` of unit rows for :obj:`"cosine"`, the raw
    product for :obj:`"dot"`, and an order equivalent of
    :math:`-\|\mathbf{x}_i - \mathbf{x}_j\|^2` for :obj:`"rbf"`, as
    :func:`~pyg_lego.data.exact_knn` computes them.

    :func:`~pyg_lego.data.exact_knn` breaks ties as
    :meth:`torch.Tensor.topk` does, by any member of a tie; where no two
    candidates of the :math:`k`-th place tie, both give the same edges in
    the same order. A score is a product of two blocks here and of the
    whole matrix there, which may round differently in the last bit.

    Errors (a bad :obj:`k`, or ranks with different widths, :obj:`k`,
    dtypes, or bad features on one rank) are raised on every rank. No
    timeout is taken: a rank that never calls this is waited for until the
    process group's timeout (:func:`torch.distributed.init_process_group`)
    expires.

    Args:
        x_local (torch.Tensor): This rank's rows of the features
            :math:`(n_r, d)`, :math:`n_r \ge 1`, on the device of the group's
            backend (CPU for gloo, CUDA for nccl).
        k (int): Neighbours per node, :math:`1 \le k \le N - 1`.
        similarity (str, optional): :obj:`"cosine"`, :obj:`"dot"` or
            :obj:`"rbf"` (nearest in Euclidean distance).
            (default: :obj:`"cosine"`)
        group (torch.distributed.ProcessGroup, optional): The process group; the default
            group if :obj:`None`. (default: :obj:`None`)
        memory_budget (int, optional): Bytes for one block of scores and
            its top-k work. (default: 256 MiB on the CPU; on CUDA a
            sixteenth of the device's memory, at most 2 GiB)

    Returns:
        :class:`PartitionedKNN` :obj:`(row, col, score)` of the rank's
        :math:`n_r k` edges, sorted by :obj:`row`, each row's neighbours
        nearest first.
    """
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, "
                         f"got {similarity!r}")
    rank, world = _group_info(group)
    code = _feature_code(x_local, similarity, zero_rows=False)
    ok = code == _OK
    table = _gather_rows(
        [code, x_local.size(0) if ok else 0, x_local.size(1) if ok else 0,
         _check_k(k), _DTYPES.index(x_local.dtype) if ok else -1],
        group, _device_of(x_local))
    sizes, _ = _check_table(table, 'partitioned_knn: x_local', k)
    return _search(x_local, k, similarity, group, rank, world, sizes,
                   memory_budget)


def _search(x_local: Tensor, k: int, similarity: str, group, rank: int,
            world: int, sizes: List[int], memory_budget: Optional[int]
            ) -> PartitionedKNN:
    num_nodes = sum(sizes)
    offsets = [sum(sizes[:s]) for s in range(world)]
    n, device = sizes[rank], x_local.device
    nxt = _global_rank(group, (rank + 1) % world)
    prev = _global_rank(group, (rank - 1) % world)
    with torch.no_grad():
        z = prepare(x_local.detach(), similarity).contiguous()
        budget = block_budget(memory_budget, device)
        rows = max(1, min(n, budget // (_BYTES_PER_SCORE * max(sizes))))
        vals = z.new_full((n, k), float('-inf'))
        ids = torch.full((n, k), num_nodes, dtype=torch.long, device=device)
        shard, src = z, rank
        for step in range(world):
            works, recv = [], None
            if step < world - 1:  # the next block travels while this scores
                recv_src = (rank - step - 1) % world
                recv = z.new_empty(sizes[recv_src], z.size(1))
                works = dist.batch_isend_irecv([
                    dist.P2POp(dist.isend, shard, nxt, group),
                    dist.P2POp(dist.irecv, recv, prev, group)])
            sq = (shard * shard).sum(-1) if similarity == 'rbf' else None
            own = src == rank
            take = min(k, shard.size(0) - own)
            for start in range(0, n, rows):
                end = min(start + rows, n)
                s = knn_scores(z[start:end], shard, similarity, sq)
                if own:
                    s.diagonal(start).fill_(float('-inf'))
                v, c = _canonical_topk(s, take)
                vals[start:end], ids[start:end] = _merge(
                    vals[start:end], ids[start:end], v, c + offsets[src], k)
            for work in works:
                work.wait()
            if recv is not None:
                shard, src = recv, recv_src
    row = torch.arange(offsets[rank], offsets[rank] + n,
                       device=device).repeat_interleave(k)
    score = None if similarity == 'rbf' else vals.view(-1)
    return PartitionedKNN(row, ids.view(-1), score)


def partitioned_pattern(views: Mapping[str, Tensor], k: int,
                        similarity: str = 'cosine', self_loops: bool = True,
                        group=None, memory_budget: Optional[int] = None
                        ) -> Tensor:
    r"""This rank's rows of the shared edge pattern of
    :func:`~pyg_lego.data.knn_pattern`: the union over views of the kNN
    edges, their reverses and self-loops,

    .. math::
        \mathcal{E}_r = \Big\{ (i, j) \in \bigcup_m \mathrm{kNN}_m \cup
        \mathrm{kNN}_m^\top \cup \mathbf{I} \;:\; o_r \le i < o_r + n_r
        \Big\},

    from row-partitioned features (see :func:`partitioned_knn`). A reverse
    edge ``j -> i`` of an edge ``i -> j`` that rank :math:`r` found belongs
    to the rank holding :math:`j`; the ranks exchange them with one
    :func:`~torch.distributed.all_to_all_single` of their counts and one of
    the edges. :math:`k \ge N - 1` gives the rank's rows of the complete
    graph, as in :func:`~pyg_lego.data.knn_pattern`. Ties of the searches
    go to the lower node id (see :func:`partitioned_knn`). Feature views
    only: given graphs (:class:`~pyg_lego.data.GivenGraph`) are not
    partitioned here.

    Args:
        views (Mapping[str, torch.Tensor]): View name -> this rank's rows of
            its features :math:`(n_r, d_m)`, the same names in the same
            order on every rank (widths may differ between views).
        k (int): Neighbours per node and view, :math:`k \ge 1`.
        similarity (str, optional): :obj:`"cosine"`, :obj:`"dot"` or
            :obj:`"rbf"`. (default: :obj:`"cosine"`)
        self_loops (bool, optional): Add self-loops. (default: :obj:`True`)
        group (torch.distributed.ProcessGroup, optional): The process group; the default
            group if :obj:`None`. (default: :obj:`None`)
        memory_budget (int, optional): Bytes for one block of kNN scores.
            (default: as in :func:`partitioned_knn`)

    Returns:
        :obj:`edge_index` :math:`(2, |\mathcal{E}_r|)` in global ids, sorted
        by row and then column (the rank's slice of the coalesced pattern).
    """
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, "
                         f"got {similarity!r}")
    rank, world = _group_info(group)
    good = isinstance(views, Mapping) and len(views) > 0 and all(
        isinstance(name, str) and name for name in views)
    tensors = list(views.values()) if good else []
    codes = [_feature_code(x, similarity, zero_rows=True) for x in tensors]
    code = _BAD_VIEWS if not good else next(
        (c for c in codes if c != _OK), _OK)
    if code == _OK and len({x.size(0) for x in tensors}) > 1:
        code = _MISMATCHED_ROWS
    names = zlib.crc32('\0'.join(views).encode()) if good else 0
    device = _device_of(tensors[0] if tensors else None)
    table = _gather_rows(
        [code, tensors[0].size(0) if code == _OK else 0, len(tensors),
         _check_k(k), names], group, device)
    for r, c in enumerate(table[:, 0].tolist()):
        if c != _OK:
            raise ValueError(f"partitioned_pattern: views on rank {r} "
                             f"{_MESSAGES[c]}")
    if len(set(table[:, 2].tolist())) > 1 or \
            len(set(table[:, 4].tolist())) > 1:
        raise ValueError("partitioned_pattern: every rank must pass the "
                         "same view names in the same order")
    if len(set(table[:, 3].tolist())) > 1:
        raise ValueError(f"partitioned_pattern: every rank must pass the "
                         f"same k, got {table[:, 3].tolist()}")
    if _check_k(k) < 0:
        raise ValueError(f"k must be a positive integer (k >= 1), got {k!r}; "
                         f"k >= N - 1 gives the complete graph")
    sizes = table[:, 1].tolist()
    num_nodes, n = sum(sizes), sizes[rank]
    offset = sum(sizes[:rank])
    mine = torch.arange(offset, offset + n, device=device)
    if k >= num_nodes - 1:  # the complete graph, as knn_pattern gives it
        row = mine.repeat_interleave(num_nodes)
        col = torch.arange(num_nodes, device=device).repeat(n)
        keep = row != col if not self_loops else torch.ones_like(
            row, dtype=torch.bool)
        return torch.stack([row[keep], col[keep]])
    found = [partitioned_knn(x, k, similarity, group, memory_budget)
             for x in tensors]
    row = torch.cat([f.row for f in found])
    col = torch.cat([f.col for f in found])
    # The reverses col -> row, to the ranks that own col.
    ends = torch.tensor(sizes, device=device).cumsum(0)
    owner = torch.searchsorted(ends, col, right=True)
    order = owner.argsort(stable=True)
    send = torch.stack([col[order], row[order]], 1).contiguous()
    send_counts = torch.bincount(owner, minlength=world)
    recv_counts = torch.empty_like(send_counts)
    dist.all_to_all_single(recv_counts, send_counts, group=group)
    recv = send.new_empty(int(recv_counts.sum()), 2)
    dist.all_to_all_single(recv, send, recv_counts.tolist(),
                           send_counts.tolist(), group=group)
    parts = [torch.stack([row, col]), recv.t()]
    if self_loops:
        parts.append(torch.stack([mine, mine]))
    ei = torch.cat(parts, 1)
    key = torch.unique((ei[0] - offset) * num_nodes + ei[1])
    return torch.stack([key // num_nodes + offset, key % num_nodes])
