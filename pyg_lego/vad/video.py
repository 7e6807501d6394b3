r"""One video as several views of snippet features, its temporal resampling to
:math:`T` segments and back, and its relation graph (the documentation's
method page, docs/method.rst, section 5)."""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from pyg_lego.data import RelationData, build_relation_graph

FRAMES_PER_SNIPPET = 16


@dataclass
class Video:
    r"""A video described by several views of per-snippet features.

    Args:
        name (str): The video's name (file stem, without crop suffix).
        views (Dict[str, numpy.ndarray]): View name -> snippet features
            :math:`(T_{full}, d_m)`, :obj:`float32`; all views have the same
            number of snippets (crops are already handled).
        label (int): :obj:`0` normal, :obj:`1` anomalous (the weak label).
        frame_labels (numpy.ndarray, optional): Per-frame 0/1 labels
            :math:`(F,)`, :obj:`uint8`; :obj:`None` when unknown (training).
        frames_per_snippet (int, optional): Frames covered by one snippet.
            (default: :obj:`16`)
        category (str, optional): The event class when known (UCF-Crime's
            annotation class, the synthetic anomaly type, :obj:`"Normal"`),
            for per-class reports. (default: :obj:`None`)
    """
    name: str
    views: Dict[str, np.ndarray]
    label: int
    frame_labels: Optional[np.ndarray] = None
    frames_per_snippet: int = FRAMES_PER_SNIPPET
    category: Optional[str] = None

    def __post_init__(self):
        if not self.views:
            raise ValueError(f"video '{self.name}' has no views")
        lengths = {}
        for view, x in self.views.items():
            if not isinstance(x, np.ndarray) or x.ndim != 2:
                shape = getattr(x, 'shape', type(x).__name__)
                raise ValueError(f"video '{self.name}', view '{view}': "
                                 f"features must be a 2-D array "
                                 f"[snippets, d], got {shape}")
            lengths[view] = x.shape[0]
        if len(set(lengths.values())) > 1:
            raise ValueError(f"video '{self.name}': views disagree on the "
                             f"number of snippets {lengths}")
        if self.num_snippets < 1:
            raise ValueError(f"video '{self.name}' has no snippets")
        if self.label not in (0, 1):
            raise ValueError(f"video '{self.name}': label must be 0 or 1, "
                             f"got {self.label!r}")
        if self.frame_labels is not None:
            fl = np.asarray(self.frame_labels)
            if fl.ndim != 1 or not np.isin(fl, (0, 1)).all():
                raise ValueError(f"video '{self.name}': frame_labels must be "
                                 f"a 1-D array of 0/1")
            self.frame_labels = fl.astype(np.uint8)

    @property
    def num_snippets(self) -> int:
        return next(iter(self.views.values())).shape[0]

    @property
    def num_frames(self) -> int:
        r"""Frames with labels, or :math:`16 \cdot T_{full}` when unknown."""
        if self.frame_labels is not None:
            return int(self.frame_labels.shape[0])
        return self.num_snippets * self.frames_per_snippet

    def __repr__(self) -> str:
        views = ', '.join(f'{k}={v.shape[1]}' for k, v in self.views.items())
        return (f'{self.__class__.__name__}({self.name!r}, '
                f'label={self.label}, snippets={self.num_snippets}, '
                f'views=({views}))')


def _check_lengths(T_full: int, T: int) -> None:
    if T_full < 1 or T < 1:
        raise ValueError(f"need at least one snippet and one segment, got "
                         f"{T_full} snippets and T={T}")


def segment_bounds(T_full: int, T: int) -> Tuple[np.ndarray, np.ndarray]:
    r"""Snippet ranges :obj:`[start, end)` of :math:`T` contiguous segments
    over :math:`T_{full}` snippets, the field's split
    :math:`\lfloor i T_{full} / T \rfloor`; an empty segment (when
    :math:`T_{full} < T`) takes the one snippet at its start.

    Returns:
        :obj:`(start, end)`, two integer arrays :math:`(T,)`.
    """
    _check_lengths(T_full, T)
    r = (np.arange(T + 1) * T_full) // T
    start = r[:-1]
    end = np.maximum(r[1:], start + 1)
    return start, end


def resample(features: np.ndarray, T: int) -> np.ndarray:
    r"""Averages snippet features over :math:`T` contiguous segments.

    .. math::
        \mathbf{z}_t = \frac{1}{e_t - s_t} \sum_{i=s_t}^{e_t - 1}
        \mathbf{x}_i

    with :math:`[s_t, e_t)` from :func:`segment_bounds`.

    Shapes:
        - **input:** :math:`(T_{full}, d)`
        - **output:** :math:`(T, d)`, :obj:`float32`
    """
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"features must be [snippets, d], got {x.shape}")
    start, end = segment_bounds(x.shape[0], T)
    csum = np.concatenate([np.zeros((1, x.shape[1])),
                           np.cumsum(x, axis=0, dtype=np.float64)])
    out = (csum[end] - csum[start]) / (end - start)[:, None]
    return out.astype(np.float32)


def segments_to_snippets(scores: np.ndarray, T_full: int) -> np.ndarray:
    r"""Maps :math:`T` segment scores back to :math:`T_{full}` snippets: each
    snippet takes the mean score of the segments that cover it (exactly one
    when :math:`T_{full} \geq T`).

    Shapes:
        - **input:** :math:`(T,)`
        - **output:** :math:`(T_{full},)`
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"segment scores must be 1-D [T], got {s.shape}")
    start, end = segment_bounds(T_full, s.shape[0])
    # A difference array adds each segment's score over its snippet range.
    total = np.zeros(T_full + 1)
    count = np.zeros(T_full + 1)
    np.add.at(total, start, s)
    np.add.at(total, end, -s)
    np.add.at(count, start, 1)
    np.add.at(count, end, -1)
    return np.cumsum(total)[:-1] / np.cumsum(count)[:-1]


def snippets_to_frames(scores: np.ndarray, num_frames: int,
                       frames_per_snippet: int = FRAMES_PER_SNIPPET
                       ) -> np.ndarray:
    r"""Repeats each snippet score over its frames, then pads with the last
    score or trims to :obj:`num_frames` (the field's evaluation).

    Shapes:
        - **input:** :math:`(T_{full},)`
        - **output:** :math:`(F,)`
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.shape[0] == 0:
        raise ValueError(f"snippet scores must be a non-empty 1-D array, "
                         f"got shape {s.shape}")
    if frames_per_snippet < 1 or num_frames < 1:
        raise ValueError(f"num_frames ({num_frames}) and frames_per_snippet "
                         f"({frames_per_snippet}) must be positive")
    frames = np.repeat(s, frames_per_snippet)
    if frames.shape[0] >= num_frames:
        return frames[:num_frames]
    return np.concatenate([frames,
                           np.full(num_frames - frames.shape[0], s[-1])])


def video_graph(video: Video, T: Optional[int] = 32, k: int = 8,
                view_names: Optional[Sequence[str]] = None,
                similarity: str = 'cosine') -> RelationData:
    r"""The relation graph of one video: its views resampled to :math:`T`
    segments with a complete graph (the paper's setting), or kept at full
    length with a kNN graph when :obj:`T` is :obj:`None`.

    Args:
        video (Video): The video.
        T (int, optional): Segments; :obj:`None` keeps every snippet.
            (default: :obj:`32`)
        k (int, optional): Neighbours per snippet and view at full length
            (capped at :math:`T_{full} - 1`); ignored when resampling.
            (default: :obj:`8`)
        view_names (Sequence[str], optional): Views to use, in this order;
            all of the video's views if :obj:`None`.
        similarity (str, optional): See
            :func:`~pyg_lego.build_relation_graph`. (default: :obj:`"cosine"`)

    Returns:
        :class:`~pyg_lego.data.RelationData` with :obj:`x_<view>`,
        :obj:`edge_index`, :obj:`edge_attr`, :obj:`y` (the video label,
        :math:`(1,)`), :obj:`num_snippets` (:math:`T_{full}`) and
        :obj:`name`.
    """
    names = list(video.views) if view_names is None else list(view_names)
    missing = [v for v in names if v not in video.views]
    if missing:
        raise KeyError(f"video '{video.name}' has no view(s) {missing}; it "
                       f"has {list(video.views)}")
    if T is None:
        n = video.num_snippets
        if n < 2:
            raise ValueError(f"video '{video.name}' has {n} snippet: a graph "
                             f"needs at least 2; resample with T instead")
        feats = {v: video.views[v] for v in names}
        k_eff = min(k, n - 1)
    else:
        if T < 2:
            raise ValueError(f"T must be >= 2 segments, got {T}")
        feats = {v: resample(video.views[v], T) for v in names}
        k_eff = T - 1
    xs = {v: torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
          for v, x in feats.items()}
    try:
        data = build_relation_graph(xs, k=k_eff, similarity=similarity)
    except ValueError as e:
        raise ValueError(f"video '{video.name}': {e}") from e
    data.y = torch.tensor([video.label], dtype=torch.long)
    data.num_snippets = video.num_snippets
    data.name = video.name
    return data


class VideoGraphDataset(Dataset):
    r"""Videos as relation graphs, built once and cached; batches with
    :class:`torch_geometric.loader.DataLoader`. Each graph also carries
    :obj:`video_id`, its position in :obj:`videos`, so that scores can be
    matched to :obj:`videos` for evaluation.

    Args:
        videos (List[Video]): The videos (kept as :obj:`self.videos`).
        T (int, optional): Segments per video; :obj:`None` keeps full length.
            (default: :obj:`32`)
        k (int, optional): kNN neighbours at full length. (default: :obj:`8`)
        view_names (Sequence[str], optional): Views to use; all if
            :obj:`None`.
        similarity (str, optional): (default: :obj:`"cosine"`)
    """
    def __init__(self, videos: List[Video], T: Optional[int] = 32, k: int = 8,
                 view_names: Optional[Sequence[str]] = None,
                 similarity: str = 'cosine'):
        if len(videos) == 0:
            raise ValueError("VideoGraphDataset needs at least one video")
        self.videos = list(videos)
        self.T = T
        self.k = k
        self.view_names = (list(videos[0].views) if view_names is None
                           else list(view_names))
        self.similarity = similarity
        self._graphs: List[Optional[RelationData]] = [None] * len(videos)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, idx: int) -> RelationData:
        if self._graphs[idx] is None:
            data = video_graph(self.videos[idx], self.T, self.k,
                               self.view_names, self.similarity)
            data.video_id = torch.tensor([idx])
            self._graphs[idx] = data
        return self._graphs[idx]

    @property
    def labels(self) -> np.ndarray:
        return np.array([v.label for v in self.videos], dtype=np.int64)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({len(self)}, T={self.T}, '
                f'k={self.k}, views={self.view_names})')
