r"""k-nearest-neighbour search backends of the relation builder.

``'exact'`` is the blocked matrix-product search of :mod:`pyg_lego.data.knn`
(block size from a memory budget). ``'torch-ivf'`` (approximate, an inverted
file in torch alone, :mod:`pyg_lego.data.ivf`) runs wherever torch does, on
CUDA too. ``'faiss'`` (exact flat index), ``'faiss-hnsw'`` and
``'faiss-ivf'`` (approximate) and ``'pynndescent'`` (approximate) use
optional packages, imported only when chosen. ``'auto'`` stays exact while
the :math:`N^2 d` matrix products are cheap and switches to an approximate
index beyond. Approximate results can be checked with
:func:`knn_recall` against the exact neighbours of a sample of nodes.
"""
from typing import Callable, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from pyg_lego.data.ivf import KMEANS_ITERS, TorchIVF
from pyg_lego.data.knn import block_budget, block_rows, exact_knn
from pyg_lego.data.similarity import check_similarity, knn_scores, prepare
from pyg_lego.data.validation import check_features, check_k

BACKENDS = ('auto', 'exact', 'torch-ivf', 'faiss', 'faiss-hnsw', 'faiss-ivf',
            'pynndescent')
APPROXIMATE = ('torch-ivf', 'faiss-hnsw', 'faiss-ivf', 'pynndescent')

#: ``'auto'`` stays exact up to this many multiply-adds (``N^2 d``) on a CPU
#: (about half a minute at the FLOP rate of a small CPU) ...
AUTO_EXACT_CPU = 2e12
#: ... and up to this many on a GPU.
AUTO_EXACT_GPU = 2e14

#: Queries handed to an index at once (one progress-bar step).
QUERY_BLOCK = 1 << 16

#: Inverted lists an IVF query scans by default (before recall tuning), in
#: faiss and in ``'torch-ivf'``.
IVF_NPROBE = 8
#: Training points per IVF list (faiss warns below 39).
IVF_TRAIN_PER_LIST = 40
#: Recall@k the approximate faiss indexes are tuned to by default; the
#: search widens (HNSW ``ef_search``, IVF ``nprobe``, doubled each step)
#: until a sample of queries reaches it.
TARGET_RECALL = 0.95
#: Where the default search already beats the target by this much, it
#: narrows instead (the knob halved each step) while the sample still
#: does: the margin covers the sample's error. At N = 1M (benchmark data,
#: IVF), 4 probes kept recall@16 at 0.966 and searched in 0.67x to 0.76x
#: the time of the default 8 (0.982).
NARROW_MARGIN = 0.01
#: Queries of that sample.
TUNE_SAMPLE = 500


class KNNResult(NamedTuple):
    r"""Directed kNN edges and what the search knows about them.

    Attributes:
        edge_index (torch.Tensor): ``i -> j`` edges :math:`(2, E)`, sorted by
            source, at most :math:`k` per node, no self-loops.
        backend (str): The backend that ran (``'auto'`` resolved).
        settings (dict, optional): The index settings it ran with, after
            recall tuning, and the recall it measured on its tuning sample
            (:obj:`'tuned_recall'`).
        score (torch.Tensor, optional): The similarity of each edge
            :math:`(E,)` (for cosine, of the unit rows), where the search
            computed it in the features' own dtype: exact and
            :obj:`'torch-ivf'` searches, and faiss searches of float32
            features, under :obj:`'cosine'` or :obj:`'dot'`.
            :func:`~pyg_lego.build_relation_graph` reuses it on large
            graphs instead of computing these scores again.
    """
    edge_index: Tensor
    backend: str
    settings: Optional[dict] = None
    score: Optional[Tensor] = None


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
                          f"'{module}': pip install 'pyg-lego[{extra}]'"
                          ) from e


def choose_backend(num_nodes: int, dim: int, device: torch.device,
                   similarity: str = 'cosine') -> str:
    r"""The backend :obj:`backend='auto'` picks: :obj:`'exact'` while
    :math:`N^2 d` stays below :data:`AUTO_EXACT_CPU` (:data:`AUTO_EXACT_GPU`
    on CUDA), else :obj:`'faiss-ivf'` if faiss is installed, else on the
    CPU :obj:`'pynndescent'` if installed (not for :obj:`'dot'`), else
    :obj:`'torch-ivf'`."""
    limit = AUTO_EXACT_GPU if device.type == 'cuda' else AUTO_EXACT_CPU
    if float(num_nodes)**2 * dim <= limit:
        return 'exact'
    if _has('faiss'):
        return 'faiss-ivf'
    if device.type != 'cuda' and _has('pynndescent') and \
            similarity != 'dot':
        return 'pynndescent'
    return 'torch-ivf'


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


def _exact_sample(z: Tensor, nodes: Tensor, k: int,
                  similarity: str) -> Tensor:
    r"""Exact :obj:`k` nearest neighbours :math:`(|S|, k)` of the sampled
    :obj:`nodes` among the (prepared) rows of :obj:`z`, in blocks of
    sampled rows as the exact search takes them (1000 rows of scores at
    N = 10M would be 40 GB)."""
    rows = block_rows(z.size(0), z.element_size(), device=z.device)
    with torch.no_grad():
        sq = (z * z).sum(-1) if similarity == 'rbf' else None
        found = []
        for start in range(0, nodes.numel(), rows):
            q = nodes[start:start + rows]
            s = knn_scores(z[q], z, similarity, sq)
            s[torch.arange(q.numel(), device=z.device), q] = float('-inf')
            found.append(s.topk(k, dim=1).indices)
        return torch.cat(found) if found else \
            torch.empty(0, k, dtype=torch.long, device=z.device)


def _sample_recall(exact: Tensor, found: Tensor, nodes: Tensor) -> float:
    r"""Fraction of the exact neighbours :math:`(|S|, k)` of :obj:`nodes`
    that the :math:`k + 1` results :obj:`found` of an index hold once each
    node's own id (or, without it, the last result) is dropped, as
    :func:`_drop_self` drops them."""
    own = found == nodes.unsqueeze(1)
    found = found.masked_fill(own, -1)
    found[~own.any(1), -1] = -1
    hit = (exact.unsqueeze(2) == found.unsqueeze(1)).any(2)
    return float(hit.float().mean())


def _faiss_search(x: Tensor, k: int, similarity: str, kind: str,
                  progress: bool, options: dict) -> KNNResult:
    faiss = _import('faiss', 'faiss')
    # Lets every index take torch tensors, CUDA ones included, without copies.
    import faiss.contrib.torch_utils  # noqa: F401
    z = prepare(x.detach(), similarity).float().contiguous()
    n, d = z.shape
    ip = similarity in ('cosine', 'dot')
    metric = faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2
    settings = {}
    if kind == 'flat':
        index = faiss.IndexFlat(d, metric)
    elif kind == 'hnsw':
        settings = {'M': int(options.get('M', 32)),
                    'ef_construction': int(options.get('ef_construction', 80)),
                    'ef_search': max(int(options.get('ef_search', 64)), k + 1)}
        index = faiss.IndexHNSWFlat(d, settings['M'], metric)
        index.hnsw.efConstruction = settings['ef_construction']
    else:
        nlist, nprobe = _ivf_lists(n, options)
        settings = {'nlist': nlist, 'nprobe': nprobe}
        index = faiss.IndexIVFFlat(faiss.IndexFlat(d, metric), d, nlist,
                                   metric)
    if x.is_cuda and hasattr(faiss, 'StandardGpuResources') and \
            kind != 'hnsw':
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(),
                                       x.device.index or 0, index)
    else:
        z = z.cpu()
    gen = torch.Generator().manual_seed(int(options.get('seed', 0)))
    if kind == 'ivf':
        train = torch.randperm(n, generator=gen, device='cpu')[
            :IVF_TRAIN_PER_LIST * nlist]
        index.train(z[train.to(z.device)])
    index.add(z)

    def configure():
        if kind == 'hnsw':
            index.hnsw.efSearch = settings['ef_search']
        elif kind == 'ivf':
            index.nprobe = settings['nprobe']

    knob, limit = {'hnsw': ('ef_search', max(n, k + 1)),
                   'ivf': ('nprobe', settings.get('nlist'))}.get(kind,
                                                                 (None, 0))
    if knob is not None:
        def search(sample: Tensor) -> Tensor:
            configure()
            return index.search(z[sample], k + 1)[1]
        _tune(settings, knob, limit, k + 1 if kind == 'hnsw' else 1,
              options, z, k, similarity, search)
    configure()
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
    edge_index, sims = _drop_self(ids, torch.cat(sims).to(x.device), k)
    # faiss computes in float32: its inner products are the scores only
    # for float32 features.
    score = sims if ip and x.dtype == torch.float32 else None
    return KNNResult(edge_index,
                     'faiss' if kind == 'flat' else f'faiss-{kind}', settings,
                     score)


def _tune(settings: dict, knob: str, limit: int, floor: int, options: dict,
          z: Tensor, k: int, similarity: str,
          search: Callable[[Tensor], Tensor]) -> None:
    r"""Tunes :obj:`settings[knob]` of a built index to the recall target
    :obj:`options['target_recall']` (default :data:`TARGET_RECALL`;
    :obj:`None` leaves it as it is): doubled, up to :obj:`limit`, until a
    sample of :obj:`options['tune_sample']` queries finds the target share
    of its exact neighbours; or, where it is a default that beats the
    target by :data:`NARROW_MARGIN`, halved, down to :obj:`floor`, while
    the sample still does. :obj:`search` returns the :math:`k + 1` ids the
    index finds for the sampled nodes under the current settings. The
    sample's recall goes into :obj:`settings['tuned_recall']`."""
    target = options.get('target_recall', TARGET_RECALL)
    if target is None:
        return
    # Its own seed: the recall reported by knn_recall is then measured on
    # another sample than the one the search was tuned on.
    size = int(options.get('tune_sample', TUNE_SAMPLE))
    if size < 1:
        raise ValueError(f"knn_options['tune_sample'] must be >= 1, got "
                         f"{size}")
    tune = torch.Generator().manual_seed(int(options.get('seed', 0)) + 1)
    sample = torch.randperm(z.size(0), generator=tune, device='cpu')[:size] \
        .to(z.device)
    exact = _exact_sample(z, sample, k, similarity)

    def recall() -> float:
        found = search(sample).to(exact.device, torch.long)
        return _sample_recall(exact, found, sample)
    settings['tuned_recall'] = recall()
    # A default that beats the target with the margin narrows; a knob the
    # caller set is only ever widened.
    narrow = knob not in options and settings['tuned_recall'] >= target
    while settings['tuned_recall'] < target and settings[knob] < limit:
        settings[knob] = min(2 * settings[knob], limit)
        settings['tuned_recall'] = recall()
    while narrow and settings[knob] > floor and \
            settings['tuned_recall'] >= target + NARROW_MARGIN:
        wider = settings[knob], settings['tuned_recall']
        settings[knob] = max(floor, settings[knob] // 2)
        settings['tuned_recall'] = recall()
        if settings['tuned_recall'] < target + NARROW_MARGIN:
            settings[knob], settings['tuned_recall'] = wider
            break


def _ivf_lists(n: int, options: dict) -> Tuple[int, int]:
    r"""The lists and probes of an IVF search of :obj:`n` points (before
    tuning): per query, the coarse search costs :math:`L` and the scan
    :math:`n_\mathrm{probe} N / L` distances, whose sum is least at
    :math:`L = \sqrt{n_\mathrm{probe} N}`; at least 39 points per list (the
    fewest faiss trains a list on)."""
    nprobe = int(options.get('nprobe', IVF_NPROBE))
    nlist = int(options.get('nlist', max(1, min(int((nprobe * n)**0.5),
                                                  n // 39))))
    return nlist, min(nprobe, nlist)


def _torch_ivf_search(x: Tensor, k: int, similarity: str, progress: bool,
                      memory_budget: Optional[int],
                      options: dict) -> KNNResult:
    r"""The :class:`~pyg_lego.data.ivf.TorchIVF` search, its
    :obj:`nprobe` tuned to the recall target as faiss IVF's is."""
    nlist, nprobe = _ivf_lists(x.size(0), options)
    if not 1 <= nlist <= x.size(0):
        raise ValueError(f"knn_options['nlist'] must be in [1, N = "
                         f"{x.size(0)}], got {nlist}")
    if nprobe < 1:
        raise ValueError(f"knn_options['nprobe'] must be >= 1, got {nprobe}")
    index = TorchIVF(x, nlist, similarity,
                     int(options.get('iters', KMEANS_ITERS)),
                     int(options.get('seed', 0)),
                     block_budget(memory_budget, x.device))
    settings = {'nlist': nlist, 'nprobe': nprobe}
    _tune(settings, 'nprobe', nlist, 1, options, index.z, k, similarity,
          lambda sample: index.search(sample, k + 1, settings['nprobe'])[1])
    nodes = torch.arange(x.size(0), device=x.device)
    sims, ids = index.search(nodes, k + 1, settings['nprobe'], progress)
    edge_index, sims = _drop_self(ids, sims, k)
    # Computed as the exact search computes them, in the features' dtype.
    score = sims if similarity in ('cosine', 'dot') else None
    return KNNResult(edge_index, 'torch-ivf', settings, score)


def _pynndescent_search(x: Tensor, k: int, similarity: str, progress: bool,
                        options: dict) -> KNNResult:
    from pyg_lego import numba_runtime
    pynndescent = _import('pynndescent', 'pynndescent')
    # Its loops run on numba's threads: the layer is chosen here, as for
    # ours, before its first parallel loop would take numba's default (the
    # OpenMP layer, a second OpenMP runtime beside torch's).
    numba_runtime.numba()
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
               memory_budget: Optional[int] = None,
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
        backend (str, optional): :obj:`"exact"`, :obj:`"torch-ivf"`
            (approximate, torch alone, any device), :obj:`"faiss"` (exact
            flat index), :obj:`"faiss-hnsw"`, :obj:`"faiss-ivf"`,
            :obj:`"pynndescent"` or :obj:`"auto"` (see
            :func:`choose_backend`). faiss runs on the GPU when :obj:`x` is
            a CUDA tensor and faiss was built with GPU support.
            (default: :obj:`"auto"`)
        memory_budget (int, optional): Bytes for one block of scores
            (exact and :obj:`"torch-ivf"`). (default: 256 MiB on the CPU; on
            CUDA a sixteenth of the device's memory, at most 2 GiB)
        progress (bool, optional): Show a progress bar. (default: :obj:`False`)
        options (dict, optional): Index settings: :obj:`M`,
            :obj:`ef_construction`, :obj:`ef_search` (HNSW, defaults 32, 80,
            64), :obj:`nprobe`, :obj:`nlist` (IVF, defaults
            :data:`IVF_NPROBE` and :math:`\sqrt{\mathrm{nprobe}\, N}`),
            :obj:`iters` (k-means rounds of :obj:`"torch-ivf"`, default
            :data:`~pyg_lego.data.ivf.KMEANS_ITERS`),
            :obj:`n_neighbors` (pynndescent, default 30), :obj:`seed`, and
            for the HNSW and IVF searches :obj:`target_recall` (default
            :data:`TARGET_RECALL`; :obj:`None` turns tuning off) and
            :obj:`tune_sample` (default :data:`TUNE_SAMPLE`): the search
            is widened until that many sampled queries reach the target
            recall against the exact search, or until it is exhaustive;
            where the default :obj:`ef_search` / :obj:`nprobe` beats the
            target by :data:`NARROW_MARGIN`, it is narrowed while the
            sample still does.

    Returns:
        :class:`KNNResult`.
    """
    check_similarity(similarity)
    check_backend(backend)
    check_features('x', x)
    num_nodes = x.size(0)
    if not 1 <= check_k(k) <= num_nodes - 1:
        raise ValueError(f"kNN needs 1 <= k <= N - 1 = {num_nodes - 1}, "
                         f"got k={k}")
    options = dict(options or {})
    if backend == 'auto':
        backend = choose_backend(num_nodes, x.size(1), x.device, similarity)
    if backend == 'exact':
        edge_index, score = exact_knn(x, k, similarity, memory_budget,
                                      progress, return_scores=True)
        return KNNResult(edge_index, 'exact', None, score)
    if backend == 'torch-ivf':
        return _torch_ivf_search(x, k, similarity, progress, memory_budget,
                                 options)
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
    nodes = torch.randperm(n, generator=gen, device='cpu')[:sample] \
        .to(x.device)
    exact = _exact_sample(prepare(x.detach(), similarity), nodes, k,
                          similarity)
    want = (nodes.unsqueeze(1) * n + exact).view(-1)
    row, col = approx_edge_index[0], approx_edge_index[1]
    mine = torch.isin(row, nodes)
    have = row[mine] * n + col[mine]
    return float(torch.isin(want, have).float().mean())
