import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from pyg_lego.vad.metrics import frame_ap, frame_auc, frame_level_scores
from pyg_lego.vad.synthetic import make_synthetic
from pyg_lego.vad.video import Video, resample


def _random_case(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    y = rng.integers(0, 2, n)
    y[0], y[-1] = 0, 1
    if seed % 3 == 0:
        s = rng.random(n)
    elif seed % 3 == 1:  # heavy ties
        s = rng.integers(0, int(rng.integers(1, 6)), n).astype(float)
    else:  # ties mixed with distinct values
        s = np.round(rng.normal(size=n), 1)
    return s, y


@pytest.mark.parametrize('seed', range(30))
def test_agrees_with_sklearn(seed):
    s, y = _random_case(seed)
    assert abs(frame_auc(s, y) - roc_auc_score(y, s)) < 1e-10
    assert abs(frame_ap(s, y) - average_precision_score(y, s)) < 1e-10


def test_constant_scores_and_tensors():
    y = np.array([0, 1, 1, 0, 0])
    s = np.zeros(5)
    assert frame_auc(s, y) == pytest.approx(0.5)
    assert frame_ap(s, y) == pytest.approx(average_precision_score(y, s))
    st = torch.tensor([0.1, 0.9, 0.8, 0.2, 0.3], requires_grad=True)
    assert frame_auc(st, torch.tensor(y)) == 1.0
    assert frame_ap(st, y) == 1.0


@pytest.mark.parametrize('fn', [frame_auc, frame_ap])
def test_errors(fn):
    with pytest.raises(ValueError, match='only one class'):
        fn(np.random.rand(6), np.zeros(6, dtype=int))
    with pytest.raises(ValueError, match='only one class'):
        fn(np.random.rand(6), np.ones(6, dtype=int))
    with pytest.raises(ValueError, match='differ in length'):
        fn(np.random.rand(5), np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match='NaN'):
        fn(np.array([0.1, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match='0/1'):
        fn(np.array([0.1, 0.2]), np.array([0, 2]))


@pytest.fixture(scope='module')
def test_videos():
    return make_synthetic(num_train=0, num_test=30, seed=5)[1]


def _snippet_labels(v):
    return v.frame_labels[::v.frames_per_snippet].astype(float)


def test_frame_level_scores_shapes_and_order(test_videos):
    T = 32
    per_video = [np.full(T, i, dtype=float) for i in range(len(test_videos))]
    scores, labels = frame_level_scores(test_videos, per_video, T)
    total = sum(v.num_frames for v in test_videos)
    assert scores.shape == labels.shape == (total,)
    np.testing.assert_array_equal(
        labels, np.concatenate([v.frame_labels for v in test_videos]))
    # Each video's frames carry its own score, in the order of the videos.
    expected = np.concatenate([np.full(v.num_frames, i)
                               for i, v in enumerate(test_videos)])
    np.testing.assert_array_equal(scores, expected)
    by_name = {v.name: s for v, s in zip(test_videos, per_video)}
    np.testing.assert_array_equal(
        frame_level_scores(test_videos, by_name, T)[0], scores)


def test_perfect_snippet_scores_give_auc_one(test_videos):
    per_video = [_snippet_labels(v) for v in test_videos]
    scores, labels = frame_level_scores(test_videos, per_video, T=None)
    np.testing.assert_array_equal(scores, labels)
    assert frame_auc(scores, labels) == 1.0
    assert frame_ap(scores, labels) == 1.0


def test_better_ranking_gets_higher_auc(test_videos):
    rng = np.random.default_rng(0)
    T = 32
    # Segment scores from the fraction of anomalous snippets per segment.
    truth = [resample(_snippet_labels(v)[:, None], T)[:, 0]
             for v in test_videos]
    noise = [rng.normal(scale=0.3, size=T) for _ in test_videos]
    good = [t + n for t, n in zip(truth, noise)]
    bad = [-t + n for t, n in zip(truth, noise)]
    rand = [rng.random(T) for _ in test_videos]
    auc = {k: frame_auc(*frame_level_scores(test_videos, s, T))
           for k, s in (('good', good), ('bad', bad), ('rand', rand))}
    ap = {k: frame_ap(*frame_level_scores(test_videos, s, T))
          for k, s in (('good', good), ('bad', bad), ('rand', rand))}
    assert auc['good'] > 0.8 > auc['rand'] > auc['bad']
    assert abs(auc['rand'] - 0.5) < 0.1
    assert ap['good'] > ap['rand'] > ap['bad']


def test_frame_level_scores_errors(test_videos):
    with pytest.raises(ValueError, match='expected 32 segments'):
        frame_level_scores(test_videos[:1], [np.zeros(31)], T=32)
    with pytest.raises(ValueError, match='expected .* snippets'):
        frame_level_scores(test_videos[:1], [np.zeros(3)], T=None)
    with pytest.raises(ValueError, match='scores for 1 videos but 2'):
        frame_level_scores(test_videos[:2], [np.zeros(32)], T=32)
    with pytest.raises(KeyError, match=test_videos[1].name):
        frame_level_scores(test_videos[:2], {test_videos[0].name:
                                             np.zeros(32)}, T=32)
    unlabeled = Video('x', {'rgb': np.ones((4, 2), np.float32)}, 0)
    with pytest.raises(ValueError, match="'x' has no frame_labels"):
        frame_level_scores([unlabeled], [np.zeros(32)], T=32)
