"""Which INT8 weight range runs well on this CPU (``distilseg export --weight-bits auto``, and the warning when an
8-bit file is loaded where it would saturate).

Why here, in ``inference``: it is a fact about the CPU that runs a model, asked both when a model is exported
(``export.quantize``) and when it is loaded (``inference.onnx_backend``); ``inference`` must not import ``export``.
ONNX Runtime's x86 U8S8 kernels without VNNI multiply-add pairs of uint8 x int8 into int16 (``vpmaddubsw``), which
saturates with 8-bit weights (2 x 255 x 127 > 32767) but not with 7-bit ones (2 x 255 x 64 <= 32767).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["default_reduce_range"]

#: x86 CPU flags (``/proc/cpuinfo``) of instructions that multiply-add uint8 x int8 into int32 without the
#: int16 saturation of ``vpmaddubsw``.
_VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def default_reduce_range(machine: str | None = None, cpuinfo: str | None = None) -> tuple[bool, str]:
    """``(reduce_range, why)`` for this CPU: 7-bit weights only on x86 without VNNI (see the module doc); ``why``
    is the reason alone (the bit count is ``reduce_range``'s to say).

    ``machine`` (``platform.machine()``) and ``cpuinfo`` (the text of ``/proc/cpuinfo``) default to this
    machine's; an x86 CPU whose flags cannot be read is treated as lacking VNNI (the safe choice).
    """
    import platform

    machine = (machine if machine is not None else platform.machine()).lower()
    if machine in ("arm64", "aarch64") or machine.startswith("armv"):
        return False, f"this CPU is ARM ({machine}), its int8 kernels do not saturate"
    if machine not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return True, f"CPU type {machine or 'unknown'!r} not recognized (7 bits are safe everywhere)"
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    flags: set[str] | None = None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = set(value.split())
            break
    if flags is None:
        return True, "this x86 CPU's flags are unreadable, so VNNI is not assumed"
    found = sorted(flags & _VNNI_FLAGS)
    if found:
        return False, f"this CPU has {found[0]}"
    return True, "this x86 CPU has no VNNI (8-bit weights would saturate its int8 kernels)"
