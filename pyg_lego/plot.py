r"""Figures. matplotlib is imported lazily (extra ``pyg-lego[plot]``)."""
import os
from typing import Optional

from pyg_lego.nn.fusion import CoefficientTable


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("plotting needs matplotlib: pip install "
                          "'pyg-lego[plot]'") from e
    matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt
    return plt


def plot_coefficients(table: CoefficientTable, path: str,
                      title: Optional[str] = None) -> str:
    r"""Draws a coefficient table as an annotated heatmap and saves it to
    :obj:`path` (any format matplotlib writes, e.g. PNG). Returns the path."""
    plt = _pyplot()
    values = table.values.detach().cpu().float().numpy()
    rows, cols = values.shape
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * cols, 1.0 + 0.45 * rows))
    bound = max(abs(values).max(), 1e-12)
    im = ax.imshow(values, cmap='RdBu_r', vmin=-bound, vmax=bound,
                   aspect='auto')
    ax.set_xticks(range(cols), table.cols)
    ax.set_yticks(range(rows), table.rows)
    for i in range(rows):
        for j in range(cols):
            ax.text(j, i, f'{values[i, j]:.2f}', ha='center', va='center',
                    fontsize=8)
    ax.set_title(title or table.title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
