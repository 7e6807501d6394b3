r"""Renders the README's figures from the committed records under
``benchmarks/results/``: every block between ``<!-- render:NAME -->`` and
``<!-- /render:NAME -->`` is replaced by the output of its renderer.

    python benchmarks/render.py           # rewrite README.md
    python benchmarks/render.py --check   # exit 1 where README.md is stale
"""
import argparse
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, 'benchmarks', 'results')
README = os.path.join(ROOT, 'README.md')


def _load(name):
    with open(os.path.join(RESULTS, name)) as f:
        return json.load(f)


def fusion():
    from pyg_lego.multiview.fusion_report import readme_summary
    return readme_summary(_load('fusion.json'))


def vad():
    sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
    from vad import readme_summary
    return readme_summary(_load('vad.json'))


def partitioned():
    sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
    from partitioned import readme_line
    return readme_line(_load('partitioned.json'))


RENDERERS = {'fusion': fusion, 'vad': vad, 'partitioned': partitioned}
BLOCK = re.compile(r'(<!-- render:(\w+) -->\n)(.*?)(<!-- /render:\2 -->)',
                   re.S)


def render(text: str) -> str:
    r"""The text with every block re-rendered; an unknown block name is an
    error."""
    def replace(match):
        name = match.group(2)
        if name not in RENDERERS:
            raise ValueError(f"no renderer for block {name!r}; renderers: "
                             f"{sorted(RENDERERS)}")
        return f'{match.group(1)}{RENDERERS[name]().strip()}\n{match.group(4)}'
    return BLOCK.sub(replace, text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--check', action='store_true')
    args = parser.parse_args(argv)
    with open(README) as f:
        text = f.read()
    new = render(text)
    if args.check:
        if new != text:
            print('README.md is stale: run python benchmarks/render.py',
                  file=sys.stderr)
            return 1
        return 0
    with open(README, 'w') as f:
        f.write(new)
    return 0


if __name__ == '__main__':
    sys.exit(main())
