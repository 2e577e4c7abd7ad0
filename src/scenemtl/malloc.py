"""glibc malloc settings for the processes of a run: freed memory is kept for the next step or sample.

A training step on a CPU, or a loader's sample, allocates the same large short-lived blocks
again and again (activations and their gradients; decoded files and resampled targets). By
default glibc serves blocks above its adaptive threshold (at most 32 MiB) with fresh ``mmap``
pages and hands freed memory back to the system at once, so every step pays the kernel's page
faults and the zeroing of those pages again: a third of the decoding time of a NYUD sample, and
about a third of the time of an MTAN-SegNet training step on a CPU (``benchmarks/train_vs_official.py``
times both settings). ``tune()`` makes every block come from the heap and keeps freed heap for
reuse (up to 2 GiB), as PyTorch's CUDA allocator keeps device memory: the process's resident
memory stays near its peak instead of shrinking between steps. Measured here
(``tests/test_malloc.py``): about a sixth of the page faults remain, since the kernel may still
reclaim idle freed pages and glibc re-faults some 64-byte-aligned blocks over 32 MiB.

Applied by the trainer to its own process, and by the data loaders to their workers and to the
process that iterates them, when ``train.allocator`` is ``tuned`` (the default); ``system`` leaves malloc alone.
``lean`` (``tune("lean")``, ``LEAN``) is the opposite trade for the trainer's process, for runs bound by memory:
large blocks are mmaps given back when freed, so the resident set follows the live tensors (its workers keep
``tuned``). Only glibc has these settings (``tune()`` returns ``False`` elsewhere, e.g. musl or macOS, and
changes nothing).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -2, -3, -4
SETTINGS = {
    M_MMAP_MAX: 0,  # no block is served by mmap: all come from the heap, and are reused
    M_TRIM_THRESHOLD: 2**31 - 1,  # freed heap is kept up to 2 GiB (the most mallopt takes)
    M_TOP_PAD: 64 << 20,  # the heap grows 64 MiB at a time
}
#: ``train.allocator: lean``: the opposite trade, for runs bound by memory rather than time (with activation
#: checkpointing): every block of 1 MiB or more is its own mmap, given back to the system when freed, so the
#: resident set follows the live tensors instead of the most the heap ever held; each such block is faulted in
#: again when allocated (``benchmarks/train_vs_official.py --variants checkpointing,checkpointing-lean``)
LEAN = {
    M_MMAP_MAX: 65536,  # glibc's default
    M_MMAP_THRESHOLD: 1 << 20,  # fixed (glibc otherwise raises it to the largest block freed, up to 32 MiB)
    M_TRIM_THRESHOLD: 64 << 20,
    M_TOP_PAD: 128 << 10,  # glibc's default
}
#: ``tune``'s modes
MODES = {"tuned": SETTINGS, "lean": LEAN}
#: the settings this process runs with (None: glibc's own)
_mode: str | None = None


def tune(mode: str = "tuned") -> bool:
    """Apply ``SETTINGS`` (``mode="tuned"``) or ``LEAN`` (``"lean"``) to this process (a forked child inherits
    them; again with the same mode changes nothing); whether they took."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"malloc.tune: mode 'tuned' or 'lean' (train.allocator), got {mode!r}")
    if _mode == mode:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    took = all(mallopt(parameter, value) == 1 for parameter, value in MODES[mode].items())
    _mode = mode if took else None
    return took
