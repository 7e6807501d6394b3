r"""The README's Python examples run as written."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / 'README.md'
BLOCKS = re.findall(r'```python\n(.*?)```', README.read_text(), re.S)


@pytest.mark.parametrize('code', BLOCKS, ids=lambda c: c.splitlines()[0][:40])
def test_readme_example_runs(code, tmp_path, monkeypatch):
    pytest.importorskip('matplotlib')
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README), 'exec'), {'__name__': '__readme__'})


def test_readme_has_examples():
    assert BLOCKS
