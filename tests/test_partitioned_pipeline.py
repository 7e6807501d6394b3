
r"""The partitioned pipeline's job (``python -m pyg_lego.distributed``): its
shards on 2 ranks (under torchrun) equal one process's; a rank that raises
or hangs ends the job on every rank within the timeout, with a message
naming it, and so does one that exits at once (os._exit, as if killed),
after which the job resumes from its shards without recomputing them; a
changed option recomputes only the stages it changes; the train stage on 2
ranks gives one process's losses and parameters, and resumes by its options;
bad options fail with one line."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from pyg_lego.data import knn_pattern
from pyg_lego.distributed import pipeline
from pyg_lego.distributed.pipeline import (STAGES, read_json, rank_dir,
                                           synthetic_classes, synthetic_rows)

from .conftest import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
TORCHRUN = os.path.join(os.path.dirname(PYTHON), 'torchrun')
N, K = 500, 5
JOB = ['--synthetic', str(N), '--k', str(K), '--synthetic-dims', '6', '4',
       '--quiet']
#: The stages of the default job (--until fusion).
FUSED = STAGES[:STAGES.index('fusion') + 1]
#: The train stage, in float64: the shards before it are the same bits on
#: 1 and 2 ranks, so the losses and parameters differ by rounding only.
TRAIN = ['--until', 'train', '--epochs', '4', '--lr', '0.05',
         '--hidden-channels', '8', '--layers', '2', '--train-dtype',
         'float64']
TIMEOUT = 4
#: Seconds a failed job may take past its timeout: the start of the
#: processes (an import of torch each, on a shared machine) and the
#: watchdog's polls.
MARGIN = 20

# Runs the job with a fault on rank 1 at the start of a stage.
FAULTY = r'''
import os, sys, time
from pyg_lego.distributed import pipeline
kind, stage = sys.argv[1], sys.argv[2]
compute = pipeline.STAGE_FUNCTIONS[stage]
def faulty(ctx):
    if ctx.rank == 1:
        if kind == 'raise':
            raise RuntimeError('injected fault')
        if kind == 'kill':
            os._exit(3)
        if kind == 'sleep':
            time.sleep(120)
    return compute(ctx)
pipeline.STAGE_FUNCTIONS[stage] = faulty
sys.exit(pipeline.main(sys.argv[3:]))
'''


def launch(args, world=2, fault=None, limit=120):
    r"""Starts the :obj:`world` ranks by hand (as a launcher on several
    machines would); returns their exit codes, stderr and the seconds until
    the last one ended."""
    port = str(free_port())
    cmd = [PYTHON, '-c', FAULTY, *fault] if fault else \
        [PYTHON, '-m', 'pyg_lego.distributed']
    procs = []
    t0 = time.perf_counter()
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world),
                   LOCAL_RANK=str(rank), MASTER_ADDR='127.0.0.1',
                   MASTER_PORT=port, OMP_NUM_THREADS='1')
        procs.append(subprocess.Popen(cmd + list(args), env=env, cwd=ROOT,
                                      stderr=subprocess.PIPE, text=True))
    errs = [p.communicate(timeout=limit)[1] for p in procs]
    return [p.returncode for p in procs], errs, time.perf_counter() - t0


def shard(out, rank, stage):
    name = pipeline.OUTPUTS[stage]
    return torch.load(os.path.join(rank_dir(out, rank), f'{stage}.pt'))[name]


def joined(out, stage, world=2):
    dim = 1 if stage == 'pattern' else 0
    return torch.cat([shard(out, r, stage) for r in range(world)], dim)


@pytest.fixture(scope='module')
def clean(tmp_path_factory):
    r"""A whole job on 2 ranks under torchrun, the train stage included."""
    out = str(tmp_path_factory.mktemp('clean'))
    proc = subprocess.run(
        [TORCHRUN, '--standalone', '--nproc_per_node=2', '-m',
         'pyg_lego.distributed', *JOB, *TRAIN, '--out', out], cwd=ROOT,
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_torchrun_job_equals_one_process_on_npy_files(clean, tmp_path):
    # One process (no torchrun) reads the same rows from .npy files.
    views = synthetic_rows(N, [6, 4], 0, 0, N)
    for name, x in views.items():
        np.save(tmp_path / f'{name}.0.npy', x.numpy())
    out = str(tmp_path / 'one')
    proc = subprocess.run(
        [PYTHON, '-m', 'pyg_lego.distributed', '--k', str(K), '--quiet',
         '--out', out] + [f'--view={n}={tmp_path}/{n}.{{rank}}.npy'
                          for n in views],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert torch.equal(joined(clean, 'pattern'), shard(out, 0, 'pattern'))
    assert torch.equal(shard(out, 0, 'pattern'), knn_pattern(views, K))
    for stage in FUSED[1:]:
        torch.testing.assert_close(joined(clean, stage), shard(out, 0, stage),
                                   rtol=1e-6, atol=1e-7)
    # Another P changes the powers and the fusion, not the pattern.
    proc = subprocess.run(proc.args + ['--resume', '--P', '1'], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = read_json(os.path.join(out, 'manifest.json'))['ranks'][0]['run']
    assert run['reused'] == ['pattern', 'scores']
    assert run['computed'] == ['powers', 'fusion']
    assert shard(out, 0, 'powers').size(-1) == 2
    manifest = read_json(os.path.join(clean, 'manifest.json'))
    assert manifest['sizes'] == [250, 250]
    for r, rec in enumerate(manifest['ranks']):
        assert rec['run']['computed'] == list(STAGES)
        stages = rec['stages']
        assert stages['pattern']['sent']['pattern/ring'] == 250 * 10 * 4
        assert stages['scores']['sent']['scores/features'] > 0
        assert stages['powers']['sent']['powers/rows'] > 0
        assert all(s['peak_rss'] > 0 and s['time_s'] >= 0
                   for s in stages.values())
    # A shard is written whole or not at all: no temporary is left.
    assert not [f for f in os.listdir(rank_dir(clean, 0)) if 'tmp' in f]


@pytest.mark.parametrize('kind, message', [
    ('raise', "rank 1 failed in stage 'scores': RuntimeError: injected "
              "fault"),
    ('sleep', f"rank 0 timed out after --timeout {TIMEOUT} s in stage "
              f"'scores' waiting for rank(s) [1]"),
])
def test_a_failing_rank_ends_the_job(tmp_path, kind, message):
    codes, errs, wall = launch(
        JOB + ['--out', str(tmp_path), '--timeout', str(TIMEOUT)],
        fault=(kind, 'scores'))
    assert all(c == 1 for c in codes), (codes, errs)
    assert wall < TIMEOUT + MARGIN
    for rank, err in enumerate(errs):
        last = err.strip().splitlines()[-1]
        assert last.startswith(f'python -m pyg_lego.distributed: rank {rank}'
                               f': error: '), err
        assert message in last, err


def test_resume_after_a_killed_job_reuses_its_shards(clean, tmp_path):
    out = str(tmp_path)
    args = JOB + ['--out', out, '--timeout', str(TIMEOUT)]
    codes, errs, wall = launch(args, fault=('kill', 'powers'))
    assert codes == [1, 3], errs
    assert wall < TIMEOUT + MARGIN
    assert "rank(s) [1] stopped (died, were killed or froze) in stage " \
           "'powers'" in errs[0]
    built = {(r, s): os.stat(os.path.join(rank_dir(out, r), f'{s}.pt'))
             .st_mtime_ns for r in range(2) for s in ('pattern', 'scores')}
    for r in range(2):
        assert not os.path.exists(os.path.join(rank_dir(out, r),
                                               'powers.pt'))
    codes, errs, _ = launch(args + ['--resume'])
    assert codes == [0, 0], errs
    manifest = read_json(os.path.join(out, 'manifest.json'))
    for r, rec in enumerate(manifest['ranks']):
        assert rec['run']['reused'] == ['pattern', 'scores']
        assert rec['run']['computed'] == ['powers', 'fusion']
        # The reused stages keep the record of the run that made them.
        assert rec['stages']['pattern']['run'] == 0
        assert rec['stages']['powers']['run'] == 1
        assert len(read_json(os.path.join(rank_dir(out, r),
                                          'manifest.json'))['runs']) == 2
    for (r, s), mtime in built.items():
        assert os.stat(os.path.join(rank_dir(out, r), f'{s}.pt')) \
            .st_mtime_ns == mtime
    for stage in FUSED:
        assert torch.equal(joined(out, stage), joined(clean, stage))


@pytest.mark.parametrize('args, message', [
    (['--out', 'x'], "one of the arguments --view --synthetic is required"),
    (['--synthetic', '10', '--view', 'a=a.{rank}.npy', '--out', 'x'],
     "not allowed with argument"),
    (['--view', 'a=a.npy', '--out', 'x'], "with {rank} in the pattern"),
    (['--synthetic', '0', '--out', 'x'], "must be a positive int, got '0'"),
    (['--synthetic', '10', '--k', '10', '--out', 'x'],
     "--k must be below the number of nodes"),
    (['--synthetic', '10', '--timeout', '-1', '--out', 'x'],
     "must be a positive float"),
    (['--synthetic', '10', '--P', '-1', '--out', 'x'], "--P must be >= 0"),
    (['--synthetic', '10', '--mode', 'dense', '--out', 'x'],
     "invalid choice: 'dense'"),
    (['--synthetic', '10', '--state', 'missing.pt', '--out', 'x'],
     "--state missing.pt: no such file"),
    (['--view', 'a=a.{rank}.npy', '--until', 'train', '--out', 'x'],
     "--until train with --view needs --labels"),
    (['--view', 'a=a.{rank}.npy', '--labels', 'y.npy', '--out', 'x'],
     "--labels takes a pattern with {rank} in it"),
    (['--synthetic', '20', '--labels', 'y.{rank}.npy', '--out', 'x'],
     "--labels is for --view jobs"),
    (['--synthetic', '10', '--epochs', '0', '--out', 'x'],
     "must be a positive int, got '0'"),
    (['--synthetic', '10', '--lr', '-1', '--out', 'x'],
     "must be a positive float, got '-1'"),
    (['--synthetic', '10', '--train-fraction', '1.5', '--out', 'x'],
     "must be a fraction in (0, 1], got '1.5'"),
    (['--synthetic', '10', '--train-dtype', 'half', '--out', 'x'],
     "invalid choice: 'half'"),
])
def test_bad_options_fail_with_one_line(capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        pipeline.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and message in err, err
    assert err.startswith('python -m pyg_lego.distributed: error: ')


def test_a_missing_file_fails_with_its_path(tmp_path):
    config = pipeline.PipelineConfig(
        views=[('a', f'{tmp_path}/a.{{rank}}.npy')])
    with pytest.raises(pipeline.PipelineError,
                       match=f"view 'a': cannot load {tmp_path}/a.1.npy"):
        pipeline.load_views(config, 1, 2)
    np.save(tmp_path / 'a.1.npy', np.zeros(3, dtype=np.float32))
    with pytest.raises(pipeline.PipelineError, match='must hold a 2-D'):
        pipeline.load_views(config, 1, 2)


def test_bad_labels_fail_with_their_path(tmp_path):
    config = pipeline.PipelineConfig(views=[('a', 'a.{rank}.npy')],
                                     labels=f'{tmp_path}/y.{{rank}}.npy')
    with pytest.raises(pipeline.PipelineError,
                       match=f"--labels: cannot load {tmp_path}/y.1.npy"):
        pipeline.load_labels(config, 1, 2, 3)
    np.save(tmp_path / 'y.1.npy', np.zeros(4, dtype=np.int64))
    with pytest.raises(pipeline.PipelineError, match="rank's 3 rows, got "
                                                     "shape \\(4,\\)"):
        pipeline.load_labels(config, 1, 2, 3)
    np.save(tmp_path / 'y.1.npy', np.array([0, -2, 1]))
    with pytest.raises(pipeline.PipelineError, match="a class below -1"):
        pipeline.load_labels(config, 1, 2, 3)


def test_synthetic_rows_do_not_depend_on_the_split():
    whole = synthetic_rows(9000, [3, 2], 1, 0, 9000)
    part = synthetic_rows(9000, [3, 2], 1, 4000, 8200)
    for name in whole:
        assert torch.equal(whole[name][4000:8200], part[name])
    y, mask = synthetic_classes(9000, 1, 0, 9000)
    part_y, part_mask = synthetic_classes(9000, 1, 4000, 8200)
    assert torch.equal(y[4000:8200], part_y)
    assert torch.equal(mask[4000:8200], part_mask)
    assert int(y.max()) == pipeline.SYNTHETIC_CLUSTERS - 1
    assert 0.45 < mask.float().mean() < 0.55
    # The classes are the clusters: nodes of one class share their centre.
    x = whole['v0']
    same = (x[y == 3] - x[y == 3].mean(0)).norm(dim=1).mean()
    assert same < (x - x.mean(0)).norm(dim=1).mean()


def test_train_stage_on_two_ranks_equals_one_process(clean, tmp_path):
    # The clean job's two ranks trained on their clusters; one process
    # reads the same rows and classes (-1 off the train mask) from .npy
    # files.
    views = synthetic_rows(N, [6, 4], 0, 0, N)
    for name, x in views.items():
        np.save(tmp_path / f'{name}.0.npy', x.numpy())
    y, mask = synthetic_classes(N, 0, 0, N)
    np.save(tmp_path / 'y.0.npy', torch.where(mask, y, -1).numpy())
    one = str(tmp_path / 'one')
    args = [PYTHON, '-m', 'pyg_lego.distributed', '--k', str(K), '--out',
            one, f'--labels={tmp_path}/y.{{rank}}.npy'] + \
        [f'--view={n}={tmp_path}/{n}.{{rank}}.npy' for n in views]
    proc = subprocess.run(args + TRAIN, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count('stage train: epoch ') == 4
    ref = torch.load(os.path.join(rank_dir(one, 0), 'train.pt'))
    assert ref['num_classes'] == pipeline.SYNTHETIC_CLUSTERS
    assert ref['losses'][-1] < ref['losses'][0]
    # Measured: 9e-16 in the losses, 2e-15 relative in the parameters.
    tol = dict(rtol=1e-10, atol=1e-12)
    for r in range(2):
        got = torch.load(os.path.join(rank_dir(clean, r), 'train.pt'))
        torch.testing.assert_close(got['losses'], ref['losses'], **tol)
        assert got['state'].keys() == ref['state'].keys()
        for key, value in ref['state'].items():
            assert value.dtype == torch.float64
            torch.testing.assert_close(got['state'][key], value, **tol)
    manifest = read_json(os.path.join(clean, 'manifest.json'))
    for rec in manifest['ranks']:
        entry = rec['stages']['train']
        assert entry['shape'] == [4] and len(entry['losses']) == 4
        assert entry['peak_rss'] > 0 and entry['time_s'] > 0
        assert entry['sent']['train/gradients'] > 0
        assert entry['sent']['train/gcn/features'] > 0
    # Another --epochs recomputes the training only; its first epochs are
    # the same.
    proc = subprocess.run(args + TRAIN + ['--resume', '--epochs', '3',
                                          '--quiet'],
                          cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = read_json(os.path.join(one, 'manifest.json'))['ranks'][0]['run']
    assert run['reused'] == list(FUSED) and run['computed'] == ['train']
    again = torch.load(os.path.join(rank_dir(one, 0), 'train.pt'))
    assert torch.equal(again['losses'], ref['losses'][:3])
    assert not [f for f in os.listdir(rank_dir(one, 0)) if 'tmp' in f]
