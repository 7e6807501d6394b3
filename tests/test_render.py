r"""The README's rendered figures match the committed records."""
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location(
    'render', os.path.join(ROOT, 'benchmarks', 'render.py'))
render = importlib.util.module_from_spec(spec)
spec.loader.exec_module(render)


def test_readme_blocks_match_the_records():
    with open(render.README) as f:
        text = f.read()
    assert '<!-- render:fusion -->' in text
    assert '<!-- render:vad -->' in text
    assert '<!-- render:partitioned -->' in text
    assert render.render(text) == text, \
        'README.md is stale: run python benchmarks/render.py'


def test_render_replaces_blocks_and_rejects_unknown_ones(monkeypatch):
    monkeypatch.setitem(render.RENDERERS, 'demo', lambda: 'new\n')
    text = 'a\n<!-- render:demo -->\nold\n<!-- /render:demo -->\nb'
    assert render.render(text) == ('a\n<!-- render:demo -->\nnew\n'
                                   '<!-- /render:demo -->\nb')
    with pytest.raises(ValueError, match="no renderer for block 'nope'"):
        render.render('<!-- render:nope -->\nx\n<!-- /render:nope -->')
