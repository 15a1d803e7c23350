"""Keep the edge process's resident memory honest (glibc only; no-ops elsewhere).

Inference allocates and frees large activation buffers; glibc keeps freed heap memory and
creates one malloc arena per thread by default, so RSS ratchets up to the largest batch ever
seen. We cap the arenas and hand freed memory back to the OS when the node is idle.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time

M_ARENA_MAX = -8

_libc = None
_last_trim = 0.0
_lock = threading.Lock()


def _lib():
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            _libc = ctypes.CDLL(name) if name else False
        except OSError:
            _libc = False
    return _libc


def limit_arenas(n: int = 2) -> None:
    lib = _lib()
    if lib and hasattr(lib, "mallopt"):
        lib.mallopt(M_ARENA_MAX, n)


def trim(min_interval_s: float = 0.0) -> bool:
    """Return freed heap pages to the OS (at most once per ``min_interval_s``)."""
    global _last_trim
    lib = _lib()
    if not lib or not hasattr(lib, "malloc_trim"):
        return False
    with _lock:
        now = time.monotonic()
        if now - _last_trim < min_interval_s:
            return False
        _last_trim = now
    lib.malloc_trim(0)
    return True
