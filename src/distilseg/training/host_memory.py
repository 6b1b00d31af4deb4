"""``--keep-freed-memory``: glibc's malloc keeps freed memory for the next training step.

Why: glibc returns every block above its mmap threshold (32 MiB at most) to the kernel the moment it is freed,
and trims the top of its heap. A training step on the CPU frees gigabytes of activations and allocates them
again in the next step, so the kernel unmaps, zeroes and faults in the same pages every step: for a U-Net at
256x320 about half of the process's CPU time is kernel time. With mmap and trimming off (the run-time form of
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...``) freed blocks stay in the heap and the next step reuses them.
It is the lever that Intel's PyTorch CPU tuning guide pulls by preloading jemalloc or tcmalloc, with no library
to install. The cost: the process keeps its peak size, and the heap's fragmentation raises that peak
(docs/training.md, "Training on a CPU", has the measured steps and peaks). Processes forked afterwards (data
loader workers) inherit the setting.
"""
from __future__ import annotations

import ctypes
import sys

__all__ = ["keep_freed_memory"]

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def keep_freed_memory() -> str | None:
    """Switch this process's malloc to keep freed memory (no mmap'd blocks, no trimming).

    Returns None when it took effect, else why not (a C library other than glibc, or not Linux): the
    setting is about speed, so the caller warns and trains anyway.
    """
    if not sys.platform.startswith("linux"):
        return f"only glibc's malloc can be told to (this is {sys.platform})"
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        libc.gnu_get_libc_version  # glibc only (musl has no mallopt to speak of)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "only glibc's malloc can be told to (this C library is not glibc)"
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # M_TRIM_THRESHOLD -1 turns trimming off (mallopt(3)); M_MMAP_MAX 0 serves every block from the heap
    if not (mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, -1)):
        return "glibc's mallopt refused the settings"
    return None
