from typing import Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.data import Data

from pyg_lego.data.relation import graph_attribute, view_features
from pyg_lego.nn.fusion import CoefficientTable, LEGOFusion
from pyg_lego.nn.graph_power import DEFAULT_PATH_BUDGET, GraphPowerConv
from pyg_lego.nn.sparsify import TopKSparsify

#: Edges per node that :class:`LEGO` keeps of its fused graph by default:
#: chosen, with the element-wise mode and the geometric fusion, by the
#: validation-only development sweep of the fusion study over four
#: multi-view data sets (:mod:`pyg_lego.multiview.fusion_study`,
#: ``benchmarks/results/fusion_dev.json``).
DEFAULT_TOPK = 10


class LEGO(torch.nn.Module):
    r"""LEGO fusion end to end, from the "Learnable Expansion of Graph
    Operators for Multi-Modal Feature Fusion" paper (ICLR 2025):
    relation scores :math:`\to` graph power expansion
    (:class:`GraphPowerConv`) :math:`\to` learnable fusion
    (:class:`LEGOFusion`) :math:`\to` fused edge weights, of which each node
    keeps its :obj:`topk` heaviest (:class:`TopKSparsify`).

    .. math::
        \mathbf{G} = \mathrm{top}_k\Big( f_{\Theta}\big( \{
        \mathbf{R}^{(p)}_m \}_{m \le M, \, p \le P} \big) \Big) \in
        \mathbb{R}^{|\mathcal{E}| \times C}

    The fused weights can be the :obj:`edge_weight` of any PyG layer over the
    same :obj:`edge_index` (the dropped edges weigh 0;
    :func:`drop_zero_edges` removes them), or feed :class:`GraphSpaceHead`.
    The shared pattern unites every view's kNN edges, several times
    :math:`k` per node, most of them proposed by one view only; the
    sparsification keeps those that the fused weights rank highest.
    On a mini-batch of whole graphs it acts per graph; on a sampled
    subgraph (:class:`~torch_geometric.loader.NeighborLoader`) it ranks the
    edges the subgraph holds.

    The defaults (element-wise mode, geometric fusion, each node's 10
    heaviest edges) are the configuration that the fusion study's
    validation-only sweep ranked first over four multi-view data sets, on
    relation graphs built with :obj:`score_map="local"`
    (:func:`~pyg_lego.build_relation_graph`; ``docs/benchmarks``).

    Args:
        view_names (list of str): The views, in the order of the score
            columns (:obj:`data.view_names`).
        P (int, optional): Highest order :math:`P`. (default: :obj:`2`)
        mode (str, optional): Expansion mode, see :class:`GraphPowerConv`.
            (default: :obj:`"elementwise"`)
        fusion (str, optional): :obj:`"geometric"`, :obj:`"linear"` or
            :obj:`"polynomial"`, see :class:`LEGOFusion`. The geometric
            fusion weighs an edge by how much the views agree on it; the
            polynomial multiplies the views' factors edge by edge, so it
            keeps little of an edge that one view scores near zero (on
            sparse given graphs: every edge the graphs do not share).
            (default: :obj:`"geometric"`)
        out_channels (int, optional): Fused graphs :math:`C`.
            (default: :obj:`1`)
        rank (int, optional): CP rank, see :class:`LEGOFusion`.
        order0 (str, optional): Element-wise order 0, see
            :class:`GraphPowerConv`. (default: :obj:`"self"`)
        similarity (str, optional): The graph's similarity (propagated mode).
            (default: :obj:`"cosine"`)
        score_map (str, optional): The graph's score map (propagated mode).
            (default: :obj:`"auto"`)
        gamma (float, optional): RBF bandwidth (propagated mode).
        topk (int, optional): Edges kept per node (each fused channel keeps
            its own); :obj:`None` keeps every edge of the pattern.
            (default: :obj:`10`, :data:`DEFAULT_TOPK`)

    **Speed and memory.** Keyword-only, passed to :class:`GraphPowerConv`;
    they choose how the expansion is computed, not its result (beyond
    floating-point rounding).

    Keyword Args:
        cached (bool, optional): Cache the two-step-path index (one fixed
            graph). (default: :obj:`False`)
        memory_budget (int, optional): Bytes the masked power may spend on
            stored two-step paths before it streams them, see
            :class:`GraphPowerConv`. (default: 2 GiB)
        kernel (str, optional): :obj:`"auto"`, :obj:`"numba"` or
            :obj:`"torch"`: how the masked power runs on the CPU, see
            :class:`GraphPowerConv`. (default: :obj:`"auto"`)

    Shapes:
        - **input:** edge indices :math:`(2, |\mathcal{E}|)`, relation scores
          :math:`(|\mathcal{E}|, M)`, view features :math:`[(N, d_m)]_m`
          *(propagated mode)*
        - **output:** fused edge weights :math:`(|\mathcal{E}|, C)`
    """

    def __init__(self, view_names: Sequence[str], P: int = 2,
                 mode: str = 'elementwise', fusion: str = 'geometric',
                 out_channels: int = 1, rank: Optional[int] = None,
                 order0: str = 'self', similarity: str = 'cosine',
                 score_map: str = 'auto', gamma: Optional[float] = None,
                 topk: Optional[int] = DEFAULT_TOPK, *,
                 cached: bool = False,
                 memory_budget: Optional[int] = DEFAULT_PATH_BUDGET,
                 kernel: str = 'auto'):
        super().__init__()
        if isinstance(view_names, str) or \
                not isinstance(view_names, Sequence) or \
                not all(isinstance(n, str) for n in view_names):
            raise TypeError(f"view_names must be a list of view names (str), "
                            f"as data.view_names holds, got {view_names!r}")
        if len(view_names) == 0:
            raise ValueError("view_names must be a non-empty list of names")
        self.view_names = list(view_names)
        self.expansion = GraphPowerConv(P, mode=mode, order0=order0,
                                        similarity=similarity,
                                        score_map=score_map, gamma=gamma,
                                        cached=cached,
                                        memory_budget=memory_budget,
                                        kernel=kernel)
        self.fusion = LEGOFusion(len(self.view_names), P,
                                 out_channels=out_channels, kind=fusion,
                                 rank=rank, view_names=self.view_names)
        self.sparsify = TopKSparsify(topk) if topk is not None else None

    @property
    def P(self) -> int:
        return self.expansion.P

    @property
    def mode(self) -> str:
        return self.expansion.mode

    @property
    def topk(self) -> Optional[int]:
        return self.sparsify.k if self.sparsify is not None else None

    def reset_parameters(self):
        self.expansion.reset_parameters()
        self.fusion.reset_parameters()

    def forward(self, edge_index: Tensor, edge_attr: Optional[Tensor] = None,
                xs: Optional[Sequence[Optional[Tensor]]] = None,
                num_nodes: Optional[int] = None,
                path_index: Optional[Tensor] = None) -> Tensor:
        if edge_attr is not None and edge_attr.dim() == 2 and \
                edge_attr.size(1) != len(self.view_names):
            raise ValueError(f"edge_attr has {edge_attr.size(1)} score "
                             f"columns but the model has "
                             f"{len(self.view_names)} views "
                             f"{self.view_names}")
        powers = self.expansion(edge_index, edge_attr, xs=xs,
                                num_nodes=num_nodes, path_index=path_index)
        fused = self.fusion(powers)
        if self.sparsify is not None:
            fused = self.sparsify(edge_index, fused, num_nodes)
        return fused

    def fuse(self, data: Data) -> Tensor:
        r"""Fused edge weights of a graph (or a mini-batch) made by
        :func:`~pyg_lego.build_relation_graph`; the views are taken by name."""
        names = graph_attribute(data, 'view_names')
        if names != self.view_names:
            raise ValueError(f"the graph has views {names} but the model "
                             f"was built for {self.view_names}")
        if self.mode == 'propagated':
            sim = graph_attribute(data, 'similarity')
            smap = graph_attribute(data, 'score_map')
            if (sim, smap) != (self.expansion.similarity,
                               self.expansion.score_map):
                raise ValueError(
                    f"the graph was scored with similarity={sim!r}, "
                    f"score_map={smap!r} but the model propagates with "
                    f"similarity={self.expansion.similarity!r}, "
                    f"score_map={self.expansion.score_map!r}")
        xs = view_features(data, self.view_names) \
            if self.mode == 'propagated' else None
        return self(data.edge_index, data.edge_attr, xs=xs,
                    num_nodes=data.num_nodes,
                    path_index=data.get('path_index'))

    def coefficients(self, channel: int = 0) -> CoefficientTable:
        return self.fusion.coefficients(channel)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(views={self.view_names}, '
                f'P={self.P}, mode={self.mode!r}, '
                f'fusion={self.fusion.kind!r}, '
                f'out_channels={self.fusion.out_channels}, '
                f'topk={self.topk})')
