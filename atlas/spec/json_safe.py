"""JSON has no NaN or infinity: such floats (a faithfulness with no metric gap) are written as null."""

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
