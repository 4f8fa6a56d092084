"""Edit methods by name. A new method (MEMIT, ...) is one more entry: callers go through `apply_edit`."""

from __future__ import annotations

from dataclasses import replace

from atlas.core.editing import ft, rome
from atlas.core.editing.base import EditError, Editor, EditParams

EDITORS: dict[str, Editor] = {
    "rome": Editor(
        "rome",
        rome.run,
        default_steps=20,
        default_lr=0.5,
        description="rank-one update of one MLP's output projection (Meng et al. 2022)",
    ),
    "ft-m": Editor(
        "ft-m",
        ft.run,
        default_steps=25,
        default_lr=5e-4,
        description="fine-tune one MLP's output projection on the new object's tokens only (EasyEdit FT-M)",
    ),
}


def editor_for(method: str) -> Editor:
    """The edit method of that name; an unknown name is an EditError listing the known ones."""
    if method not in EDITORS:
        raise EditError(f"unknown edit method {method!r}; choose from {', '.join(EDITORS)}")
    return EDITORS[method]


def resolved_params(params: EditParams) -> EditParams:
    """`params` with the method's default steps and lr filled in."""
    editor = editor_for(params.method)
    return replace(
        params,
        steps=params.steps if params.steps is not None else editor.default_steps,
        lr=params.lr if params.lr is not None else editor.default_lr,
    )
