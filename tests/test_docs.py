"""The documentation site builds with warnings as errors, and a broken
cross-reference in a docstring fails it.

Both tests run ``python -m sphinx`` in a subprocess (the interpreter running
the tests, so the venv's) and are skipped where the docs extra is not
installed.
"""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip('sphinx')
pytest.importorskip('furo')
pytest.importorskip('myst_nb')

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / 'docs'


def sphinx_build(source: Path, out: Path, env=None):
    return subprocess.run(
        [sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-q', '-b',
         'html', '-d', str(out / '.doctrees'), str(source), str(out)],
        capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)


def test_site_builds_without_warnings(tmp_path):
    out = tmp_path / 'html'
    result = sphinx_build(DOCS, out)
    assert result.returncode == 0, result.stderr[-6000:]
    for page in ['index', 'method', 'tutorials', 'benchmarks', 'api/index',
                 'api/pyg_lego', 'api/nn', 'api/data', 'api/multiview',
                 'api/vad', 'api/training', 'api/dense', 'api/diagnostics',
                 'api/transforms']:
        assert (out / f'{page}.html').is_file(), page
    notebooks = sorted(p.stem for p in (ROOT / 'notebooks').glob('*.ipynb'))
    assert notebooks
    for name in notebooks:
        html = (out / 'tutorials' / f'{name}.html').read_text()
        # Rendered with the outputs stored in the notebook (figures included).
        assert 'cell_output' in html, name
    nn_page = (out / 'api' / 'nn.html').read_text()
    assert 'id="pyg_lego.nn.LEGO"' in nn_page
    assert 'id="pyg_lego.nn.GraphPowerConv"' in nn_page


def test_broken_docstring_reference_fails(tmp_path):
    # The site's own configuration on a one-page project whose only object
    # has a docstring naming an object that pyg_lego does not have.
    source = tmp_path / 'src'
    source.mkdir()
    shutil.copy(DOCS / 'conf.py', source / 'conf.py')
    (source / 'index.rst').write_text(textwrap.dedent("""\
        Broken
        ======

        .. autofunction:: broken_module.fused
        """))
    (tmp_path / 'broken_module.py').write_text(textwrap.dedent('''\
        def fused():
            """Returns :class:`~pyg_lego.nn.LEGOFusionn`'s output."""
        '''))
    env = dict(os.environ)
    env['PYTHONPATH'] = str(tmp_path) + (
        ':' + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
    result = sphinx_build(source, tmp_path / 'html', env=env)
    assert result.returncode != 0
    assert 'pyg_lego.nn.LEGOFusionn' in result.stderr
    assert 'reference target not found' in result.stderr
