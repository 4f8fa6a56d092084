"""Keys: sha256 of canonical JSON (sorted keys, no spaces). Unset values (None) stay out of a request's key,
so a parameter added later, left unset, keys as before."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def request_key(kind: str, request: dict[str, Any]) -> str:
    """The key of a request of this kind: the jobs table keeps one active job per key (edits: one edit)."""
    canonical = json.dumps(_set_only({"kind": kind, **request}), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _set_only(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _set_only(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_set_only(v) for v in value]
    return value
