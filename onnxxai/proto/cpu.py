"""The CPU's instruction-set extensions that decide which integer kernels onnxruntime runs.

onnxruntime's MLAS picks its u8s8/s8s8 GEMM and convolution kernels by the CPU: with AVX512-VNNI,
AVX-VNNI or AMX it accumulates int8 products exactly in int32; with plain AVX2/AVX-512 it uses
``vpmaddubsw``, whose int16 pair sums may saturate. A quantized graph's parity therefore depends on
the machine, and the parity report records it. Read from ``/proc/cpuinfo`` (Linux); torch-free.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

__all__ = ["integer_isa", "INTEGER_FLAGS"]

#: /proc/cpuinfo flag -> name, in the order reported (the integer-kernel relevant extensions)
INTEGER_FLAGS: dict[str, str] = {
    "avx2": "AVX2", "avx512bw": "AVX512BW", "avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI",
    "amx_int8": "AMX-INT8", "asimddp": "ARM dot product", "i8mm": "ARM i8mm",
}


@functools.lru_cache(maxsize=1)
def integer_isa(cpuinfo: str = "/proc/cpuinfo") -> str:
    """One line naming the CPU's integer-kernel extensions, e.g. ``x86_64: AVX2, AVX512BW,
    AVX512-VNNI, AMX-INT8 (VNNI: yes)``; ``<machine>: unknown`` where no cpuinfo can be read."""
    machine = platform.machine() or "cpu"
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return f"{machine}: unknown (no {cpuinfo})"
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
            break
    if not flags:
        return f"{machine}: unknown (no flags in {cpuinfo})"
    present = [name for flag, name in INTEGER_FLAGS.items() if flag in flags]
    vnni = any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))
    return f"{machine}: {', '.join(present) or 'none of ' + '/'.join(INTEGER_FLAGS.values())} (VNNI: {'yes' if vnni else 'no'})"
