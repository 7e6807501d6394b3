r"""Figures of the multi-view notebooks. They return
:class:`matplotlib.figure.Figure` objects made without :mod:`pyplot`, so
they display the same under any backend (``display(fig)``) and never pile
up in pyplot's state; matplotlib is imported lazily."""
from typing import Mapping, Sequence, Tuple

import torch
from torch import Tensor


def _figure(size: Tuple[float, float]):
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("figures need matplotlib: pip install "
                          "'pyg-lego[plot]'") from e
    return Figure(figsize=size, dpi=80)


def summary_figure(summary: Mapping[str, Mapping[int, Tuple[float, float]]],
                   title: str = 'test accuracy'):
    r"""Horizontal bars of mean test accuracy with the standard deviation as
    error bars, one group per label rate."""
    methods = list(summary)
    rates = sorted({r for v in summary.values() for r in v})
    fig = _figure((7.5, 0.8 + 0.28 * len(methods) * len(rates)))
    ax = fig.add_subplot()
    height = 0.8 / len(rates)
    for i, rate in enumerate(rates):
        pos = [m + i * height for m in range(len(methods))]
        mean = [100 * summary[m].get(rate, (float('nan'), 0))[0]
                for m in methods]
        std = [100 * summary[m].get(rate, (0, 0))[1] for m in methods]
        ax.barh(pos, mean, height, xerr=std, label=f'{rate} labels/class')
    ax.set_yticks([m + 0.4 - height / 2 for m in range(len(methods))],
                  methods, fontsize=8)
    ax.invert_yaxis()
    lows = [100 * v[0] for s in summary.values() for v in s.values()]
    ax.set_xlim(max(0.0, min(lows) - 10), 100)
    ax.set_xlabel('test accuracy (%)')
    ax.set_title(title)
    ax.legend(fontsize=8, loc='lower right')
    fig.tight_layout()
    return fig


def adjacency_figure(graphs: Mapping[str, Tuple[Tensor, Tensor]], y: Tensor,
                     nodes: Sequence[int]):
    r"""Dense pictures of weighted graphs restricted to :obj:`nodes`, sorted
    by class, side by side: block structure along the diagonal is an
    informative graph. :obj:`graphs` maps a title to
    :obj:`(edge_index, edge_weight)`."""
    nodes = torch.as_tensor(list(nodes))
    nodes = nodes[torch.argsort(y[nodes], stable=True)]
    n = int(y.numel())
    pos = torch.full((n, ), -1, dtype=torch.long)
    pos[nodes] = torch.arange(nodes.numel())
    fig = _figure((3.2 * len(graphs), 3.2))
    for i, (title, (edge_index, weight)) in enumerate(graphs.items()):
        keep = (pos[edge_index[0]] >= 0) & (pos[edge_index[1]] >= 0) & \
            (edge_index[0] != edge_index[1])
        dense = torch.zeros(nodes.numel(), nodes.numel())
        dense[pos[edge_index[0, keep]], pos[edge_index[1, keep]]] = \
            weight[keep].detach().float()
        ax = fig.add_subplot(1, len(graphs), i + 1)
        ax.imshow(dense.numpy(), cmap='Greys', interpolation='nearest')
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
