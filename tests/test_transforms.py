import warnings

import pytest
import torch
import torch_geometric.transforms as T
from torch_geometric.data import Batch, Data, InMemoryDataset
from torch_geometric.loader import DataLoader

from pyg_lego import LEGO, GraphPowers, RelationGraph
from pyg_lego.data import RelationData, build_relation_graph
from pyg_lego.nn import GraphPowerConv


def _graph(num_nodes=9, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Data(x_rgb=torch.randn(num_nodes, 4, generator=gen,
                                  dtype=torch.float64),
                x_flow=torch.randn(num_nodes, 3, generator=gen,
                                   dtype=torch.float64),
                y=torch.randint(0, 2, (num_nodes,), generator=gen))


def test_relation_graph_matches_builder():
    data = _graph()
    out = RelationGraph(['x_rgb', 'x_flow'], k=3)(data.clone())
    ref = build_relation_graph({'rgb': data.x_rgb, 'flow': data.x_flow}, k=3)
    assert isinstance(out, RelationData)
    assert out.edge_index.size(0) == 2
    assert out.edge_attr.shape == (out.edge_index.size(1), 2)
    assert torch.equal(out.edge_index, ref.edge_index)
    assert torch.equal(out.edge_attr, ref.edge_attr)
    assert out.view_names == ['rgb', 'flow'] == ref.view_names
    assert (out.similarity, out.score_map) == (ref.similarity, ref.score_map)
    assert out.num_nodes == data.x_rgb.size(0)
    # The graph's other attributes are kept, the features where LEGO reads
    # them.
    assert torch.equal(out.y, data.y)
    assert torch.equal(out.x_rgb, data.x_rgb)


def test_relation_graph_forwards_its_settings():
    data = _graph(num_nodes=7)
    n = data.x_rgb.size(0)
    out = RelationGraph(['x_rgb', 'x_flow'], k=n - 1, similarity='rbf',
                        gamma=0.5, self_loops=False)(data.clone())
    ref = build_relation_graph({'rgb': data.x_rgb, 'flow': data.x_flow},
                               k=n - 1, similarity='rbf', gamma=0.5,
                               self_loops=False)
    assert torch.equal(out.edge_index, ref.edge_index)
    assert torch.equal(out.edge_attr, ref.edge_attr)
    # Independently: the complete graph without self-loops, scored by the
    # RBF kernel with the given bandwidth.
    row, col = out.edge_index
    assert out.edge_index.size(1) == n * (n - 1)
    assert bool((row != col).all())
    for m, x in enumerate([data.x_rgb, data.x_flow]):
        dense = torch.exp(-0.5 * torch.cdist(x, x)**2)
        assert torch.allclose(out.edge_attr[:, m], dense[row, col])
    cosine = RelationGraph(['x_rgb', 'x_flow'], k=n - 1,
                           self_loops=False)(data.clone())
    assert not torch.allclose(cosine.edge_attr, out.edge_attr)


def test_relation_graph_named_views_and_plain_attributes():
    data = _graph()
    data.pos = data.x_flow.clone()
    out = RelationGraph({'a': 'x_rgb', 'b': 'pos'}, k=2)(data.clone())
    ref = build_relation_graph({'a': data.x_rgb, 'b': data.pos}, k=2)
    assert out.view_names == ['a', 'b']
    assert torch.equal(out.edge_attr, ref.edge_attr)
    assert out.x_a is out.x_rgb and torch.equal(out.x_b, data.pos)
    # An attribute not named x_<view> is its view's name.
    assert RelationGraph(['pos'], k=2)(data.clone()).view_names == ['pos']


def test_relation_graph_replaces_an_earlier_graph():
    data = _graph()
    data.edge_index = torch.tensor([[0, 1], [1, 0]])
    data.edge_weight = torch.ones(2)
    out = RelationGraph(['x_rgb', 'x_flow'], k=2)(data)
    assert 'edge_weight' not in out
    assert out.edge_attr.size(0) == out.edge_index.size(1) > 2


class _Graph(Data):
    pass


def test_relation_graph_keeps_data_subclasses_and_its_input():
    data = _Graph(**_graph().to_dict())
    out = RelationGraph(['x_rgb'], k=2)(data)
    assert type(out) is _Graph and 'edge_attr' in out
    assert 'edge_attr' not in data and 'view_names' not in data
    plain = _graph()
    out = RelationGraph(['x_rgb'], k=2)(plain)
    assert type(out) is RelationData and 'edge_attr' not in plain


def test_repr():
    assert repr(RelationGraph(['x_rgb', 'x_flow'], k=7, similarity='dot',
                              backend='exact')) == (
        "RelationGraph(views=['x_rgb', 'x_flow'], k=7, similarity='dot', "
        "score_map='auto', backend='exact')")
    assert repr(RelationGraph({'a': 'pos'}, k=3)) == (
        "RelationGraph(views={'a': 'pos'}, k=3, similarity='cosine', "
        "score_map='auto', backend='auto')")
    assert repr(GraphPowers(3, mode='elementwise', kernel='torch')) == (
        "GraphPowers(P=3, mode='elementwise', order0='self', "
        "kernel='torch', key='edge_powers')")


@pytest.mark.parametrize('mode', ['elementwise', 'masked', 'propagated'])
def test_graph_powers_match_the_conv(mode):
    data = RelationGraph(['x_rgb', 'x_flow'], k=3)(_graph())
    out = GraphPowers(2, mode=mode, kernel='torch')(data.clone())
    xs = [data.x_rgb, data.x_flow] if mode == 'propagated' else None
    ref = GraphPowerConv(2, mode=mode, kernel='torch')(
        data.edge_index, data.edge_attr, xs=xs, num_nodes=data.num_nodes)
    assert out.edge_powers.shape == (data.edge_index.size(1), 2, 3)
    assert torch.equal(out.edge_powers, ref)
    assert not out.edge_powers.requires_grad
    # The input graph is left as it was.
    assert torch.equal(out.edge_attr, data.edge_attr)


def test_graph_powers_dense_oracle():
    # On the complete graph, the masked power is the dense matrix power of
    # D^-1/2 R D^-1/2 and the element-wise one the entry-wise power.
    n = 9
    data = RelationGraph(['x_rgb', 'x_flow'], k=n - 1)(_graph(num_nodes=n))
    row, col = data.edge_index
    assert data.edge_index.size(1) == n * n
    masked = GraphPowers(3, mode='masked',
                         kernel='torch')(data.clone()).edge_powers
    elementwise = GraphPowers(3, mode='elementwise',
                              key='powers')(data.clone()).powers
    for m in range(2):
        r = torch.zeros(n, n, dtype=data.edge_attr.dtype)
        r[row, col] = data.edge_attr[:, m]
        dinv = r.sum(1).rsqrt()
        a = dinv[:, None] * r * dinv[None, :]
        for p in range(4):
            dense = torch.linalg.matrix_power(a, p)
            assert torch.allclose(masked[:, m, p], dense[row, col])
            entry = torch.eye(n, dtype=r.dtype) if p == 0 else r**p
            assert torch.allclose(elementwise[:, m, p], entry[row, col])


def test_compose_and_precomputed_fusion():
    transform = T.Compose([RelationGraph(['x_rgb', 'x_flow'], k=3),
                           GraphPowers(2, mode='masked', kernel='torch')])
    data = _graph()
    out = transform(data.clone())
    graph = build_relation_graph({'rgb': data.x_rgb, 'flow': data.x_flow},
                                 k=3)
    ref = GraphPowerConv(2, kernel='torch')(graph.edge_index,
                                            graph.edge_attr,
                                            num_nodes=graph.num_nodes)
    assert torch.equal(out.edge_powers, ref)
    # What the transform precomputes is what LEGO would expand.
    model = LEGO(out.view_names, P=2, mode='masked', kernel='torch').double()
    assert torch.allclose(model.fusion(out.edge_powers), model.fuse(out))


class _Views(InMemoryDataset):
    sizes = (7, 9, 11)

    def __init__(self, root, transform=None, pre_transform=None):
        super().__init__(root, transform, pre_transform)
        self.load(self.processed_paths[0])

    @property
    def raw_file_names(self):
        return []

    @property
    def processed_file_names(self):
        return ['data.pt']

    def download(self):
        pass

    def process(self):
        data_list = [_graph(n, seed=n) for n in self.sizes]
        if self.pre_transform is not None:
            data_list = [self.pre_transform(d) for d in data_list]
        self.save(data_list, self.processed_paths[0])


def test_pre_transform_of_a_dataset(tmp_path):
    def pre_transform():
        return T.Compose([RelationGraph(['x_rgb', 'x_flow'], k=3),
                          GraphPowers(2, mode='masked', kernel='torch')])
    dataset = _Views(tmp_path, pre_transform=pre_transform())
    assert len(dataset) == len(_Views.sizes)
    # Loaded again from disk, as PyG loads it (weights_only), no warning.
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        again = _Views(tmp_path, pre_transform=pre_transform())
    for i, n in enumerate(_Views.sizes):
        raw = _graph(n, seed=n)
        ref = pre_transform()(raw.clone())
        for got in (dataset[i], again[i]):
            assert got.num_nodes == n
            assert got.view_names == ['rgb', 'flow']
            assert torch.equal(got.edge_index, ref.edge_index)
            assert torch.equal(got.edge_attr, ref.edge_attr)
            assert torch.equal(got.edge_powers, ref.edge_powers)
            assert torch.equal(got.y, raw.y)
    # Mini-batches of the precomputed graphs fuse as the graphs do.
    batch = next(iter(DataLoader(again, batch_size=3)))
    model = LEGO(['rgb', 'flow'], P=2, mode='masked',
                 kernel='torch').double()
    fused = model.fusion(batch.edge_powers)
    parts = torch.cat([model.fuse(again[i]) for i in range(len(again))])
    assert torch.allclose(fused, parts)
    assert torch.allclose(fused, model.fuse(batch))


def test_as_transform_of_a_dataset(tmp_path):
    dataset = _Views(tmp_path, transform=RelationGraph(['x_rgb'], k=2))
    ref = build_relation_graph({'rgb': _graph(7, seed=7).x_rgb}, k=2)
    assert torch.equal(dataset[0].edge_attr, ref.edge_attr)


@pytest.mark.parametrize('kwargs,error,match', [
    (dict(views=['x_rgb'], k=0), ValueError, 'k >= 1'),
    (dict(views=['x_rgb'], k=-2), ValueError, 'k >= 1'),
    (dict(views=['x_rgb'], k=2.5), TypeError, 'positive integer'),
    (dict(views=[]), ValueError, 'empty'),
    (dict(views='x_rgb'), TypeError, r"\['x_rgb'\]"),
    (dict(views=['x_rgb', 'rgb'], k=2), ValueError, 'named twice'),
    (dict(views=['x_rgb'], similarity='l2'), ValueError, 'similarity'),
    (dict(views=['x_rgb'], similarity='dot', score_map='snf'), ValueError,
     'cosine'),
    (dict(views=['x_rgb'], backend='annoy'), ValueError, 'backend'),
    (dict(views=['x_rgb'], gamma=0.0), ValueError, 'gamma'),
    (dict(views=['x_rgb'], recall_sample=-1), ValueError, 'recall_sample'),
])
def test_relation_graph_bad_settings(kwargs, error, match):
    with pytest.raises(error, match=match):
        RelationGraph(**kwargs)


def test_relation_graph_bad_data():
    data = _graph()
    with pytest.raises(ValueError, match="no attribute 'x_depth'"):
        RelationGraph(['x_rgb', 'x_depth'])(data.clone())
    bad = data.clone()
    bad.x_flow = bad.x_flow[:-1]
    with pytest.raises(ValueError, match="'x_flow' has 8 rows but 'x_rgb' "
                                         "has 9"):
        RelationGraph(['x_rgb', 'x_flow'])(bad)
    bad = data.clone()
    bad.num_nodes = 5
    with pytest.raises(ValueError, match='num_nodes is 5'):
        RelationGraph(['x_rgb'])(bad)
    bad = data.clone()
    bad.x_flow = bad.x_flow[:, 0]
    with pytest.raises(ValueError, match=r'node features \[N, d\]'):
        RelationGraph(['x_flow'])(bad)
    batch = Batch.from_data_list([data, data])
    with pytest.raises(ValueError, match='mini-batch'):
        RelationGraph(['x_rgb'])(batch)
    with pytest.raises(TypeError, match='Data'):
        RelationGraph(['x_rgb'])({'x_rgb': data.x_rgb})


def test_graph_powers_bad_input():
    with pytest.raises(ValueError, match='P'):
        GraphPowers(-1)
    with pytest.raises(ValueError, match='mode'):
        GraphPowers(2, mode='dense')
    with pytest.raises(ValueError, match='kernel'):
        GraphPowers(2, kernel='cuda')
    with pytest.raises(ValueError, match='overwrite'):
        GraphPowers(2, key='edge_attr')
    data = _graph()
    with pytest.raises(ValueError, match='no edge_index'):
        GraphPowers(2)(data.clone())
    data.edge_index = torch.tensor([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match='no edge_attr'):
        GraphPowers(2)(data.clone())
    data.edge_attr = torch.ones(3, 2)
    with pytest.raises(ValueError, match=r'\|E\| = 2'):
        GraphPowers(2)(data.clone())
    graph = RelationGraph(['x_rgb', 'x_flow'], k=3)(_graph())
    with pytest.raises(ValueError, match="similarity='cosine'"):
        GraphPowers(2, mode='propagated', similarity='dot')(graph.clone())
    del graph.x_flow
    with pytest.raises(ValueError, match='x_flow'):
        GraphPowers(2, mode='propagated')(graph)
