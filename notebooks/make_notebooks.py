r"""Writes the notebooks of this folder from the cell sources below and, with
``--execute``, runs them (in the small setting, ``PYG_LEGO_SMALL=1``) so that
the committed files keep their figures. Large text outputs are cut.

    python notebooks/make_notebooks.py --execute
"""
import argparse
import os
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_TEXT = 4000  # characters kept of one text output

SETUP = """\
%matplotlib inline
import os
import tempfile
import warnings

import torch
from IPython.display import Image, Markdown, display

warnings.filterwarnings('ignore', message='IProgress not found')
from pyg_lego.multiview.suites import small_setting

SMALL = small_setting()  # PYG_LEGO_SMALL=1: the quick setting of CI
torch.manual_seed(0)
torch.set_num_threads(1)
FIGURES = tempfile.mkdtemp()
print('small setting' if SMALL else 'full setting')"""

QUICKSTART = [
    new_markdown_cell("""\
# Quickstart: from several views to one fused graph

Three views of scikit-learn's handwritten digits (raw pixels, gradient-orientation
histograms, coarse shape profiles) become one relation graph; each view's graph is
expanded into powers; LEGO learns how to combine them while a GCN classifies the
digits from a few labels. Set `PYG_LEGO_SMALL=1` for a quick run (as in CI)."""),
    new_code_cell(SETUP),
    new_markdown_cell("""\
## 1. Views and the relation graph
Every view selects its `k` nearest neighbours (cosine); the union of those edges plus
self-loops is the shared pattern `E`, and every view is scored on every edge of it."""),
    new_code_cell("""\
from pyg_lego import build_relation_graph
from pyg_lego.multiview import digits_views

data = digits_views(num_nodes=300 if SMALL else None)
print(data)
graph = build_relation_graph(data.views, k=10)
print(graph)
print('edges per node:', graph.num_edges / graph.num_nodes)
print('scores of the first edges [E, M]:')
print(graph.edge_attr[:4])"""),
    new_markdown_cell("""\
## 2. Expansions
`GraphPowerConv` turns the scores `[E, M]` into orders `p = 0..P` on the same
pattern, in three ways: element-wise powers, the masked matrix power, and
propagated features. How much weight does each order keep between nodes of the
same class?"""),
    new_code_cell("""\
from pyg_lego.nn import GraphPowerConv
from pyg_lego.data import view_features

same = data.y[graph.edge_index[0]] == data.y[graph.edge_index[1]]
off = graph.edge_index[0] != graph.edge_index[1]
xs = view_features(graph, graph.view_names)
for mode in ('elementwise', 'masked', 'propagated'):
    powers = GraphPowerConv(P=3, mode=mode)(graph.edge_index, graph.edge_attr, xs=xs)
    # share of each order's off-diagonal weight on same-class edges, per view
    share = (powers[same & off].sum(0) / powers[off].sum(0)).T
    print(mode, tuple(powers.shape))
    for p, row in enumerate(share):
        if p > 0:
            print(f'  p={p}: ' + '  '.join(f'{n}={v:.2f}' for n, v in zip(graph.view_names, row)))"""),
    new_markdown_cell("""\
## 3. Fuse and learn
`LEGOClassifier` feeds LEGO's fused graph (masked expansion, linear fusion, each
node's 20 heaviest fused edges kept: the library's defaults) as the edge weight of a
two-layer GCN; the fusion coefficients are trained end to end with it, from 5
labelled digits per class (validation: 10 per class)."""),
    new_code_cell("""\
from pyg_lego.multiview import LEGOClassifier, expand, make_split
from pyg_lego.multiview.experiment import train_node_classifier

split = make_split(data.y, per_class=5, val_per_class=10, seed=0)
x = data.node_features()
model = LEGOClassifier(graph.view_names, expand(graph, P=2, mode='masked'), 'gcn',
                       x.size(1), 64, data.num_classes, fusion='linear', topk=20)
val, test, epochs = train_node_classifier(
    model, lambda: model(x, graph.edge_index), data.y, split, lr=0.03,
    weight_decay=5e-4, epochs=200, patience=30,
    no_decay=list(model.fusion.parameters()))
print(f'validation {val:.3f}, test {test:.3f} after {epochs} epochs')"""),
    new_markdown_cell("""\
## 4. The fused graph and its coefficients
Nodes sorted by class: an informative graph is block-diagonal. Left: the plain
average of the three views' scores on the whole pattern; right: the learned,
sparsified fused graph. Their weighted homophily (share of edge weight between
digits of the same class) says the same in one number."""),
    new_code_cell("""\
from pyg_lego.multiview.figures import adjacency_figure

from pyg_lego.diagnostics import graph_quality

fused = model.fused_graph(graph.edge_index, graph.num_nodes).detach()
graphs = {'mean of the views': (graph.edge_index, graph.edge_attr.mean(-1)),
          'LEGO fused graph': (graph.edge_index, fused)}
for name, (ei, w) in graphs.items():
    print(name, {k: round(v, 3) for k, v in graph_quality(ei, data.y, w).items()})
nodes = torch.randperm(data.num_nodes)[:120]
display(adjacency_figure(graphs, data.y, nodes))"""),
    new_code_cell("""\
from pyg_lego import plot_coefficients

table = model.coefficients()
print(table.to_markdown())
display(Image(plot_coefficients(table, os.path.join(FIGURES, 'coefficients.png'))))"""),
]

BASELINES = [
    new_markdown_cell("""\
# LEGO against the multi-view baselines

The fusion study of the README (`pyg_lego.multiview.fusion_study`, the same code as
`python benchmarks/multiview_fusion.py`): four multi-view data sets, 2 to 20 labels per
class, 10 seeds, every method tuned with the same budget on validation nodes, paired
Wilcoxon tests against the best baseline of each cell. Its full run takes about an hour
on two cores, so the first cells render the committed records; a small live run and
the robustness suite follow (with `PYG_LEGO_SMALL=1`, as in CI, their numbers are only
a smoke test)."""),
    new_code_cell(SETUP),
    new_code_cell("""\
import json
from pyg_lego.multiview.fusion_report import render_study

with open(os.path.join('..', 'benchmarks', 'results', 'fusion.json')) as f:
    study = json.load(f)
with open(os.path.join('..', 'benchmarks', 'results', 'fusion_dev.json')) as f:
    dev = json.load(f)
display(Markdown(render_study(study, dev)))"""),
    new_markdown_cell("""\
## A live run
The study on the breast-cancer views in its small setting (300 nodes where a data set
is larger, one label rate, three seeds, one configuration per method)."""),
    new_code_cell("""\
from pyg_lego.multiview.fusion_study import run_fusion_study

live = run_fusion_study(['breast-cancer'], small=True, progress=False)
display(Markdown(render_study(live)))"""),
    new_markdown_cell("""\
## Robustness: a noise view and a corrupted view
Two views are added to the digits: Gaussian noise, and the pixels with their rows
permuted (a view that looks good but describes the wrong digits). The node features of
every method now include them too. The share table shows how much of the linear fusion
weight each view keeps."""),
    new_code_cell("""\
from pyg_lego.multiview.experiment import to_markdown
from pyg_lego.multiview.figures import summary_figure
from pyg_lego.multiview.suites import run_suite, shares_markdown

robust = run_suite('robustness', small=SMALL, progress=False)
print(robust['data'])
summary = {m: {int(r): tuple(v) for r, v in rates.items()}
           for m, rates in robust['summary'].items()}
display(Markdown(to_markdown(summary)))
display(summary_figure(summary, 'digits + noise view + permuted pixels'))
display(Markdown(shares_markdown(robust)))"""),
]

GIVEN = [
    new_markdown_cell("""\
# Fusing given graphs

Views need not be features: a `GivenGraph` enters the relation graph with its own
edges. Here a generated multiplex stochastic block model has node features and three
edge types: `friends` (mostly within a class), `random` (unrelated to the classes) and
`rivals` (only between classes). Which ones does LEGO learn to use?"""),
    new_code_cell(SETUP),
    new_code_cell("""\
from pyg_lego.multiview import multiplex_sbm

data = multiplex_sbm(num_nodes=200 if SMALL else 600)
print(data)
for name, g in data.graph_views.items():
    row, col = g.edge_index
    same = float((data.y[row] == data.y[col]).float().mean())
    print(f'{name:8s} {g.edge_index.size(1):5d} edges, same-class share {same:.2f}')"""),
    new_markdown_cell("""\
## One model, its coefficients
LEGO (masked expansion, linear fusion) + GCN on the features, trained from 5 labels
per class. The linear fusion has one row per view and one column per order."""),
    new_code_cell("""\
from pyg_lego import plot_coefficients
from pyg_lego.multiview import Context, Method, make_split
from pyg_lego.multiview.experiment import fit_method, view_shares

ctx = Context(data, k=10)
split = make_split(data.y, per_class=5, val_per_class=10, seed=0)
fit = fit_method(Method('LEGO', 'lego', 'gcn', mode='masked', fusion='linear'), ctx,
                 split, dict(lr=0.03, hidden=64, dropout=0.3, weight_decay=5e-4))
print(f'validation {fit.val:.3f}, test {fit.test:.3f}')
table = fit.model.coefficients()
print(table.to_markdown())
shares = view_shares(table, 'masked')
print('view shares (orders >= 1):', {k: round(v, 2) for k, v in shares.items()})
print('ranking:', ' > '.join(sorted(shares, key=shares.get, reverse=True)))
display(Image(plot_coefficients(table, os.path.join(FIGURES, 'sbm.png'))))"""),
    new_markdown_cell("""\
## Against the baselines
GCN on each view's graph alone, on the union and the mean of all graphs, and LEGO
with both expansions that accept given graphs and both fusion kinds. The polynomial
fusion multiplies the views' factors edge by edge, so an edge that one given graph
lacks is scaled down by that graph's factor: it favours edges the graphs agree on."""),
    new_code_cell("""\
from pyg_lego.multiview.experiment import to_markdown
from pyg_lego.multiview.figures import summary_figure
from pyg_lego.multiview.suites import run_suite, shares_markdown

result = run_suite('given_graphs', small=SMALL, progress=False)
summary = {m: {int(r): tuple(v) for r, v in rates.items()}
           for m, rates in result['summary'].items()}
display(Markdown(to_markdown(summary)))
display(Markdown(shares_markdown(result)))
display(summary_figure(summary, 'multiplex SBM'))"""),
    new_markdown_cell("""\
## In the fusion study
The same data set in the committed fusion study (every label rate, 10 seeds, SNF and the
semantic-attention GNN among the baselines; cells: accuracy, weighted homophily of the
method's graph, p-value against the best baseline)."""),
    new_code_cell("""\
import json
from pyg_lego.multiview.fusion_report import dataset_markdown
from pyg_lego.multiview.fusion_study import study_tables

with open(os.path.join('..', 'benchmarks', 'results', 'fusion.json')) as f:
    study = json.load(f)
tables = study_tables(study)['tables']
display(Markdown(dataset_markdown('multiplex-sbm', tables['multiplex-sbm'])))"""),
]

VAD = [
    new_markdown_cell("""\
# Video anomaly detection with the library's own API

A walkthrough of `pyg_lego.vad` on its seeded synthetic benchmark (no download):
several feature views per snippet, only video-level labels for training, frame-level
ROC AUC / AP for evaluation. The same runs are available from the command line as
`pyg-lego vad ...` (see `pyg-lego vad --help`). With `PYG_LEGO_SMALL=1` (CI) the
videos are few and training is short, so the scores are only a smoke test."""),
    new_code_cell(SETUP),
    new_code_cell("""\
from pyg_lego.vad.synthetic import make_synthetic, view_visibility

train_videos, test_videos = make_synthetic(num_train=40 if SMALL else 200,
                                           num_test=20 if SMALL else 100, seed=0)
views = list(train_videos[0].views)
dims = {name: int(x.shape[1]) for name, x in train_videos[0].views.items()}
print(len(train_videos), 'training videos,', len(test_videos), 'test videos; views', dims)
print('anomalous training videos:', sum(v.label for v in train_videos))
# how well each view alone separates each anomaly type (0.5: blind)
for category, aucs in view_visibility(test_videos).items():
    print(f'{category:12s}', '  '.join(f'{v}={a:.2f}' for v, a in aucs.items()))"""),
    new_markdown_cell("""\
## One relation graph per video
Every video is resampled to `T = 32` snippets and becomes a small complete relation
graph over its snippets, one score column per view; graphs batch like any PyG data."""),
    new_code_cell("""\
from pyg_lego.vad.video import VideoGraphDataset

train_set = VideoGraphDataset(train_videos, T=32)
test_set = VideoGraphDataset(test_videos, T=32)
print(train_set[0])"""),
    new_markdown_cell("""\
## Train LEGO and a feature-concatenation baseline
Top-k multiple-instance loss on video labels only; the same epochs for all. `lego` is the
paper's head (each snippet's row of the fused graph); `lego+features` appends a projection
of the snippet's features to that row, which is what works best on this benchmark (see the
README's demo table)."""),
    new_code_cell("""\
from pyg_lego.vad.train import TrainConfig, evaluate, train

epochs = 15 if SMALL else 30
results = {}
for name in ('lego', 'lego+features', 'concat'):
    config = TrainConfig(model=name, views=views, dims=dims, epochs=epochs, seed=0)
    run = train(config, train_set, progress=False)
    metrics = evaluate(run['model'], test_set)
    results[name] = (run['model'], metrics)
    print(f"{name:14s} frame AUC {metrics['auc']:.3f}  AP {metrics['ap']:.3f}  "
          f"final loss {run['history'][-1]:.3f}")"""),
    new_markdown_cell("""\
## What LEGO learned
The fusion coefficients (orders of one view against orders of the other for two
views, CP components otherwise), and one anomalous test video's snippet scores
against its frame labels."""),
    new_code_cell("""\
from pyg_lego import plot_coefficients

lego, metrics = results['lego+features']
table = lego.coefficients()
print(table.to_markdown())
display(Image(plot_coefficients(table, os.path.join(FIGURES, 'vad.png'))))"""),
    new_code_cell("""\
import numpy as np
from matplotlib.figure import Figure

i = next(i for i, v in enumerate(test_videos) if v.label == 1)
video, scores = test_videos[i], metrics['scores'][i]
fig = Figure(figsize=(7, 2.4), dpi=80)
ax = fig.add_subplot()
frames = np.arange(len(video.frame_labels))
ax.fill_between(frames, 0, video.frame_labels, color='tab:red', alpha=0.2,
                label='anomalous frames')
ax.plot(np.linspace(0, len(frames), len(scores)), scores, label='LEGO snippet score')
ax.set_xlabel('frame'); ax.set_ylim(0, 1.05); ax.legend(fontsize=8)
ax.set_title(video.name)
fig.tight_layout()
display(fig)"""),
]

NOTEBOOKS = {
    '01_quickstart.ipynb': QUICKSTART,
    '02_multiview_baselines.ipynb': BASELINES,
    '03_given_graphs.ipynb': GIVEN,
    '04_video_anomaly.ipynb': VAD,
}


def build(cells) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3',
                                 'language': 'python'}
    nb.metadata['language_info'] = {'name': 'python'}
    return nb


def strip_large_outputs(nb: nbformat.NotebookNode) -> None:
    r"""Cuts long text outputs (progress, logs); keeps images and
    markdown."""
    for cell in nb.cells:
        if cell.cell_type != 'code':
            continue
        cell.metadata.pop('execution', None)
        for out in cell.get('outputs', []):
            if out.get('output_type') == 'stream' and \
                    len(out.get('text', '')) > MAX_TEXT:
                out['text'] = out['text'][:MAX_TEXT] + '\n[... cut ...]\n'
            data = out.get('data', {})
            for key in ('text/plain', 'text/html'):
                if key in data and len(data[key]) > MAX_TEXT and \
                        len(data) > 1:
                    del data[key]


def execute(nb: nbformat.NotebookNode, timeout: int = 600) -> None:
    from nbclient import NotebookClient
    NotebookClient(nb, timeout=timeout, kernel_name='python3',
                   resources={'metadata': {'path': HERE}}).execute()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--execute', action='store_true')
    parser.add_argument('names', nargs='*', help='notebooks to write '
                        '(default: all)')
    args = parser.parse_args(argv)
    os.environ.setdefault('PYG_LEGO_SMALL', '1')
    for name, cells in NOTEBOOKS.items():
        if args.names and name not in args.names:
            continue
        nb = build(cells)
        if args.execute:
            execute(nb)
            strip_large_outputs(nb)
        nbformat.validate(nb)
        path = os.path.join(HERE, name)
        nbformat.write(nb, path)
        print(f'{path}: {os.path.getsize(path) / 1024:.0f} KB', file=sys.stderr)


if __name__ == '__main__':
    main()
