import numpy as np
import pytest
import torch
from torch_geometric.loader import DataLoader

from pyg_lego.vad.data import (FeatureFileError, FeatureFolder,
                               label_from_name, load_videos, read_annotations)
from pyg_lego.vad.synthetic import make_synthetic
from pyg_lego.vad.video import (Video, VideoGraphDataset, resample,
                                segment_bounds, segments_to_snippets,
                                snippets_to_frames, video_graph)

# --- video.py: resampling, the inverse mapping and per-video graphs --------


@pytest.mark.parametrize('T_full, T', [(100, 32), (32, 32), (33, 32),
                                       (5, 8), (1, 4), (240, 32)])
def test_segment_bounds_cover_snippets(T_full, T):
    start, end = segment_bounds(T_full, T)
    assert start.shape == end.shape == (T,)
    assert (end > start).all() and start[0] == 0 and end[-1] == T_full
    assert (np.diff(start) >= 0).all()
    if T_full >= T:  # a partition: contiguous, disjoint
        np.testing.assert_array_equal(start[1:], end[:-1])
    covered = np.zeros(T_full, bool)
    for s, e in zip(start, end):
        covered[s:e] = True
    assert covered.all()


def test_resample_averages_segments():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(70, 5))
    out = resample(x, 32)
    start, end = segment_bounds(70, 32)
    assert out.shape == (32, 5) and out.dtype == np.float32
    for t in range(32):
        np.testing.assert_allclose(out[t], x[start[t]:end[t]].mean(0),
                                   rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(resample(x, 1)[0], x.mean(0), atol=1e-6)
    np.testing.assert_allclose(resample(x, 70), x, atol=1e-6)
    short = resample(x[:3], 8)  # fewer snippets than segments: repeats
    assert {tuple(r) for r in np.round(short, 5)} == \
        {tuple(r) for r in np.round(x[:3].astype(np.float32), 5)}


@pytest.mark.parametrize('T_full', [7, 32, 50, 241])
def test_segments_to_snippets_inverts_resample(T_full):
    T = 32
    scores = np.random.default_rng(T_full).random(T)
    back = segments_to_snippets(scores, T_full)
    assert back.shape == (T_full,)
    # Each snippet takes the mean score of the segments that cover it.
    start, end = segment_bounds(T_full, T)
    for i in range(T_full):
        cover = (start <= i) & (i < end)
        assert back[i] == pytest.approx(scores[cover].mean())
    # Round trip: constant within segments survives resampling back.
    if T_full >= T:
        per_snippet = segments_to_snippets(np.arange(T, dtype=float), T_full)
        np.testing.assert_allclose(resample(per_snippet[:, None], T)[:, 0],
                                   np.arange(T))


def test_snippets_to_frames_repeat_pad_trim():
    s = np.array([0.1, 0.5, 0.9])
    np.testing.assert_array_equal(snippets_to_frames(s, 48),
                                  np.repeat(s, 16))
    padded = snippets_to_frames(s, 53)
    assert padded.shape == (53,) and (padded[48:] == 0.9).all()
    np.testing.assert_array_equal(snippets_to_frames(s, 20),
                                  np.repeat(s, 16)[:20])
    np.testing.assert_array_equal(snippets_to_frames(s, 6, 2),
                                  np.repeat(s, 2))


def test_video_checks():
    with pytest.raises(ValueError, match='disagree on the number'):
        Video('v', {'a': np.zeros((3, 2)), 'b': np.zeros((4, 2))}, 0)
    with pytest.raises(ValueError, match='2-D'):
        Video('v', {'a': np.zeros(3)}, 0)
    with pytest.raises(ValueError, match='label must be 0 or 1'):
        Video('v', {'a': np.zeros((3, 2))}, 2)


@pytest.fixture(scope='module')
def synth():
    return make_synthetic(num_train=6, num_test=4, seed=0)


def test_video_graph_complete_and_knn(synth):
    v = synth[0][0]
    data = video_graph(v, T=32)
    assert data.num_nodes == 32 and data.edge_index.size(1) == 32 * 32
    assert data.edge_attr.shape == (1024, 3)
    assert data.y.tolist() == [v.label] and data.name == v.name
    assert data.num_snippets == v.num_snippets
    torch.testing.assert_close(data.x_rgb,
                               torch.from_numpy(resample(v.views['rgb'], 32)))
    full = video_graph(v, T=None, k=4, view_names=['flow', 'rgb'])
    assert full.num_nodes == v.num_snippets and full.view_names == ['flow',
                                                                    'rgb']
    assert full.edge_index.size(1) < v.num_snippets ** 2
    deg = torch.bincount(full.edge_index[0], minlength=full.num_nodes)
    assert int(deg.min()) >= 5  # k neighbours + self-loop
    with pytest.raises(KeyError, match='depth'):
        video_graph(v, view_names=['depth'])


def test_video_graph_dataset_batches(synth):
    ds = VideoGraphDataset(synth[0], T=16, view_names=['rgb', 'audio'])
    assert len(ds) == 6 and ds.videos[0] is synth[0][0]
    assert ds[2] is ds[2]  # cached
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch.num_graphs == 4 and batch.num_nodes == 64
    assert batch.video_id.tolist() == [0, 1, 2, 3]
    assert batch.y.tolist() == [v.label for v in synth[0][:4]]
    assert batch.edge_attr.shape[1] == 2
    np.testing.assert_array_equal(ds.labels, [v.label for v in synth[0]])


# --- data.py: the public feature layouts -----------------------------------

T_ABUSE, T_NORMAL, T_FIGHT = 12, 9, 6
UCF_ANN = ("Abuse001_x264.mp4  Abuse  16  40  -1  -1\n"
           "Normal_Videos_001_x264.mp4  Normal  -1  -1  -1  -1\n"
           "Fighting002_x264.mp4  Fighting  0  10  50  100\n")


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)
    return path


@pytest.fixture
def ucf(tmp_path):
    r"""A UCF-Crime-like folder: rgb as single-file ten-crop, per-crop files
    and plain [T, D]; audio plain; a list of paths; the annotation file."""
    rng = np.random.default_rng(0)
    root = tmp_path / 'feats'
    arrays = {
        'Abuse001_x264': rng.random((10, T_ABUSE, 8), dtype=np.float32),
        'Normal_Videos_001_x264': rng.random((10, T_NORMAL, 8),
                                             dtype=np.float32),
        'Fighting002_x264': rng.random((T_FIGHT, 8), dtype=np.float32),
    }
    _save(root / 'rgb' / 'Abuse001_x264.npy', arrays['Abuse001_x264'])
    for c in range(10):
        _save(root / 'rgb' / f'Normal_Videos_001_x264__{c}.npy',
              arrays['Normal_Videos_001_x264'][c])
    _save(root / 'rgb' / 'Fighting002_x264.npy', arrays['Fighting002_x264'])
    audio = {}
    for name, T in (('Abuse001_x264', T_ABUSE),
                    ('Normal_Videos_001_x264', T_NORMAL),
                    ('Fighting002_x264', T_FIGHT)):
        audio[name] = rng.random((T, 4), dtype=np.float32)
        _save(root / 'audio' / f'{name}.npy', audio[name])
    lst = tmp_path / 'test.list'
    lst.write_text('/data/UCF/rgb/Abuse001_x264.npy\n' + ''.join(
        f'/data/UCF/rgb/Normal_Videos_001_x264__{c}.npy\n' for c in range(10))
        + 'Fighting002_x264\n')
    ann = tmp_path / 'Temporal_Anomaly_Annotation.txt'
    ann.write_text(UCF_ANN)
    return dict(root=root, list=lst, ann=ann, rgb=arrays, audio=audio,
                tmp=tmp_path)


def _by_name(videos):
    return {v.name: v for v in videos}


def test_ucf_round_trip(ucf):
    videos = load_videos(ucf['root'], ucf['list'], ground_truth=ucf['ann'])
    assert [v.name for v in videos] == ['Abuse001_x264',
                                        'Normal_Videos_001_x264',
                                        'Fighting002_x264']
    v = _by_name(videos)
    for name, rgb in ucf['rgb'].items():
        expected = rgb.mean(0) if rgb.ndim == 3 else rgb
        np.testing.assert_allclose(v[name].views['rgb'], expected, rtol=1e-6)
        np.testing.assert_array_equal(v[name].views['audio'],
                                      ucf['audio'][name])
        assert list(v[name].views) == ['audio', 'rgb']
    assert [x.label for x in videos] == [1, 0, 1]
    assert v['Abuse001_x264'].category == 'Abuse'
    fl = v['Abuse001_x264'].frame_labels
    assert fl.shape == (16 * T_ABUSE,)
    assert fl[16:40].all() and fl.sum() == 24
    assert not v['Normal_Videos_001_x264'].frame_labels.any()
    # (50, 100) runs past the 6 x 16 = 96 frames with features: clipped.
    fight = v['Fighting002_x264'].frame_labels
    assert fight.shape == (96,) and fight[:10].all() and fight[50:].all()
    assert fight.sum() == 10 + 46


def test_crop_choices(ucf):
    one = _by_name(load_videos(ucf['root'], ucf['list'], crops=3))
    np.testing.assert_array_equal(one['Abuse001_x264'].views['rgb'],
                                  ucf['rgb']['Abuse001_x264'][3])
    np.testing.assert_array_equal(one['Normal_Videos_001_x264'].views['rgb'],
                                  ucf['rgb']['Normal_Videos_001_x264'][3])
    np.testing.assert_array_equal(one['Fighting002_x264'].views['rgb'],
                                  ucf['rgb']['Fighting002_x264'])
    every = load_videos(ucf['root'], ucf['list'], views=['rgb'], crops='all')
    assert len(every) == 10 + 10 + 1
    assert every[4].name == 'Abuse001_x264__4'
    np.testing.assert_array_equal(every[4].views['rgb'],
                                  ucf['rgb']['Abuse001_x264'][4])
    with pytest.raises(ValueError, match='crops must be'):
        load_videos(ucf['root'], ucf['list'], crops='max')


def test_rtfm_layout_crop_axis_and_suffix(tmp_path):
    # RTFM's UCF-Crime files: <video>_i3d.npy holding [T, crops, D].
    x = np.random.default_rng(1).random((7, 10, 3), dtype=np.float32)
    _save(tmp_path / 'f' / 'rgb' / 'Abuse002_x264_i3d.npy', x)
    lst = tmp_path / 'ucf-i3d-test.list'
    lst.write_text('/data/UCF_Test_ten_crop_i3d/Abuse002_x264_i3d.npy\n')
    ann = tmp_path / 'ann.txt'
    ann.write_text('Abuse002_x264.mp4  Abuse  20  30  -1  -1\n')
    (v,) = load_videos(tmp_path / 'f', lst, ground_truth=ann, crop_axis=1,
                       name_suffix='_i3d')
    assert v.name == 'Abuse002_x264' and v.label == 1
    np.testing.assert_allclose(v.views['rgb'], x.mean(1), rtol=1e-6)
    assert v.frame_labels.sum() == 10 and v.num_frames == 7 * 16
    (plain,) = load_videos(tmp_path / 'f', crop_axis=1, name_suffix='_i3d')
    assert plain.frame_labels is None


def test_single_underscore_crop_files(tmp_path):
    x = np.random.default_rng(3).random((5, 4, 2), dtype=np.float32)
    for c in range(5):
        _save(tmp_path / 'f' / 'rgb' / f'Normal_2_{c}.npy', x[c])
    lst = tmp_path / 'l.list'
    lst.write_text('Normal_2_3.npy\nNormal_2_0.npy\n')
    (v,) = load_videos(tmp_path / 'f', lst, crop_sep='_')
    assert v.name == 'Normal_2'
    np.testing.assert_allclose(v.views['rgb'], x.mean(0), rtol=1e-6)


XD_RGB = {'v=abc__#1_label_B1-0-0': 8, 'v=def_label_A': 5}
XD_ANN = "v=abc__#1_label_B1-0-0.mp4 16 48 96 112\n"


@pytest.fixture
def xd(tmp_path):
    r"""An XD-Violence-like layout: 5 per-crop rgb files per video, audio in
    another folder with a name suffix, the list naming each crop file."""
    rng = np.random.default_rng(2)
    rgb = {}
    for name, T in XD_RGB.items():
        rgb[name] = rng.random((5, T, 6), dtype=np.float32)
        for c in range(5):
            _save(tmp_path / 'i3d' / f'{name}__{c}.npy', rgb[name][c])
        _save(tmp_path / 'vggish' / f'{name}__vggish.npy',
              rng.random((T, 4), dtype=np.float32))
    lst = tmp_path / 'rgb_test.list'
    lst.write_text(''.join(f'/xd/i3d/{n}__{c}.npy\n' for n in XD_RGB
                           for c in range(5)))
    ann = tmp_path / 'annotations.txt'
    ann.write_text(XD_ANN)
    roots = {'rgb': tmp_path / 'i3d', 'audio': tmp_path / 'vggish'}
    return dict(roots=roots, list=lst, ann=ann, rgb=rgb, tmp=tmp_path)


def test_xd_round_trip(xd):
    videos = load_videos(xd['roots'], xd['list'], ground_truth=xd['ann'],
                         name_suffix={'audio': '__vggish'})
    assert [v.name for v in videos] == list(XD_RGB)
    a, b = videos
    assert (a.label, b.label) == (1, 0)
    np.testing.assert_allclose(a.views['rgb'], xd['rgb'][a.name].mean(0),
                               rtol=1e-6)
    assert a.views['audio'].shape == (8, 4)
    assert a.frame_labels[16:48].all() and a.frame_labels[96:112].all()
    assert a.frame_labels.sum() == 48 and a.frame_labels.shape == (128,)
    assert b.frame_labels.shape == (80,) and not b.frame_labels.any()


def test_frame_label_arrays(ucf):
    gt_dir = ucf['tmp'] / 'gt'
    fls = {'Abuse001_x264': np.r_[np.zeros(100), np.ones(50),
                                  np.zeros(41)].astype(np.uint8),
           'Normal_Videos_001_x264': np.zeros(150, np.uint8),
           'Fighting002_x264': np.r_[np.ones(5), np.zeros(90)]}
    for name, fl in fls.items():
        _save(gt_dir / f'{name}.npy', fl)
    videos = load_videos(ucf['root'], ucf['list'], ground_truth=gt_dir)
    for v in videos:
        np.testing.assert_array_equal(v.frame_labels, fls[v.name])
        assert v.num_frames == len(fls[v.name])
    # One concatenated array in list order (RTFM's gt-ucf.npy).
    concat = np.concatenate([np.r_[np.zeros(16 * T_ABUSE - 3), np.ones(3)],
                             np.zeros(16 * T_NORMAL),
                             np.ones(16 * T_FIGHT)]).astype(np.uint8)
    gt_file = _save(ucf['tmp'] / 'gt-ucf.npy', concat)
    videos = load_videos(ucf['root'], ucf['list'], ground_truth=gt_file)
    np.testing.assert_array_equal(
        np.concatenate([v.frame_labels for v in videos]), concat)
    _save(gt_file, concat[:-1])
    with pytest.raises(FeatureFileError, match='gt-ucf.npy'):
        load_videos(ucf['root'], ucf['list'], ground_truth=gt_file)


def test_no_list_reads_folder_and_labels_column(ucf):
    videos = load_videos(ucf['root'])
    assert sorted(v.name for v in videos) == sorted(ucf['rgb'])
    lst = ucf['tmp'] / 'labelled.list'
    lst.write_text('Abuse001_x264.npy 1\nFighting002_x264,1\n')
    assert [v.label for v in load_videos(ucf['root'], lst)] == [1, 1]


def test_read_annotations_and_names(tmp_path):
    ann = tmp_path / 'a.txt'
    ann.write_text(UCF_ANN + XD_ANN)
    out = read_annotations(ann)
    assert out['Abuse001_x264'].intervals == [(16, 40)]
    assert out['Abuse001_x264'].category == 'Abuse'
    assert out['Normal_Videos_001_x264'].intervals == []
    assert out['v=abc__#1_label_B1-0-0'].intervals == [(16, 48), (96, 112)]
    assert label_from_name('Normal_Videos_003_x264') == 0
    assert label_from_name('Stealing019_x264') == 1
    assert label_from_name('v=def_label_A') == 0
    assert label_from_name('v=abc__#1_label_B1-0-0') == 1
    assert label_from_name('01_0014') is None


# --- bad files: each error names the file ----------------------------------


def _expect(match, fn, *args, **kwargs):
    with pytest.raises((FeatureFileError, ValueError)) as info:
        fn(*args, **kwargs)
    assert match in str(info.value), str(info.value)
    return info.value


def test_missing_view_file(ucf):
    (ucf['root'] / 'audio' / 'Fighting002_x264.npy').unlink()
    err = _expect(str(ucf['root'] / 'audio' / 'Fighting002_x264.npy'),
                  load_videos, ucf['root'], ucf['list'])
    assert 'missing' in str(err)


def test_video_in_list_without_features(ucf):
    with open(ucf['list'], 'a') as f:
        f.write('Robbery050_x264\n')
    _expect('Robbery050_x264.npy', load_videos, ucf['root'], ucf['list'])


def test_wrong_width(ucf):
    bad = _save(ucf['root'] / 'rgb' / 'Fighting002_x264.npy',
                np.ones((T_FIGHT, 7), np.float32))
    err = _expect(str(bad), load_videos, ucf['root'], ucf['list'])
    assert 'width 7' in str(err) and 'Abuse001_x264.npy' in str(err)
    err = _expect(str(ucf['root'] / 'audio' / 'Abuse001_x264.npy'),
                  load_videos, ucf['root'], ucf['list'],
                  widths={'audio': 5})
    assert 'width 4' in str(err) and 'width 5' in str(err)


@pytest.mark.parametrize('value', [np.nan, np.inf])
def test_non_finite(ucf, value):
    x = ucf['audio']['Abuse001_x264'].copy()
    x[3, 1] = value
    bad = _save(ucf['root'] / 'audio' / 'Abuse001_x264.npy', x)
    err = _expect(str(bad), load_videos, ucf['root'], ucf['list'])
    assert '[3, 1]' in str(err)


def test_truncated_and_corrupt(ucf):
    path = ucf['root'] / 'audio' / 'Normal_Videos_001_x264.npy'
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 20])
    err = _expect(str(path), load_videos, ucf['root'], ucf['list'])
    assert 'truncated' in str(err)
    path.write_bytes(b'not a numpy file at all')
    _expect(str(path), load_videos, ucf['root'], ucf['list'])


@pytest.mark.parametrize('shape', [(T_FIGHT,), (2, 2, T_FIGHT, 8)])
def test_wrong_ndim(ucf, shape):
    bad = _save(ucf['root'] / 'rgb' / 'Fighting002_x264.npy',
                np.ones(shape, np.float32))
    err = _expect(str(bad), load_videos, ucf['root'], ucf['list'])
    assert 'expected [T, D] or [crops, T, D]' in str(err)


def test_crops_disagree_in_length(ucf):
    bad = _save(ucf['root'] / 'rgb' / 'Normal_Videos_001_x264__7.npy',
                np.ones((T_NORMAL - 1, 8), np.float32))
    err = _expect(str(bad), load_videos, ucf['root'], ucf['list'])
    assert 'crops of one video must agree' in str(err)


def test_missing_crop_file(ucf):
    gone = ucf['root'] / 'rgb' / 'Normal_Videos_001_x264__4.npy'
    gone.unlink()
    _expect(str(gone), load_videos, ucf['root'], ucf['list'])


def test_views_disagree_in_length(ucf):
    _save(ucf['root'] / 'audio' / 'Fighting002_x264.npy',
          np.ones((T_FIGHT + 1, 4), np.float32))
    err = _expect('Fighting002_x264.npy', load_videos, ucf['root'],
                  ucf['list'])
    assert "align='trim'" in str(err)
    v = _by_name(load_videos(ucf['root'], ucf['list'], align='trim'))
    assert v['Fighting002_x264'].num_snippets == T_FIGHT


@pytest.mark.parametrize('line, problem', [
    ('Arson001_x264.mp4  Arson  12  x  -1  -1', 'integer frame numbers'),
    ('Arson001_x264.mp4  Arson  12  30  40', 'pairs of start and end'),
    ('Arson001_x264.mp4  Arson  30  12  -1  -1', '0 <= start < end'),
    ('v=zzz_label_B1-0-0', 'pairs of start and end'),
])
def test_annotation_line_that_does_not_parse(ucf, line, problem):
    ann = ucf['tmp'] / 'bad_ann.txt'
    ann.write_text(UCF_ANN + line + '\n')
    err = _expect(str(ann), load_videos, ucf['root'], ucf['list'],
                  ground_truth=ann)
    assert 'line 4' in str(err) and problem in str(err)


def test_ground_truth_problems(ucf):
    ann = ucf['tmp'] / 'late.txt'
    ann.write_text(UCF_ANN.replace('16  40', '400  420'))
    _expect('late.txt', load_videos, ucf['root'], ucf['list'],
            ground_truth=ann)
    missing_anomaly = ucf['tmp'] / 'partial.txt'
    missing_anomaly.write_text(UCF_ANN.splitlines()[1] + '\n')
    err = _expect('partial.txt', load_videos, ucf['root'], ucf['list'],
                  ground_truth=missing_anomaly)
    assert 'Abuse001_x264' in str(err)
    gt_dir = ucf['tmp'] / 'gt'
    _save(gt_dir / 'Abuse001_x264.npy', np.ones(10, np.uint8))
    _expect(str(gt_dir / 'Normal_Videos_001_x264.npy'), load_videos,
            ucf['root'], ucf['list'], ground_truth=gt_dir)
    _save(gt_dir / 'Normal_Videos_001_x264.npy', np.full(10, 2))
    _expect(str(gt_dir / 'Normal_Videos_001_x264.npy'), load_videos,
            ucf['root'], ucf['list'], ground_truth=gt_dir)


def test_conflicting_or_unknown_labels(ucf, tmp_path):
    lst = tmp_path / 'conflict.list'
    lst.write_text('Normal_Videos_001_x264 1\n')
    _expect("conflicting labels for video 'Normal_Videos_001_x264'",
            load_videos, ucf['root'], lst)
    folder = tmp_path / 'sh'
    _save(folder / 'rgb' / '01_0014.npy', np.ones((4, 3), np.float32))
    _expect("cannot tell the label of video '01_0014'", load_videos, folder)
    (v,) = load_videos(folder, labels={'01_0014': 1})
    assert v.label == 1


def test_bad_list_file(ucf):
    lst = ucf['tmp'] / 'bad.list'
    lst.write_text('Abuse001_x264 1 extra\n')
    _expect(str(lst), load_videos, ucf['root'], lst)
    lst.write_text('\n')
    _expect(str(lst), load_videos, ucf['root'], lst)


def test_missing_view_folder(ucf):
    _expect(str(ucf['root'] / 'clip'), FeatureFolder, ucf['root'],
            views=['rgb', 'clip'])
