r"""LEGO's fused graph feeding a GNN head, for transductive node
classification: the fusion coefficients are trained end to end with the
head."""
from typing import Optional, Sequence

import torch
from torch import Tensor

from pyg_lego.data import RelationData, view_features
from pyg_lego.nn import CoefficientTable, GraphPowerConv, LEGOFusion
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
        fusion (str, optional): :obj:`"linear"` or :obj:`"polynomial"`.
            (default: :obj:`"linear"`)
        dropout (float, optional): Dropout of the head. (default: :obj:`0.5`)
        rank (int, optional): CP rank of the polynomial fusion.

    Shapes:
        - **input:** node features :math:`(N, F_{in})`, edge indices
          :math:`(2, |\mathcal{E}|)`
        - **output:** logits :math:`(N, F_{out})`
    """

    def __init__(self, view_names: Sequence[str], powers: Tensor, head: str,
                 in_channels: int, hidden_channels: int, out_channels: int,
                 fusion: str = 'linear', dropout: float = 0.5,
                 rank: Optional[int] = None):
        super().__init__()
        if powers.dim() != 3 or powers.size(1) != len(view_names):
            raise ValueError(f"powers must have shape [|E|, {len(view_names)},"
                             f" P + 1], got {list(powers.shape)}")
        self.fusion = LEGOFusion(len(view_names), powers.size(2) - 1,
                                 kind=fusion, rank=rank,
                                 view_names=view_names)
        self.register_buffer('powers', powers)
        self.head = GNN(head, in_channels, hidden_channels, out_channels,
                        dropout, weighted=True)

    def reset_parameters(self):
        self.fusion.reset_parameters()
        self.head.reset_parameters()

    def fused_graph(self) -> Tensor:
        r"""The fused edge weights :math:`(|\mathcal{E}|,)` the head uses."""
        return self.fusion(self.powers)[:, 0].relu()

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.head(x, edge_index, self.fused_graph())

    def coefficients(self) -> CoefficientTable:
        return self.fusion.coefficients()

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(views={self.fusion.view_names}, '
                f'P={self.fusion.P}, fusion={self.fusion.kind!r}, '
                f'head={self.head.kind!r})')
