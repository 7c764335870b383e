"""One BLAS/LAPACK thread for a block of linear algebra (threadpoolctl; without it, nothing
changes).

Used where the work is many small independent problems (the Gaussian hierarchical model's
per-node n x n algebra) and where two processes of one run share the cores (each thread pool
spinning against the other process's).
"""

from __future__ import annotations

import contextlib
import functools
import threading

_LIMIT = threading.local()
_CONTROLLER = []


@contextlib.contextmanager
def one_blas_thread():
    """Run the enclosed linear algebra with one BLAS/LAPACK thread; nested uses cost nothing
    and the thread count is restored on exit."""
    if getattr(_LIMIT, "depth", 0) > 0:
        yield
        return
    if not _CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController
            _CONTROLLER.append(ThreadpoolController())
        except Exception:  # noqa: BLE001 - threadpoolctl missing or failing: leave threads
            _CONTROLLER.append(None)
    ctl = _CONTROLLER[0]
    _LIMIT.depth = 1
    try:
        if ctl is None:
            yield
        else:
            with ctl.limit(limits=1, user_api="blas"):
                yield
    finally:
        _LIMIT.depth = 0


def single_threaded(func):
    """Decorator: :func:`one_blas_thread` around ``func``."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with one_blas_thread():
            return func(*args, **kwargs)
    return wrapper
