"""The engine's threads, named for the operating system too.

Python names a ``threading.Thread`` for itself only; the kernel's name (``comm`` in
``/proc/<pid>/task/<tid>/``, what ``top -H``, ``py-spy`` and the benchmark see) stays the
interpreter's. Each engine thread sets its kernel name to its Python name (``sync-…``,
truncated to the kernel's 15 bytes) so that the sync engine's share of the server's CPU can
be read per thread from outside (``bench/scim_ops.py``) without trusting the engine.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from collections.abc import Callable

_PR_SET_NAME = 15  # linux/prctl.h
_COMM_BYTES = 15  # TASK_COMM_LEN - 1


@functools.cache
def _prctl() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        prctl: Callable[..., int] = libc.prctl
        return prctl
    except (OSError, AttributeError):
        return None  # not Linux: the names are a convenience, nothing depends on them


def name_os_thread(name: str) -> None:
    """Give the calling thread ``name`` (ASCII, truncated) as its kernel name."""
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_NAME, name.encode("ascii", "replace")[:_COMM_BYTES], 0, 0, 0)


def engine_thread(body: Callable[[], None], name: str) -> threading.Thread:
    """A daemon thread called ``name`` (for Python and the kernel) that runs ``body``."""

    def run() -> None:
        name_os_thread(name)
        body()

    return threading.Thread(target=run, name=name, daemon=True)
