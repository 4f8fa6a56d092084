"""The attribution methods, by name: the one list the CLI's choices, the API's schema, validation, the run
key and the pages' method lists derive from. Each names the core module that implements it (imported only
by the torch core, so this list stays importable without torch).

Adding a method: one entry here and its module under `atlas/core/attribution/` (see docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from atlas.spec.errors import Invalid


@dataclass(frozen=True)
class MethodSpec:
    name: str
    takes_steps: bool  # integrated gradients: `ig_steps` points on the path; otherwise one gradient
    implementation: str  # "module:Class" under atlas.core.attribution
    summary: str


METHODS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "eap",
        takes_steps=False,
        implementation="atlas.core.attribution.eap:EAP",
        summary="edge attribution patching: one gradient on the clean run (Syed et al.)",
    ),
    MethodSpec(
        "eap-ig",
        takes_steps=True,
        implementation="atlas.core.attribution.eap_ig:EAPIGInputs",
        summary="EAP with integrated gradients over the input embeddings, corrupt to clean (Hanna et al.)",
    ),
    MethodSpec(
        "eap-ig-activations",
        takes_steps=True,
        implementation="atlas.core.attribution.eap_ig_activations:EAPIGActivations",
        summary="EAP with integrated gradients at each writer's output, between its ablated and clean "
        "activations, one layer's heads (or MLP) at a time (MIB's EAP-IG-activations)",
    ),
    MethodSpec(
        "eap-ig-mask",
        takes_steps=True,
        implementation="atlas.core.attribution.edge_mask:EdgeMaskRefinement",
        summary="EAP-IG, then a hard-concrete edge mask learned from its ranking for faithfulness with a "
        "sparsity penalty (Edge Pruning, Bhaskar et al.); costs tens of forward+backward passes more",
    ),
)
METHOD_NAMES: tuple[str, ...] = tuple(m.name for m in METHODS)
DEFAULT_METHOD = "eap-ig"


def method_spec(name: str) -> MethodSpec:
    for spec in METHODS:
        if spec.name == name:
            return spec
    raise Invalid(f"method must be one of {', '.join(METHOD_NAMES)}, got {name!r}", field="method")
