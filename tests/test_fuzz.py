r"""Malformed input, end to end: every public entry point, fed systematically
corrupted arguments (a seeded generator of corruptions applied to valid
calls), must raise a :class:`ValueError`, :class:`TypeError` or
:class:`IndexError` with a message before computing, never fail deep inside
torch nor answer silently; the feature reader and the CLI must fail cleanly
without leaving output files; a killed CLI run leaves a usable checkpoint.
"""
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from pyg_lego import LEGO, build_relation_graph
from pyg_lego.data import knn_pattern, relation_scores
from pyg_lego.nn import (GraphPowerConv, GraphSpaceHead, LEGOFusion,
                         PropagationHead, node_statistics, two_hop_paths)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLEAR = (ValueError, TypeError, IndexError)
N = 9


def _valid():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(N, 4, generator=gen)
    b = torch.randn(N, 3, generator=gen)
    data = build_relation_graph({'a': a, 'b': b}, k=3)
    ei, ea = data.edge_index, data.edge_attr
    return dict(a=a, b=b, ei=ei, ea=ea, fused=ea[:, :1].clone(),
                powers=torch.stack([ea] * 3, dim=-1))


# Corruptions of each kind of argument; every one makes the call invalid.
def _edge_index_bad(ei, rng):
    return [ei.float(), ei[0], torch.cat([ei, ei[:1]]), ei.tolist(),
            ei.to(torch.int32),
            _poke(ei, rng, N + rng.randint(0, 5)), _poke(ei, rng, -1)]


def _poke(t, rng, value):
    t = t.clone()
    t.view(-1)[rng.randrange(t.numel())] = value
    return t


def _features_bad(x, rng):
    return [x.long(), x[:, 0], x[None], _poke(x, rng, float('nan')),
            _poke(x, rng, float('inf')), x[:, :0], x.numpy(), None]


def _scores_bad(ea, rng):
    return [(ea * 100).long(), ea[:-1], ea[None],
            _poke(ea, rng, float('nan'))]


def _fused_bad(f, rng):
    return [f[:-1], f[None], torch.cat([f, f], 1)]


def _powers_bad(p, rng):
    return [p[..., :2], p[:, :1], p.long(), p[0]]


CALLS = {
    'build_relation_graph': (
        lambda v, k=3: build_relation_graph(v, k=k),
        {'v': lambda d, r: [{'a': x, 'b': d['b']}
                            for x in _features_bad(d['a'], r)] +
         [{'a': d['a'], 'b': d['b'][:-1]}, [d['a']], {}],
         'k': lambda d, r: [0, -2, 2.5, '3', True, None]}),
    'knn_pattern': (
        lambda v, k=3: knn_pattern(v, k=k),
        {'v': lambda d, r: [{'a': x} for x in _features_bad(d['a'], r)],
         'k': lambda d, r: [0, 1.0]}),
    'relation_scores': (
        lambda v, ei: relation_scores(v, ei),
        {'v': lambda d, r: [{'a': x} for x in _features_bad(d['a'], r)],
         'ei': lambda d, r: _edge_index_bad(d['ei'], r)}),
    'GraphPowerConv': (
        lambda ei, ea, xs: GraphPowerConv(2, mode='propagated')(
            ei, ea, xs=xs, num_nodes=N),
        {'ei': lambda d, r: _edge_index_bad(d['ei'], r),
         'ea': lambda d, r: _scores_bad(d['ea'], r),
         'xs': lambda d, r: [None, [d['a']], [d['a'], None],
                             [d['a'], d['b'][:-1]], [d['a'].long(), d['b']],
                             [d['a'][:, 0], d['b']]]}),
    'GraphPowerConv masked': (
        lambda ei, ea: GraphPowerConv(3, mode='masked')(ei, ea, num_nodes=N),
        {'ei': lambda d, r: _edge_index_bad(d['ei'], r),
         'ea': lambda d, r: _scores_bad(d['ea'], r)}),
    'LEGOFusion': (
        lambda p: LEGOFusion(2, 2)(p),
        {'p': lambda d, r: _powers_bad(d['powers'], r)}),
    'LEGO': (
        lambda ei, ea: LEGO(['a', 'b'], P=2, mode='elementwise')(
            ei, ea, num_nodes=N),
        {'ei': lambda d, r: _edge_index_bad(d['ei'], r),
         'ea': lambda d, r: _scores_bad(d['ea'], r) + [d['ea'][:, :1]]}),
    'GraphSpaceHead': (
        lambda f, ei: GraphSpaceHead(N)(f, ei),
        {'f': lambda d, r: _fused_bad(d['fused'], r),
         'ei': lambda d, r: [e for e in _edge_index_bad(d['ei'], r)
                             if not isinstance(e, list)]}),
    'PropagationHead': (
        lambda x, ei, f: PropagationHead(4, 8, 2)(x, ei, f),
        {'x': lambda d, r: [d['b'], d['a'][None], d['a'][:, 0]],
         'ei': lambda d, r: [e for e in _edge_index_bad(d['ei'], r)
                             if not isinstance(e, list)],
         'f': lambda d, r: _fused_bad(d['fused'], r)}),
    'node_statistics': (
        lambda f, ei: node_statistics(f, ei, N),
        {'f': lambda d, r: _fused_bad(d['fused'], r)[:2],  # any C is fine
         'ei': lambda d, r: [e for e in _edge_index_bad(d['ei'], r)
                             if not isinstance(e, list)]}),
    'two_hop_paths': (
        lambda ei: two_hop_paths(ei),
        {'ei': lambda d, r: _edge_index_bad(d['ei'], r)[:5]}),
}

DEFAULTS = {
    'build_relation_graph': lambda d: dict(v={'a': d['a'], 'b': d['b']}),
    'knn_pattern': lambda d: dict(v={'a': d['a']}),
    'relation_scores': lambda d: dict(v={'a': d['a'], 'b': d['b']},
                                      ei=d['ei']),
    'GraphPowerConv': lambda d: dict(ei=d['ei'], ea=d['ea'],
                                     xs=[d['a'], d['b']]),
    'GraphPowerConv masked': lambda d: dict(ei=d['ei'], ea=d['ea']),
    'LEGOFusion': lambda d: dict(p=d['powers']),
    'LEGO': lambda d: dict(ei=d['ei'], ea=d['ea']),
    'GraphSpaceHead': lambda d: dict(f=d['fused'], ei=d['ei']),
    'PropagationHead': lambda d: dict(x=d['a'], ei=d['ei'], f=d['fused']),
    'node_statistics': lambda d: dict(f=d['fused'], ei=d['ei']),
    'two_hop_paths': lambda d: dict(ei=d['ei']),
}


def _cases(seed):
    rng = random.Random(seed)
    data = _valid()
    for name, (call, slots) in CALLS.items():
        for slot, corrupt in slots.items():
            for i, bad in enumerate(corrupt(data, rng)):
                yield pytest.param(name, call, slot, bad,
                                   id=f'{name}-{slot}-{i}')


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_entry_points_reject_malformed_input_clearly(seed):
    data = _valid()
    for name, call, slot, bad in (c.values for c in _cases(seed)):
        valid = DEFAULTS[name](data)
        call(**valid)  # the uncorrupted call works
        try:
            out = call(**dict(valid, **{slot: bad}))
        except CLEAR as e:
            assert str(e), f'{name}({slot}=...): empty message'
            continue
        except Exception as e:  # noqa: BLE001 - the point of the test
            pytest.fail(f'{name}({slot}=<corrupt>) raised '
                        f'{type(e).__name__}: {e}')
        pytest.fail(f'{name}({slot}=<corrupt>) returned '
                    f'{type(out).__name__} instead of raising')


# Regression tests for the holes the fuzz found in the core (now fixed).
def test_negative_and_out_of_range_edges_are_named():
    d = _valid()
    with pytest.raises(ValueError,
                       match='node index -1 out of range for 9 nodes'):
        relation_scores({'a': d['a']}, _poke(d['ei'], random.Random(0), -1))
    with pytest.raises(ValueError,
                       match='node index 12 out of range for 9 nodes'):
        node_statistics(d['fused'], _poke(d['ei'], random.Random(0), 12), N)
    with pytest.raises(ValueError, match='shape \\[2, E\\]'):
        relation_scores({'a': d['a']}, torch.cat([d['ei'], d['ei'][:1]]))
    with pytest.raises(TypeError, match='torch.long'):
        GraphPowerConv(2)(d['ei'].float(), d['ea'])


def test_integer_powers_are_not_truncated_silently():
    with pytest.raises(TypeError, match='floating-point'):
        LEGOFusion(2, 2)(torch.ones(5, 2, 3, dtype=torch.long))


def test_nan_scores_and_bad_gamma_are_refused():
    d = _valid()
    with pytest.raises(ValueError, match='NaN or Inf'):
        GraphPowerConv(2)(d['ei'], d['ea'] * float('nan'))
    with pytest.raises(ValueError, match='gamma'):
        build_relation_graph({'a': d['a']}, k=2, similarity='rbf', gamma=-1.0)


def test_head_shape_mismatches_are_named():
    d = _valid()
    with pytest.raises(ValueError, match='channels'):
        GraphSpaceHead(N, channels=2)(d['fused'], d['ei'])
    with pytest.raises(ValueError, match=r'x must have shape \[N, 4\]'):
        PropagationHead(4, 8, 2)(d['b'], d['ei'], d['fused'])


# --- the feature reader ------------------------------------------------------

def _folder(tmp_path):
    names = ['vidA', 'vidB']
    for view, width in (('rgb', 6), ('flow', 4)):
        (tmp_path / view).mkdir(parents=True)
        for i, name in enumerate(names):
            np.save(tmp_path / view / f'{name}.npy',
                    np.random.default_rng(i).normal(size=(7, width))
                    .astype(np.float32))
    lst = tmp_path / 'list.txt'
    lst.write_text(''.join(f'{n}.npy {i}\n' for i, n in enumerate(names)))
    return names, lst


def _corrupt_file(path, rng):
    kind = rng.choice(['garbage', 'truncate', 'one_d', 'nan', 'wide', 'int',
                       'empty', 'four_d'])
    if kind == 'garbage':
        path.write_bytes(bytes(rng.randrange(256) for _ in range(64)))
    elif kind == 'truncate':
        path.write_bytes(path.read_bytes()[:100])
    else:
        arr = np.load(path)
        arr = {'one_d': lambda a: a[:, 0], 'nan': lambda a: np.where(
                   np.arange(a.size).reshape(a.shape) == 3, np.nan, a),
               'wide': lambda a: np.concatenate([a, a], 1),
               'int': lambda a: (a * 10).astype(np.int64),
               'empty': lambda a: a[:0],
               'four_d': lambda a: a[None, None]}[kind](arr)
        np.save(path, arr)
    return kind


@pytest.mark.parametrize('seed', range(6))
def test_feature_reader_fails_cleanly_on_corrupt_files(tmp_path, seed):
    from pyg_lego.vad.data import FeatureFolder
    rng = random.Random(seed)
    names, lst = _folder(tmp_path)
    assert len(FeatureFolder(tmp_path).load(lst, progress=False)) == 2
    view = rng.choice(['rgb', 'flow'])
    kind = _corrupt_file(tmp_path / view / f'{rng.choice(names)}.npy', rng)
    if kind == 'int':  # integer features are cast, not an error: check it
        videos = FeatureFolder(tmp_path).load(lst, progress=False)
        assert all(np.issubdtype(np.asarray(v.views[view]).dtype,
                                 np.floating) for v in videos)
        return
    with pytest.raises((ValueError, OSError)) as info:
        FeatureFolder(tmp_path).load(lst, progress=False)
    assert str(info.value)


# --- the CLI -----------------------------------------------------------------

TINY = ['vad', 'train', '--num-train', '16', '--num-test', '8', '--T', '8',
        '--quiet', '--batch-size', '8']
BAD_OPTIONS = [('--epochs', ['0', '-1', 'x', '1.5']), ('--T', ['1', 'abc']),
               ('--mode', ['dense']), ('-k', ['0', 'k']),
               ('--batch-size', ['0']), ('--lr', ['0', '-1', 'nan']),
               ('--views', ['nope']), ('--model', ['x', 'single:nope']),
               ('-P', ['-1']), ('--loss', ['hinge']),
               ('--device', ['tpu'] + ([] if torch.cuda.is_available()
                                       else ['cuda']))]


@pytest.mark.parametrize('seed', range(4))
def test_cli_rejects_random_bad_options_without_output(tmp_path, seed,
                                                       capsys):
    from pyg_lego.cli import main
    rng = random.Random(seed)
    picks = rng.sample(BAD_OPTIONS, 2)
    argv = [tok for opt, values in picks for tok in (opt, rng.choice(values))]
    out = tmp_path / 'run'
    with pytest.raises(SystemExit) as info:
        main(TINY + argv + ['--out', str(out)])
    assert info.value.code == 2, argv
    err = capsys.readouterr().err
    assert 'error' in err and 'Traceback' not in err, argv
    assert not out.exists() or os.listdir(out) == [], argv


def test_killed_cli_run_leaves_a_usable_checkpoint(tmp_path):
    from pyg_lego.cli import main
    from pyg_lego.vad.train import load_checkpoint
    out = tmp_path / 'run'
    ckpt = out / 'checkpoint.pt'
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    proc = subprocess.Popen(
        [sys.executable, '-m', 'pyg_lego.cli'] + TINY +
        ['--epochs', '500', '--out', str(out)], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not ckpt.exists() and time.time() < deadline:
            assert proc.poll() is None, 'the run ended before a checkpoint'
            time.sleep(0.05)
        assert ckpt.exists()
        time.sleep(0.3)  # let it be mid-epoch or mid-write when killed
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    state = load_checkpoint(str(ckpt))
    assert 1 <= state['epoch'] < 500
    # No result files of the unfinished run.
    assert not (out / 'results.json').exists()
    assert main(TINY + ['--epochs', str(state['epoch'] + 1), '--out',
                        str(out), '--resume']) == 0
    assert load_checkpoint(str(ckpt))['epoch'] == state['epoch'] + 1
    assert (out / 'results.json').exists()
