r"""A seeded synthetic multi-view video anomaly benchmark that ships with the
package: the data of the demo and of the tests (no files, no downloads)."""
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from pyg_lego.vad.video import FRAMES_PER_SNIPPET, Video

#: View name -> (width, noise standard deviation per component).
DEFAULT_VIEWS: Dict[str, Tuple[int, float]] = {
    'rgb': (64, 0.5),
    'flow': (32, 0.7),
    'audio': (16, 0.8),
}

#: Anomaly type -> {view it shows in: signal amplitude}. Views not named do
#: not see it at all.
DEFAULT_ANOMALIES: Dict[str, Dict[str, float]] = {
    'object': {'rgb': 1.0},
    'fight': {'flow': 1.5},
    'scream': {'audio': 2.0, 'flow': 0.6},
    'subtle': {'rgb': 0.45, 'audio': 1.0},
}


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.standard_normal((n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True) * np.sqrt(d)


def _check(views, anomalies, length_range, anomaly_length, num_train,
           num_test, anomaly_ratio, num_scenes) -> None:
    if not views:
        raise ValueError("views is empty")
    for name, spec in views.items():
        if len(spec) != 2 or int(spec[0]) < 1 or float(spec[1]) < 0:
            raise ValueError(f"view '{name}' needs (width >= 1, noise >= 0), "
                             f"got {spec!r}")
    if not anomalies:
        raise ValueError("anomalies is empty")
    for kind, seen in anomalies.items():
        unknown = [v for v in seen if v not in views]
        if unknown:
            raise ValueError(f"anomaly type '{kind}' names view(s) {unknown} "
                             f"that are not in views {list(views)}")
        if kind == 'Normal':
            raise ValueError("'Normal' is reserved for normal videos")
    lo, hi = length_range
    if not 2 <= lo <= hi:
        raise ValueError(f"length_range must satisfy 2 <= min <= max, got "
                         f"{length_range}")
    a, b = anomaly_length
    if not 0 < a <= b <= 1:
        raise ValueError(f"anomaly_length must be fractions 0 < min <= max "
                         f"<= 1, got {anomaly_length}")
    if num_train < 0 or num_test < 0 or num_train + num_test == 0:
        raise ValueError(f"need some videos, got num_train={num_train}, "
                         f"num_test={num_test}")
    if not 0 < anomaly_ratio < 1:
        raise ValueError(f"anomaly_ratio must lie in (0, 1), got "
                         f"{anomaly_ratio}")
    if num_scenes < 1:
        raise ValueError(f"num_scenes must be >= 1, got {num_scenes}")


class _World:
    r"""The scenes and anomaly signatures that all videos share."""
    def __init__(self, rng, views, anomalies, num_scenes, variants):
        self.views = views
        self.scenes = {v: _unit_rows(rng, num_scenes, d)
                       for v, (d, _) in views.items()}
        # Each anomaly type has a few variants so that no single direction
        # identifies it.
        self.signatures = {
            kind: {v: _unit_rows(rng, variants, views[v][0]) for v in seen}
            for kind, seen in anomalies.items()
        }
        self.variants = variants
        self.anomalies = anomalies
        self.num_scenes = num_scenes

    def video(self, rng, name, kind, length_range, anomaly_length, cut_prob,
              drift, with_frames) -> Video:
        T_full = int(rng.integers(length_range[0], length_range[1] + 1))
        scene = np.full(T_full, rng.integers(self.num_scenes))
        if self.num_scenes > 1 and rng.random() < cut_prob:
            # A camera cut: every view changes at once, which is normal.
            at = int(rng.integers(1, T_full))
            scene[at:] = (scene[0] + rng.integers(1, self.num_scenes)) \
                % self.num_scenes
        mask = np.zeros(T_full, dtype=bool)
        if kind != 'Normal':
            n = int(np.clip(round(rng.uniform(*anomaly_length) * T_full), 1,
                            T_full))
            start = int(rng.integers(0, T_full - n + 1))
            mask[start:start + n] = True
        t = np.arange(T_full)[:, None] / T_full
        feats = {}
        for v, (d, noise) in self.views.items():
            jitter = 0.3 * rng.standard_normal(d)
            freq = rng.uniform(0.5, 2.0, size=3)
            phase = rng.uniform(0, 2 * np.pi, size=3)
            waves = np.sin(2 * np.pi * freq * t + phase)
            slow = drift * waves @ rng.standard_normal((3, d)) / np.sqrt(3)
            x = self.scenes[v][scene] + jitter + slow
            amp = self.anomalies.get(kind, {}).get(v, 0.0)
            if amp > 0:
                sig = self.signatures[kind][v][rng.integers(self.variants)]
                x[mask] += amp * sig
            x += noise * rng.standard_normal((T_full, d))
            feats[v] = x.astype(np.float32)
        frames = (np.repeat(mask, FRAMES_PER_SNIPPET).astype(np.uint8)
                  if with_frames else None)
        return Video(name, feats, int(kind != 'Normal'), frames,
                     FRAMES_PER_SNIPPET, kind)


def make_synthetic(num_train: int = 200, num_test: int = 100,
                   views: Optional[Mapping[str, Tuple[int, float]]] = None,
                   seed: int = 0,
                   anomalies: Optional[Mapping[str, Mapping[str,
                                                            float]]] = None,
                   anomaly_ratio: float = 0.5,
                   length_range: Tuple[int, int] = (40, 240),
                   anomaly_length: Tuple[float, float] = (0.05, 0.35),
                   num_scenes: int = 4, cut_prob: float = 0.3,
                   drift: float = 0.3, signature_variants: int = 3,
                   train_frame_labels: bool = False
                   ) -> Tuple[List[Video], List[Video]]:
    r"""A seeded multi-view video anomaly benchmark with the structure that
    makes fusion matter.

    Each view :math:`m` of width :math:`d_m` describes snippet :math:`t` as

    .. math::
        \mathbf{x}^{(m)}_t = \mathbf{s}^{(m)}_{c(t)} + \mathbf{j}^{(m)} +
        \mathbf{w}^{(m)}(t) + a^{(m)}_\kappa\, \mathbf{u}^{(m)}_\kappa\,
        [t \in \mathcal{A}] + \sigma_m \boldsymbol{\epsilon}_t,

    with :math:`\mathbf{s}_{c}` the prototype of scene :math:`c`
    (:obj:`num_scenes` scenes; all prototypes have norm
    :math:`\sqrt{d_m}`), :math:`\mathbf{j}` a per-video jitter (camera),
    :math:`\mathbf{w}(t)` a slow drift (three random sinusoids of
    0.5 to 2 cycles per video), :math:`\mathcal{A}` the anomalous snippets,
    :math:`\mathbf{u}_\kappa` one of the signatures of anomaly type
    :math:`\kappa` in that view (:obj:`signature_variants` of them), and
    Gaussian noise :math:`\sigma_m`.

    What each view sees with the defaults:

    - **rgb** (64-d, noise 0.5): the scene (appearance), :obj:`"object"`
      anomalies (amplitude 1.0) and, faintly, :obj:`"subtle"` ones (0.45).
    - **flow** (32-d, noise 0.7): the scene (motion pattern),
      :obj:`"fight"` anomalies (1.5) and, faintly, :obj:`"scream"` ones
      (0.6).
    - **audio** (16-d, noise 0.8): the scene (ambient sound),
      :obj:`"scream"` anomalies (2.0) and, faintly, :obj:`"subtle"` ones
      (1.0; the narrow, noisy view needs a larger signal).

    So no view sees every anomaly type, and :obj:`"subtle"` is clear only
    when rgb and audio are combined. Normal videos vary by scene, jitter and
    drift, and with probability :obj:`cut_prob` have a camera cut: every
    view switches to another scene at once. An event seen in one view alone
    is anomalous; a change seen in all views together is not. Anomalous
    videos have one anomaly of one type (types cycle evenly), covering a
    fraction :obj:`anomaly_length` of the video at a random position. Video
    lengths are uniform in :obj:`length_range` snippets, so resampling to
    :math:`T` segments both averages and repeats snippets.

    Names follow UCF-Crime: :obj:`"<Type>_<split>_<i>"` with type
    :obj:`"Normal"` for normal videos; :obj:`Video.category` holds the type.

    Args:
        num_train (int, optional): Training videos (video labels only).
            (default: :obj:`200`)
        num_test (int, optional): Test videos, with :obj:`frame_labels`
            (16 frames per snippet). (default: :obj:`100`)
        views (Mapping[str, Tuple[int, float]], optional): View name ->
            (width, noise); :obj:`DEFAULT_VIEWS` if :obj:`None`.
        seed (int, optional): Seed; equal seeds give equal data. The test
            set does not depend on :obj:`num_train`. (default: :obj:`0`)
        anomalies (Mapping[str, Mapping[str, float]], optional): Anomaly
            type -> {view: amplitude}; :obj:`DEFAULT_ANOMALIES` if
            :obj:`None`.
        anomaly_ratio (float, optional): Fraction of anomalous videos in each
            split. (default: :obj:`0.5`)
        length_range (Tuple[int, int], optional): Snippets per video,
            inclusive. (default: :obj:`(40, 240)`)
        anomaly_length (Tuple[float, float], optional): Range of the anomaly's
            fraction of its video. (default: :obj:`(0.05, 0.35)`)
        num_scenes (int, optional): Normal scenes. (default: :obj:`4`)
        cut_prob (float, optional): Probability of a camera cut in a video.
            (default: :obj:`0.3`)
        drift (float, optional): Amplitude of the slow drift.
            (default: :obj:`0.3`)
        signature_variants (int, optional): Signatures per anomaly type and
            view; many variants make each anomaly novel, so that only its
            deviation from the rest of its video, not its direction, can be
            learned. (default: :obj:`3`)
        train_frame_labels (bool, optional): Also give training videos frame
            labels (for analysis; weak supervision does not use them).
            (default: :obj:`False`)

    Returns:
        :obj:`(train, test)`, two lists of :class:`Video`.
    """
    views = dict(DEFAULT_VIEWS if views is None else views)
    anomalies = {k: dict(v) for k, v in
                 (DEFAULT_ANOMALIES if anomalies is None
                  else anomalies).items()}
    _check(views, anomalies, length_range, anomaly_length, num_train,
           num_test, anomaly_ratio, num_scenes)
    if signature_variants < 1:
        raise ValueError(f"signature_variants must be >= 1, got "
                         f"{signature_variants}")
    world_seq, train_seq, test_seq = np.random.SeedSequence(seed).spawn(3)
    world = _World(np.random.default_rng(world_seq), views, anomalies,
                   num_scenes, signature_variants)
    types = list(anomalies)

    def split(seq, num, name, with_frames):
        rng = np.random.default_rng(seq)
        num_anom = int(round(anomaly_ratio * num))
        kinds = [types[i % len(types)] for i in range(num_anom)]
        kinds += ['Normal'] * (num - num_anom)
        kinds = [kinds[i] for i in rng.permutation(num)]
        return [world.video(rng, f'{kind}_{name}_{i:04d}', kind,
                            length_range, anomaly_length, cut_prob, drift,
                            with_frames)
                for i, kind in enumerate(kinds)]

    return (split(train_seq, num_train, 'train', train_frame_labels),
            split(test_seq, num_test, 'test', True))


def snippet_deviation(x: np.ndarray) -> np.ndarray:
    r"""An unsupervised per-snippet anomaly score for one view of one video:
    one minus the cosine similarity of each snippet to the video's
    component-wise median snippet.

    Shapes:
        - **input:** :math:`(T_{full}, d)`
        - **output:** :math:`(T_{full},)`
    """
    ref = np.median(x, axis=0)
    num = x @ ref
    den = np.linalg.norm(x, axis=1) * np.linalg.norm(ref) + 1e-12
    return 1.0 - num / den


def view_visibility(videos: Sequence[Video],
                    view_names: Optional[Sequence[str]] = None
                    ) -> Dict[str, Dict[str, float]]:
    r"""How well each view alone separates each anomaly type: per category
    and view, the ROC AUC of :func:`snippet_deviation` between the anomalous
    and the normal snippets of one anomalous video, averaged over that
    category's videos (0.5: the view does not see it). Needs
    :obj:`frame_labels` and :obj:`Video.category`.

    Returns:
        :obj:`{category: {view: auc}}`.
    """
    from pyg_lego.vad.metrics import frame_auc
    names = list(videos[0].views) if view_names is None else list(view_names)
    per_cat: Dict[str, Dict[str, List[float]]] = {}
    for video in videos:
        if video.label == 0:
            continue
        if video.frame_labels is None or video.category is None:
            raise ValueError(f"video '{video.name}' needs frame_labels and a "
                             f"category for view_visibility")
        fps = video.frames_per_snippet
        labels = video.frame_labels[::fps][:video.num_snippets]
        if labels.all():
            continue
        per_view = per_cat.setdefault(video.category, {v: [] for v in names})
        for v in names:
            per_view[v].append(frame_auc(snippet_deviation(video.views[v]),
                                         labels))
    return {cat: {v: float(np.mean(a)) for v, a in per_view.items()}
            for cat, per_view in per_cat.items()}
