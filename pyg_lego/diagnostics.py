r"""Graph-quality diagnostics: how well a graph's edges join nodes of the
same class, weighted and unweighted, and how many edges a node has. They
measure a fused graph without training a model on it, so they do not carry a
GNN's training noise."""
from typing import Any, Dict, Optional

from torch import Tensor
from torch_geometric.utils import homophily


def _without_self_loops(edge_index: Tensor,
                        edge_weight: Optional[Tensor] = None):
    keep = edge_index[0] != edge_index[1]
    if edge_weight is not None:
        if edge_weight.dim() != 1 or edge_weight.numel() != keep.numel():
            raise ValueError(f"edge_weight must have shape [{keep.numel()}], "
                             f"got {list(edge_weight.shape)}")
        if bool((edge_weight < 0).any()):
            raise ValueError("edge_weight must be non-negative for a "
                             "weighted homophily")
        keep = keep & (edge_weight > 0)
        return edge_index[:, keep], edge_weight[keep]
    return edge_index[:, keep], None


def edge_homophily(edge_index: Tensor, y: Tensor,
                   edge_weight: Optional[Tensor] = None) -> float:
    r"""The share of edges that join nodes of the same class (self-loops
    and zero-weight edges left out), from the "Beyond Homophily in Graph
    Neural Networks" paper; with :obj:`edge_weight`, the share of the
    weight:

    .. math::
        h = \frac{\sum_{(i, j) \in \mathcal{E}, i \ne j} w_{ij}
        [y_i = y_j]}{\sum_{(i, j) \in \mathcal{E}, i \ne j} w_{ij}}

    Args:
        edge_index (torch.Tensor): Edges :math:`(2, |\mathcal{E}|)`.
        y (torch.Tensor): Class labels :math:`(N,)`.
        edge_weight (torch.Tensor, optional): Non-negative weights
            :math:`(|\mathcal{E}|,)`; :obj:`None` weighs every edge 1.

    Returns:
        :math:`h \in [0, 1]`, or NaN for a graph without such edges.
    """
    if y.dim() != 1:
        raise ValueError(f"y must hold one class label per node, got shape "
                         f"{list(y.shape)}")
    ei, w = _without_self_loops(edge_index, edge_weight)
    if ei.size(1) == 0:
        return float('nan')
    if w is None:
        return float(homophily(ei, y, method='edge'))
    same = (y[ei[0]] == y[ei[1]]).to(w.dtype)
    return float((w * same).sum() / w.sum())


def graph_quality(edge_index: Tensor, y: Tensor,
                  edge_weight: Optional[Tensor] = None,
                  num_nodes: Optional[int] = None) -> Dict[str, float]:
    r"""Edge homophily, weighted edge homophily (equal to the former
    without weights) and edges per node of a graph (self-loops and
    zero-weight edges left out).

    Returns:
        :obj:`{'homophily', 'weighted_homophily', 'edges_per_node'}`.
    """
    num_nodes = y.numel() if num_nodes is None else num_nodes
    ei, w = _without_self_loops(edge_index, edge_weight)
    return {
        'homophily': edge_homophily(ei, y),
        'weighted_homophily': edge_homophily(ei, y, w),
        'edges_per_node': ei.size(1) / max(num_nodes, 1),
    }


def view_quality(relation, y: Tensor) -> Dict[str, Dict[str, float]]:
    r""":func:`graph_quality` of each view's scores on a relation graph's
    shared pattern (clamped at 0), and of the pattern itself unweighted
    (key :obj:`"pattern"`)."""
    out = {'pattern': graph_quality(relation.edge_index, y,
                                    num_nodes=relation.num_nodes)}
    for m, name in enumerate(relation.view_names):
        out[name] = graph_quality(relation.edge_index, y,
                                  relation.edge_attr[:, m].clamp_min(0),
                                  relation.num_nodes)
    return out


def view_overlap(edge_index: Tensor, edge_attr: Tensor) -> Dict[str, Any]:
    r"""How much the views of a relation graph share its pattern: the
    share of the pattern's edges (self-loops left out) on which each view's
    score is non-zero, and the share on which every view's is.

    A product of the views' scores, as in the polynomial fusion's
    cross-view terms, vanishes on every edge outside the last share: views
    that are given graphs with few edges in common leave it no edges.

    Args:
        edge_index (torch.Tensor): The pattern :math:`(2, |\mathcal{E}|)`.
        edge_attr (torch.Tensor): Scores :math:`(|\mathcal{E}|, M)`.

    Returns:
        :obj:`{'per_view': [M shares], 'all_views': share}`, NaN for a
        pattern without such edges.
    """
    if edge_attr.dim() != 2 or edge_attr.size(0) != edge_index.size(1):
        raise ValueError(f"edge_attr must have shape [{edge_index.size(1)}, "
                         f"M], got {list(edge_attr.shape)}")
    nonzero = edge_attr[edge_index[0] != edge_index[1]] != 0
    if nonzero.size(0) == 0:
        return {'per_view': [float('nan')] * edge_attr.size(1),
                'all_views': float('nan')}
    return {'per_view': nonzero.double().mean(0).tolist(),
            'all_views': float(nonzero.all(1).double().mean())}


__all__ = ['edge_homophily', 'graph_quality', 'view_quality', 'view_overlap']
