"""Sphinx configuration of the pyg-lego documentation.

Build with ``make docs`` (``sphinx-build -W --keep-going -b html docs
docs/_build/html``). Nothing is downloaded at build time: intersphinx is off,
and the tutorials are the committed notebooks, rendered with their stored
outputs (no kernel is started).
"""
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import pyg_lego  # noqa: E402

project = 'pyg-lego'
author = 'pyg-lego contributors'
copyright = '2025, pyg-lego contributors'
release = pyg_lego.__version__
version = release

extensions = [
    'sphinx.ext.autodoc',
    'sphinx.ext.autosummary',
    'sphinx.ext.napoleon',
    'sphinx.ext.mathjax',
    'sphinx.ext.viewcode',
    'myst_nb',
]

source_suffix = {
    '.rst': 'restructuredtext',
    '.md': 'myst-nb',
    '.ipynb': 'myst-nb',
}
root_doc = 'index'
exclude_patterns = ['_build', 'Thumbs.db', '.DS_Store', '**.ipynb_checkpoints']

# -- The tutorials: the committed notebooks ----------------------------------
# Sphinx reads sources only below docs/, so notebooks/*.ipynb are copied into
# docs/tutorials/ (git-ignored) before the build; copy2 keeps their mtime, so
# an unchanged notebook is not re-read.
TUTORIALS = DOCS / 'tutorials'
TUTORIALS.mkdir(exist_ok=True)
for notebook in sorted((ROOT / 'notebooks').glob('*.ipynb')):
    target = TUTORIALS / notebook.name
    if (not target.exists()
            or target.read_bytes() != notebook.read_bytes()):
        shutil.copy2(notebook, target)

nb_execution_mode = 'off'   # render the stored outputs, never run a kernel
nb_merge_streams = True
myst_enable_extensions = ['dollarmath', 'amsmath']
myst_heading_anchors = 3

# -- autodoc / napoleon -------------------------------------------------------
autodoc_default_options = {
    'members': True,
    'show-inheritance': True,
    'member-order': 'bysource',
}
autodoc_typehints = 'signature'
autodoc_class_signature = 'mixed'
autodoc_inherit_docstrings = False
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True

# -- Cross-references -----------------------------------------------------------
# Every reference to this library must resolve: a broken `:class:`/`:func:`/
# `:meth:`/`:mod:` target in a docstring is a warning, and -W makes it an
# error. Without intersphinx (no network at build time) the references to
# other projects cannot resolve; they are ignored here by their namespace.
nitpicky = True
_EXTERNAL = (
    r'(torch|torch_geometric|torch_sparse|torch_scatter|numpy|np|scipy|'
    r'sklearn|networkx|nx|matplotlib|faiss|pynndescent|numba|pandas|'
    r'collections|typing|typing_extensions|pathlib|os|io|argparse|'
    r'dataclasses|enum|abc|multiprocessing|concurrent|subprocess|random|'
    r'json|warnings|contextlib|functools|itertools|builtins|types|'
    r'tbb)(\..*)?'
)
nitpick_ignore_regex = [
    (r'py:.*', _EXTERNAL),
    # PyG's docstring convention (followed here): :obj:`...` marks literal
    # values and argument names (:obj:`None`, :obj:`k`, :obj:`"auto"`),
    # not references to documented objects.
    (r'py:obj', r'(?s).*'),
    # Words of napoleon's type field that name no object.
    (r'py:class', r'optional|array-like|iterable|callable|sequence|mapping'),
]


# A reference that Sphinx cannot find by its exact name is retried in two
# ways, and still fails (a warning, an error under -W) when neither applies:
#
# * a dotted path to a public object by the module that defines it
#   (``pyg_lego.data.backends.knn_search``) or by the top level
#   (``pyg_lego.LEGO``) resolves to the page that documents it under its
#   public name (``pyg_lego.data.knn_search``, ``pyg_lego.nn.LEGO``): the
#   target is imported and compared by identity;
# * a bare name (``segment_bounds``, written in the docstring of the module
#   that defines it) resolves when exactly one documented object has it;
# * a reference to an object of the library that exists but that no page
#   documents (a private helper, a module constant) is shown as code without
#   a link: found by importing it, as written or relative to the module and
#   class of the docstring it appears in.
PUBLIC_MODULES = [
    'pyg_lego.data', 'pyg_lego.nn', 'pyg_lego.transforms', 'pyg_lego.plot',
    'pyg_lego.dense', 'pyg_lego.diagnostics', 'pyg_lego.multiview',
    'pyg_lego.vad', 'pyg_lego.training',
]


def _lookup(path):
    import importlib
    parts = path.split('.')
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module('.'.join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _public_names(target):
    import importlib
    obj = _lookup(target)
    if obj is None:
        return []
    name = target.rsplit('.', 1)[-1]
    names = []
    for modname in PUBLIC_MODULES:
        module = importlib.import_module(modname)
        public = getattr(module, '__all__', None)
        exported = (name in public if public is not None
                    else getattr(obj, '__module__', None) == modname)
        if exported and getattr(module, name, None) is obj:
            names.append(f'{modname}.{name}')
    return names


def _exists(node, target):
    from docutils.utils import get_source_line
    if target.startswith('pyg_lego.'):
        return _lookup(target) is not None
    # "path/to/file.py:docstring of pyg_lego.nn.lego.LEGO.fuse"
    source = get_source_line(node)[0] or ''
    owner = source.rpartition(':docstring of ')[2]
    if not owner.startswith('pyg_lego.'):
        return False
    parts = owner.split('.')
    for i in range(len(parts), 1, -1):
        if _lookup('.'.join(parts[:i] + [target])) is not None:
            return True
    return False


def _missing_reference(app, env, node, contnode):
    if node.get('refdomain') != 'py':
        return None
    domain = env.get_domain('py')
    target, role = node['reftarget'], node['reftype']
    candidates = []
    if target.startswith('pyg_lego.'):
        candidates = [n for n in _public_names(target) if n != target]
    elif '.' not in target:
        matches = domain.find_obj(env, node.get('py:module'),
                                  node.get('py:class'), target, role, 1)
        candidates = [n for n, entry in matches if not entry.aliased]
    if len(candidates) != 1:
        return contnode if _exists(node, target) else None
    new = node.deepcopy()
    new['reftarget'] = candidates[0]
    new['refspecific'] = False
    return domain.resolve_xref(env, node['refdoc'], app.builder, role,
                               candidates[0], new, contnode)


def setup(app):
    app.connect('missing-reference', _missing_reference)

# -- HTML ----------------------------------------------------------------------
html_theme = 'furo'
html_title = f'pyg-lego {release}'
