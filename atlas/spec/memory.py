"""Memory sizes as people write them ("6GB", "512MB", "1.5GiB") and back. Torch-free: the CLI parses
`--max-memory` with it before any model loads.

Units: B, KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB powers of 1024 (case-insensitive; a bare number is
bytes). The budget a run keeps to is a process peak, as `ru_maxrss` or VmHWM report it.
"""

from __future__ import annotations

import math
import re

from atlas.spec.errors import Invalid

UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_memory(text: str, field: str = "max_memory") -> int:
    """Bytes of a size such as "6GB", "512MB" or "1.5GiB"; Invalid naming the value otherwise."""
    option = field.replace("_", "-")
    match = _SIZE.match(str(text))
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in UNITS:
        raise Invalid(
            f"{option} must be a size with a unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. 6GB or "
            f"512MB; got {text!r}",
            field=field,
        )
    size = float(match.group(1)) * UNITS[unit]
    if not math.isfinite(size) or size < 1:
        raise Invalid(f"{option} must be at least 1 byte, got {text!r}", field=field)
    return int(size)


def format_bytes(n: float) -> str:
    """`n` bytes in the largest decimal unit that keeps it at least 1: "5.9 GB", "512 MB"."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"
