r"""Exact k-nearest-neighbour search by blocked matrix products.

Each block of query rows is scored against all nodes with one matrix product,
and only the block's top-k survive, so memory is bounded by
``block_size x N`` scores instead of ``N x N``.
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from pyg_lego.data.similarity import knn_scores, prepare
from pyg_lego.data.validation import check_features, check_k

#: Default memory budget of one score block on the CPU, in bytes.
DEFAULT_BLOCK_BYTES = 256 * 2**20

#: The most the default takes on CUDA, where larger products use the device
#: better and no cache size bounds a block (at N = 1M, 256 MiB held 32 query
#: rows); see :func:`block_budget`.
DEFAULT_GPU_BLOCK_BYTES = 2 * 2**30


#: Score block size that the top-k still reads from cache after the product
#: wrote it: larger blocks are slower per score, not faster.
CACHE_BLOCK_BYTES = 8 * 2**20

#: Fewest query rows per block that keep the matrix product efficient.
MIN_BLOCK_ROWS = 64

#: Columns per group of the two-stage top-k (:func:`block_topk`).
#: The group stage gains >= 10% (benchmarks/results/switches.md).
TOPK_GROUP = 64


def block_budget(memory_budget: Optional[int],
                 device: Optional[torch.device] = None) -> int:
    r""":obj:`memory_budget`, or the default of :obj:`device`: on CUDA a
    sixteenth of the device's memory, at most
    :data:`DEFAULT_GPU_BLOCK_BYTES` (so that a block and its top-k
    workspace stay a small share of a smaller GPU), else
    :data:`DEFAULT_BLOCK_BYTES`."""
    if memory_budget is not None:
        return memory_budget
    if not _is_cuda(device):
        return DEFAULT_BLOCK_BYTES
    total = torch.cuda.get_device_properties(device).total_memory
    return min(DEFAULT_GPU_BLOCK_BYTES, total // 16)


def _is_cuda(device: Optional[torch.device]) -> bool:
    return device is not None and torch.device(device).type == 'cuda'


def block_rows(num_nodes: int, element_size: int,
               memory_budget: Optional[int] = None,
               device: Optional[torch.device] = None) -> int:
    r"""Number of query rows per block on :obj:`device` (the CPU by
    default), within :obj:`memory_budget` (:func:`block_budget`); on the
    CPU also about :obj:`CACHE_BLOCK_BYTES` of scores (at least
    :obj:`MIN_BLOCK_ROWS` rows).

    A block costs its score matrix plus the top-k workspace, about twice
    ``rows x N`` elements.
    """
    row_bytes = max(1, num_nodes * element_size)
    fit = block_budget(memory_budget, device) // (2 * row_bytes)
    if _is_cuda(device):
        return max(1, min(num_nodes, fit))
    cached = max(MIN_BLOCK_ROWS, CACHE_BLOCK_BYTES // row_bytes)
    return max(1, min(num_nodes, fit, cached))


def block_topk(s: Tensor, k: int, group: int = TOPK_GROUP) -> Tensor:
    r"""Column indices of the :obj:`k` largest scores of every row of
    :obj:`s`, a top-k set as :obj:`s.topk(k, dim=1).indices` finds one
    (the two may pick different members of a tie).

    Two stages: the row is cut into groups of :obj:`group` columns, and only
    the :obj:`k` groups with the largest maxima can hold a top-k score
    (a score above the :math:`k`-th largest group maximum would make its
    group's maximum larger still). The cheap group maxima replace most of
    the selection work of one :obj:`topk` over the whole row.
    """
    rows, n = s.shape
    full = (n // group) * group
    if full // group < 4 * k:  # Too few groups for the first stage to pay.
        return s.topk(k, dim=1).indices
    grouped = s[:, :full].view(rows, full // group, group)
    best = grouped.amax(-1).topk(k, dim=1).indices  # [rows, k]
    cand = grouped.gather(1, best.unsqueeze(-1).expand(-1, -1, group))
    cols = best.unsqueeze(-1) * group + torch.arange(group, device=s.device)
    cand, cols = cand.reshape(rows, -1), cols.reshape(rows, -1)
    if full < n:
        cand = torch.cat([cand, s[:, full:]], 1)
        cols = torch.cat([cols, torch.arange(full, n, device=s.device)
                          .expand(rows, -1)], 1)
    return cols.gather(1, cand.topk(k, dim=1).indices)


def exact_knn(x: Tensor, k: int, similarity: str = 'cosine',
              memory_budget: Optional[int] = None,
              progress: bool = False, return_scores: bool = False
              ) -> Union[Tensor, Tuple[Tensor, Optional[Tensor]]]:
    r"""Directed kNN edges ``i -> j`` (``j`` among the :obj:`k` nodes most
    similar to ``i``, ``j != i``) of the rows of :obj:`x`.

    Args:
        x (torch.Tensor): Features :math:`(N, d)`.
        k (int): Neighbours per node, :math:`1 \le k \le N - 1`.
        similarity (str, optional): :obj:`"cosine"`, :obj:`"dot"` or
            :obj:`"rbf"` (nearest in Euclidean distance).
            (default: :obj:`"cosine"`)
        memory_budget (int, optional): Bytes for one block of scores.
            (default: 256 MiB on the CPU; on CUDA a sixteenth of the
            device's memory, at most 2 GiB)
        progress (bool, optional): Show a progress bar. (default: :obj:`False`)
        return_scores (bool, optional): Also return the similarity of each
            edge :math:`(N k,)` (:obj:`None` for :obj:`"rbf"`, whose blocks
            hold a rank-equivalent score, not the distance).
            (default: :obj:`False`)

    Returns:
        :obj:`edge_index` :math:`(2, N k)`, sorted by source node.
    """
    check_features('x', x)
    num_nodes = x.size(0)
    if not 1 <= check_k(k) <= num_nodes - 1:
        raise ValueError(f"exact_knn needs 1 <= k <= N - 1 = {num_nodes - 1}, "
                         f"got k={k}")
    with torch.no_grad():
        z = prepare(x.detach(), similarity)
        sq_norms = (z * z).sum(-1) if similarity == 'rbf' else None
        rows = block_rows(num_nodes, z.element_size(), memory_budget,
                          x.device)
        cols = torch.empty(num_nodes, k, dtype=torch.long, device=x.device)
        keep = return_scores and similarity != 'rbf'
        if _compiled_selection(z):
            scores = z.new_empty(num_nodes, k)
            _search_compiled(z, k, similarity, sq_norms, rows, cols,
                             scores, progress)
            scores = scores if keep else None
        else:
            scores = z.new_empty(num_nodes, k) if keep else None
            starts = range(0, num_nodes, rows)
            if progress:
                from tqdm.auto import tqdm
                starts = tqdm(starts, desc='exact kNN', unit='block')
            for start in starts:
                end = min(start + rows, num_nodes)
                s = knn_scores(z[start:end], z, similarity, sq_norms)
                s.diagonal(start).fill_(float('-inf'))
                cols[start:end] = block_topk(s, k)
                if keep:
                    scores[start:end] = s.gather(1, cols[start:end])
    row = torch.arange(num_nodes, device=x.device).repeat_interleave(k)
    edge_index = torch.stack([row, cols.view(-1)])
    if return_scores:
        return edge_index, None if scores is None else scores.view(-1)
    return edge_index


#: The compiled loop of :mod:`pyg_lego.data.topk_numba` selects the top-k
#: (where numba is installed) once the CPU searches of this process, the
#: current one included, have scored this many pairs: a single search of
#: :math:`N \ge 8192`, or several smaller ones. Loading the loop costs 0.09
#: to 0.12 s once per process where numba already runs (0.33 s for its first
#: kernel), about what it saves a search of 3 views at :math:`N = 8000`
#: (1 ns per score); every search after that gains the whole saving.
#: The compiled selection gains >= 10% once loaded
#: (benchmarks/results/switches.md).
COMPILED_MIN_SCORES = 1 << 26

#: Fewest nodes for which the loaded loop beats torch's top-k: 0.98 against
#: 1.30 ms at :math:`N = 400` (one view of width 128, :math:`k = 16`), 0.71
#: against 0.28 ms at 200, where starting the blocks' threads costs more.
COMPILED_MIN_NODES = 512

_scored = 0  # pairs scored by the CPU searches of this process
_SCORED_LOCK = threading.Lock()


def _compiled_selection(z: Tensor) -> bool:
    r"""Whether the search of :obj:`z` selects with the compiled loop;
    counts its pairs toward :data:`COMPILED_MIN_SCORES` (CPU, float32 or
    float64, numba installed)."""
    from pyg_lego import numba_runtime
    global _scored
    if not (z.device.type == 'cpu'
            and z.dtype in (torch.float32, torch.float64)
            and numba_runtime.available()):
        return False
    with _SCORED_LOCK:
        _scored += z.size(0)**2
        scored = _scored
    return z.size(0) >= COMPILED_MIN_NODES and scored >= COMPILED_MIN_SCORES


def _search_compiled(z: Tensor, k: int, similarity: str,
                     sq_norms: Optional[Tensor], rows: int, cols: Tensor,
                     scores: Tensor, progress: bool) -> None:
    r"""The blocks of :func:`exact_knn` with the compiled top-k, into
    :obj:`cols` and :obj:`scores`. Where torch runs :math:`T > 1`
    threads, the blocks run on :math:`T` threads of their own, each block
    a one-thread product followed by its selection on the same thread: a
    parallel selection after each parallel product took 1.7x its time
    alone at N = 4000, as the two thread pools waited for each other
    (torch's threads spin for a while after every product). A block has
    :math:`2/T` of the rows torch's top-k gets, so that the :math:`T`
    blocks in flight stay within the memory budget (the compiled
    selection needs no workspace beside its block)."""
    from pyg_lego.data import topk_numba
    num_nodes = z.size(0)
    threads = torch.get_num_threads()
    rows = max(1, rows * 2 // max(2, threads))
    cols_np, scores_np = cols.numpy(), scores.numpy()
    topk_numba.load(scores_np.dtype)

    def search(start: int) -> None:
        end = min(start + rows, num_nodes)
        s = knn_scores(z[start:end], z, similarity, sq_norms)
        s.diagonal(start).fill_(float('-inf'))
        topk_numba.select_topk(s.numpy(), k, cols_np[start:end],
                               scores_np[start:end])

    starts = range(0, num_nodes, rows)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(starts), desc='exact kNN', unit='block')
    if threads == 1:
        futures, done = [], map(search, starts)
    else:
        pool = _block_pool(threads)
        futures = [pool.submit(search, start) for start in starts]
        done = (future.result() for future in futures)
    try:
        for _ in done:
            if bar is not None:
                bar.update()
    finally:
        for future in futures:  # after an error, the blocks not started
            future.cancel()
        if bar is not None:
            bar.close()


_POOL: Optional[Tuple[int, int, ThreadPoolExecutor]] = None
_POOL_LOCK = threading.Lock()


def _block_pool(threads: int) -> ThreadPoolExecutor:
    r"""The threads of :func:`_search_compiled`, one torch thread each,
    kept for the process (new threads for every search made it 1.6x
    slower at N = 4000: each thread sets up its BLAS workspace on its
    first product); made again after a fork, which keeps no threads, or
    for another thread count."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[:2] != (os.getpid(), threads):
            if _POOL is not None:
                _POOL[2].shutdown(wait=False)
            _POOL = (os.getpid(), threads, ThreadPoolExecutor(
                threads, thread_name_prefix='pyg_lego-knn',
                initializer=torch.set_num_threads, initargs=(1,)))
        return _POOL[2]


def complete_edges(num_nodes: int, self_loops: bool,
                   device: Optional[torch.device] = None) -> Tensor:
    r"""All ordered pairs ``(i, j)``, ``i != j`` unless :obj:`self_loops`,
    sorted by row then column."""
    idx = torch.arange(num_nodes, device=device)
    row = idx.repeat_interleave(num_nodes)
    col = idx.repeat(num_nodes)
    if not self_loops:
        keep = row != col
        row, col = row[keep], col[keep]
    return torch.stack([row, col])
