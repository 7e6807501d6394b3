r"""LEGO's fused graph feeding a GNN head, for transductive node
classification: the fusion coefficients are trained end to end with the
head."""
from typing import Optional, Sequence

import torch
from torch import Tensor

from pyg_lego.data import RelationData, view_features
from pyg_lego.nn import (CoefficientTable, GraphPowerConv, LEGOFusion,
                         TopKSparsify, topk_mask)
from pyg_lego.multiview.baselines import GNN


def expand(data: RelationData, P: int, mode: str) -> Tensor:
    r"""The graph power expansion :math:`(|\mathcal{E}|, M, P + 1)` of a
    relation graph. It has no parameters, so on one fixed graph it is
    computed once and only the fusion is trained."""
    conv = GraphPowerConv(P, mode=mode, similarity=data.similarity,
                          score_map=data.score_map)
    xs = view_features(data, data.view_names) if mode == 'propagated' \
        else None
    with torch.no_grad():
        return conv(data.edge_index, data.edge_attr, xs=xs,
                    num_nodes=data.num_nodes)


class LEGOClassifier(torch.nn.Module):
    r"""A GNN head (see :class:`~pyg_lego.multiview.baselines.GNN`) whose
    edge weights are LEGO's fused graph,

    .. math::
        \mathbf{Y} = \mathrm{GNN}\big(\mathbf{X}, \mathcal{E},
        \mathrm{ReLU}(\mathbf{G})\big), \qquad \mathbf{G} =
        \mathrm{Fusion}_{\mathbf{a}}\big(\mathbf{R}^{(0..P)}_{1..M}\big),

    with the ReLU keeping the weighted degrees that the heads normalise by
    non-negative.

    Args:
        view_names (Sequence[str]): The views, in the order of the powers.
        powers (torch.Tensor): The expansion
            :math:`(|\mathcal{E}|, M, P + 1)` from :func:`expand`.
        head (str): A :class:`~pyg_lego.multiview.baselines.GNN` kind.
        in_channels (int): Node feature width.
        hidden_channels (int): Hidden width of the head.
        out_channels (int): Classes.
        fusion (str, optional): A :class:`~pyg_lego.nn.LEGOFusion` kind.
            (default: :obj:`"linear"`)
        dropout (float, optional): Dropout of the head. (default: :obj:`0.5`)
        rank (int, optional): CP rank of the polynomial fusion.
        topk (int, optional): Keep per node the :obj:`topk` heaviest fused
            edges (:class:`~pyg_lego.nn.TopKSparsify`); :obj:`None` keeps
            every edge. (default: :obj:`None`)
        learn (bool, optional): Learn the fusion coefficients; if
            :obj:`False`, they are fixed equal weights :math:`1 / M` on
            every view's order 1 (the mean of the views' scores in the
            element-wise mode, of their normalised relation graphs
            :math:`\mathbf{A}_m` in the masked mode; their geometric mean
            with :obj:`fusion="geometric"`), the baseline that
            tells whether learning pays. (default: :obj:`True`)

    Shapes:
        - **input:** node features :math:`(N, F_{in})`, edge indices
          :math:`(2, |\mathcal{E}|)`
        - **output:** logits :math:`(N, F_{out})`
    """

    def __init__(self, view_names: Sequence[str], powers: Tensor, head: str,
                 in_channels: int, hidden_channels: int, out_channels: int,
                 fusion: str = 'linear', dropout: float = 0.5,
                 rank: Optional[int] = None, topk: Optional[int] = None,
                 learn: bool = True):
        super().__init__()
        if powers.dim() != 3 or powers.size(1) != len(view_names):
            raise ValueError(f"powers must have shape [|E|, {len(view_names)},"
                             f" P + 1], got {list(powers.shape)}")
        self.fusion = LEGOFusion(len(view_names), powers.size(2) - 1,
                                 kind=fusion, rank=rank,
                                 view_names=view_names)
        if not learn and (fusion not in ('linear', 'geometric')
                          or powers.size(2) < 2):
            raise ValueError("learn=False fixes equal view weights on order "
                             "1: it needs fusion='linear' or 'geometric' and "
                             "P >= 1")
        self.learn = learn
        self.register_buffer('powers', powers)
        self.sparsify = TopKSparsify(topk) if topk is not None else None
        self.head = GNN(head, in_channels, hidden_channels, out_channels,
                        dropout, weighted=True)
        self.reset_parameters()

    def reset_parameters(self):
        self.fusion.reset_parameters()
        if not self.learn:
            # Linear: the mean of the views' order 1; geometric: their
            # geometric mean.
            with torch.no_grad():
                self.fusion.weight.zero_()
                self.fusion.weight[:, :, 1] = 1.0 / self.fusion.num_views
            self.fusion.weight.requires_grad_(False)
        self.head.reset_parameters()

    def fused_graph(self, edge_index: Optional[Tensor] = None,
                    num_nodes: Optional[int] = None) -> Tensor:
        r"""The fused edge weights :math:`(|\mathcal{E}|,)` the head uses
        (zero on the edges the sparsification drops, which needs the
        graph's :obj:`edge_index`)."""
        weight = self._fused_weight()
        if self.sparsify is not None:
            if edge_index is None:
                raise ValueError("a sparsified fused graph needs the "
                                 "edge_index of its pattern")
            weight = self.sparsify(edge_index, weight, num_nodes)
        return weight

    def _fused_weight(self) -> Tensor:
        return self.fusion(self.powers)[:, 0].relu()

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        weight = self._fused_weight()
        if self.sparsify is not None:
            # The head runs on the kept edges only: for the heads that sum
            # weighted messages this equals zero weights on the dropped
            # ones, at a fraction of the cost.
            keep = topk_mask(edge_index, weight, self.sparsify.k, x.size(0))
            edge_index, weight = edge_index[:, keep], weight[keep]
        return self.head(x, edge_index, weight)

    def coefficients(self) -> CoefficientTable:
        return self.fusion.coefficients()

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(views={self.fusion.view_names}, '
                f'P={self.fusion.P}, fusion={self.fusion.kind!r}, '
                f'head={self.head.kind!r}, '
                f'topk={self.sparsify.k if self.sparsify else None}, '
                f'learn={self.learn})')
