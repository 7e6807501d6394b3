r"""The benchmark scripts run end to end at a tiny size and write what the
README reads from them."""
import importlib.util
import json
import os
import platform
import subprocess
import sys

import pytest
import torch

from .conftest import CUDA

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCALE = os.path.join(ROOT, 'benchmarks', 'scale.py')
DEVICE = os.path.join(ROOT, 'benchmarks', 'device.py')


def run(*args, timeout=600, script=SCALE, ok=True):
    out = subprocess.run([sys.executable, script, *args], capture_output=True,
                         text=True, timeout=timeout, cwd=ROOT)
    if ok:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_scale_benchmark_writes_json_markdown_and_plot(tmp_path):
    pytest.importorskip('matplotlib')
    pytest.importorskip('scipy')
    run('--sizes', '300', '600', '--views', '2', '--dim', '8', '--k', '4',
        '--out', str(tmp_path))
    result = json.loads((tmp_path / 'scale.json').read_text())
    rows = result['summary']['rows']
    assert [r['N'] for r in rows] == [300, 600]
    for r in result['results']:
        for stage in ('knn', 'masked', 'masked_cached', 'masked_torch',
                      'masked_streamed', 'propagated', 'fusion'):
            assert r['time'][stage] > 0
        assert r['baseline']['sparse_mm'] > 0
        assert r['baseline']['dense_masked'] > 0  # small enough for dense
    # The per-order ratio times the numba kernel, where it is installed.
    has_numba = importlib.util.find_spec('numba') is not None
    assert all((r['masked_order_vs_sparse_mm'] is not None) == has_numba
               for r in rows)
    assert (tmp_path / 'scale.md').read_text().count('| 600 |') >= 3
    assert (tmp_path / 'scale.png').stat().st_size > 0


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc',
                    reason='the heap behaviour tested is glibc\'s')
def test_stage_memory_counts_memory_an_earlier_stage_freed():
    spec = importlib.util.spec_from_file_location('scale', SCALE)
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)

    def stage():  # 64 MiB in blocks of 4 MiB
        return [torch.ones(2**20) for _ in range(16)]
    # Freeing a 16 MiB block, which glibc maps on its own, raises its
    # threshold for doing so to 16 MiB: the 4 MiB blocks then come from
    # its heap, which keeps up to 32 MiB of them once they are freed, as
    # this earlier stage leaves them. Without the trim, the stage measured
    # 36 MiB.
    freed = torch.ones(4 * 2**20)
    del freed
    stage()
    _, grown, _ = scale.timed(stage, 2)
    assert grown >= 0.9 * 64 * 2**20


def test_large_run_builds_then_runs_every_mode(tmp_path):
    run('--large', '--large-n', '3000', '--views', '2', '--dim', '8', '--k',
        '4', '--large-cache', str(tmp_path / 'graph.pt'), '--out',
        str(tmp_path))
    result = json.loads((tmp_path / 'large.json').read_text())
    assert result['build']['N'] == 3000
    assert 'knn_settings' in result['build']  # None for an exact build
    for mode in ('elementwise', 'propagated', 'masked'):
        assert result[mode]['total_s'] >= result[mode]['forward_s'] > 0
        assert result[mode]['peak_rss'] > 0


def test_prefetch_benchmark_writes_json_and_markdown(tmp_path):
    pytest.importorskip('numba')
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'benchmarks', 'prefetch.py'),
         '--sizes', '400', '--rounds', '1', '--distance', '3',
         '--walk-ahead', '1', '--path-ahead', '4', '--out', str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / 'prefetch.json').read_text())
    assert result['meta']['prefetch_distance'] == 3
    assert result['meta']['walk_ahead'] == 1
    assert result['meta']['path_ahead'] == 4
    (row,) = result['results']
    assert row['N'] == 400 and row['paths'] > row['E'] > 0
    assert row['hint_compiled']
    for name in ('path_forward', 'walk_weight', 'gather'):
        assert row['hint_s'][name] > 0 and row['plain_s'][name] > 0
        assert row['hint_vs_plain'][name] > 0
    assert '| 400 |' in (tmp_path / 'prefetch.md').read_text()


def test_locality_benchmark_writes_json_and_markdown(tmp_path):
    pytest.importorskip('numba')
    pytest.importorskip('scipy')
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'benchmarks', 'locality.py'),
         '--sizes', '600', '--rounds', '1', '--out', str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / 'locality.json').read_text())
    (row,) = result['results']
    assert row['N'] == 600 and row['E'] > 0
    orders = ('input', 'rcm', 'locality')
    assert set(row['time_s']) == set(orders)
    for name in orders:
        assert set(row['time_s'][name]) == {'spmm', 'masked_paths',
                                            'masked_walk'}
        assert all(t > 0 for t in row['time_s'][name].values())
        assert 0 <= row['far_share'][name] <= 1
    # The graph's clusters are numbered at random; the order finds them.
    assert row['median_span']['locality'] < row['median_span']['input'] / 2
    assert '| 600 | locality |' in (tmp_path / 'locality.md').read_text()


def test_locality_benchmark_on_a_saved_graph(tmp_path):
    pytest.importorskip('numba')
    pytest.importorskip('scipy')
    from .test_scale import graph
    views, data = graph(n=500, dtype=torch.float32)
    saved = tmp_path / 'graph.pt'
    torch.save({'edge_index': data.edge_index, 'edge_attr': data.edge_attr,
                'view0': next(iter(views.values()))}, saved)
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'benchmarks', 'locality.py'),
         '--graph', str(saved), '--rounds', '1', '--out', str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert not (tmp_path / 'locality.json').exists()
    assert not (tmp_path / 'locality.md').exists()
    result = json.loads((tmp_path / 'locality_large.json').read_text())
    assert result['meta']['graph'] == str(saved)
    (row,) = result['results']
    assert row['N'] == 500 and row['E'] == data.num_edges
    assert set(row['time_s']['locality']) == {'spmm', 'masked_walk',
                                              'masked_paths'}
    assert '| 500 | rcm |' in (tmp_path / 'locality_large.md').read_text()


@pytest.mark.parametrize('device', [
    'cpu', pytest.param('cuda', marks=CUDA)])
def test_device_benchmark_writes_every_stage_and_mode(tmp_path, device):
    run('--device', device, '--sizes', '300', '600', '100000', '--views',
        '2', '--dim', '8', '--k', '4', '--repeat', '1', '--budget-s', '1000',
        '--out', str(tmp_path), script=DEVICE)
    result = json.loads((tmp_path / 'device.json').read_text())
    assert result['meta']['device'] == device
    assert result['meta']['device_name']
    # 100,000 nodes: 600's time x (100000 / 600)^2 is over 1000 s (and
    # 600 is run: 300's time, which includes compiling, x 4 is not).
    (skipped,) = result['meta']['skipped']
    assert skipped.startswith('100000 (estimated')
    assert [r['N'] for r in result['results']] == [300, 600]
    for r in result['results']:
        for stage in ('knn', 'scores', 'paths', 'elementwise', 'masked',
                      'masked_streamed', 'propagated', 'fusion'):
            assert r['time'][stage] > 0 and r['mem'][stage] >= 0
        assert r['baseline']['sparse_mm'] > 0 and r['copy_GBps'] > 0
        for mode in ('elementwise', 'masked', 'propagated'):
            assert r['pipeline'][mode]['s'] > r['build_s'] > 0
    rows = result['summary']['rows']
    assert rows[0]['knn_flop_rate_vs_matmul'] > 0
    assert rows[1]['propagated_vs_sgconv'] > 0
    md = (tmp_path / 'device.md').read_text()
    assert result['meta']['device_name'] in md
    assert '| 600 |' in md and 'Fitted log-log slopes' in md


def test_device_benchmark_pipeline_only(tmp_path):
    run('--device', 'cpu', '--sizes', '300', '--views', '2', '--dim', '8',
        '--k', '4', '--pipeline-only', '--out', str(tmp_path),
        script=DEVICE)
    result = json.loads((tmp_path / 'device.json').read_text())
    assert result['meta']['pipeline_only'] is True
    (r,) = result['results']
    assert set(r['time']) == {'build'} and r['time']['build'] == r['build_s']
    assert r['baseline'] == {} and r['paths'] is None and r['E'] > 300
    assert r['knn_backend'] == 'exact'
    for mode in ('elementwise', 'masked', 'propagated'):
        assert r['pipeline'][mode]['s'] > r['build_s'] > 0
    (row,) = result['summary']['rows']
    assert row['knn_flop_rate_vs_matmul'] is None
    assert row['pipeline_masked_s'] == r['pipeline']['masked']['s']
    md = (tmp_path / 'device.md').read_text()
    assert '| 300 |' in md and 'n/a' in md


def device_module():
    spec = importlib.util.spec_from_file_location('device_bench', DEVICE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_device_benchmark_keeps_the_modes_before_running_out_of_memory(
        tmp_path, monkeypatch):
    device = device_module()

    def pipeline(res, views, args, timer, save):
        res['build_s'] = res['time']['build'] = 1.0
        res['E'] = 1000
        res['pipeline']['elementwise'] = {'s': 2.0, 'expansion_s': 1.0,
                                          'mem': 0}
        save(res)
        raise torch.cuda.OutOfMemoryError('CUDA out of memory (a test)')
    monkeypatch.setattr(device, 'measure_pipeline', pipeline)
    device.main(['--device', 'cpu', '--sizes', '300', '600',
                 '--pipeline-only', '--out', str(tmp_path)])
    result = json.loads((tmp_path / 'device.json').read_text())
    (r,) = result['results']
    assert r['N'] == 300 and list(r['pipeline']) == ['elementwise']
    (skipped,) = result['meta']['skipped']
    assert skipped.startswith('300 (out of memory: CUDA out of memory')
    assert result['summary']['rows'][0]['pipeline_masked_s'] is None


def test_device_benchmark_estimates_by_backend():
    device = device_module()

    class Args:
        dim, backend = 128, 'auto'
    cpu = torch.device('cpu')
    # Exact at both sizes: quadratic.
    assert device.estimate_s((1000, 2.0), 4000, Args, cpu) == \
        pytest.approx(2.0 * 16)
    # Beyond the exact range (1e6 nodes of width 128 on the CPU): the
    # approximate search and the rest grow about linearly.
    assert device.resolved_backend(10**6, Args, cpu) != 'exact'
    assert device.estimate_s((10**5, 10.0), 10**6, Args, cpu) == \
        pytest.approx(10.0 * 10**1.15)
    Args.backend = 'exact'
    assert device.estimate_s((10**5, 10.0), 10**6, Args, cpu) == \
        pytest.approx(10.0 * 100)


@pytest.mark.slow
def test_gpu_session_script_runs_each_step_under_its_limit(tmp_path):
    env = dict(os.environ, DEVICE='cpu', STAGE_SIZES='300',
               TARGET_SIZES='400', TARGET_S='1', OUT=str(tmp_path),
               PATH=os.path.dirname(sys.executable) + os.pathsep +
               os.environ['PATH'])
    out = subprocess.run(['bash', os.path.join(ROOT, 'benchmarks',
                                               'gpu_session.sh')],
                         env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    log = (tmp_path / 'session.log').read_text()
    for step in ('device', 'tests', 'stages'):
        assert f'== {step}: exit 0' in log, log[-3000:]
    # The last step ran past its 1 s limit: stopped, and said so.
    assert '== target: exit 124' in log
    assert 'no GPU' in log
    stages = json.loads((tmp_path / 'stages' / 'device.json').read_text())
    assert [r['N'] for r in stages['results']] == [300]


def test_device_benchmark_refuses_cuda_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip('a CUDA device is present')
    out = run('--sizes', '300', '--out', str(tmp_path), script=DEVICE,
              ok=False)
    assert out.returncode != 0
    assert 'torch sees no CUDA device' in out.stderr
    assert not (tmp_path / 'device.json').exists()


def test_sparsify_benchmark_writes_its_records(tmp_path):
    run('--sizes', '300', '600', '--repeat', '1', '--out', str(tmp_path),
        script=os.path.join(ROOT, 'benchmarks', 'sparsify.py'))
    result = json.loads((tmp_path / 'sparsify.json').read_text())
    assert [r['N'] for r in result['rows']] == [300, 600]
    for r in result['rows']:
        assert r['topk_s'] > 0 and r['fusion_s'] > 0
        assert r['time_ratio'] == r['topk_s'] / r['fusion_s']
    assert '| 600 |' in (tmp_path / 'sparsify.md').read_text()


def test_fusion_study_markdown_matches_its_records(tmp_path):
    # The committed tables are what the committed records render to.
    results = os.path.join(ROOT, 'benchmarks', 'results')
    out = tmp_path / 'fusion.md'
    run('render', os.path.join(results, 'fusion.json'), '--dev',
        os.path.join(results, 'fusion_dev.json'), '--markdown', str(out),
        script=os.path.join(ROOT, 'benchmarks', 'multiview_fusion.py'))
    with open(os.path.join(results, 'fusion.md')) as f:
        assert out.read_text() == f.read()


LIBRARY = os.path.join(ROOT, 'benchmarks', 'library_replacements.py')


def test_library_replacements_benchmark_writes_its_records(tmp_path):
    pytest.importorskip('sklearn')
    run('--n', '300', '--frames', '3200', '--repeat', '1', '--least',
        '0.005', '--out', str(tmp_path), script=LIBRARY)
    result = json.loads((tmp_path / 'library_replacements.json').read_text())
    assert result['meta']['N'] == 300
    for r in result['rows']:
        assert r['hand_s'] > 0 and r['lib_s'] > 0
        assert r['ratio'] == r['lib_s'] / r['hand_s']
        assert r['same_output'], r['key']
        assert r['decision'].startswith(('kept', 'replaced', 'to replace'))
    md = (tmp_path / 'library_replacements.md').read_text()
    assert '| frame ROC AUC' in md


def test_library_replacements_markdown_matches_its_records(tmp_path):
    # The committed table is what the committed record renders to.
    results = os.path.join(ROOT, 'benchmarks', 'results')
    out = tmp_path / 'library_replacements.md'
    run('render', os.path.join(results, 'library_replacements.json'),
        '--markdown', str(out), script=LIBRARY)
    with open(os.path.join(results, 'library_replacements.md')) as f:
        assert out.read_text() == f.read()


VAD = os.path.join(ROOT, 'benchmarks', 'vad.py')


def test_vad_benchmark_writes_its_records(tmp_path):
    out = tmp_path / 'vad'
    run('run', '--seeds', '2', '--epochs', '1', '--num-train', '8',
        '--num-test', '6', '--T', '8', '--out', str(out), '--quiet',
        script=VAD)
    record = json.loads((tmp_path / 'vad.json').read_text())
    names = [r['model'] for r in record['rows']]
    assert 'lego masked rows' in names and 'attention' in names
    assert all(len(record['per_seed'][n]) == 2 for n in names)
    assert record['configs']['lego masked rows']['mode'] == 'masked'
    assert all(0 <= a <= 100 for aucs in record['deviation_auc'].values()
               for a in aucs)
    text = (tmp_path / 'vad.md').read_text()
    assert '| masked |' in text and '| target | measured | met |' in text


def test_vad_markdown_matches_its_records(tmp_path):
    results = os.path.join(ROOT, 'benchmarks', 'results')
    out = tmp_path / 'vad.md'
    run('render', os.path.join(results, 'vad.json'), '--markdown', str(out),
        script=VAD)
    with open(os.path.join(results, 'vad.md')) as f:
        assert out.read_text() == f.read()


SWITCHES = os.path.join(ROOT, 'benchmarks', 'switches.py')


def test_switches_benchmark_writes_its_records(tmp_path):
    run('--scale', '0.02', '--repeat', '1', '--least', '0', '--only',
        'sparsify_padded', 'cp_chunked', 'topk_group', '--out',
        str(tmp_path), script=SWITCHES)
    result = json.loads((tmp_path / 'switches.json').read_text())
    assert [r['key'] for r in result['rows']] == [
        'sparsify_padded', 'cp_chunked', 'topk_group']
    for r in result['rows']:
        assert r['on_s'] > 0 and r['off_s'] > 0
        assert r['gain'] == r['off_s'] / r['on_s']
        assert r['decision'].startswith(('keep', 'remove'))
    # topk_group may pick other members of a tie (inf: other indices).
    assert all(r['max_difference'] < 1e-5 for r in result['rows'][:2])
    cp = result['rows'][1]
    assert cp['saved_on'] < cp['saved_off']
    assert result['sync']['checks_s'] > 0
    text = (tmp_path / 'switches.md').read_text()
    assert '| sparsify_padded |' in text and 'PADDED_MAX_FILL' in text


def test_switches_markdown_matches_its_records(tmp_path):
    # The committed table is what the committed record renders to.
    results = os.path.join(ROOT, 'benchmarks', 'results')
    out = tmp_path / 'switches.md'
    run('render', os.path.join(results, 'switches.json'), '--markdown',
        str(out), script=SWITCHES)
    with open(os.path.join(results, 'switches.md')) as f:
        assert out.read_text() == f.read()


PARTITIONED = os.path.join(ROOT, 'benchmarks', 'partitioned.py')


def test_partitioned_benchmark_writes_its_records(tmp_path):
    run('--sizes', '600', '--worlds', '1', '2', '--k', '4', '--dims', '4',
        '3', '--out', str(tmp_path), script=PARTITIONED)
    result = json.loads((tmp_path / 'partitioned.json').read_text())
    assert [(j['N'], j['W']) for j in result['jobs']] == [(600, 1), (600, 2)]
    for job in result['jobs']:
        for r in job['ranks']:
            assert r['rows'] == 600 // job['W']
            for s in r['stages'].values():
                assert s['time_s'] >= 0 and s['peak_rss'] > r['base_rss'] / 2
    assert '| 600 | 2 |' in (tmp_path / 'partitioned.md').read_text()


def test_partitioned_markdown_matches_its_records(tmp_path):
    # The committed tables are what the committed record renders to.
    results = os.path.join(ROOT, 'benchmarks', 'results')
    out = tmp_path / 'partitioned.md'
    run('render', os.path.join(results, 'partitioned.json'), '--markdown',
        str(out), script=PARTITIONED)
    with open(os.path.join(results, 'partitioned.md')) as f:
        assert out.read_text() == f.read()


def test_fusion_overlap_markdown_matches_its_records():
    spec = importlib.util.spec_from_file_location(
        'multiview_fusion', os.path.join(ROOT, 'benchmarks',
                                         'multiview_fusion.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = os.path.join(ROOT, 'benchmarks', 'results')
    with open(os.path.join(results, 'fusion_overlap.json')) as f:
        record = json.load(f)
    with open(os.path.join(results, 'fusion_overlap.md')) as f:
        assert module.overlap_markdown(record) == f.read()
    # The given graphs of the multiplex SBM share no edge.
    assert record['datasets']['multiplex-sbm']['all_views'] == 0.0


def test_fusion_overlap_stage_writes_its_records(tmp_path):
    run('overlap', '--small', '--datasets', 'multiplex-sbm', 'digits',
        '--out', str(tmp_path / 'o.json'), '--markdown',
        str(tmp_path / 'o.md'),
        script=os.path.join(ROOT, 'benchmarks', 'multiview_fusion.py'))
    record = json.loads((tmp_path / 'o.json').read_text())
    assert list(record['datasets']) == ['multiplex-sbm', 'digits']
    sbm = record['datasets']['multiplex-sbm']
    assert len(sbm['per_view']) == len(sbm['views']) == 4
    assert sbm['all_views'] <= min(sbm['per_view'])
    assert sbm['all_views'] <= sbm['all_views_any_order'] <= 1
    assert '| digits |' in (tmp_path / 'o.md').read_text()
