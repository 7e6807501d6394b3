r"""Halo exchanges of row-partitioned graphs, on :mod:`torch.distributed`.

Rank :math:`r` owns the nodes :math:`o_r, \dots, o_r + n_r - 1` and every
edge :math:`(i, j)` of the pattern with :math:`i` among them. What its edges
need of the other ranks' nodes (their features, degrees or rows) is its
*halo*: the columns :math:`j` that it does not own. A halo is fetched by
:func:`torch.distributed.all_to_all_single` of exactly those rows, after the
ranks have told each other, once, which rows they need. An
:class:`Exchange` is differentiable: its backward pass sends the gradients
of the received rows back to their owners the same way, and adds them to
the rows sent.

Every rank of the group must run every exchange, and therefore every
backward pass through one: the callers check that all ranks agree on
whether a gradient is taken, before any exchange starts.
"""
import math
from typing import Dict, List, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

#: Bytes this rank sent to other ranks, by stage: ``'<stage>'`` in the
#: forward pass, ``'<stage>.backward'`` when a backward pass has run.
CommStats = Dict[str, int]


def record(stats: CommStats, stage: str, nbytes: int) -> None:
    stats[stage] = stats.get(stage, 0) + int(nbytes)


def sum_gradients(parameters: Sequence[Tensor], group) -> int:
    r"""Sums every parameter's gradient over the ranks of :obj:`group` by
    one :func:`~torch.distributed.all_reduce` of them all (a parameter
    without a gradient counts as zero). Returns the bytes reduced."""
    params = list(parameters)
    flat = torch.cat([(p.grad if p.grad is not None
                       else torch.zeros_like(p)).reshape(-1)
                      for p in params])
    dist.all_reduce(flat, group=group)
    start = 0
    for p in params:
        p.grad = flat[start:start + p.numel()].view_as(p)
        start += p.numel()
    return flat.numel() * flat.element_size()


def _all_to_all(send: Tensor, send_splits: List[int],
                recv_splits: List[int], rank: int, group,
                stats: CommStats, stage: str) -> Tensor:
    r"""One :func:`~torch.distributed.all_to_all_single` of the rows of
    :obj:`send` (split along dimension 0), counting the bytes that leave
    this rank."""
    out = send.new_empty((sum(recv_splits),) + tuple(send.shape[1:]))
    dist.all_to_all_single(out, send.contiguous(), recv_splits, send_splits,
                           group=group)
    row_bytes = math.prod(send.shape[1:]) * send.element_size()
    record(stats, stage, row_bytes * (sum(send_splits) - send_splits[rank]))
    return out


class Exchange:
    r"""Sends the rows :obj:`send_index` of a tensor that this rank holds
    (:obj:`send_splits[s]` of them, in order, to rank :math:`s`) and
    receives :obj:`recv_splits[s]` rows from each rank :math:`s`, in rank
    order.

    Args:
        send_index (torch.Tensor): Rows of the sent tensors, grouped by
            destination rank.
        send_splits (list of int): Rows sent to each rank.
        recv_splits (list of int): Rows received from each rank.
        rank (int): This rank in :obj:`group`.
        group (torch.distributed.ProcessGroup, optional): The process group.
    """

    def __init__(self, send_index: Tensor, send_splits: List[int],
                 recv_splits: List[int], rank: int, group):
        self.send_index = send_index
        self.send_splits = send_splits
        self.recv_splits = recv_splits
        self.rank = rank
        self.group = group

    def __call__(self, values: Tensor, stats: CommStats, stage: str
                 ) -> Tensor:
        r"""The received rows :math:`(\sum_s \mathrm{recv}_s, \dots)` of
        the ranks' :obj:`values`; differentiable with respect to
        :obj:`values` (floating point)."""
        if values.requires_grad and torch.is_grad_enabled():
            return _Exchange.apply(values, self, stats, stage)
        return _all_to_all(values[self.send_index], self.send_splits,
                           self.recv_splits, self.rank, self.group, stats,
                           stage)


class _Exchange(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values: Tensor, exchange: Exchange, stats: CommStats,
                stage: str) -> Tensor:
        ctx.exchange, ctx.stats, ctx.stage = exchange, stats, stage
        ctx.num_rows = values.size(0)
        return _all_to_all(values[exchange.send_index], exchange.send_splits,
                           exchange.recv_splits, exchange.rank,
                           exchange.group, stats, stage)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        ex = ctx.exchange
        back = _all_to_all(grad, ex.recv_splits, ex.send_splits, ex.rank,
                           ex.group, ctx.stats, f'{ctx.stage}.backward')
        out = grad.new_zeros((ctx.num_rows,) + tuple(grad.shape[1:]))
        return out.index_add_(0, ex.send_index, back), None, None, None


def node_halo(needed: Tensor, sizes: Sequence[int], rank: int, group,
              stats: CommStats, stage: str) -> Exchange:
    r"""The :class:`Exchange` that brings this rank the rows of the nodes
    :obj:`needed` (sorted global ids of other ranks' nodes), in that order:
    one exchange of the counts and one of the ids tells each owner what to
    send."""
    world = len(sizes)
    ends = torch.tensor(sizes, device=needed.device).cumsum(0)
    owner = torch.searchsorted(ends, needed, right=True)
    recv_counts = torch.bincount(owner, minlength=world)
    ones = [1] * world
    send_counts = _all_to_all(recv_counts, ones, ones, rank, group, stats,
                              stage)
    recv_splits, send_splits = recv_counts.tolist(), send_counts.tolist()
    requested = _all_to_all(needed, recv_splits, send_splits, rank, group,
                            stats, stage)
    offset = sum(sizes[:rank])
    return Exchange(requested - offset, send_splits, recv_splits, rank, group)


def edge_halo(nodes: Exchange, rowptr: Tensor, stats: CommStats, stage: str
              ) -> Tuple[Exchange, Tensor]:
    r"""The :class:`Exchange` of the edges of the rows that :obj:`nodes`
    sends (this rank's rows as the CSR row pointer :obj:`rowptr`), and the
    number of edges of each received row."""
    deg = rowptr.diff()
    recv_deg = nodes(deg, stats, stage)
    send_deg = deg[nodes.send_index]
    # The edge ids of each sent row, rows in the order they are sent.
    starts = torch.cumsum(send_deg, 0) - send_deg
    total = int(send_deg.sum())
    send_index = torch.arange(total, device=rowptr.device) + \
        (rowptr[nodes.send_index] - starts).repeat_interleave(
            send_deg, output_size=total)
    send_splits = [int(c.sum()) for c in send_deg.split(nodes.send_splits)]
    recv_splits = [int(c.sum()) for c in recv_deg.split(nodes.recv_splits)]
    return Exchange(send_index, send_splits, recv_splits, nodes.rank,
                    nodes.group), recv_deg


class LocalGraph:
    r"""A rank's rows of a coalesced pattern over its local nodes: its own
    nodes and its halo, numbered in global order (so that the columns of
    every row stay sorted).

    Args:
        edge_index (torch.Tensor): The rank's edges :math:`(2, E_r)` in
            global ids, sorted by row and then column.
        sizes (list of int): Every rank's number of nodes.
        rank (int): This rank.

    Attributes:
        offset (int): The global id of the rank's first node, :math:`o_r`.
        size (int): The rank's nodes, :math:`n_r`.
        num_global (int): The group's nodes, :math:`N`.
        halo (torch.Tensor): Sorted global ids of the other ranks' nodes
            that the edges reach.
        start (int): The local id of the rank's first node (the number of
            halo nodes before it).
        num_nodes (int): Own and halo nodes.
        row, col (torch.Tensor): The edges in local ids.
    """

    def __init__(self, edge_index: Tensor, sizes: Sequence[int], rank: int):
        self.offset = sum(sizes[:rank])
        self.size = sizes[rank]
        self.num_global = sum(sizes)
        row, col = edge_index[0], edge_index[1]
        remote = (col < self.offset) | (col >= self.offset + self.size)
        self.halo = torch.unique(col[remote])
        self.start = int((self.halo < self.offset).sum())
        self.num_nodes = self.size + self.halo.numel()
        self.row = row - self.offset + self.start
        self.col = self.local(col)

    def local(self, ids: Tensor) -> Tensor:
        r"""Local ids of global ids of own or halo nodes."""
        own = ids - self.offset + self.start
        halo = torch.searchsorted(self.halo, ids)
        halo = halo + (halo >= self.start).long() * self.size
        mine = (ids >= self.offset) & (ids < self.offset + self.size)
        return torch.where(mine, own, halo)

    def nodes(self, own: Tensor, halo: Tensor) -> Tensor:
        r"""Rows of the own nodes and of the halo, in local order."""
        return torch.cat([halo[:self.start], own, halo[self.start:]])


#: Codes of what is wrong with a rank's edges, exchanged so that every rank
#: raises the same error.
_EDGES_OK, _EDGES_SHAPE, _EDGES_DTYPE, _EDGES_ORDER = range(4)
_EDGE_MESSAGES = {
    _EDGES_SHAPE: "is not a torch.Tensor of shape [2, E]",
    _EDGES_DTYPE: "must have dtype torch.long",
    _EDGES_ORDER: "is not coalesced (sorted by row, then column, without "
                  "duplicates), as partitioned_pattern returns it",
}


def edge_summary(edge_index) -> List[int]:
    r"""``[code, E, min row, max row, min column, max column]`` of a rank's
    edges, for :func:`check_edges` after an all-gather."""
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or \
            edge_index.size(0) != 2:
        return [_EDGES_SHAPE, 0, 0, 0, 0, 0]
    if edge_index.dtype != torch.long:
        return [_EDGES_DTYPE, 0, 0, 0, 0, 0]
    if edge_index.size(1) == 0:
        return [_EDGES_OK, 0, 0, 0, 0, 0]
    row, col = edge_index[0], edge_index[1]
    if col.min() < 0 or col.max() >= 2**31 or row.min() < 0 or \
            row.max() >= 2**31:  # keys below fit 64 bits
        return [_EDGES_OK, edge_index.size(1), int(row.min()),
                int(row.max()), int(col.min()), int(col.max())]
    key = (row << 31) + col
    if edge_index.size(1) > 1 and not bool((key[1:] > key[:-1]).all()):
        return [_EDGES_ORDER, 0, 0, 0, 0, 0]
    return [_EDGES_OK, edge_index.size(1), int(row.min()), int(row.max()),
            int(col.min()), int(col.max())]


def check_edges(table: Tensor, sizes: Sequence[int], what: str) -> None:
    r"""Raises the same error on every rank from the gathered
    :func:`edge_summary` rows :obj:`table` :math:`(W, 6)`: each rank's
    edges must start at its own nodes and end at nodes of the group."""
    num_nodes, offset = sum(sizes), 0
    for rank, (code, num, lo, hi, first, last) in enumerate(table.tolist()):
        if code != _EDGES_OK:
            raise ValueError(f"{what}: edge_index on rank {rank} "
                             f"{_EDGE_MESSAGES[code]}")
        end = offset + sizes[rank]
        if num > 0 and not (offset <= lo and hi < end):
            raise ValueError(
                f"{what}: edge_index on rank {rank} has rows outside the "
                f"rank's nodes {offset}..{end - 1}: each rank passes the "
                f"edges of its own rows, in global ids")
        if num > 0 and not (0 <= first and last < num_nodes):
            raise ValueError(
                f"{what}: edge_index on rank {rank} has columns outside "
                f"0..{num_nodes - 1} (N = {num_nodes} over {len(sizes)} "
                f"ranks)")
        offset = end
