"""An edit start to end: `check_request` (everything that can be wrong, before any work) and `apply_edit`
(the method, looked up in atlas.core.editing.registry, run on a copy of the model)."""

from __future__ import annotations

import time

from atlas.core.editing.base import (
    EditError,
    EditParams,
    EditRequest,
    EditResult,
    copy_with,
    mlp_out_weight,
    object_ids,
    plain_copy,
)
from atlas.core.editing.registry import editor_for, resolved_params
from atlas.core.models import LoadedModel


def check_request(model: LoadedModel, request: EditRequest, params: EditParams) -> None:
    """Everything that can be wrong with an edit, checked before any copy or forward pass."""
    editor_for(params.method)
    params.validate()
    if not request.subject.strip():
        raise EditError("the subject is empty")
    if request.subject not in request.prompt:
        raise EditError(f"subject {request.subject!r} does not occur in the prompt {request.prompt!r}")
    if not request.target_new.strip():
        raise EditError("the new object is empty")
    if not request.target_old.strip():
        raise EditError("the old object is empty")
    if request.target_new.strip() == request.target_old.strip():
        raise EditError(f"the new object {request.target_new!r} equals the old object")
    if not 0 <= params.layer < model.n_layers:
        raise EditError(
            f"layer {params.layer} is outside model {model.name!r} (layers 0..{model.n_layers - 1})"
        )
    if not object_ids(model, request.target_new):
        raise EditError(f"the new object {request.target_new!r} tokenizes to nothing")
    mlp_out_weight(model, params.layer)  # an architecture without a known MLP layout fails here


def apply_edit(model: LoadedModel, request: EditRequest, params: EditParams) -> EditResult:
    """Check the request, run the method on `model` (left unchanged), and return the edited copy."""
    check_request(model, request, params)
    resolved = resolved_params(params)
    clock = time.perf_counter()
    plain = plain_copy(model)
    update = editor_for(params.method).run(model, plain, request, resolved)
    edited = copy_with(model, update.new_weights, plain)
    seconds = time.perf_counter() - clock
    squared_delta = squared_norm = 0.0
    for name, tensor in update.new_weights.items():
        original = model.weights[name].double()
        squared_delta += float((tensor.double() - original).pow(2).sum())
        squared_norm += float(original.pow(2).sum())
    return EditResult(
        request=request,
        params=resolved,
        model=edited,
        original_sha256=model.weights_sha256,
        edited_sha256=edited.weights_sha256,
        weight_names=sorted(update.new_weights),
        delta_norm=squared_delta**0.5,
        relative_delta=(squared_delta / squared_norm) ** 0.5 if squared_norm else float("nan"),
        steps_run=update.steps_run,
        losses=update.losses,
        details=update.details,
        seconds=seconds,
    )
