r"""Relationship graphs: several views of the same :math:`N` nodes become one
PyG :class:`~torch_geometric.data.Data` with a shared sparse edge pattern and
every view's relation score on every edge (the documentation's method page,
docs/method.rst, section 1)."""
import logging
from dataclasses import dataclass
from functools import reduce
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data
from torch_geometric.typing import WITH_PT24

from pyg_lego.data.backends import (APPROXIMATE, KNNResult, check_backend,
                                    knn_recall, knn_search)
from pyg_lego.data.calibration import ADAPTIVE_MAPS, adaptive_score_map
from pyg_lego.data.knn import complete_edges
from pyg_lego.data.similarity import (check_similarity, csr_pattern,
                                      edge_similarity, id_dtype,
                                      resolve_score_map, reuses_work)
from pyg_lego.data.validation import (all_finite, check_edge_index,
                                      check_features, edge_facts,
                                      check_finite, check_gamma, check_k,
                                      check_same_device, zero_norm_rows)


@dataclass
class GivenGraph:
    r"""A view that is a graph already (citations, co-purchases, scene graphs)
    instead of features.

    The graph is made symmetric (each unordered pair takes the largest weight
    given for it in either direction). Its relation score on an edge of the
    shared pattern is its weight there, :obj:`self_loop_weight` on self-loops
    that it does not weight itself, and :obj:`0` on edges it lacks. Score maps
    do not apply to given weights.

    Args:
        edge_index (torch.Tensor): Edges :math:`(2, |\mathcal{E}_m|)`.
        edge_weight (torch.Tensor, optional): Non-negative weights
            :math:`(|\mathcal{E}_m|,)`; :obj:`1` if :obj:`None`.
        self_loop_weight (float, optional): Score of a node with itself.
            (default: :obj:`1.0`)
    """
    edge_index: Tensor
    edge_weight: Optional[Tensor] = None
    self_loop_weight: float = 1.0


View = Union[Tensor, GivenGraph]

log = logging.getLogger(__name__)


def _diagnostic(name: str, doc: str) -> property:
    r"""A per-graph attribute kept beside the graph's data, not in it:
    copies, devices and saving keep it, PyG's batching leaves it out (a
    batch reads :obj:`None`), so graphs that have it and graphs that do not
    batch together."""
    private = f'_{name}'

    def get(self) -> Any:
        return self._store.__dict__.get(private)

    def set(self, value: Any) -> None:
        self._store.__dict__[private] = value
    return property(get, set, doc=doc)


class RelationData(Data):
    r"""A :class:`~torch_geometric.data.Data` whose optional
    :obj:`path_index` (edge ids of two-step paths, see
    :func:`pyg_lego.nn.two_hop_paths`) is offset by the number of edges when
    graphs are batched. The kNN diagnostics :attr:`knn_recall` and
    :attr:`knn_settings` are per graph: batching leaves them out."""

    knn_recall = _diagnostic('knn_recall', r"""View name -> recall@k of its
        approximate kNN search on a sample of nodes (:obj:`None` after
        exact searches, and on a batch).""")
    knn_settings = _diagnostic('knn_settings', r"""View name -> the settings
        its faiss HNSW or IVF search ran with, e.g. the tuned
        :obj:`nprobe` and the tuning sample's :obj:`tuned_recall`
        (:obj:`None` after other searches, and on a batch).""")

    def __inc__(self, key: str, value: Any, *args, **kwargs) -> Any:
        if key == 'path_index':
            return self.num_edges
        return super().__inc__(key, value, *args, **kwargs)


if WITH_PT24:
    # Datasets of RelationData graphs (e.g. a pre_transform of
    # pyg_lego.transforms.RelationGraph) load with weights_only=True, as PyG
    # loads its own; PyG allowlists its data classes the same way.
    torch.serialization.add_safe_globals([RelationData])


def coalesce_pattern(edge_index: Tensor, num_nodes: int,
                     return_inverse: bool = False
                     ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    r"""Sorted (by row, then column) unique edges, and with
    :obj:`return_inverse` where each input edge went."""
    # Not torch_geometric.utils.coalesce: it took 1.93x the time of
    # torch.unique at 4.1M edges, and returns no inverse map (4.39x with a
    # searchsorted for it; benchmarks/results/library_replacements.md).
    key = edge_index[0] * num_nodes + edge_index[1]
    if not return_inverse:
        key = torch.unique(key)
        return torch.stack([key // num_nodes, key % num_nodes])
    key, inverse = torch.unique(key, return_inverse=True)
    return torch.stack([key // num_nodes, key % num_nodes]), inverse


def _check_given(name: str, g: GivenGraph, num_nodes: Optional[int]) -> None:
    ei = check_edge_index(g.edge_index, num_nodes,
                          what=f"given graph '{name}': edge_index")
    w = g.edge_weight
    if w is not None:
        if not isinstance(w, Tensor) or w.dim() != 1 or \
                w.numel() != ei.size(1):
            raise ValueError(f"given graph '{name}' needs edge_weight of "
                             f"shape [{ei.size(1)}] (one per edge)")
        if not w.is_floating_point():
            raise TypeError(f"given graph '{name}' has integer edge weights; "
                            f"cast them with .float()")
        if not bool(torch.isfinite(w).all()):
            raise ValueError(f"given graph '{name}' has NaN or Inf weights")
        if bool((w < 0).any()):
            raise ValueError(f"given graph '{name}' has negative weights; "
                             f"relation scores must be non-negative")


def _validate(views: Mapping[str, View], num_nodes: Optional[int],
              similarity: str, zero_rows: str) -> int:
    if not isinstance(views, Mapping):
        raise TypeError("views must be a mapping of view name -> features "
                        f"[N, d] or GivenGraph, got {type(views).__name__}")
    if len(views) == 0:
        raise ValueError("views is empty: pass at least one view, e.g. "
                         "{'rgb': x_rgb}")
    check_similarity(similarity)
    if zero_rows not in ('error', 'drop'):
        raise ValueError(f"zero_rows must be 'error' or 'drop', got "
                         f"{zero_rows!r}")
    tensors: Dict[str, Tensor] = {}
    first = None
    for name, v in views.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"view names must be non-empty strings, got "
                            f"{name!r}")
        if isinstance(v, GivenGraph):
            tensors[name] = v.edge_index
            continue
        x = check_features(name, v)
        tensors[name] = x
        if num_nodes is None:
            num_nodes, first = x.size(0), name
        elif x.size(0) != num_nodes:
            where = f"view '{first}' has" if first else "num_nodes is"
            raise ValueError(f"view '{name}' has {x.size(0)} rows but {where} "
                             f"{num_nodes}: every view must describe the same "
                             f"N nodes in the same order")
    if num_nodes is None:
        raise ValueError("all views are given graphs: pass num_nodes")
    check_same_device(tensors)
    for name, v in views.items():
        if isinstance(v, GivenGraph):
            _check_given(name, v, num_nodes)
            continue
        check_finite(name, v)
        if similarity == 'cosine' and zero_rows == 'error':
            zeros = zero_norm_rows(v)
            if zeros.numel() > 0:
                raise ValueError(
                    f"view '{name}' has {zeros.numel()} row(s) with zero norm "
                    f"(first: row {int(zeros[0])}); cosine similarity is "
                    f"undefined for them. Fix the features, or pass "
                    f"zero_rows='drop' to remove these nodes from all views")
    return num_nodes


def _drop_nodes(views: Mapping[str, View], keep: Tensor,
                num_nodes: int) -> Dict[str, View]:
    from torch_geometric.utils import subgraph
    out: Dict[str, View] = {}
    for name, v in views.items():
        if isinstance(v, GivenGraph):
            ei, w = subgraph(keep, v.edge_index, v.edge_weight,
                             relabel_nodes=True, num_nodes=num_nodes)
            out[name] = GivenGraph(ei, w, v.self_loop_weight)
        else:
            out[name] = v[keep]
    return out


def _symmetric_given(g: GivenGraph, num_nodes: int, dtype: torch.dtype):
    ei = g.edge_index
    w = g.edge_weight
    w = torch.ones(ei.size(1), dtype=dtype, device=ei.device) if w is None \
        else w.to(dtype)
    # Not to_undirected(reduce='max'): 2.17x the time at 1M edges
    # (benchmarks/results/library_replacements.md).
    both = torch.cat([ei, ei.flip(0)], dim=1)
    key = both[0] * num_nodes + both[1]
    uniq, inv = torch.unique(key, return_inverse=True)
    weight = torch.zeros(uniq.numel(), dtype=dtype, device=ei.device)
    weight = weight.scatter_reduce(0, inv, torch.cat([w, w]), reduce='amax',
                                   include_self=False)
    return uniq, weight


def knn_pattern(views: Mapping[str, View], k: int, similarity: str = 'cosine',
                self_loops: bool = True, num_nodes: Optional[int] = None,
                memory_budget: Optional[int] = None,
                progress: bool = False, backend: str = 'auto',
                knn_options: Optional[dict] = None) -> Tensor:
    r"""The shared edge pattern :math:`\mathcal{E}`: the union over views of
    the symmetric kNN edges (a given graph's own edges), plus self-loops.

    :obj:`k >= N - 1` gives the complete graph. :obj:`backend` and
    :obj:`knn_options` choose the kNN search (see
    :func:`~pyg_lego.data.backends.knn_search`). Returns a coalesced
    :obj:`edge_index` :math:`(2, |\mathcal{E}|)`."""
    k = check_k(k)
    check_backend(backend)
    num_nodes = _validate(views, num_nodes, similarity, 'error')
    device = check_same_device({n: (v.edge_index if isinstance(v, GivenGraph)
                                    else v) for n, v in views.items()})
    return _pattern(views, k, similarity, self_loops, num_nodes, device,
                    memory_budget, progress, backend, knn_options,
                    reuse=False)[0]


#: Input edges of the union (every view's kNN edges, both directions, and
#: the self-loops) from which it reuses the searches' similarities and
#: scores each pair of edges once. Below, the bookkeeping cost more than it
#: saved (union and scores 1.6 to 1.9x slower at 4000 to 16,000 nodes in
#: benchmarks/scale.py); at 32,000 and 64,000 (6.2M input edges) both ways
#: took the same time, and on a 1M-node graph the scores alone 1.2x less.
#: Reuse gains >= 10% at 6.2M input edges (benchmarks/results/switches.md).
REUSE_MIN_EDGES = 2**22

#: View name -> ids of pattern edges and their raw similarities, known from
#: the view's own kNN search.
Known = Dict[str, Tuple[Tensor, Tensor]]


def _pattern(views, k, similarity, self_loops, num_nodes, device,
             memory_budget, progress, backend='exact', knn_options=None,
             reuse: Optional[bool] = None
             ) -> Tuple[Tensor, Known, Optional[Tensor],
                        Dict[str, KNNResult]]:
    r"""The pattern, the similarities that the kNN searches computed on its
    edges, the id of each edge's reverse (:obj:`None` for the complete
    graph, or without :obj:`reuse`, see :func:`union_pattern`), and each
    feature view's own search result."""
    has_features = any(not isinstance(v, GivenGraph) for v in views.values())
    if has_features and k >= num_nodes - 1:
        return complete_edges(num_nodes, self_loops, device), {}, None, {}
    found = {name: knn_search(v, k, similarity, backend, memory_budget,
                              progress, knn_options)
             for name, v in views.items() if not isinstance(v, GivenGraph)}
    if similarity == 'rbf' or not found:  # Nothing to reuse.
        reuse = False
    return (*union_pattern(views, found, self_loops, num_nodes, device,
                           reuse), found)


def union_pattern(views: Mapping[str, View], found: Mapping[str, KNNResult],
                  self_loops: bool, num_nodes: int, device: torch.device,
                  reuse: Optional[bool] = None
                  ) -> Tuple[Tensor, Known, Optional[Tensor]]:
    r"""The union of the feature views' kNN edges :obj:`found`, the given
    graphs' edges, their reverses and self-loops; and with :obj:`reuse`,
    the similarities the searches computed, placed on the pattern's edges,
    and the id of each edge's reverse (else :obj:`{}` and :obj:`None`).
    :obj:`reuse=None` reuses where
    :func:`~pyg_lego.data.similarity.reuses_work` and from
    :data:`REUSE_MIN_EDGES` input edges."""
    parts = [v.edge_index[:, v.edge_index[0] != v.edge_index[1]]
             if isinstance(v, GivenGraph) else found[name].edge_index
             for name, v in views.items()]
    ei = torch.cat(parts, dim=1)
    ei = torch.cat([ei, ei.flip(0)], dim=1)
    if self_loops:
        loop = torch.arange(num_nodes, device=device)
        ei = torch.cat([ei, torch.stack([loop, loop])], dim=1)
    if reuse is None:
        reuse = ei.size(1) >= REUSE_MIN_EDGES and reuses_work(
            torch.empty(0, device=device))
    if not reuse:
        return coalesce_pattern(ei, num_nodes), {}, None
    edge_index, inverse = coalesce_pattern(ei, num_nodes, return_inverse=True)
    del ei
    # Half the memory of the 64-bit ids while the scores are computed.
    inverse = inverse.to(id_dtype(edge_index.size(1)))
    start, total = 0, sum(part.size(1) for part in parts)
    # Input edge t and edge total + t are each other's reverses.
    reverse = torch.arange(edge_index.size(1), device=device,
                           dtype=inverse.dtype)
    reverse[inverse[:total]] = inverse[total:2 * total]
    reverse[inverse[total:2 * total]] = inverse[:total]
    known: Known = {}
    for name, part in zip(views, parts):
        res, end = found.get(name), start + part.size(1)
        if res is not None and res.score is not None:
            known[name] = (torch.cat([inverse[start:end],
                                      inverse[total + start:total + end]]),
                           torch.cat([res.score, res.score]))
        start = end
    return edge_index, known, reverse


def relation_scores(views: Mapping[str, View], edge_index: Tensor,
                    similarity: str = 'cosine', score_map: str = 'auto',
                    gamma: Optional[float] = None,
                    num_nodes: Optional[int] = None,
                    k: Optional[int] = None) -> Tensor:
    r"""Every view's relation score on every edge of :obj:`edge_index`
    (coalesced), differentiable with respect to the features.

    :obj:`k` is the number of neighbours that set the bandwidths of the
    adaptive score maps (:obj:`"local"`, :obj:`"snf"`; see
    :mod:`pyg_lego.data.calibration`), as :func:`build_relation_graph`
    passes its own :obj:`k`; the other maps ignore it.

    Returns:
        :obj:`edge_attr` :math:`(|\mathcal{E}|, M)`.
    """
    num_nodes = _validate(views, num_nodes, similarity, 'error')
    check_edge_index(edge_index, num_nodes)
    check_gamma(gamma)
    score_map = resolve_score_map(score_map, similarity)
    if score_map in ADAPTIVE_MAPS:
        if k is None:
            raise ValueError(f"score_map={score_map!r} needs k, the number "
                             f"of neighbours that set each node's bandwidth")
        k = check_k(k)
    return _scores(views, edge_index, similarity, score_map, gamma, num_nodes,
                   k=k)


def _given_scores(g: GivenGraph, edge_index: Tensor, num_nodes: int,
                  dtype: torch.dtype) -> Tensor:
    gkey, gweight = _symmetric_given(g, num_nodes, dtype)
    key = edge_index[0] * num_nodes + edge_index[1]
    score = torch.zeros(key.numel(), dtype=dtype, device=key.device)
    found = torch.zeros_like(key, dtype=torch.bool)
    if gkey.numel() > 0:
        pos = torch.searchsorted(gkey, key).clamp_max(gkey.numel() - 1)
        found = gkey[pos] == key
        score = torch.where(found, gweight[pos], score)
    loop = (edge_index[0] == edge_index[1]) & ~found
    return torch.where(loop, torch.full_like(score, g.self_loop_weight), score)


def _scores(views, edge_index, similarity, score_map, gamma,
            num_nodes, known: Optional[Known] = None,
            reverse: Optional[Tensor] = None,
            k: Optional[int] = None) -> Tensor:
    r"""Every view's scores on the pattern; the similarities in
    :obj:`known` (of views already in the common dtype) are taken as they
    are, and with :obj:`reverse` (the id of each edge's reverse) only one
    edge of each pair is computed. An adaptive score map rescales each
    feature view's raw similarities with bandwidths from its :obj:`k`
    nearest neighbours on the pattern."""
    feats = [v for v in views.values() if not isinstance(v, GivenGraph)]
    dtype = reduce(torch.promote_types, [f.dtype for f in feats],
                   feats[0].dtype) if feats else torch.get_default_dtype()
    known = known or {}
    # One CSR form of the pattern for every view's sampled product.
    pattern = csr_pattern(edge_index[0], edge_index[1], num_nodes, num_nodes,
                          dtype) if feats and similarity != 'rbf' else None
    cols = []
    for name, v in views.items():
        if isinstance(v, GivenGraph):
            cols.append(_given_scores(v, edge_index, num_nodes, dtype))
            continue
        mine = known.get(name) if v.dtype == dtype else None
        adaptive = score_map in ADAPTIVE_MAPS
        col = edge_similarity(v.to(dtype), edge_index, similarity,
                              'raw' if adaptive else score_map, gamma,
                              pattern=pattern, known=mine, reverse=reverse)
        if adaptive:
            col = adaptive_score_map(col, edge_index, num_nodes,
                                     min(k, num_nodes - 1), score_map)
        cols.append(col)
    return torch.stack(cols, dim=-1)


def build_relation_graph(views: Mapping[str, View], k: int = 10,
                         similarity: str = 'cosine', score_map: str = 'auto',
                         gamma: Optional[float] = None,
                         self_loops: bool = True,
                         zero_rows: str = 'error',
                         num_nodes: Optional[int] = None,
                         memory_budget: Optional[int] = None,
                         progress: bool = False, backend: str = 'auto',
                         knn_options: Optional[dict] = None,
                         recall_sample: int = 1000) -> RelationData:
    r"""Builds the relationship graph of several views of the same nodes.

    Each feature view selects, for every node, its :obj:`k` most similar
    other nodes; the edges are made symmetric, united over views (a given
    graph contributes its own edges) and completed with self-loops. Every
    view is then scored exactly on every edge of that shared pattern, so one
    view's neighbours are re-scored by the others:

    .. math::
        \mathbf{R}_{e, m} = \phi\big(\mathrm{sim}_m(\mathbf{x}^{(m)}_i,
        \mathbf{x}^{(m)}_j)\big), \qquad e = (i, j) \in \mathcal{E} =
        \bigcup_m \mathrm{kNN}_m \cup \mathrm{kNN}_m^\top \cup \mathbf{I}

    No :math:`N \times N` tensor is formed: kNN runs in blocks of query rows
    and scores are edge-wise. On large graphs (:data:`REUSE_MIN_EDGES`, on
    the CPU with numba), a view's scores on its own kNN edges and their
    reverses are the similarities its search computed (where it computed
    them in the features' dtype: exact, torch-ivf and faiss searches,
    cosine and dot), and each other pair of edges is scored once.
    :obj:`k >= N - 1` gives the complete graph (the paper's setting, where
    everything equals the dense computation).

    Args:
        views (Mapping[str, torch.Tensor or GivenGraph]): View name ->
            features :math:`(N, d_m)` (widths may differ) or a
            :class:`GivenGraph`.
        k (int, optional): Neighbours per node and view. (default: :obj:`10`)
        similarity (str, optional): :obj:`"cosine"`, :obj:`"dot"` or
            :obj:`"rbf"` (:math:`\exp(-\gamma \|x_i - x_j\|^2)`).
            (default: :obj:`"cosine"`)
        score_map (str, optional): :math:`\phi`: :obj:`"affine"`
            (:math:`(1 + s) / 2`), :obj:`"clamp"` (:math:`\max(s, 0)`),
            :obj:`"raw"`, :obj:`"auto"` (affine for cosine, raw
            otherwise), or an adaptive map for cosine, :obj:`"local"`
            or :obj:`"snf"`, whose bandwidths come from each node's
            :obj:`k` nearest neighbours (see
            :mod:`pyg_lego.data.calibration`). (default: :obj:`"auto"`)
        gamma (float, optional): RBF bandwidth; ``1 / d_m`` if :obj:`None`.
        self_loops (bool, optional): Add self-loops. (default: :obj:`True`)
        zero_rows (str, optional): A zero row under cosine is an
            :obj:`"error"`, or :obj:`"drop"` removes that node from every
            view (the kept original ids go to :obj:`data.n_id`).
            (default: :obj:`"error"`)
        num_nodes (int, optional): :math:`N`; needed only when every view is
            a given graph.
        memory_budget (int, optional): Bytes for one block of kNN scores.
            (default: 256 MiB on the CPU; on CUDA a sixteenth of the
            device's memory, at most 2 GiB)
        progress (bool, optional): Progress bar for the kNN search.
        backend (str, optional): kNN search: :obj:`"exact"`,
            :obj:`"torch-ivf"`, :obj:`"faiss"`, :obj:`"faiss-hnsw"`,
            :obj:`"faiss-ivf"`, :obj:`"pynndescent"` or :obj:`"auto"`
            (exact while cheap, approximate beyond), see
            :func:`~pyg_lego.data.backends.knn_search`.
            (default: :obj:`"auto"`)
        knn_options (dict, optional): Settings of the approximate indexes.
        recall_sample (int, optional): Nodes on which an approximate search
            is checked against the exact one; the recall@k of each view goes
            to :obj:`data.knn_recall`. :obj:`0` skips the check.
            (default: :obj:`1000`)

    Returns:
        :class:`RelationData` with :obj:`x_<view>` node features per feature
        view, :obj:`edge_index` :math:`(2, |\mathcal{E}|)`,
        :obj:`edge_attr` :math:`(|\mathcal{E}|, M)`, :obj:`view_names`,
        :obj:`num_nodes`, and the :obj:`similarity` and :obj:`score_map` used;
        after approximate searches, the diagnostics
        :attr:`~RelationData.knn_recall` and
        :attr:`~RelationData.knn_settings`.
    """
    k = check_k(k)
    check_backend(backend)
    num_nodes = _validate(views, num_nodes, similarity, zero_rows)
    score_map = resolve_score_map(score_map, similarity)
    check_gamma(gamma)
    n_id = None
    if similarity == 'cosine' and zero_rows == 'drop':
        zero = torch.zeros(num_nodes, dtype=torch.bool, device='cpu')
        for v in views.values():
            if not isinstance(v, GivenGraph):
                zero[zero_norm_rows(v).cpu()] = True
        if bool(zero.any()):
            n_id = (~zero).nonzero().view(-1)
            if n_id.numel() < 2:
                raise ValueError("zero_rows='drop' leaves fewer than 2 nodes")
            device = next(iter(views.values()))
            device = device.edge_index.device if isinstance(
                device, GivenGraph) else device.device
            n_id = n_id.to(device)
            views = _drop_nodes(views, n_id, num_nodes)
            num_nodes = n_id.numel()
    device = check_same_device({n: (v.edge_index if isinstance(v, GivenGraph)
                                    else v) for n, v in views.items()})
    edge_index, known, reverse, found = _pattern(
        views, k, similarity, self_loops, num_nodes, device, memory_budget,
        progress, backend, knn_options)
    edge_attr = _scores(views, edge_index, similarity, score_map, gamma,
                        num_nodes, known, reverse, k=k)
    del known, reverse
    recall = {name: knn_recall(res.edge_index, views[name], k,
                               recall_sample, similarity)
              for name, res in found.items()
              if res.backend in APPROXIMATE and recall_sample > 0}
    # Read here, once, what every forward over this graph checks (ids in
    # range, coalesced, finite scores): the model's forward then reads no
    # values of these tensors (on a GPU, no synchronisation per forward).
    edge_facts(edge_index)
    all_finite(edge_attr)
    data = RelationData(edge_index=edge_index, edge_attr=edge_attr,
                        num_nodes=num_nodes)
    for name, v in views.items():
        if not isinstance(v, GivenGraph):
            data[f'x_{name}'] = v
    data.view_names = list(views.keys())
    data.similarity = similarity
    data.score_map = score_map
    if n_id is not None:
        data.n_id = n_id
    settings = {name: res.settings for name, res in found.items()
                if res.settings}
    for name, value in settings.items():
        log.info('kNN of %s: %s, %s', name, found[name].backend, value)
    if settings:
        data.knn_settings = settings
    if recall:
        log.info('kNN recall@%d: %s', k, recall)
        data.knn_recall = recall
    return data


def graph_attribute(data: Data, key: str) -> Any:
    r"""A graph-level attribute (:obj:`view_names`, :obj:`similarity`,
    :obj:`score_map`) of a graph, or of a mini-batch, where PyG collects it
    once per graph: then every graph must agree on it."""
    value = data[key]
    if isinstance(data, Batch):
        values = list(value)
        if any(v != values[0] for v in values[1:]):
            raise ValueError(f"the graphs of this mini-batch disagree on "
                             f"{key}: {values}")
        value = values[0]
    return list(value) if key == 'view_names' else value


def view_features(data: Data, view_names: Sequence[str]
                  ) -> List[Optional[Tensor]]:
    r"""The feature tensors :obj:`data.x_<view>` in :obj:`view_names` order
    (:obj:`None` for given-graph views)."""
    return [data[f'x_{name}'] if f'x_{name}' in data else None
            for name in view_names]
