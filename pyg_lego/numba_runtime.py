r"""numba, where it is installed (optional extra ``numba``): whether it
imports, and the one way pyg_lego's compiled kernels are compiled against it
and called (its threading layer, thread count and lock)."""
import gc
import os
import threading
from functools import lru_cache

import torch

#: Serialises kernel calls: the kernels release the GIL, and numba's
#: 'workqueue' threading layer (where TBB is not installed) must not be
#: entered by two threads at once.
_LOCK = threading.Lock()


@lru_cache(maxsize=None)
def available() -> bool:
    r"""Whether numba imports (an install that fails to import, e.g.
    against a NumPy it does not support, counts as absent, so that the
    callers fall back to torch)."""
    try:
        import numba  # noqa: F401
    except Exception:
        return False
    return True


@lru_cache(maxsize=None)
def numba():
    r"""The numba module, its threading layer chosen before any kernel
    is compiled: TBB where the optional package ``tbb`` is installed
    (:func:`tbb_loaded`), else numba's own ``'workqueue'``."""
    import numba
    if 'NUMBA_THREADING_LAYER' not in os.environ:
        # numba's default 'omp' layer loads the system libgomp beside the one
        # torch ships: two OpenMP runtimes in one process, spinning against
        # each other. (A DDP hang once blamed on the two runtimes was a gloo
        # shutdown race, see pyg_lego.training.distributed.cleanup.) TBB
        # starts a parallel loop in 5 us where 'workqueue' took 80 to 160
        # us: the masked power's forward and backward took 0.74x the time
        # at N = 200 and 0.91x at 1000 (k = 8), 0.93x at 16,000 and the same
        # at 64,000 (k = 16; one process per layer, best of 3 to 30).
        numba.config.THREADING_LAYER = 'tbb' if tbb_loaded() else \
            'workqueue'
    return numba


#: The oldest TBB interface numba's layer runs on (numba checks it too).
TBB_MIN_INTERFACE = 12060


@lru_cache(maxsize=None)
def tbb_loaded() -> bool:
    r"""Whether numba's TBB threading layer can start in this process:
    loads the TBB library that ``pip install tbb`` puts in the
    environment's ``lib/`` folder (or the loader's own), which no library
    path reaches in a virtual environment, so that numba's layer then
    finds it already loaded. Linux only; elsewhere the layer is numba's
    ``'workqueue'``."""
    import ctypes
    import sys
    if not sys.platform.startswith('linux'):
        return False
    name = 'libtbb.so.12'
    for path in (os.path.join(sys.prefix, 'lib', name), name):
        try:
            lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            if lib.TBB_runtime_interface_version() < TBB_MIN_INTERFACE:
                return False
            from numba.np.ufunc import tbbpool  # noqa: F401
        except (OSError, AttributeError, ImportError):
            continue
        return True
    return False


def call(kernel, *args):
    r"""Runs a compiled :obj:`kernel` on as many threads as torch uses, and
    returns what it returns."""
    nb = numba()
    compiled = len(kernel.signatures)
    with _LOCK:
        nb.set_num_threads(max(1, min(torch.get_num_threads(),
                                      nb.config.NUMBA_NUM_THREADS)))
        out = kernel(*args)
    if len(kernel.signatures) > compiled:
        # Compiling left reference cycles that reach, through frames, up
        # the stack to our callers and the tensors they hold; only a full
        # collection frees them. Without this one, the masked mode at
        # N = 1M held 5 GB of them after its backward pass.
        gc.collect()
    return out


@lru_cache(maxsize=None)
def prefetch():
    r"""A numba intrinsic ``prefetch(array, i)`` that asks the CPU to bring
    row :obj:`i` of :obj:`array` into cache (LLVM's ``llvm.prefetch``: a
    hint, which never faults), or :obj:`None` where this numba and llvmlite
    cannot compile it; kernels then run without it."""
    nb = numba()
    try:
        import numpy as np
        from llvmlite import ir
        from numba.core import cgutils, types
        from numba.extending import intrinsic

        def codegen(context, builder, signature, args):
            array_type, index_type = signature.args
            array = context.make_array(array_type)(context, builder, args[0])
            index = [context.cast(builder, args[1], index_type, types.intp)]
            index += [context.get_constant(types.intp, 0)] * \
                (array_type.ndim - 1)
            ptr = cgutils.get_item_pointer(context, builder, array_type,
                                           array, index, wraparound=False)
            if getattr(ptr.type, 'is_opaque', False):
                name = 'llvm.prefetch.p0'
            else:  # typed pointers (LLVM 14 and older)
                ptr = builder.bitcast(ptr, ir.IntType(8).as_pointer())
                name = 'llvm.prefetch.p0i8'
            i32 = ir.IntType(32)
            fn = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]),
                name)
            # A read, kept in all cache levels, of data (not instructions).
            builder.call(fn, [ptr, i32(0), i32(3), i32(1)])
            return context.get_dummy_value()

        @intrinsic
        def prefetch_row(typingctx, array, i):
            return types.void(array, i), codegen

        @nb.njit(cache=False)
        def probe(array):
            prefetch_row(array, 1)

        probe(np.zeros((2, 3)))
    except Exception:
        return None
    return prefetch_row
