"""``--keep-freed-memory``: glibc's malloc keeps freed memory for the next training step.

Why: glibc returns every block above its mmap threshold (32 MiB at most) to the kernel the moment it is freed,
and trims the top of its heap. A training step on the CPU frees gigabytes of activations and allocates them
again in the next step, so the kernel unmaps, zeroes and faults in the same pages every step: for a U-Net at
256x320 about half of the process's CPU time is kernel time. With mmap and trimming off (the run-time form of
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...``) freed blocks stay in the heap and the next step reuses them.
It is the lever that Intel's PyTorch CPU tuning guide pulls by preloading jemalloc or tcmalloc, with no library
to install. The cost: the process keeps its peak size, and the heap's fragmentation raises that peak
(docs/training.md, "Training on a CPU", has the measured steps and peaks).

Data loader workers must not keep it. A forked worker shares the parent's heap pages, freed ones included; as
the parent reuses its freed memory the kernel copies each page the parent writes, and the worker is left the
only owner of the old page: a snapshot of the whole training peak (measured: 6.8 GiB in one worker beside a
7.7 GiB parent). So every worker starts with ``release_in_worker``: glibc's defaults back and the inherited free
memory handed to the kernel (47 MiB in that worker).
"""
from __future__ import annotations

import ctypes
import sys

__all__ = ["keep_freed_memory", "release_in_worker"]

# mallopt parameters (glibc's malloc.h) and glibc's defaults for them
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
DEFAULT_TRIM_THRESHOLD = 128 * 1024
DEFAULT_MMAP_MAX = 65536

_kept = False  # this process (or the one it was forked from) keeps freed memory


def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc, with ``mallopt`` and ``malloc_trim`` typed (Linux only:
    both callers check that first)."""
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        libc.gnu_get_libc_version  # glibc only (musl has no mallopt to speak of)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory() -> str | None:
    """Switch this process's malloc to keep freed memory (no mmap'd blocks, no trimming).

    Returns None when it took effect, else why not (a C library other than glibc, or not Linux): the
    setting is about speed, so the caller warns and trains anyway.
    """
    global _kept
    if not sys.platform.startswith("linux"):
        return f"only glibc's malloc can be told to (this is {sys.platform})"
    libc = _glibc()
    if libc is None:
        return "only glibc's malloc can be told to (this C library is not glibc)"
    # M_TRIM_THRESHOLD -1 turns trimming off (mallopt(3)); M_MMAP_MAX 0 serves every block from the heap
    if not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, -1)):
        return "glibc's mallopt refused the settings"
    _kept = True
    return None


def release_in_worker() -> None:
    """In a data loader worker (``worker_init_fn``): when its parent keeps freed memory, put glibc's defaults
    back and hand the free memory inherited from the parent to the kernel. A no-op otherwise (and in spawned
    workers, which inherit neither the setting nor the heap)."""
    global _kept
    libc = _glibc() if _kept else None
    if libc is None:
        return
    libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
    libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
    libc.malloc_trim(0)
    _kept = False
