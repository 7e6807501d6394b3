r"""Snippet scorers for weakly supervised video anomaly detection: LEGO fusion
with the graph-space head (the documentation's method page, docs/method.rst,
sections 4-5) and the feature-fusion
baselines the field compares against, behind one interface.

Every model maps a mini-batch of video relation graphs (see
:func:`pyg_lego.vad.video.video_graph`) to one anomaly logit per snippet
(node), :math:`(|\mathcal{V}|,)`. Baselines use the same head as LEGO, a
two-layer MLP of hidden width :obj:`hidden_channels` (:math:`T` by default, the
graph-space head's width), on their own fused snippet representation.
"""
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.nn import GCNConv

from pyg_lego.data.relation import graph_attribute
from pyg_lego.nn import LEGO, GraphSpaceHead
from pyg_lego.nn.heads import READOUTS, graph_space_rows

#: Names accepted by :func:`build_model` (``single:<view>`` for each view).
MODEL_NAMES = ('lego', 'lego+features', 'single', 'concat', 'sum',
               'attention', 'gcn')


def _batch_views(batch: Data) -> List[str]:
    return graph_attribute(batch, 'view_names')


def _features(batch: Data, view_names: Sequence[str]) -> List[Tensor]:
    have = _batch_views(batch)
    missing = [v for v in view_names if v not in have]
    if missing:
        raise ValueError(f"the batch has views {have} but the model needs "
                         f"{missing}")
    return [batch[f'x_{v}'] for v in view_names]


def _batch_vector(batch: Data) -> Tensor:
    if getattr(batch, 'batch', None) is not None:
        return batch.batch
    return batch.edge_index.new_zeros(batch.num_nodes)


class ScoreMLP(torch.nn.Module):
    r"""The scoring head shared by the baselines,
    :math:`s = \mathbf{w}_2^\top \mathrm{ReLU}(\mathbf{W}_1 \mathbf{h} +
    \mathbf{b}_1) + b_2`."""

    def __init__(self, in_channels: int, hidden_channels: int,
                 dropout: float = 0.0):
        super().__init__()
        self.lin1 = torch.nn.Linear(in_channels, hidden_channels)
        self.lin2 = torch.nn.Linear(hidden_channels, 1)
        self.dropout = dropout

    def reset_parameters(self):
        self.lin1.reset_parameters()
        self.lin2.reset_parameters()

    def forward(self, h: Tensor) -> Tensor:
        h = torch.relu(self.lin1(h))
        h = torch.nn.functional.dropout(h, self.dropout, self.training)
        return self.lin2(h).squeeze(-1)


class LEGOVAD(torch.nn.Module):
    r"""LEGO fusion of every video's relation graphs followed by the
    graph-space head: snippet :math:`i` is scored from its row of the fused
    graph,

    .. math::
        s_i = \mathrm{FC}_{N \to 1}\big(\mathrm{ReLU}(\mathrm{FC}_{N \to N}
        (\mathbf{G}_{i, :}))\big), \qquad \mathbf{G} = \mathrm{LEGO}
        \big(\{\mathbf{R}^{(p)}_m\}\big).

    With :obj:`feature_channels > 0` (not the paper's head) a linear
    projection of the concatenated snippet features, of that width, is
    appended to each row before the MLP.

    Args:
        view_names (list of str): The views, in the graph's order.
        T (int): Snippets per video :math:`N` (the head's input width).
        P (int, optional): Highest order. (default: :obj:`2`)
        mode (str, optional): Expansion mode. The element-wise powers (the
            paper's multilinear reading), as in :class:`~pyg_lego.nn.LEGO`:
            on a video's complete graph the masked square averages every
            relation over all :math:`T` intermediate snippets, which blurs
            the snippets that stand out (docs/vad.md measures it).
            (default: :obj:`"elementwise"`)
        fusion (str, optional): A :class:`~pyg_lego.nn.LEGOFusion` kind.
            Linear here, where :class:`~pyg_lego.nn.LEGO` defaults to the
            geometric fusion for kNN patterns: the VAD default was chosen
            on its own development seeds
            (``benchmarks/results/vad_dev*.json``), which did not sweep
            the geometric fusion. (default: :obj:`"linear"`)
        channels (int, optional): Fused graphs :math:`C`. (default: :obj:`1`)
        rank (int, optional): CP rank of the polynomial fusion.
        hidden_channels (int, optional): Head width; :math:`N` if :obj:`None`.
        dropout (float, optional): Head dropout. (default: :obj:`0.0`)
        dims (Mapping[str, int], optional): Feature widths, needed with
            :obj:`feature_channels`.
        feature_channels (int, optional): Width of the feature projection
            appended to the rows; :obj:`0` is the paper's head.
            (default: :obj:`0`)
        readout (str, optional): How the head reads each snippet's row of
            the fused graph (:func:`~pyg_lego.nn.graph_space_rows`):
            :obj:`"rows"` (the paper's, in snippet order) or
            :obj:`"deviation"` (the snippet's sorted deviations from how
            the video's snippets relate to each other). The default, because
            the pure graph-space head learns far better from it in every
            expansion mode (docs/vad.md measures both). (default:
            :obj:`"deviation"`)
    """

    def __init__(self, view_names: Sequence[str], T: int, P: int = 2,
                 mode: str = 'elementwise', fusion: str = 'linear',
                 channels: int = 1, rank: Optional[int] = None,
                 hidden_channels: Optional[int] = None, dropout: float = 0.0,
                 dims: Optional[Mapping[str, int]] = None,
                 feature_channels: int = 0, readout: str = 'deviation'):
        super().__init__()
        if T < 2:
            raise ValueError(f"T must be >= 2 snippets, got {T}")
        if feature_channels < 0:
            raise ValueError(f"feature_channels must be >= 0, got "
                             f"{feature_channels}")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got "
                             f"{readout!r}")
        self.view_names = list(view_names)
        self.T = T
        # A video's graph is complete over its T snippets and its heads read
        # every relation: no sparsification (the fusion study's default is
        # for kNN patterns).
        self.lego = LEGO(self.view_names, P=P, mode=mode, fusion=fusion,
                         out_channels=channels, rank=rank, topk=None)
        self.feature_channels = feature_channels
        self.readout = readout
        if feature_channels:
            if dims is None:
                raise ValueError("feature_channels needs dims (feature widths "
                                 "per view)")
            width = sum(int(dims[v]) for v in self.view_names)
            self.project = torch.nn.Linear(width, feature_channels)
            self.head = ScoreMLP(T * channels + feature_channels,
                                 hidden_channels or T, dropout)
        else:
            self.project = None
            self.head = GraphSpaceHead(T, channels, hidden_channels, dropout,
                                       readout=readout)

    def reset_parameters(self):
        self.lego.reset_parameters()
        self.head.reset_parameters()
        if self.project is not None:
            self.project.reset_parameters()

    def fuse(self, batch: Data) -> Tensor:
        r"""The fused graph :math:`(|\mathcal{E}|, C)` of a mini-batch (the
        masked power of equal complete graphs runs as batched dense
        products inside :class:`~pyg_lego.nn.GraphPowerConv`)."""
        return self.lego.fuse(batch)

    def forward_with_graph(self, batch: Data) -> Tuple[Tensor, Tensor]:
        r"""Snippet logits :math:`(|\mathcal{V}|,)` and the fused graph
        :math:`(|\mathcal{E}|, C)` (for graph regularisers)."""
        fused = self.fuse(batch)
        index = _batch_vector(batch)
        if self.project is None:
            return self.head(fused, batch.edge_index, index), fused
        rows = graph_space_rows(fused, batch.edge_index, index, self.T,
                                self.readout)
        feats = torch.cat(_features(batch, self.view_names), dim=-1)
        h = torch.cat([rows, self.project(feats)], dim=-1)
        return self.head(h), fused

    def forward(self, batch: Data) -> Tensor:
        return self.forward_with_graph(batch)[0]

    def coefficients(self, channel: int = 0):
        return self.lego.coefficients(channel)

    def __repr__(self) -> str:
        extra = (f', feature_channels={self.feature_channels}'
                 if self.feature_channels else '')
        extra += f', readout={self.readout!r}'
        return (f'{self.__class__.__name__}(views={self.view_names}, '
                f'T={self.T}, P={self.lego.P}, mode={self.lego.mode!r}, '
                f'fusion={self.lego.fusion.kind!r}{extra})')


class SingleView(torch.nn.Module):
    r"""One view only: :math:`s_i = \mathrm{MLP}(\mathbf{x}^{(m)}_i)`.

    Args:
        view (str): The view.
        in_channels (int): Its width.
        hidden_channels (int): Head width.
        dropout (float, optional): Head dropout. (default: :obj:`0.0`)
    """

    def __init__(self, view: str, in_channels: int, hidden_channels: int,
                 dropout: float = 0.0):
        super().__init__()
        self.view_names = [view]
        self.head = ScoreMLP(in_channels, hidden_channels, dropout)

    def reset_parameters(self):
        self.head.reset_parameters()

    def forward(self, batch: Data) -> Tensor:
        return self.head(_features(batch, self.view_names)[0])

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.view_names[0]!r})'


class ConcatFusion(torch.nn.Module):
    r"""Early fusion by concatenation:
    :math:`s_i = \mathrm{MLP}([\mathbf{x}^{(1)}_i \Vert \cdots \Vert
    \mathbf{x}^{(M)}_i])`."""

    def __init__(self, view_names: Sequence[str], dims: Mapping[str, int],
                 hidden_channels: int, dropout: float = 0.0):
        super().__init__()
        self.view_names = list(view_names)
        self.head = ScoreMLP(sum(int(dims[v]) for v in self.view_names),
                             hidden_channels, dropout)

    def reset_parameters(self):
        self.head.reset_parameters()

    def forward(self, batch: Data) -> Tensor:
        return self.head(torch.cat(_features(batch, self.view_names), -1))

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(views={self.view_names})'


class _Projections(torch.nn.Module):
    r"""Per-view :obj:`Linear` to a common width followed by
    :obj:`LayerNorm`, so that every view enters the fusion at the same
    scale whatever its raw feature norm."""

    def __init__(self, view_names: Sequence[str], dims: Mapping[str, int],
                 hidden_channels: int):
        super().__init__()
        self.view_names = list(view_names)
        self.lins = torch.nn.ModuleList(
            [torch.nn.Linear(int(dims[v]), hidden_channels)
             for v in self.view_names])
        self.norms = torch.nn.ModuleList(
            [torch.nn.LayerNorm(hidden_channels) for _ in self.view_names])

    def reset_parameters(self):
        for lin, norm in zip(self.lins, self.norms):
            lin.reset_parameters()
            norm.reset_parameters()

    def forward(self, batch: Data) -> Tensor:
        xs = _features(batch, self.view_names)
        return torch.stack([norm(lin(x)) for x, lin, norm in
                            zip(xs, self.lins, self.norms)], dim=1)


class SumFusion(torch.nn.Module):
    r"""Element-wise sum of projected views:
    :math:`s_i = \mathrm{MLP}\big(\sum_m \mathrm{LN}(\mathbf{W}_m
    \mathbf{x}^{(m)}_i)\big)`."""

    def __init__(self, view_names: Sequence[str], dims: Mapping[str, int],
                 hidden_channels: int, dropout: float = 0.0):
        super().__init__()
        self.view_names = list(view_names)
        self.proj = _Projections(view_names, dims, hidden_channels)
        self.head = ScoreMLP(hidden_channels, hidden_channels, dropout)

    def reset_parameters(self):
        self.proj.reset_parameters()
        self.head.reset_parameters()

    def forward(self, batch: Data) -> Tensor:
        return self.head(self.proj(batch).sum(dim=1))

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(views={self.view_names})'


class AttentionFusion(torch.nn.Module):
    r"""Gated (attention) fusion: per-snippet softmax weights over the
    projected views,

    .. math::
        \mathbf{h}_i = \sum_m \alpha_{i, m} \mathbf{z}^{(m)}_i, \qquad
        \alpha_{i, :} = \mathrm{softmax}_m\big(\mathbf{a}^\top
        \tanh(\mathbf{z}^{(m)}_i)\big), \qquad
        \mathbf{z}^{(m)}_i = \mathrm{LN}(\mathbf{W}_m \mathbf{x}^{(m)}_i),

    then :math:`s_i = \mathrm{MLP}(\mathbf{h}_i)`."""

    def __init__(self, view_names: Sequence[str], dims: Mapping[str, int],
                 hidden_channels: int, dropout: float = 0.0):
        super().__init__()
        self.view_names = list(view_names)
        self.proj = _Projections(view_names, dims, hidden_channels)
        self.gate = torch.nn.Linear(hidden_channels, 1)
        self.head = ScoreMLP(hidden_channels, hidden_channels, dropout)

    def reset_parameters(self):
        self.proj.reset_parameters()
        self.gate.reset_parameters()
        self.head.reset_parameters()

    def view_weights(self, batch: Data) -> Tensor:
        r"""The attention weights :math:`(|\mathcal{V}|, M)`."""
        return self._weights(self.proj(batch))

    def _weights(self, z: Tensor) -> Tensor:
        return torch.softmax(self.gate(torch.tanh(z)).squeeze(-1), dim=-1)

    def forward(self, batch: Data) -> Tensor:
        z = self.proj(batch)
        h = (self._weights(z).unsqueeze(-1) * z).sum(dim=1)
        return self.head(h)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(views={self.view_names})'


class CrossViewGCN(torch.nn.Module):
    r"""A cross-view GNN: GCN over the union relation graph (edge weight:
    the mean relation score over views) on concatenated features, with a
    linear skip of the snippet's own features, because on the complete
    graph of a resampled video a plain GCN layer averages the snippets
    towards the video mean,

    .. math::
        \mathbf{h}_i = \mathrm{ReLU}\Big(\mathrm{GCN}(\mathbf{X},
        \bar{\mathbf{R}})_i + \mathbf{W}_s \mathbf{x}_i\Big), \qquad
        s_i = \mathrm{MLP}(\mathbf{h}_i).
    """

    def __init__(self, view_names: Sequence[str], dims: Mapping[str, int],
                 hidden_channels: int, dropout: float = 0.0):
        super().__init__()
        self.view_names = list(view_names)
        width = sum(int(dims[v]) for v in self.view_names)
        self.conv = GCNConv(width, hidden_channels)
        self.skip = torch.nn.Linear(width, hidden_channels, bias=False)
        self.head = ScoreMLP(hidden_channels, hidden_channels, dropout)

    def reset_parameters(self):
        self.conv.reset_parameters()
        self.skip.reset_parameters()
        self.head.reset_parameters()

    def forward(self, batch: Data) -> Tensor:
        x = torch.cat(_features(batch, self.view_names), dim=-1)
        have = _batch_views(batch)
        cols = [have.index(v) for v in self.view_names]
        weight = batch.edge_attr[:, cols].mean(dim=-1)
        h = torch.relu(self.conv(x, batch.edge_index, weight) + self.skip(x))
        return self.head(h)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(views={self.view_names})'


def build_model(name: str, view_names: Sequence[str], dims: Mapping[str, int],
                T: Optional[int] = 32, hidden_channels: Optional[int] = None,
                dropout: float = 0.0, **opts) -> torch.nn.Module:
    r"""Builds a snippet scorer by name.

    Args:
        name (str): :obj:`"lego"` (the paper's graph-space head),
            :obj:`"lego+features"` (rows plus a feature projection of width
            :obj:`hidden_channels`), :obj:`"single:<view>"`, :obj:`"concat"`,
            :obj:`"sum"`, :obj:`"attention"` or :obj:`"gcn"`.
        view_names (list of str): The views the model fuses.
        dims (Mapping[str, int]): Feature width of every view.
        T (int, optional): Snippets per video (LEGO's head width; the
            default :obj:`hidden_channels`); :obj:`None` for full-length
            videos, which only the feature baselines take.
            (default: :obj:`32`)
        hidden_channels (int, optional): Head width; :obj:`T` (or :obj:`32`
            at full length) if :obj:`None`.
        dropout (float, optional): Head dropout. (default: :obj:`0.0`)
        **opts (optional): Arguments of :class:`LEGOVAD` (:obj:`P`,
            :obj:`mode`, :obj:`fusion`, :obj:`channels`, :obj:`rank`,
            :obj:`feature_channels`, :obj:`readout`); only the LEGO models
            take them.
    """
    view_names = list(view_names)
    if not view_names:
        raise ValueError("view_names is empty: give at least one view")
    missing = [v for v in view_names if v not in dims]
    if missing:
        raise ValueError(f"no feature width for view(s) {missing} in dims")
    hidden_channels = int(hidden_channels or T or 32)
    kind, _, arg = name.partition(':')
    if kind not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of 'lego', "
                         f"'lego+features', 'single:<view>', 'concat', "
                         f"'sum', 'attention', 'gcn'")
    if opts and not kind.startswith('lego'):
        raise ValueError(f"model {name!r} takes no options "
                         f"{sorted(opts)}; they are LEGO's")
    if kind == 'single':
        if arg not in view_names:
            raise ValueError(f"model {name!r}: name a view after 'single:', "
                             f"one of {view_names}")
        return SingleView(arg, int(dims[arg]), hidden_channels, dropout)
    if arg:
        raise ValueError(f"model {name!r}: only 'single' takes ':<view>'")
    if kind.startswith('lego'):
        if T is None:
            raise ValueError(f"model {name!r}: the graph-space head needs a "
                             f"fixed number of snippets T (resample the "
                             f"videos); full-length videos work with the "
                             f"feature baselines")
        if kind == 'lego+features':
            opts.setdefault('feature_channels', hidden_channels)
        return LEGOVAD(view_names, T, hidden_channels=hidden_channels,
                       dropout=dropout, dims=dims, **opts)
    cls = {'concat': ConcatFusion, 'sum': SumFusion,
           'attention': AttentionFusion, 'gcn': CrossViewGCN}[kind]
    return cls(view_names, dims, hidden_channels, dropout)


def model_names(view_names: Sequence[str]) -> List[str]:
    r"""Every registry name for these views: LEGO (both heads), each single
    view, and the fusion baselines."""
    return (['lego', 'lego+features'] + [f'single:{v}' for v in view_names]
            + ['concat', 'sum', 'attention', 'gcn'])


def feature_dims(batch: Data) -> Dict[str, int]:
    r"""Feature width of every view of a graph or mini-batch."""
    return {v: int(batch[f'x_{v}'].size(-1)) for v in _batch_views(batch)}
