r"""pyg-lego: LEGO multi-modal fusion for PyTorch Geometric."""
import warnings

# The sparse paths build CSR tensors on purpose; torch's notice that CSR
# support is "in beta" would otherwise reach every user once per process.
warnings.filterwarnings('ignore', message='Sparse CSR tensor support is in '
                        'beta state', category=UserWarning)

from pyg_lego.data import GivenGraph, RelationData, build_relation_graph
from pyg_lego.nn import LEGO, GraphPowerConv, LEGOFusion
from pyg_lego.plot import plot_coefficients
from pyg_lego.transforms import GraphPowers, RelationGraph

__version__ = '0.1.0'

__all__ = [
    'GivenGraph',
    'RelationData',
    'build_relation_graph',
    'LEGO',
    'GraphPowerConv',
    'LEGOFusion',
    'plot_coefficients',
    'RelationGraph',
    'GraphPowers',
]
