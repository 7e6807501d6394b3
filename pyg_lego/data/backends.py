r"""k-nearest-neighbour search backends of the relation builder.

``'exact'`` is the blocked matrix-product search of :mod:`pyg_lego.data.knn`
(block size from a memory budget). ``'faiss'`` (exact flat index),
``'faiss-hnsw'`` and ``'faiss-ivf'`` (approximate) and ``'pynndescent'``
(approximate) use optional packages, imported only when chosen. ``'auto'``
stays exact while the :math:`N^2 d` matrix products are cheap and switches to
an approximate index beyond. Approximate results can be checked with
:func:`knn_recall` against the exact neighbours of a sample of nodes.
"""
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from pyg_lego.data.knn import DEFAULT_BLOCK_BYTES, exact_knn
from pyg_lego.data.similarity import check_similarity, knn_scores, prepare

BACKENDS = ('auto', 'exact', 'faiss', 'faiss-hnsw', 'faiss-ivf', 'pynndescent')
APPROXIMATE = ('faiss-hnsw', 'faiss-ivf', 'pynndescent')

#: ``'auto'`` stays exact up to this many multiply-adds (``N^2 d``) on a CPU
#: (about half a minute at the FLOP rate of a small CPU) ...
AUTO_EXACT_CPU = 2e12
#: ... and up to this many on a GPU.
AUTO_EXACT_GPU = 2e14

#: Queries handed to an index at once (one progress-bar step).
QUERY_BLOCK = 1 << 16


class KNNResult(NamedTuple):
    r"""Directed kNN edges and what the search knows about them.

    Attributes:
        edge_index (torch.Tensor): ``i -> j`` edges :math:`(2, E)`, sorted by
            source, at most :math:`k` per node, no self-loops.
        backend (str): The backend that ran (``'auto'`` resolved).
    """
    edge_index: Tensor
    backend: str


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def _has(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def _import(module: str, extra: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise ImportError(f"the kNN backend needs the optional package "
                          f"'{module}': pip install 'pyg-lego[{extra}]'") from e


def choose_backend(num_nodes: int, dim: int, device: torch.device,
                   similarity: str = 'cosine') -> str:
    r"""The backend :obj:`backend='auto'` picks: :obj:`'exact'` while
    :math:`N^2 d` stays below :data:`AUTO_EXACT_CPU` (:data:`AUTO_EXACT_GPU`
    on CUDA), else :obj:`'faiss-hnsw'` if faiss is installed, else
    :obj:`'pynndescent'` if installed (not for :obj:`'dot'`), else
    :obj:`'exact'`."""
    limit = AUTO_EXACT_GPU if device.type == 'cuda' else AUTO_EXACT_CPU
    if float(num_nodes)**2 * dim <= limit:
        return 'exact'
    if _has('faiss'):
        return 'faiss-hnsw'
    if _has('pynndescent') and similarity != 'dot':
        return 'pynndescent'
    return 'exact'


def _drop_self(ids: Tensor, sims: Tensor, k: int):
    r"""Removes each row's own id from ``k + 1`` results (or its last result
    when the row is not among them, e.g. under exact duplicates) and the
    ``-1`` ids an index returns when it finds fewer neighbours."""
    n = ids.size(0)
    own = ids == torch.arange(n, device=ids.device).unsqueeze(1)
    last = torch.zeros_like(own)
    last[:, -1] = ~own.any(1)
    keep = ~(own | last) & (ids >= 0)
    row = torch.arange(n, device=ids.device).unsqueeze(1).expand_as(ids)
    return torch.stack([row[keep], ids[keep]]), sims[keep]


def _faiss_search(x: Tensor, k: int, similarity: str, kind: str,
                  progress: bool, options: dict) -> KNNResult:
    faiss = _import('faiss', 'faiss')
    # Lets every index take torch tensors, CUDA ones included, without copies.
    import faiss.contrib.torch_utils  # noqa: F401
    z = prepare(x.detach(), similarity).float().contiguous()
    n, d = z.shape
    ip = similarity in ('cosine', 'dot')
    metric = faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2
    # faiss asks for 39 training points per list.
    nlist = int(options.get('nlist', max(1, min(int(4 * n**0.5), n // 39))))
    if kind == 'flat':
        index = faiss.IndexFlat(d, metric)
    elif kind == 'hnsw':
        index = faiss.IndexHNSWFlat(d, int(options.get('M', 32)), metric)
        index.hnsw.efConstruction = int(options.get('ef_construction', 80))
        index.hnsw.efSearch = max(int(options.get('ef_search', 64)), k + 1)
    else:
        index = faiss.IndexIVFFlat(faiss.IndexFlat(d, metric), d, nlist,
                                   metric)
    if x.is_cuda and hasattr(faiss, 'StandardGpuResources') and \
            kind != 'hnsw':
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(),
                                       x.device.index or 0, index)
    else:
        z = z.cpu()
    if kind == 'ivf':
        index.nprobe = int(options.get('nprobe', min(nlist,
                                                     max(8, nlist // 16))))
        gen = torch.Generator().manual_seed(int(options.get('seed', 0)))
        train = torch.randperm(n, generator=gen)[:64 * nlist]
        index.train(z[train.to(z.device)])
    index.add(z)
    starts = range(0, n, QUERY_BLOCK)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc=f'faiss {kind} kNN', unit='block')
    ids, sims = [], []
    for s in starts:
        sim, idx = index.search(z[s:s + QUERY_BLOCK], k + 1)
        sims.append(sim)
        ids.append(idx)
    ids = torch.cat(ids).to(x.device, torch.long)
    edge_index, _ = _drop_self(ids, torch.cat(sims).to(x.device), k)
    return KNNResult(edge_index,
                     'faiss' if kind == 'flat' else f'faiss-{kind}')


def _pynndescent_search(x: Tensor, k: int, similarity: str, progress: bool,
                        options: dict) -> KNNResult:
    pynndescent = _import('pynndescent', 'pynndescent')
    if similarity == 'dot':
        raise ValueError("backend='pynndescent' supports similarity 'cosine' "
                         "and 'rbf' (nearest in Euclidean distance), not "
                         "'dot'; use backend='faiss-hnsw' or 'exact'")
    # Euclidean order on unit rows is the cosine order.
    z = prepare(x.detach(), similarity).float().cpu().numpy()
    index = pynndescent.NNDescent(
        z, metric='euclidean', n_neighbors=max(int(options.get(
            'n_neighbors', 30)), k + 1), random_state=options.get('seed', 0),
        verbose=progress, n_jobs=options.get('n_jobs', None))
    idx, _ = index.neighbor_graph
    ids = torch.as_tensor(idx[:, :k + 1]).to(x.device, torch.long)
    edge_index, _ = _drop_self(ids, torch.zeros_like(ids, dtype=x.dtype), k)
    return KNNResult(edge_index, 'pynndescent')


def knn_search(x: Tensor, k: int, similarity: str = 'cosine',
               backend: str = 'auto',
               memory_budget: int = DEFAULT_BLOCK_BYTES,
               progress: bool = False,
               options: Optional[dict] = None) -> KNNResult:
    r"""The :obj:`k` nearest neighbours of every row of :obj:`x` under
    :obj:`similarity`, by the chosen backend.

    Args:
        x (torch.Tensor): Features :math:`(N, d)`.
        k (int): Neighbours per node, :math:`1 \le k \le N - 1`.
        similarity (str, optional): :obj:`"cosine"`, :obj:`"dot"` or
            :obj:`"rbf"` (nearest in Euclidean distance).
            (default: :obj:`"cosine"`)
        backend (str, optional): :obj:`"exact"`, :obj:`"faiss"` (exact flat
            index), :obj:`"faiss-hnsw"`, :obj:`"faiss-ivf"`,
            :obj:`"pynndescent"` or :obj:`"auto"` (see
            :func:`choose_backend`). faiss runs on the GPU when :obj:`x` is
            a CUDA tensor and faiss was built with GPU support.
            (default: :obj:`"auto"`)
        memory_budget (int, optional): Bytes for one block of exact scores.
        progress (bool, optional): Show a progress bar. (default: :obj:`False`)
        options (dict, optional): Index settings: :obj:`M`,
            :obj:`ef_construction`, :obj:`ef_search` (HNSW, defaults 32, 80,
            64), :obj:`nlist`, :obj:`nprobe` (IVF, defaults
            :math:`4 \sqrt{N}` and :obj:`max(8, nlist // 16)`), :obj:`n_neighbors`
            (pynndescent, default 30), :obj:`seed`.

    Returns:
        :class:`KNNResult`.
    """
    check_similarity(similarity)
    check_backend(backend)
    num_nodes = x.size(0)
    if not 1 <= k <= num_nodes - 1:
        raise ValueError(f"kNN needs 1 <= k <= N - 1 = {num_nodes - 1}, "
                         f"got k={k}")
    options = dict(options or {})
    if backend == 'auto':
        backend = choose_backend(num_nodes, x.size(1), x.device, similarity)
    if backend == 'exact':
        return KNNResult(exact_knn(x, k, similarity, memory_budget, progress),
                         'exact')
    if backend == 'pynndescent':
        return _pynndescent_search(x, k, similarity, progress, options)
    kind = {'faiss': 'flat', 'faiss-hnsw': 'hnsw', 'faiss-ivf': 'ivf'}[backend]
    return _faiss_search(x, k, similarity, kind, progress, options)


def knn_recall(approx_edge_index: Tensor, x: Tensor, k: int,
               sample: int = 1000, similarity: str = 'cosine',
               seed: int = 0) -> float:
    r"""Recall@k of approximate kNN edges: the fraction of the exact
    :obj:`k` nearest neighbours of :obj:`sample` random nodes that
    :obj:`approx_edge_index` holds.

    .. math::
        \mathrm{recall@}k = \frac{1}{|S| k} \sum_{i \in S}
        \big| \mathrm{kNN}_{\mathrm{approx}}(i) \cap
        \mathrm{kNN}_{\mathrm{exact}}(i) \big|

    Args:
        approx_edge_index (torch.Tensor): Directed edges ``i -> j``
            :math:`(2, E)` of the search under test.
        x (torch.Tensor): The features it searched :math:`(N, d)`.
        k (int): Neighbours per node.
        sample (int, optional): Nodes checked (all if :math:`N` is
            smaller). (default: :obj:`1000`)
        similarity (str, optional): The similarity searched.
            (default: :obj:`"cosine"`)
        seed (int, optional): Seed of the sample. (default: :obj:`0`)
    """
    check_similarity(similarity)
    n = x.size(0)
    if not 1 <= k <= n - 1:
        raise ValueError(f"knn_recall needs 1 <= k <= N - 1 = {n - 1}, "
                         f"got k={k}")
    if sample < 1:
        raise ValueError(f"sample must be >= 1, got {sample}")
    gen = torch.Generator().manual_seed(seed)
    nodes = torch.randperm(n, generator=gen)[:sample].to(x.device)
    with torch.no_grad():
        z = prepare(x.detach(), similarity)
        sq = (z * z).sum(-1) if similarity == 'rbf' else None
        s = knn_scores(z[nodes], z, similarity, sq)
        s[torch.arange(nodes.numel(), device=x.device), nodes] = float('-inf')
        exact = s.topk(k, dim=1).indices
    want = (nodes.unsqueeze(1) * n + exact).view(-1)
    row, col = approx_edge_index[0], approx_edge_index[1]
    mine = torch.isin(row, nodes)
    have = row[mine] * n + col[mine]
    return float(torch.isin(want, have).float().mean())
