
r"""Data-parallel training: two CPU processes started by torchrun (gloo)
take the same steps as one process with the same global batch."""
import json
import os
import subprocess
import sys

import pytest
import torch

from pyg_lego.training import distributed

from .conftest import free_port, requires_cuda

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GNN_ARGS = ['gnn', '--nodes', '600', '--k', '5', '--epochs', '2',
            '--batch-size', '64', '--hidden', '16', '--neighbors', '-1', '-1',
            '--double']


def torchrun(nproc, args, timeout=300):
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    cmd = [sys.executable, '-m', 'torch.distributed.run',
           f'--nproc_per_node={nproc}', '--master_addr=127.0.0.1',
           f'--master_port={free_port()}', '-m',
           'pyg_lego.training.distributed'] + args
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_two_processes_agree_with_one(tmp_path, monkeypatch):
    for var in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        monkeypatch.delenv(var, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = distributed.run_gnn(distributed.parse_args(
            GNN_ARGS + ['--out', str(tmp_path / 'one')]))
    finally:
        torch.set_num_threads(threads)
    assert one['world_size'] == 1
    # Full neighbourhoods: the mini-batch model is the full-graph model.
    assert one['minibatch_vs_full_max_abs_diff'] < 1e-10
    assert one['test_accuracy'] > 0.5
    assert one['losses'][1] < one['losses'][0]  # it trained

    proc = torchrun(2, GNN_ARGS + ['--out', str(tmp_path / 'two')])
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / 'two' / 'gnn.json') as f:
        two = json.load(f)
    assert two['world_size'] == 2
    w1 = torch.load(tmp_path / 'one' / 'gnn.pt')
    w2 = torch.load(tmp_path / 'two' / 'gnn.pt')
    assert w1.keys() == w2.keys()
    for key in w1:
        assert torch.allclose(w1[key], w2[key], atol=1e-10, rtol=1e-10), key
    assert two['test_accuracy'] == pytest.approx(one['test_accuracy'])
    assert not any(n.endswith('.tmp') or '.tmp' in n
                   for n in os.listdir(tmp_path / 'two'))


VAD_ARGS = ['vad', '--num-train', '24', '--num-test', '12', '--T', '16',
            '--epochs', '2', '--batch-size', '8', '--lr', '0.01']


def test_video_anomaly_model_two_processes_agree_with_one(tmp_path,
                                                          monkeypatch):
    for var in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        monkeypatch.delenv(var, raising=False)
    one = distributed.run_vad(distributed.parse_args(
        VAD_ARGS + ['--out', str(tmp_path / 'one')]))
    proc = torchrun(2, VAD_ARGS + ['--out', str(tmp_path / 'two')])
    assert proc.returncode == 0, proc.stderr[-3000:]
    s1 = torch.load(tmp_path / 'one' / 'vad.pt', weights_only=False)
    s2 = torch.load(tmp_path / 'two' / 'vad.pt', weights_only=False)
    # The checkpoint is a pyg_lego.vad.train one: it rebuilds the model.
    from pyg_lego.vad.train import (TrainConfig, make_model,
                                    model_from_checkpoint)
    model = model_from_checkpoint(s2)
    init = make_model(TrainConfig.from_dict(s1['config'])).state_dict()
    moved = False
    for key, value in model.state_dict().items():
        assert torch.allclose(s1['model'][key], value, atol=1e-5), key
        moved |= not torch.allclose(init[key], value)
    assert moved, 'training did not change the weights'
    assert one['world_size'] == 1


def test_degree_regulariser_is_refused_under_ddp():
    from pyg_lego.vad.train import TrainConfig

    class Wrapper(torch.nn.Module):  # stands in for DDP: has .module
        def __init__(self):
            super().__init__()
            self.module = torch.nn.Linear(1, 1)

    config = TrainConfig(views=['a'], dims={'a': 1}, degree_weight=0.1)
    with pytest.raises(ValueError, match='degree-variance'):
        distributed.train_vad(Wrapper(), [], config)


def test_setup_without_torchrun_is_a_single_process(monkeypatch):
    for var in ('RANK', 'WORLD_SIZE'):
        monkeypatch.delenv(var, raising=False)
    assert distributed.setup('gloo') == (0, 1, torch.device('cpu'))
    with pytest.raises(ValueError, match="'gloo' or 'nccl'"):
        distributed.setup('mpi')
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='CUDA'):
            distributed.setup('nccl')


def test_global_batch_must_split_evenly(tmp_path, monkeypatch):
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '1')
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', str(free_port()))
    args = distributed.parse_args(
        ['gnn', '--nodes', '50', '--epochs', '1', '--batch-size', '500',
         '--out', str(tmp_path)])
    with pytest.raises(ValueError, match='exceeds'):
        distributed.run_gnn(args)
    # The failed run left the process group and wrote nothing.
    assert not torch.distributed.is_initialized()
    assert os.listdir(tmp_path) == []


@requires_cuda
def test_nccl_on_one_gpu_matches_cpu(tmp_path):
    cpu = torchrun(1, GNN_ARGS + ['--backend', 'gloo', '--out',
                                  str(tmp_path / 'cpu')])
    gpu = torchrun(1, GNN_ARGS + ['--backend', 'nccl', '--out',
                                  str(tmp_path / 'gpu')])
    assert cpu.returncode == 0 and gpu.returncode == 0, gpu.stderr[-3000:]
    w1 = torch.load(tmp_path / 'cpu' / 'gnn.pt')
    w2 = torch.load(tmp_path / 'gpu' / 'gnn.pt')
    for key in w1:
        assert torch.allclose(w1[key], w2[key], atol=1e-8), key


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2,
                    reason='needs two CUDA devices')
def test_two_gpus_with_nccl_agree_with_one(tmp_path):
    args = GNN_ARGS + ['--backend', 'nccl']
    one = torchrun(1, args + ['--out', str(tmp_path / 'one')])
    two = torchrun(2, args + ['--out', str(tmp_path / 'two')])
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    w1 = torch.load(tmp_path / 'one' / 'gnn.pt')
    w2 = torch.load(tmp_path / 'two' / 'gnn.pt')
    for key in w1:
        assert torch.allclose(w1[key], w2[key], atol=1e-8), key
