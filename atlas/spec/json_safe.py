"""JSON has no NaN or infinity: such floats (a faithfulness with no metric gap) are written as null (`finite`;
`dumps`, the JSON encoder of API answers and stored circuit records, does the same)."""

from __future__ import annotations

import math
from typing import Any


def finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON bytes by orjson (several times faster than json.dumps): NaN and infinities as null,
    as `finite` writes them; dataclasses as objects of their fields, numpy arrays as lists, non-string keys
    as strings (as json.dumps writes them)."""
    import orjson

    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
