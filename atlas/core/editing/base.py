"""What every edit method shares: the request, the parameters, the result, where an MLP's output weights
live, and the copy of a model that carries edited weights (atlas/core/editing/apply.py checks and runs an
edit).

An edit never touches the model it is given: `plain_copy` makes a fresh HF model holding copies of its
weights, the method computes new values for a few weight tensors on that copy, and `copy_with` writes
them into it and wraps it in its own TransformerBridge. Loaded models are cached per process and shared
by jobs, so this matters.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from atlas.core.models import LoadedModel, wrap
from atlas.spec.errors import Invalid
from atlas.spec.json_safe import finite


class EditError(Invalid):
    """An edit cannot be done as asked; the message names what is wrong."""


@dataclass(frozen=True)
class EditRequest:
    """Rewrite `subject`'s object in `prompt` (the full prompt text, which contains the subject) from
    `target_old` to `target_new`. Objects are continuations: tokenized with a leading space."""

    prompt: str
    subject: str
    target_new: str
    target_old: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EditParams:
    """Parameters of one edit. `steps` and `lr` default per method (None: the method's own default).

    ROME-only: `kl_factor`, `weight_decay`, `clamp_norm`, `cov_tokens`, `cov_ridge`, `n_prefixes`.
    """

    method: str = "rome"
    layer: int = 4
    steps: int | None = None  # optimization steps (ROME: of the value; FT-M: of the weights)
    lr: float | None = None
    stop_loss: float = 0.02  # stop early once the target's mean per-token NLL is below this (0: never)
    kl_factor: float = 0.0625  # ROME: weight of the KL term keeping "{subject} is a" unchanged
    weight_decay: float = 0.5  # ROME: weight of ||delta||^2 / ||v||^2
    clamp_norm: float = 4.0  # ROME: ||delta|| <= clamp_norm * ||v||
    n_prefixes: int = 5  # ROME: context prefixes the key is averaged over (the first is empty)
    cov_tokens: int = 4096  # ROME: tokens of the offline text sample for the key covariance
    cov_ridge: float = 0.01  # ROME: C + ridge * mean(diag C) * I, for a stable inverse from few tokens
    seed: int = 0

    def validate(self) -> None:
        """The numbers in range (the method's name is checked against atlas.core.editing.registry by
        `check_request`)."""
        checks = [
            (self.steps is None or self.steps >= 1, f"steps must be at least 1, got {self.steps}"),
            (self.lr is None or self.lr > 0, f"lr must be positive, got {self.lr}"),
            (self.stop_loss >= 0, f"stop-loss must be at least 0, got {self.stop_loss}"),
            (self.kl_factor >= 0, f"kl-factor must be at least 0, got {self.kl_factor}"),
            (self.weight_decay >= 0, f"weight-decay must be at least 0, got {self.weight_decay}"),
            (self.clamp_norm > 0, f"clamp-norm must be positive, got {self.clamp_norm}"),
            (self.n_prefixes >= 1, f"n-prefixes must be at least 1, got {self.n_prefixes}"),
            (self.cov_tokens >= 16, f"cov-tokens must be at least 16, got {self.cov_tokens}"),
            (self.cov_ridge >= 0, f"cov-ridge must be at least 0, got {self.cov_ridge}"),
        ]
        for ok, message in checks:
            if not ok:
                raise EditError(message)

    def to_dict(self) -> dict[str, Any]:
        return dict(finite(asdict(self)))


@dataclass
class WeightUpdate:
    """What a method computed: new values of some of the model's weights (by their HF names), and
    method-specific numbers worth recording (losses, norms, the covariance sample)."""

    new_weights: dict[str, torch.Tensor]
    steps_run: int
    losses: list[float] = field(default_factory=list)  # the objective per step
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class EditResult:
    request: EditRequest
    params: EditParams  # resolved: steps and lr filled in
    model: LoadedModel = field(repr=False)  # the edited copy; discover() and the outcome metrics run on it
    original_sha256: str
    edited_sha256: str
    weight_names: list[str]
    delta_norm: float  # Frobenius norm of the change, all edited weights together
    relative_delta: float  # delta_norm / norm of the original weights it changed
    steps_run: int
    losses: list[float]
    details: dict[str, Any]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(
            finite(
                {
                    "request": self.request.to_dict(),
                    "params": self.params.to_dict(),
                    "model": self.model.name,
                    "original_sha256": self.original_sha256,
                    "edited_sha256": self.edited_sha256,
                    "weight_names": self.weight_names,
                    "delta_norm": self.delta_norm,
                    "relative_delta": self.relative_delta,
                    "steps_run": self.steps_run,
                    "losses": self.losses,
                    "details": self.details,
                    "seconds": self.seconds,
                }
            )
        )


# (the model, a plain_copy of it to compute on, the request, resolved params) -> new weights. A method
# must not write to either model.
Method = Callable[[LoadedModel, nn.Module, EditRequest, EditParams], WeightUpdate]


@dataclass(frozen=True)
class Editor:
    name: str
    run: Method
    default_steps: int
    default_lr: float
    description: str


def object_ids(model: LoadedModel, text: str) -> list[int]:
    """Token ids of an object as it follows a prompt (with a leading space, as `pairs` tokenizes it)."""
    return model.encode_continuation(" " + text.strip())


# Where the MLP's output projection lives --------------------------------------------------------------

# (HF weight name pattern, stored as [d_mlp, d_model] (GPT-2's Conv1D) rather than [d_model, d_mlp])
_MLP_OUT = (
    ("model.layers.{layer}.mlp.down_proj.weight", False),  # Llama, Mistral, Qwen, Gemma
    ("transformer.h.{layer}.mlp.c_proj.weight", True),  # GPT-2
)


@dataclass(frozen=True)
class MlpOut:
    """One MLP's output projection: the weight's HF name and layout, and the bias's name if any."""

    name: str
    transposed: bool
    bias: str | None

    @property
    def module(self) -> str:
        return self.name.removesuffix(".weight")

    def matrix(self, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weight as `[d_model, d_mlp]` (output x input), whatever its stored layout."""
        weight = weights[self.name]
        return weight.T if self.transposed else weight

    def stored(self, matrix: torch.Tensor) -> torch.Tensor:
        """A `[d_model, d_mlp]` matrix in the stored layout."""
        return (matrix.T if self.transposed else matrix).contiguous()


def mlp_out_weight(model: LoadedModel, layer: int) -> MlpOut:
    for pattern, transposed in _MLP_OUT:
        name = pattern.format(layer=layer)
        if name in model.weights:
            bias = name.removesuffix("weight") + "bias"
            return MlpOut(name, transposed, bias if bias in model.weights else None)
    raise EditError(
        f"model {model.name!r} ({model.architecture}) has no MLP output projection the editors know at "
        f"layer {layer}"
    )


KeyHook = Callable[[torch.Tensor], None]
ValueHook = Callable[[torch.Tensor], torch.Tensor]


@contextmanager
def mlp_hooks(
    plain: nn.Module, mlp: MlpOut, on_key: KeyHook | None = None, on_value: ValueHook | None = None
) -> Iterator[None]:
    """Hooks on a plain HF model's MLP output projection: `on_key(k)` sees its input (the MLP's hidden
    activation `[batch, pos, d_mlp]`), `on_value(v)` may replace its output (the MLP's output, bias
    included, `[batch, pos, d_model]`)."""
    module = plain.get_submodule(mlp.module)
    handles = []
    if on_key is not None:
        key_hook = on_key
        handles.append(module.register_forward_pre_hook(lambda _, args: key_hook(args[0])))
    if on_value is not None:
        value_hook = on_value
        handles.append(module.register_forward_hook(lambda _, args, out: value_hook(out)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# The edited copy -------------------------------------------------------------------------------------


def plain_copy(model: LoadedModel) -> nn.Module:
    """A plain HF model (no bridge) of the same class and config holding copies of the model's weights,
    frozen and in eval mode. Methods optimize on it with ordinary torch hooks, much faster than through
    the bridge's per-head hooks; the edit is then written into it and it is wrapped."""
    from transformers.initialization import no_init_weights

    with no_init_weights():  # random init skipped: every weight is overwritten
        fresh: nn.Module = type(model.hf_model)(copy.deepcopy(model.hf_model.config))
    fresh.load_state_dict(model.weights, strict=True)  # copies into the fresh tensors
    fresh.to(model.device).eval()
    for parameter in fresh.parameters():
        parameter.requires_grad_(False)
    return fresh


def copy_with(
    model: LoadedModel, new_weights: dict[str, torch.Tensor], plain: nn.Module | None = None
) -> LoadedModel:
    """A new LoadedModel whose weights are the original's with `new_weights` replaced, wrapped in its own
    bridge. `plain` (a `plain_copy` of the model, written to) saves making another copy."""
    unknown = sorted(set(new_weights) - set(model.weights))
    if unknown:
        raise EditError(f"no weights named {', '.join(unknown)} in model {model.name!r}")
    plain = plain_copy(model) if plain is None else plain
    with torch.no_grad():
        for name, tensor in new_weights.items():
            plain.get_parameter(name).copy_(tensor)
    return wrap(
        model.name, plain, model.tokenizer, prepend_bos=model.prepend_bos, edge_level=model.edge_level
    )
