"""Edit methods by name. A new method (MEMIT, ...) is one more entry: callers go through `apply_edit`."""

from __future__ import annotations

from atlas.core.editing import ft, rome
from atlas.core.editing.base import Editor

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
