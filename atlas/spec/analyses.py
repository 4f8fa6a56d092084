"""The relation-level analyses, by kind: the one list the CLI, the API's schema, the catalogue and the job
queue derive from, and each kind's parameters with their validation. Torch-free: `atlas.core.hallucination`
and `atlas.core.icl` compute the analyses, `atlas.analyses` runs and stores them.

Adding an analysis kind: an entry in ANALYSES with its parameters class here, its computation under
`atlas/core/`, and its branch in `atlas.analyses.compute` (see docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

from atlas.spec.methods import METHOD_NAMES
from atlas.spec.params import ABLATIONS, DEFAULT_TOP_N, MAX_IG_STEPS, MAX_SEED, Ablation, DiscoveryError

HeadAblation = Literal["mean", "zero"]
HEAD_ABLATIONS: tuple[str, ...] = ("mean", "zero")
MAX_FACTS = 10_000
MAX_BATCH = 1024
MAX_TOP_N = 1_000_000
MAX_ID = 2**63 - 1
MAX_TEMPLATE = 2000


class AnalysisError(DiscoveryError):
    """An analysis cannot run as asked; the message says why, `field` names the value at fault."""


def _integer(field: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise AnalysisError(
            f"{field} must be an integer at least {low} and at most {high}, got {value!r}", field=field
        )


def _choice(field: str, value: object, options: tuple[str, ...]) -> None:
    if value not in options:
        raise AnalysisError(f"{field} must be one of {', '.join(options)}, got {value!r}", field=field)


def _template(value: object) -> None:
    """None (the first zero-shot template), an index, or a line of text with one `{}` (no control characters
    or unpaired surrogates: the catalogue stores it)."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return
    if (
        isinstance(value, str)
        and value.count("{}") == 1
        and len(value) <= MAX_TEMPLATE
        and not any(ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF for c in value)
    ):
        return
    raise AnalysisError(
        f"template must be an index, a line of text with one '{{}}', or null, got {value!r}"[:300],
        field="template",
    )


def _flag(field: str, value: object) -> None:
    if not isinstance(value, bool):
        raise AnalysisError(f"{field} must be true or false, got {value!r}", field=field)


@dataclass(frozen=True)
class HallucinationParams:
    method: str = "eap"
    ig_steps: int = 5
    top_n: int = DEFAULT_TOP_N
    max_facts: int = 16  # wrong (and correct) facts used for each circuit
    max_checked: int = 200  # facts run through the model, in seeded order, to find wrong and correct ones
    template: str | int | None = None
    ablation: Ablation = "corrupt"
    batch_size: int = 8
    seed: int = 0
    top_k: int = 10  # components listed as pushing the wrong answer

    def validate(self) -> None:
        _choice("method", self.method, METHOD_NAMES)
        _integer("ig_steps", self.ig_steps, 1, MAX_IG_STEPS)
        _integer("top_n", self.top_n, 1, MAX_TOP_N)
        _integer("max_facts", self.max_facts, 1, MAX_FACTS)
        _integer("max_checked", self.max_checked, 1, MAX_FACTS)
        _template(self.template)
        _choice("ablation", self.ablation, ABLATIONS)
        _integer("batch_size", self.batch_size, 1, MAX_BATCH)
        _integer("seed", self.seed, 0, MAX_SEED)
        _integer("top_k", self.top_k, 1, 1000)


@dataclass(frozen=True)
class ICLParams:
    k: int = 3  # demonstrations
    method: str = "eap"
    ig_steps: int = 5
    top_n: int = 30  # heads and MLPs in each (node-level) circuit
    max_facts: int = 16
    template: str | int | None = None
    ablation: HeadAblation = "mean"
    n_random: int = 5  # random head sets averaged for the baseline
    batch_size: int = 8
    seed: int = 0
    known_only: bool = True  # only facts whose object is in the top 10 with demonstrations

    def validate(self) -> None:
        _integer("k", self.k, 1, 64)
        _choice("method", self.method, METHOD_NAMES)
        _integer("ig_steps", self.ig_steps, 1, MAX_IG_STEPS)
        _integer("top_n", self.top_n, 1, MAX_TOP_N)
        _integer("max_facts", self.max_facts, 1, MAX_FACTS)
        _template(self.template)
        if self.ablation not in HEAD_ABLATIONS:
            raise AnalysisError(
                f"head ablation must be mean or zero, got {self.ablation!r}", field="ablation"
            )
        _integer("n_random", self.n_random, 1, 1000)
        _integer("batch_size", self.batch_size, 1, MAX_BATCH)
        _integer("seed", self.seed, 0, MAX_SEED)
        _flag("known_only", self.known_only)


@dataclass(frozen=True)
class LensParams:
    max_facts: int = 16  # the relation's first facts, in corpus order
    template: str | int | None = None
    circuit_id: int | None = None  # whose nodes are read; None: the newest stored circuit, if any

    def validate(self) -> None:
        _integer("max_facts", self.max_facts, 1, MAX_FACTS)
        _template(self.template)
        if self.circuit_id is not None:
            _integer("circuit_id", self.circuit_id, 1, MAX_ID)


@dataclass(frozen=True)
class AnalysisSpec:
    name: str
    params: type[Any]  # a frozen dataclass with validate(), raising AnalysisError naming the field
    summary: str


ANALYSES: tuple[AnalysisSpec, ...] = (
    AnalysisSpec(
        "hallucination",
        HallucinationParams,
        "the wrong answers' circuit against the correct facts' circuit, and what pushes the wrong answers",
    ),
    AnalysisSpec(
        "icl",
        ICLParams,
        "zero-shot vs k-shot circuits, and the ICL-only heads ablated against random heads (Table 2)",
    ),
    AnalysisSpec(
        "lens",
        LensParams,
        "where the relation's objects surface by logit lens, over a stored circuit's heads and MLPs",
    ),
)
ANALYSIS_KINDS: tuple[str, ...] = tuple(a.name for a in ANALYSES)


def analysis_spec(kind: str) -> AnalysisSpec:
    for spec in ANALYSES:
        if spec.name == kind:
            return spec
    raise AnalysisError(f"unknown analysis kind {kind!r}: one of {', '.join(ANALYSIS_KINDS)}", field="kind")


def make_params(kind: str, options: dict[str, Any] | Any | None = None) -> Any:
    """The kind's parameters from a dict of options (None values: the default) or a params object, checked.
    Bad ones raise AnalysisError naming the field (`params.top_n`)."""
    cls = analysis_spec(kind).params
    if options is None or isinstance(options, dict):
        names = {f.name for f in fields(cls)}
        given = {k: v for k, v in (options or {}).items() if v is not None}
        unknown = sorted(set(given) - names)
        if unknown:
            listed = ", ".join(map(str, unknown))
            raise AnalysisError(
                f"unknown {kind} parameter(s): {listed}; known: {', '.join(sorted(names))}",
                field=f"params.{unknown[0]}",
            )
        params = cls(**given)
    elif isinstance(options, cls):
        params = options
    else:
        wrong = type(options).__name__
        raise AnalysisError(
            f"{kind} parameters must be a dict or {cls.__name__}, not {wrong}", field="params"
        )
    try:
        params.validate()
    except AnalysisError as error:
        raise AnalysisError(f"bad {kind} parameters: {error}", field=f"params.{error.field}") from None
    return params
