import functools
import json
import os

import numpy as np
import pytest
import torch

from pyg_lego.cli import main
from pyg_lego.vad.synthetic import make_synthetic
from pyg_lego.vad.train import (TrainConfig, load_checkpoint, predict,
                                save_checkpoint, train)
from pyg_lego.vad.video import VideoGraphDataset

TINY = ['--num-train', '16', '--num-test', '8', '--T', '8', '--quiet',
        '--batch-size', '8']


def test_train_writes_results_figures_and_checkpoint(tmp_path, capsys):
    out = tmp_path / 'run'
    assert main(['vad', 'train', *TINY, '--epochs', '2', '--model', 'lego',
                 '--mode', 'elementwise', '--out', str(out)]) == 0
    files = sorted(os.listdir(out))
    assert files == ['checkpoint.pt', 'coefficients.png', 'results.json',
                     'results.md', 'scores.png']
    results = json.loads((out / 'results.json').read_text())
    assert 0 <= results['auc'] <= 1 and 0 <= results['ap'] <= 1
    assert len(results['history']) == 2
    assert results['config']['mode'] == 'elementwise'
    md = (out / 'results.md').read_text()
    assert f"| lego | {100 * results['auc']:.2f} |" in md
    assert md in capsys.readouterr().out
    for png in ('scores.png', 'coefficients.png'):
        assert (out / png).read_bytes()[:4] == b'\x89PNG'

    # eval of the checkpoint reproduces the metrics of the run.
    ev = tmp_path / 'eval'
    assert main(['vad', 'eval', '--num-test', '8', '--checkpoint',
                 str(out / 'checkpoint.pt'), '--out', str(ev)]) == 0
    again = json.loads((ev / 'results.json').read_text())
    assert again['auc'] == pytest.approx(results['auc'], abs=1e-12)
    assert again['ap'] == pytest.approx(results['ap'], abs=1e-12)


@functools.lru_cache(maxsize=1)
def _tiny_sets(T=8):
    train_videos, test_videos = make_synthetic(16, 8, seed=3)
    return (VideoGraphDataset(train_videos, T=T),
            VideoGraphDataset(test_videos, T=T))


def _config(**kw):
    train_set, _ = _tiny_sets()
    views = train_set.view_names
    dims = {v: train_set.videos[0].views[v].shape[1] for v in views}
    base = dict(model='lego', views=views, dims=dims, T=8, epochs=4,
                batch_size=4, lr=1e-2, dropout=0.2)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize('model', ['lego', 'attention'])
def test_resume_gives_the_same_weights(tmp_path, model):
    train_set, _ = _tiny_sets()
    full = train(_config(model=model), train_set, progress=False)
    path = str(tmp_path / 'ckpt.pt')
    train(_config(model=model, epochs=2), train_set, checkpoint=path,
          progress=False)
    assert load_checkpoint(path)['epoch'] == 2
    resumed = train(_config(model=model), train_set, checkpoint=path,
                    resume=True, progress=False)
    assert resumed['epochs_run'] == 2
    assert resumed['history'] == full['history']
    a, b = full['model'].state_dict(), resumed['model'].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_model_other_seed_other_model():
    train_set, test_set = _tiny_sets()
    one = predict(train(_config(epochs=2), train_set,
                        progress=False)['model'], test_set)
    two = predict(train(_config(epochs=2), train_set,
                        progress=False)['model'], test_set)
    other = predict(train(_config(epochs=2, seed=1), train_set,
                          progress=False)['model'], test_set)
    assert all(np.array_equal(a, b) for a, b in zip(one, two))
    assert not all(np.array_equal(a, b) for a, b in zip(one, other))


def test_training_lowers_the_loss():
    train_set, _ = _tiny_sets()
    history = train(_config(model='concat', epochs=6), train_set,
                    progress=False)['history']
    assert history[-1] < history[0]


def test_resume_rejects_another_config(tmp_path):
    train_set, _ = _tiny_sets()
    path = str(tmp_path / 'ckpt.pt')
    train(_config(epochs=1), train_set, checkpoint=path, progress=False)
    with pytest.raises(ValueError, match="differs in \\['lr'\\]"):
        train(_config(lr=0.5), train_set, checkpoint=path, resume=True,
              progress=False)


def test_checkpoint_is_written_atomically(tmp_path, monkeypatch):
    train_set, _ = _tiny_sets()
    cfg = _config(epochs=1)
    model = train(cfg, train_set, progress=False)['model']
    path = tmp_path / 'ckpt.pt'

    def broken(*args, **kwargs):
        raise RuntimeError('disk full')
    monkeypatch.setattr(torch, 'save', broken)
    opt = torch.optim.Adam(model.parameters())
    with pytest.raises(RuntimeError, match='disk full'):
        save_checkpoint(str(path), model, opt, 1, cfg, torch.Generator(), [])
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('argv, message', [
    (['--epochs', '0'], 'argument --epochs: must be >= 1'),
    (['--T', 'ten'], "argument --T: expected a number of segments or 'full'"),
    (['--mode', 'dense'], 'argument --mode: invalid choice'),
    (['--model', 'transformer'], "unknown model 'transformer'"),
    (['--model', 'single:depth'], "no view 'depth'"),
    (['--views', 'rgb,depth'], "unknown view(s) ['depth']"),
    (['--model', 'lego', '--T', 'full'], 'needs a fixed --T'),
    (['--model', 'concat', '--degree-weight', '1'], 'degree-variance'),
    (['--resume'], 'no checkpoint at'),
    (['--data', 'no/such/folder', '--train-list', 'a', '--test-list', 'b',
      '--ground-truth', 'c'], 'no/such/folder'),
    (['--data', 'folder'], '--train-list is required'),
])
def test_bad_options_exit_2_without_traceback_or_files(tmp_path, capsys,
                                                        argv, message):
    out = tmp_path / 'out'
    with pytest.raises(SystemExit) as e:
        main(['vad', 'train', *TINY, '--out', str(out), *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and 'Traceback' not in err
    assert not out.exists()


def test_eval_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(['vad', 'eval', '--checkpoint', str(tmp_path / 'none.pt')])
    assert e.value.code == 2
    assert 'no checkpoint at' in capsys.readouterr().err
    junk = tmp_path / 'junk.pt'
    torch.save({'weights': 1}, junk)
    with pytest.raises(SystemExit) as e:
        main(['vad', 'eval', '--checkpoint', str(junk)])
    assert 'not a pyg-lego VAD checkpoint' in capsys.readouterr().err


def test_train_on_a_feature_folder(tmp_path):
    # The public layout: <root>/<view>/<video>.npy, list files, and a
    # per-video frame-label folder as ground truth.
    train_videos, test_videos = make_synthetic(12, 6, seed=2)
    root = tmp_path / 'features'
    gt = tmp_path / 'gt'
    gt.mkdir()
    for split, videos in (('train', train_videos), ('test', test_videos)):
        lines = []
        for v in videos:
            for view, x in v.views.items():
                (root / view).mkdir(parents=True, exist_ok=True)
                np.save(root / view / f'{v.name}.npy', x)
            lines.append(f'{v.name} {v.label}')
            if split == 'test':
                np.save(gt / f'{v.name}.npy', v.frame_labels)
        (tmp_path / f'{split}.list').write_text('\n'.join(lines) + '\n')
    out = tmp_path / 'run'
    assert main(['vad', 'train', '--data', str(root), '--train-list',
                 str(tmp_path / 'train.list'), '--test-list',
                 str(tmp_path / 'test.list'), '--ground-truth', str(gt),
                 '--views', 'rgb,audio', '--model', 'sum', '--T', '8',
                 '--epochs', '1', '--quiet', '--out', str(out)]) == 0
    results = json.loads((out / 'results.json').read_text())
    assert results['config']['views'] == ['rgb', 'audio']
    assert results['test_videos'] == 6


def test_demo_runs_every_model(tmp_path, capsys):
    out = tmp_path / 'demo'
    assert main(['vad', 'demo', '--num-train', '16', '--num-test', '8',
                 '--T', '8', '--epochs', '1', '--seeds', '2', '--quiet',
                 '--models', 'lego,concat,single:rgb', '--out',
                 str(out)]) == 0
    results = json.loads((out / 'results.json').read_text())
    assert [r['model'] for r in results['rows']] == ['lego', 'concat',
                                                     'single:rgb']
    assert all(r['seeds'] == 2 for r in results['rows'])
    for r in results['rows']:
        aucs = [s['auc'] for s in results['per_seed'][r['model']]]
        assert r['auc'] == pytest.approx(np.mean(aucs))
        assert r['auc_std'] == pytest.approx(np.std(aucs))
    printed = capsys.readouterr().out
    assert '| lego |' in printed and '| concat |' in printed
    assert {'results.md', 'scores.png', 'coefficients.png'} <= \
        set(os.listdir(out))
