r"""PyG transforms of the LEGO pipeline: a :class:`~torch_geometric.data.Data`
holding several views of its nodes becomes their relationship graph
(:class:`RelationGraph`), whose parameter-free graph powers can then be
precomputed once (:class:`GraphPowers`), as
:class:`torch_geometric.transforms.SIGN` precomputes its propagated features.
Both compose with :class:`torch_geometric.transforms.Compose` and serve as a
dataset's :obj:`pre_transform` or :obj:`transform`."""
import numbers
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data, HeteroData
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform

from pyg_lego.data.backends import check_backend
from pyg_lego.data.relation import (RelationData, build_relation_graph,
                                    graph_attribute, view_features)
from pyg_lego.data.similarity import check_similarity, resolve_score_map
from pyg_lego.data.validation import check_gamma, check_k, check_order
from pyg_lego.nn.graph_power import (DEFAULT_PATH_BUDGET, KERNELS, MODES,
                                     GraphPowerConv)

def _check_data(data: Any, transform: str) -> None:
    if isinstance(data, HeteroData) or not isinstance(data, Data):
        raise TypeError(f"{transform} takes a torch_geometric.data.Data, got "
                        f"{type(data).__name__}")


def _view_name(attr: Any) -> Any:
    r"""The name of the view read from attribute :obj:`attr`: :obj:`rgb`
    from :obj:`x_rgb`, else the attribute's own name."""
    if isinstance(attr, str) and attr.startswith('x_') and len(attr) > 2:
        return attr[2:]
    return attr


@functional_transform('relation_graph')
class RelationGraph(BaseTransform):
    r"""Builds the relationship graph of several views of the same nodes,
    stored as attributes of one :class:`~torch_geometric.data.Data` (e.g.
    :obj:`data.x_rgb` and :obj:`data.x_flow`), with
    :func:`~pyg_lego.data.build_relation_graph` (functional name:
    :obj:`relation_graph`).

    Each view selects, for every node, its :obj:`k` most similar other nodes;
    the edges are made symmetric, united over views and completed with
    self-loops, and every view is scored on every edge of that shared
    pattern:

    .. math::
        \mathbf{R}_{e, m} = \phi\big(\mathrm{sim}_m(\mathbf{x}^{(m)}_i,
        \mathbf{x}^{(m)}_j)\big), \qquad e = (i, j) \in \mathcal{E} =
        \bigcup_m \mathrm{kNN}_m \cup \mathrm{kNN}_m^\top \cup \mathbf{I}

    The pattern goes to :obj:`data.edge_index`
    :math:`(2, |\mathcal{E}|)` and the scores to :obj:`data.edge_attr`
    :math:`(|\mathcal{E}|, M)`, one column per view in the order of
    :obj:`views`, as in the :class:`~pyg_lego.data.RelationData` that
    :func:`~pyg_lego.data.build_relation_graph` returns; with them
    :obj:`data.view_names`, :obj:`data.similarity`, :obj:`data.score_map`
    and :obj:`data.num_nodes`, and every view's features as
    :obj:`data.x_<view>` (the attribute itself where it is named so already),
    which is where :class:`~pyg_lego.nn.LEGO` and :class:`GraphPowers` look
    for them. A view read from an attribute :obj:`x_<name>` is named
    :obj:`<name>`, any other by its attribute; a mapping
    :obj:`{view name: attribute}` names the views explicitly.

    A plain :class:`~torch_geometric.data.Data` is returned as a
    :class:`~pyg_lego.data.RelationData` with all its other attributes
    (labels, masks, ...); a subclass of it keeps its class. As with every
    PyG transform, the input graph is left as it was. An earlier graph's
    :obj:`edge_index`, :obj:`edge_attr` and :obj:`edge_weight` are
    replaced; other edge-level attributes of it are left as they are and no
    longer match the edges.

    .. note::

        Apply it to one graph at a time (as a :obj:`pre_transform` or
        :obj:`transform`), not to a mini-batch: the kNN search would link
        nodes of different graphs.

    Args:
        views (list of str or Mapping[str, str]): Names of the attributes
            holding the views' node features :math:`(N, d_m)` (widths may
            differ), or view name -> attribute name.
        k (int, optional): Neighbours per node and view; :obj:`k >= N - 1`
            gives the complete graph. (default: :obj:`10`)
        similarity (str, optional): :obj:`"cosine"`, :obj:`"dot"` or
            :obj:`"rbf"`. (default: :obj:`"cosine"`)
        score_map (str, optional): :math:`\phi`: :obj:`"affine"`,
            :obj:`"clamp"`, :obj:`"raw"`, :obj:`"local"`, :obj:`"snf"` or
            :obj:`"auto"` (affine for cosine, raw otherwise), see
            :func:`~pyg_lego.data.build_relation_graph`.
            (default: :obj:`"auto"`)
        gamma (float, optional): RBF bandwidth; ``1 / d_m`` if :obj:`None`.
            (default: :obj:`None`)
        self_loops (bool, optional): Add self-loops. (default: :obj:`True`)
        backend (str, optional): kNN search, see
            :func:`~pyg_lego.data.knn_search`. (default: :obj:`"auto"`)
        knn_options (dict, optional): Settings of the approximate indexes.
            (default: :obj:`None`)
        memory_budget (int, optional): Bytes for one block of kNN scores.
            (default: :obj:`None`, the builder's default)
        recall_sample (int, optional): Nodes on which an approximate search
            is checked against the exact one (into :obj:`data.knn_recall`
            of a :class:`~pyg_lego.data.RelationData`). :obj:`0` skips the
            check. (default: :obj:`1000`)
    """
    def __init__(
        self,
        views: Union[Sequence[str], Mapping[str, str]],
        k: int = 10,
        similarity: str = 'cosine',
        score_map: str = 'auto',
        gamma: Optional[float] = None,
        self_loops: bool = True,
        backend: str = 'auto',
        knn_options: Optional[dict] = None,
        memory_budget: Optional[int] = None,
        recall_sample: int = 1000,
    ) -> None:
        self.views = self._view_attributes(views)
        self.k = check_k(k)
        self.similarity = check_similarity(similarity)
        self.score_map = score_map
        resolve_score_map(score_map, similarity)
        check_gamma(gamma)
        self.gamma = gamma
        self.self_loops = self_loops
        self.backend = check_backend(backend)
        self.knn_options = knn_options
        self.memory_budget = memory_budget
        if isinstance(recall_sample, bool) or \
                not isinstance(recall_sample, numbers.Integral) or \
                recall_sample < 0:
            raise ValueError(f"recall_sample must be an integer >= 0, got "
                             f"{recall_sample!r}")
        self.recall_sample = int(recall_sample)

    @staticmethod
    def _view_attributes(views: Any) -> Dict[str, str]:
        if isinstance(views, str):
            raise TypeError(f"views must be a list of attribute names, got "
                            f"the string {views!r}; write [{views!r}]")
        if isinstance(views, Mapping):
            pairs = list(views.items())
        elif isinstance(views, Sequence):
            pairs = [(_view_name(a), a) for a in views]
        else:
            raise TypeError(f"views must be a list of attribute names or a "
                            f"mapping of view name -> attribute name, got "
                            f"{type(views).__name__}")
        if len(pairs) == 0:
            raise ValueError("views is empty: name at least one attribute "
                             "holding node features, e.g. ['x_rgb']")
        out: Dict[str, str] = {}
        for name, attr in pairs:
            if not isinstance(name, str) or not name or \
                    not isinstance(attr, str) or not attr:
                raise TypeError(f"view and attribute names must be non-empty "
                                f"strings, got {name!r}: {attr!r}")
            if name in out:
                raise ValueError(f"view '{name}' is named twice (attributes "
                                 f"'{out[name]}' and '{attr}')")
            out[name] = attr
        return out

    def _features(self, data: Data) -> Dict[str, Tensor]:
        feats: Dict[str, Tensor] = {}
        first: Optional[str] = None
        for name, attr in self.views.items():
            if attr not in data:
                raise ValueError(f"{self.__class__.__name__}: the graph has "
                                 f"no attribute '{attr}' (view '{name}'); it "
                                 f"has {sorted(data.keys())}")
            x = data[attr]
            if not isinstance(x, Tensor) or x.dim() != 2:
                shape = list(x.shape) if isinstance(x, Tensor) else \
                    type(x).__name__
                raise ValueError(f"{self.__class__.__name__}: attribute "
                                 f"'{attr}' (view '{name}') must hold node "
                                 f"features [N, d], got {shape}")
            if first is not None and x.size(0) != feats[first].size(0):
                raise ValueError(
                    f"{self.__class__.__name__}: attribute '{attr}' has "
                    f"{x.size(0)} rows but '{self.views[first]}' has "
                    f"{feats[first].size(0)}: every view must describe the "
                    f"same N nodes in the same order")
            first = first or name
            feats[name] = x
        given = data._store.get('num_nodes')
        num_rows = feats[first].size(0)
        if given is not None and int(given) != num_rows:
            raise ValueError(f"{self.__class__.__name__}: data.num_nodes is "
                             f"{given} but the views have {num_rows} rows")
        return feats

    def forward(self, data: Data) -> Data:
        _check_data(data, self.__class__.__name__)
        if isinstance(data, Batch):
            raise ValueError(f"{self.__class__.__name__} builds one graph's "
                             f"kNN pattern; apply it to each graph (as the "
                             f"dataset's pre_transform or transform), not to "
                             f"a mini-batch")
        feats = self._features(data)
        graph = build_relation_graph(
            feats, k=self.k, similarity=self.similarity,
            score_map=self.score_map, gamma=self.gamma,
            self_loops=self.self_loops, memory_budget=self.memory_budget,
            backend=self.backend, knn_options=self.knn_options,
            recall_sample=self.recall_sample)
        if type(data) is Data:
            data = RelationData.from_dict(data.to_dict())
        for key in ('edge_weight', 'edge_attr'):
            if key in data:
                del data[key]
        data.edge_index = graph.edge_index
        data.edge_attr = graph.edge_attr
        data.num_nodes = graph.num_nodes
        for name in feats:
            data[f'x_{name}'] = graph[f'x_{name}']
        data.view_names = graph.view_names
        data.similarity = graph.similarity
        data.score_map = graph.score_map
        if isinstance(data, RelationData):
            data.knn_recall = graph.knn_recall
            data.knn_settings = graph.knn_settings
        return data

    def __repr__(self) -> str:
        views: Any = self.views
        if all(_view_name(a) == n for n, a in self.views.items()):
            views = list(self.views.values())
        return (f'{self.__class__.__name__}(views={views}, k={self.k}, '
                f'similarity={self.similarity!r}, '
                f'score_map={self.score_map!r}, '
                f'backend={self.backend!r})')


@functional_transform('graph_powers')
class GraphPowers(BaseTransform):
    r"""Precomputes the parameter-free graph power expansion of a
    relationship graph's scores with :class:`~pyg_lego.nn.GraphPowerConv`
    (functional name: :obj:`graph_powers`), as
    :class:`~torch_geometric.transforms.SIGN` precomputes powers of the
    adjacency matrix, so that only the learnable fusion
    (:class:`~pyg_lego.nn.LEGOFusion`) runs during training.

    By default (element-wise powers, :class:`~pyg_lego.LEGO`'s default):

    .. math::
        \mathbf{R}^{(0)}_m = \mathbf{I}, \quad
        \mathbf{R}^{(p)}_m = \mathbf{R}_m^{\odot p}

    for :math:`p \in \{ 0, \ldots, P \}` and every view :math:`m`, all on
    the shared pattern :math:`\mathcal{E}` (order 0 on its self-loops; see
    :class:`~pyg_lego.nn.GraphPowerConv` for :obj:`order0` and for the
    masked and the propagated modes). It reads :obj:`data.edge_index` and the scores
    :obj:`data.edge_attr` :math:`(|\mathcal{E}|, M)` (as
    :class:`RelationGraph` or :func:`~pyg_lego.data.build_relation_graph`
    leave them; the propagated mode also :obj:`data.view_names` and the
    features :obj:`data.x_<view>`), and saves the orders in
    :obj:`data[key]` :math:`(|\mathcal{E}|, M, P + 1)`, the input of
    :class:`~pyg_lego.nn.LEGOFusion`; it batches along the edges, as
    :obj:`edge_attr` does. They are computed without gradients.

    Args:
        P (int): Highest order :math:`P`.
        mode (str, optional): :obj:`"elementwise"`, :obj:`"masked"` or
            :obj:`"propagated"`: :class:`~pyg_lego.LEGO`'s default.
            (default: :obj:`"elementwise"`)
        order0 (str, optional): Element-wise order :math:`0`: :obj:`"self"`
            or :obj:`"all"`. (default: :obj:`"self"`)
        similarity (str, optional): Similarity of the propagated mode; the
            graph's :obj:`data.similarity` must agree.
            (default: :obj:`"cosine"`)
        score_map (str, optional): Score map of the propagated mode; the
            graph's :obj:`data.score_map` must agree.
            (default: :obj:`"auto"`)
        gamma (float, optional): RBF bandwidth of the propagated mode.
            (default: :obj:`None`)
        memory_budget (int, optional): Bytes the masked power may spend on
            stored two-step paths before it streams them, see
            :class:`~pyg_lego.nn.GraphPowerConv`. (default: 2 GiB)
        kernel (str, optional): :obj:`"auto"`, :obj:`"numba"` or
            :obj:`"torch"`, see :class:`~pyg_lego.nn.GraphPowerConv`.
            (default: :obj:`"auto"`)
        key (str, optional): The attribute the orders are saved in.
            (default: :obj:`"edge_powers"`)
    """
    def __init__(
        self,
        P: int,
        mode: str = 'elementwise',
        order0: str = 'self',
        similarity: str = 'cosine',
        score_map: str = 'auto',
        gamma: Optional[float] = None,
        memory_budget: Optional[int] = DEFAULT_PATH_BUDGET,
        kernel: str = 'auto',
        key: str = 'edge_powers',
    ) -> None:
        self.P = check_order(P)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got "
                             f"{kernel!r}")
        check_gamma(gamma)
        if not isinstance(key, str) or not key:
            raise ValueError(f"key must be a non-empty attribute name, got "
                             f"{key!r}")
        if key in ('edge_index', 'edge_attr'):
            raise ValueError(f"key={key!r} would overwrite the graph the "
                             f"powers are computed from")
        # Never cached: a transform sees a new graph on every call.
        self.conv = GraphPowerConv(self.P, mode=mode, order0=order0,
                                   similarity=similarity,
                                   score_map=score_map, gamma=gamma,
                                   cached=False, memory_budget=memory_budget,
                                   kernel=kernel)
        self.key = key

    @property
    def mode(self) -> str:
        return self.conv.mode

    def _xs(self, data: Data) -> List[Optional[Tensor]]:
        name = self.__class__.__name__
        for attr in ('view_names', 'similarity', 'score_map'):
            if attr not in data:
                raise ValueError(f"{name}: the propagated mode needs "
                                 f"data.{attr}, as RelationGraph or "
                                 f"build_relation_graph leave it")
        sim = graph_attribute(data, 'similarity')
        smap = graph_attribute(data, 'score_map')
        if (sim, smap) != (self.conv.similarity, self.conv.score_map):
            raise ValueError(f"{name}: the graph was scored with "
                             f"similarity={sim!r}, score_map={smap!r} but "
                             f"the transform propagates with "
                             f"similarity={self.conv.similarity!r}, "
                             f"score_map={self.conv.score_map!r}")
        names = graph_attribute(data, 'view_names')
        xs = view_features(data, names)
        missing = [n for n, x in zip(names, xs) if x is None]
        if missing:
            raise ValueError(f"{name}: the propagated mode needs the "
                             f"features of every view; the graph has no "
                             f"{['x_' + n for n in missing]}")
        return xs

    def forward(self, data: Data) -> Data:
        _check_data(data, self.__class__.__name__)
        name = self.__class__.__name__
        if data.edge_index is None:
            raise ValueError(f"{name}: the graph has no edge_index; build "
                             f"the relationship graph first (RelationGraph)")
        edge_attr = data.edge_attr
        if not isinstance(edge_attr, Tensor):
            raise ValueError(f"{name}: the graph has no edge_attr (the "
                             f"relation scores [|E|, M]); build the "
                             f"relationship graph first (RelationGraph)")
        if edge_attr.dim() not in (1, 2) or \
                edge_attr.size(0) != data.edge_index.size(1):
            raise ValueError(f"{name}: edge_attr must have shape [|E|, M] "
                             f"with |E| = {data.edge_index.size(1)}, got "
                             f"{list(edge_attr.shape)}")
        xs = self._xs(data) if self.mode == 'propagated' else None
        with torch.no_grad():
            data[self.key] = self.conv(data.edge_index, edge_attr, xs=xs,
                                       num_nodes=data.num_nodes,
                                       path_index=data.get('path_index'))
        return data

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(P={self.P}, mode={self.mode!r}, '
                f'order0={self.conv.order0!r}, '
                f'kernel={self.conv.kernel!r}, key={self.key!r})')
