r"""Every notebook in notebooks/ runs in the small setting, in a kernel that
is this environment's Python."""
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')
pytest.importorskip('ipykernel')

NOTEBOOKS = Path(__file__).resolve().parent.parent / 'notebooks'
PATHS = sorted(NOTEBOOKS.glob('*.ipynb'))
MAX_BYTES = 300 * 1024


def _run(nb, timeout=300):
    # kernel_name='python3' is ipykernel's native kernel: jupyter_client
    # starts it with sys.executable, so the notebook sees this venv.
    client = nbclient.NotebookClient(
        nb, timeout=timeout, kernel_name='python3',
        resources={'metadata': {'path': str(NOTEBOOKS)}})
    return client.execute()


def test_kernel_is_this_python(monkeypatch):
    monkeypatch.setenv('PYG_LEGO_SMALL', '1')
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os, sys, pyg_lego\n"
        "print(sys.executable, sys.prefix, os.environ['PYG_LEGO_SMALL'])")])
    outputs = _run(nb, timeout=120).cells[0].outputs
    out = ''.join(o['text'] for o in outputs
                  if o.get('name') == 'stdout').split()
    # sys.prefix names the venv (the executable may be a symlink out of it)
    assert out == [sys.executable, sys.prefix, '1']


def test_all_notebooks_are_here():
    names = {p.name for p in PATHS}
    assert {'01_quickstart.ipynb', '02_multiview_baselines.ipynb',
            '03_given_graphs.ipynb'} <= names


@pytest.mark.parametrize('path', PATHS, ids=[p.name for p in PATHS])
def test_notebook_runs(path, monkeypatch):
    assert path.stat().st_size < MAX_BYTES, f'{path.name} is too large'
    monkeypatch.setenv('PYG_LEGO_SMALL', '1')
    nb = nbformat.read(path, as_version=4)
    # committed notebooks keep their figures
    pngs = [o for c in nb.cells if c.cell_type == 'code'
            for o in c.get('outputs', []) if 'image/png' in o.get('data', {})]
    assert pngs, f'{path.name} has no figure in its committed outputs'
    for cell in nb.cells:
        if cell.cell_type == 'code':
            cell.outputs = []
    executed = _run(nb)
    errors = [o for c in executed.cells if c.cell_type == 'code'
              for o in c.outputs if o.get('output_type') == 'error']
    assert not errors
    ran = [c for c in executed.cells if c.cell_type == 'code']
    assert all(c.get('execution_count') for c in ran)
    assert 'small setting' in ''.join(
        o.get('text', '') for o in ran[0].outputs)
