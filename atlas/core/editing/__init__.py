"""Knowledge edits (issue 6): ROME and FT-M on a copy of a loaded model, their outcome metrics, and how a
circuit changes. Pure computation; storage, jobs, CLI and API call these.

    result = apply_edit(model, EditRequest(prompt, subject, new, old), EditParams(method="rome", layer=4))
    outcome = edit_outcome(model, result.model, result.request, probes_for(relation, result.request, others))
"""

from atlas.core.editing.apply import apply_edit, check_request
from atlas.core.editing.base import (
    EditError,
    Editor,
    EditParams,
    EditRequest,
    EditResult,
    WeightUpdate,
    copy_with,
)
from atlas.core.editing.diff import CircuitDiff, EdgeChange, circuit_diff
from atlas.core.editing.outcomes import (
    EditOutcome,
    ObjectFate,
    OutcomeProbes,
    Probe,
    edit_outcome,
    probes_for,
)
from atlas.core.editing.registry import EDITORS, editor_for, resolved_params

__all__ = [
    "EDITORS",
    "CircuitDiff",
    "EdgeChange",
    "EditError",
    "EditOutcome",
    "EditParams",
    "EditRequest",
    "EditResult",
    "Editor",
    "ObjectFate",
    "OutcomeProbes",
    "Probe",
    "WeightUpdate",
    "apply_edit",
    "check_request",
    "circuit_diff",
    "copy_with",
    "edit_outcome",
    "editor_for",
    "probes_for",
    "resolved_params",
]
