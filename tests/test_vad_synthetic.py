import numpy as np
import pytest

from pyg_lego.vad.synthetic import (DEFAULT_ANOMALIES, DEFAULT_VIEWS,
                                    make_synthetic, view_visibility)


@pytest.fixture(scope='module')
def small():
    return make_synthetic(num_train=40, num_test=24, seed=3)


def _equal(a, b):
    assert [v.name for v in a] == [v.name for v in b]
    for u, v in zip(a, b):
        assert u.label == v.label
        for m in u.views:
            np.testing.assert_array_equal(u.views[m], v.views[m])
        if u.frame_labels is None:
            assert v.frame_labels is None
        else:
            np.testing.assert_array_equal(u.frame_labels, v.frame_labels)


def test_deterministic_per_seed(small):
    again = make_synthetic(num_train=40, num_test=24, seed=3)
    _equal(small[0], again[0])
    _equal(small[1], again[1])
    other = make_synthetic(num_train=40, num_test=24, seed=4)
    assert not np.array_equal(small[0][0].views['rgb'][:5],
                              other[0][0].views['rgb'][:5])


def test_test_set_independent_of_num_train(small):
    _, test = make_synthetic(num_train=7, num_test=24, seed=3)
    _equal(small[1], test)


def test_shapes_labels_and_frames(small):
    train, test = small
    assert len(train) == 40 and len(test) == 24
    lengths = set()
    for split in (train, test):
        assert sum(v.label for v in split) == len(split) // 2
        for v in split:
            assert list(v.views) == list(DEFAULT_VIEWS)
            for m, (d, _) in DEFAULT_VIEWS.items():
                x = v.views[m]
                assert x.dtype == np.float32 and x.shape == (v.num_snippets,
                                                             d)
                assert np.isfinite(x).all()
            assert 40 <= v.num_snippets <= 240
            lengths.add(v.num_snippets)
            assert v.name.startswith('Normal') == (v.label == 0)
            assert (v.category == 'Normal') == (v.label == 0)
    assert len(lengths) > 20  # lengths vary, so resampling is exercised
    assert all(v.frame_labels is None for v in train)
    for v in test:
        fl = v.frame_labels
        assert fl.dtype == np.uint8 and fl.shape == (16 * v.num_snippets,)
        # Frame labels are whole snippets: constant over each 16 frames.
        per_snippet = fl.reshape(-1, 16)
        assert (per_snippet == per_snippet[:, :1]).all()
        assert bool(fl.any()) == bool(v.label)
        if v.label:
            # One contiguous event that does not cover the whole video.
            s = per_snippet[:, 0].astype(int)
            assert np.count_nonzero(np.diff(s)) in (1, 2)
            assert s.sum() <= 0.36 * v.num_snippets + 1


def test_anomaly_positions_and_lengths_vary():
    _, test = make_synthetic(num_train=0, num_test=60, seed=0)
    starts, fracs = [], []
    for v in test:
        if v.label:
            s = v.frame_labels[::16]
            starts.append(np.flatnonzero(s)[0] / v.num_snippets)
            fracs.append(s.mean())
    assert np.ptp(starts) > 0.4 and np.ptp(fracs) > 0.15


def test_each_type_seen_by_some_views_only():
    # Without camera cuts the per-view statistic is clean; each type is
    # visible (AUC well above chance) in its views and at chance elsewhere.
    _, test = make_synthetic(num_train=0, num_test=400, seed=1, cut_prob=0.0)
    vis = view_visibility(test)
    assert set(vis) == set(DEFAULT_ANOMALIES)
    for kind, seen in DEFAULT_ANOMALIES.items():
        for view in DEFAULT_VIEWS:
            if view in seen:
                assert vis[kind][view] > 0.6, (kind, view, vis[kind])
            else:
                assert abs(vis[kind][view] - 0.5) < 0.08, (kind, view,
                                                           vis[kind])
    for view in DEFAULT_VIEWS:
        # No single view sees every anomaly type.
        assert min(vis[k][view] for k in DEFAULT_ANOMALIES) < 0.58


def test_signature_variants():
    # One variant: every 'object' anomaly adds the same rgb direction.
    views = {'rgb': (16, 0.0)}
    kw = dict(num_train=0, num_test=16, views=views, drift=0.0,
              num_scenes=1, cut_prob=0.0, anomalies={'object': {'rgb': 1.0}})

    def directions(videos):
        out = []
        for v in videos:
            if v.label:
                mask = v.frame_labels[::16].astype(bool)
                x = v.views['rgb']
                d = x[mask].mean(0) - x[~mask].mean(0)
                out.append(np.round(d / np.linalg.norm(d), 4))
        return {tuple(d) for d in out}

    assert len(directions(make_synthetic(signature_variants=1, **kw)[1])) == 1
    assert len(directions(make_synthetic(signature_variants=50, **kw)[1])) > 3


def test_custom_views_and_anomalies():
    views = {'a': (8, 0.1), 'b': (4, 0.1)}
    train, test = make_synthetic(num_train=6, num_test=4, views=views,
                                 anomalies={'x': {'a': 2.0}},
                                 length_range=(10, 12))
    assert train[0].views['a'].shape[1] == 8
    assert train[0].views['b'].shape[1] == 4
    assert all(10 <= v.num_snippets <= 12 for v in train + test)


@pytest.mark.parametrize('kwargs, match', [
    (dict(anomalies={'x': {'depth': 1.0}}), "names view"),
    (dict(views={}), "views is empty"),
    (dict(length_range=(50, 10)), "length_range"),
    (dict(anomaly_length=(0.0, 0.5)), "anomaly_length"),
    (dict(anomaly_ratio=1.0), "anomaly_ratio"),
    (dict(num_train=0, num_test=0), "need some videos"),
    (dict(signature_variants=0), "signature_variants"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic(**kwargs)
