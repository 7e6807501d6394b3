r"""Frame-level evaluation as the field does it: snippet scores repeated to
frames, all test frames concatenated, then ROC AUC (UCF-Crime, ShanghaiTech)
or average precision (XD-Violence)."""
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from pyg_lego.vad.video import Video, segments_to_snippets, snippets_to_frames


def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_binary(scores: Any, labels: Any) -> Tuple[np.ndarray, np.ndarray]:
    s = _as_array(scores).astype(np.float64).reshape(-1)
    y = _as_array(labels).reshape(-1)
    if s.shape[0] != y.shape[0]:
        raise ValueError(f"scores and labels differ in length: {s.shape[0]} "
                         f"scores, {y.shape[0]} labels")
    if s.shape[0] == 0:
        raise ValueError("scores are empty")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or Inf")
    y = y.astype(np.int64)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.shape[0]:
        only = 'anomalous (1)' if n_pos else 'normal (0)'
        raise ValueError(f"only one class is present in the labels (all "
                         f"{only}); ROC AUC and AP need both normal and "
                         f"anomalous frames")
    return s, y


def _average_ranks(s: np.ndarray) -> np.ndarray:
    order = np.argsort(s, kind='mergesort')
    sorted_s = s[order]
    # Tied scores share the mean of the ranks they span.
    first = np.r_[True, sorted_s[1:] != sorted_s[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], s.shape[0]]
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty_like(s)
    ranks[order] = mean_rank[group]
    return ranks


def frame_auc(scores: Any, labels: Any) -> float:
    r"""Area under the ROC curve, counting ties as half (equal to the
    trapezoidal ROC area of :func:`sklearn.metrics.roc_auc_score`):

    .. math::
        \mathrm{AUC} = \frac{1}{n_+ n_-} \sum_{i: y_i = 1} \sum_{j: y_j = 0}
        \big([s_i > s_j] + \tfrac{1}{2} [s_i = s_j]\big)

    Args:
        scores (array-like): Scores :math:`(F,)`, higher = more anomalous.
        labels (array-like): 0/1 labels :math:`(F,)`; both classes needed.
    """
    # The rank formula, not sklearn.metrics.roc_auc_score: the same value
    # (to 1e-12), which took 2.56x the time at 1M frames
    # (benchmarks/results/library_replacements.md).
    s, y = _check_binary(scores, labels)
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    rank_sum = _average_ranks(s)[pos].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def frame_ap(scores: Any, labels: Any) -> float:
    r"""Average precision as :func:`sklearn.metrics.average_precision_score`
    defines it: the step-wise sum over distinct thresholds (no
    interpolation)

    .. math::
        \mathrm{AP} = \sum_n (R_n - R_{n-1}) P_n

    where tied scores form one threshold.

    Args:
        scores (array-like): Scores :math:`(F,)`, higher = more anomalous.
        labels (array-like): 0/1 labels :math:`(F,)`; both classes needed.
    """
    # Not sklearn.metrics.average_precision_score: the same value (to
    # 1e-12), which took 2.25x the time at 1M frames
    # (benchmarks/results/library_replacements.md).
    s, y = _check_binary(scores, labels)
    order = np.argsort(-s, kind='mergesort')
    s, y = s[order], y[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tps = np.cumsum(y)[last_of_tie]
    predicted = (np.flatnonzero(last_of_tie) + 1)
    precision = tps / predicted
    recall = tps / tps[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def frame_level_scores(videos: Sequence[Video],
                       segment_scores_per_video: Union[Sequence[Any],
                                                       Mapping[str, Any]],
                       T: Optional[int] = 32
                       ) -> Tuple[np.ndarray, np.ndarray]:
    r"""Frame scores and labels of all test videos, concatenated in the order
    of :obj:`videos`.

    Each video's :math:`T` segment scores go back to its :math:`T_{full}`
    snippets (:func:`~pyg_lego.vad.video.segments_to_snippets`), then each
    snippet score is repeated over its frames and padded or trimmed to the
    video's labelled frames
    (:func:`~pyg_lego.vad.video.snippets_to_frames`).

    Args:
        videos (Sequence[Video]): Test videos with :obj:`frame_labels`.
        segment_scores_per_video (Sequence or Mapping): Scores per video,
            in the order of :obj:`videos` or keyed by video name; each
            :math:`(T,)`, or :math:`(T_{full},)` when :obj:`T` is
            :obj:`None`.
        T (int, optional): Segments the scores refer to; :obj:`None` for
            full-length scores. (default: :obj:`32`)

    Returns:
        :obj:`(scores, labels)`, :math:`(F_{total},)` each.
    """
    if isinstance(segment_scores_per_video, Mapping):
        missing = [v.name for v in videos
                   if v.name not in segment_scores_per_video]
        if missing:
            raise KeyError(f"no scores for {len(missing)} video(s), e.g. "
                           f"'{missing[0]}'")
        per_video = [segment_scores_per_video[v.name] for v in videos]
    else:
        per_video = list(segment_scores_per_video)
        if len(per_video) != len(videos):
            raise ValueError(f"got scores for {len(per_video)} videos but "
                             f"{len(videos)} videos")
    all_scores: List[np.ndarray] = []
    all_labels: List[np.ndarray] = []
    for video, raw in zip(videos, per_video):
        if video.frame_labels is None:
            raise ValueError(f"video '{video.name}' has no frame_labels: "
                             f"frame-level metrics need test ground truth")
        s = _as_array(raw).astype(np.float64).reshape(-1)
        expected = video.num_snippets if T is None else T
        if s.shape[0] != expected:
            what = 'snippets' if T is None else 'segments (T)'
            raise ValueError(f"video '{video.name}': got {s.shape[0]} scores "
                             f"but expected {expected} {what}")
        if T is not None:
            s = segments_to_snippets(s, video.num_snippets)
        all_scores.append(snippets_to_frames(s, video.num_frames,
                                             video.frames_per_snippet))
        all_labels.append(video.frame_labels)
    return np.concatenate(all_scores), np.concatenate(all_labels)
