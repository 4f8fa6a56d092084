"""Head roles in a circuit, from where each head attends at the last prompt position (Yao et al., section 4).

A *mover* head attends to the subject and moves it to the last token; a *relation* head attends to the
relation words of the prompt; a *mix* head does both; any other head is *other*. A head's subject (relation)
attention is the attention mass from the last position onto the subject (relation-word) tokens, summed over
those tokens and averaged over the prompts.

Relation words are the template's content words: its words outside the subject, less closed-class words
(articles, prepositions, auxiliaries, pronouns, conjunctions, wh-words; `FUNCTION_WORDS`) and less the last
token, which is where attention is read from. In "The capital of {} is the city of" they are "capital" and
"city".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from atlas.core.models import LoadedModel
from atlas.spec.corpus import Fact, Relation
from atlas.spec.json_safe import finite

Role = Literal["mover", "relation", "mix", "other"]
ROLES: tuple[Role, ...] = ("mover", "relation", "mix", "other")

# Closed-class words: never relation words.
FUNCTION_WORDS = frozenset(
    """a an the this that these those of in on at to for by with from into as about than and or but not
    is are was were be been being do does did has have had will would can could should may might
    it its they them their he him his she her we our you your i me my who whom whose which what where when
    how there here s t also""".split()  # noqa: SIM905
)
_WORD = re.compile(r"[A-Za-z]+")
HEAD_NAME = re.compile(r"a(\d+)\.h(\d+)")


def pattern_hook(layer: int) -> str:
    """The bridge's attention pattern, `[batch, head, query pos, key pos]` (checked on Llama and GPT-2)."""
    return f"blocks.{layer}.attn.hook_pattern"


@dataclass(frozen=True)
class RoleThresholds:
    """Attention mass (from the last position, summed over a span's tokens) at which a head counts as
    attending to the subject (`mover`) or to the relation words (`relation`).

    0.3 by default: most heads of a trained model park most of their mass on the first token (an attention
    sink), so a third of it on one span is a head that selects that span; uniform attention over a typical
    6 to 10 token prompt puts 0.1 to 0.17 on a one-token span, well below it."""

    mover: float = 0.3
    relation: float = 0.3

    def __post_init__(self) -> None:
        for name, value in (("mover", self.mover), ("relation", self.relation)):
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} threshold must be in (0, 1], got {value}")

    def classify(self, subject: float, relation: float) -> Role:
        to_subject, to_relation = subject >= self.mover, relation >= self.relation
        if to_subject and to_relation:
            return "mix"
        if to_subject:
            return "mover"
        if to_relation:
            return "relation"
        return "other"


@dataclass(frozen=True)
class PromptSpans:
    """A prompt's token ids (as the model is fed them) and the positions of its subject and relation words."""

    prompt: str
    token_ids: tuple[int, ...]
    subject: tuple[int, ...]
    relation: tuple[int, ...]


def prompt_spans(
    model: LoadedModel, relation: Relation, fact: Fact, template: str | int | None = None
) -> PromptSpans:
    """Tokenize a fact's prompt and locate its subject and relation-word tokens by character offsets."""
    chosen = relation.template(template)
    prefix, _, suffix = chosen.partition("{}")
    text = prefix + fact.subject + suffix
    encoded = model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(encoded["input_ids"])
    offsets: list[tuple[int, int]] = [tuple(o) for o in encoded["offset_mapping"]]
    shift = 0
    if model.prepend_bos and model.tokenizer.bos_token_id is not None:
        ids, offsets, shift = [int(model.tokenizer.bos_token_id), *ids], [(0, 0), *offsets], 1
    subject_chars = (len(prefix), len(prefix) + len(fact.subject))
    words = [
        (m.start() + base, m.end() + base)
        for part, base in ((prefix, 0), (suffix, subject_chars[1]))
        for m in _WORD.finditer(part)
        if m.group().lower() not in FUNCTION_WORDS
    ]
    last = len(ids) - 1

    def overlaps(span: tuple[int, int], chars: tuple[int, int]) -> bool:
        return span[0] < chars[1] and chars[0] < span[1]

    subject = tuple(i for i, span in enumerate(offsets) if i >= shift and overlaps(span, subject_chars))
    related = tuple(
        i
        for i, span in enumerate(offsets)
        if i >= shift and i != last and i not in subject and any(overlaps(span, w) for w in words)
    )
    return PromptSpans(text, tuple(ids), subject, related)


@torch.no_grad()
def last_position_attention(
    model: LoadedModel, spans: Sequence[PromptSpans], batch_size: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean attention mass from the last position onto the subject and onto the relation words, for every
    head: two `[n_layers, n_heads]` tensors. Prompts without relation words do not count toward the second."""
    subject_sum = torch.zeros(model.n_layers, model.n_heads)
    relation_sum = torch.zeros(model.n_layers, model.n_heads)
    with_relation = 0
    pad = int(model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0)
    for start in range(0, len(spans), batch_size):
        chunk = spans[start : start + batch_size]
        width = max(len(s.token_ids) for s in chunk)
        tokens = torch.full((len(chunk), width), pad, dtype=torch.long)
        # Right padding: a real token never attends to the padding on its right, so no mask is needed.
        subject_mask = torch.zeros(len(chunk), width)
        relation_mask = torch.zeros(len(chunk), width)
        for row, item in enumerate(chunk):
            tokens[row, : len(item.token_ids)] = torch.tensor(item.token_ids)
            subject_mask[row, list(item.subject)] = 1.0
            relation_mask[row, list(item.relation)] = 1.0
        last = torch.tensor([len(s.token_ids) - 1 for s in chunk])
        stacked = _last_row_patterns(model, tokens, last)  # [batch, layer, head, key]
        subject_sum += torch.einsum("blhk,bk->lh", stacked, subject_mask)
        relation_sum += torch.einsum("blhk,bk->lh", stacked, relation_mask)
        with_relation += sum(1 for s in chunk if s.relation)
    return subject_sum / max(len(spans), 1), relation_sum / max(with_relation, 1)


def _last_row_patterns(model: LoadedModel, tokens: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Every head's attention row at each sequence's `last` position: `[batch, layer, head, key]`."""
    rows = torch.arange(tokens.shape[0])
    patterns: list[torch.Tensor] = []

    def grab(pattern: torch.Tensor, hook: object) -> None:
        patterns.append(pattern.detach()[rows, :, last].float().cpu())  # [batch, head, key]

    hooks = [(pattern_hook(layer), grab) for layer in range(model.n_layers)]
    model.bridge.run_with_hooks(tokens.to(model.device), fwd_hooks=hooks, return_type=None)
    return torch.stack(patterns, 1)


@dataclass(frozen=True)
class HeadRole:
    name: str
    layer: int
    head: int
    role: Role
    subject_attention: float
    relation_attention: float

    def to_dict(self) -> dict[str, Any]:
        return finite(asdict(self))


@dataclass
class HeadRoles:
    """The roles of a circuit's heads, with the thresholds and prompts they were found with."""

    thresholds: RoleThresholds
    n_prompts: int
    heads: list[HeadRole] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        found = Counter(head.role for head in self.heads)
        return {role: found.get(role, 0) for role in ROLES}

    def by_name(self) -> dict[str, HeadRole]:
        return {head.name: head for head in self.heads}

    def to_dict(self) -> dict[str, Any]:
        return finite(
            {
                "thresholds": asdict(self.thresholds),
                "n_prompts": self.n_prompts,
                "counts": self.counts(),
                "heads": [asdict(head) for head in self.heads],
            }
        )


def circuit_heads(nodes: Sequence[str]) -> list[tuple[int, int]]:
    """(layer, head) of every head among node names (`a3.h5`), in the given order."""
    return [(int(m.group(1)), int(m.group(2))) for m in map(HEAD_NAME.fullmatch, nodes) if m]


def head_roles(
    model: LoadedModel,
    nodes: Sequence[str],
    spans: Sequence[PromptSpans],
    thresholds: RoleThresholds | None = None,
) -> HeadRoles:
    """The role of each head among `nodes` (a circuit's node names; other nodes are skipped)."""
    thresholds = thresholds or RoleThresholds()
    if not spans:
        raise ValueError("head roles need at least one prompt")
    subject, relation = last_position_attention(model, spans)
    heads = [
        HeadRole(
            name=f"a{layer}.h{head}",
            layer=layer,
            head=head,
            role=thresholds.classify(float(subject[layer, head]), float(relation[layer, head])),
            subject_attention=float(subject[layer, head]),
            relation_attention=float(relation[layer, head]),
        )
        for layer, head in circuit_heads(nodes)
    ]
    return HeadRoles(thresholds, len(spans), heads)


def relation_head_roles(
    model: LoadedModel,
    relation: Relation,
    nodes: Sequence[str],
    facts: Sequence[Fact] | None = None,
    template: str | int | None = None,
    thresholds: RoleThresholds | None = None,
) -> HeadRoles:
    """Roles of a circuit's heads on a relation's prompts (by default all its facts)."""
    chosen = relation.facts if facts is None else facts
    spans = [prompt_spans(model, relation, fact, template) for fact in chosen]
    return head_roles(model, nodes, spans, thresholds)
