"""Relation corpora in the LRE format (Hernandez et al., 2023): reading, validation and hashing.

One relation per JSON file::

    {"name": "country capital city",
     "prompt_templates": ["The capital city of {} is", ...],
     "prompt_templates_zs": ["The capital of {} is the city of", ...],
     "properties": {"relation_type": "factual", "domain_name": "country", "range_name": "city",
                    "symmetric": false},
     "samples": [{"subject": "France", "object": "Paris"}, ...]}
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atlas.spec.errors import Invalid

# "control": tasks that need no stored knowledge (copying a word seen in the prompt), the baseline that tells
# a component recurring in knowledge circuits from one every circuit uses (atlas.spec.recurrence_stats).
CATEGORIES = ("factual", "commonsense", "linguistic", "bias", "control")

# Some published LRE files escape non-ASCII twice ("Bras\\u00edlia"): a literal "\u00ed" survives parsing.
_LITERAL_UNICODE_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


class CorpusError(Invalid):
    """An unusable relation file or corpus; the one-line message names the file, the entry and the problem."""


@dataclass(frozen=True)
class Fact:
    subject: str
    object: str


@dataclass(frozen=True)
class Relation:
    name: str
    title: str
    category: str
    domain: str
    range: str
    symmetric: bool
    prompt_templates: tuple[str, ...]
    prompt_templates_zs: tuple[str, ...]
    facts: tuple[Fact, ...]
    source: str

    def template(self, choice: str | int | None = None) -> str:
        """None: the first zero-shot template (else the first template); int: index into zs + plain
        templates; str: that template itself."""
        if choice is None:
            return (self.prompt_templates_zs or self.prompt_templates)[0]
        if isinstance(choice, str):
            _check_template(choice, self.source, f"template {choice!r}")
            return choice
        every = self.prompt_templates_zs + self.prompt_templates
        if isinstance(choice, bool) or not 0 <= choice < len(every):
            raise CorpusError(
                f"{self.source}: template {choice!r}: no such template index (relation has {len(every)})"
            )
        return every[choice]

    def prompt(self, subject: str, template: str | int | None = None) -> str:
        return self.template(template).replace("{}", subject, 1)


def _check_text(text: str, file: str, entry: str) -> None:
    """Text the catalogue can store: no NUL (PostgreSQL refuses it) and valid Unicode (no lone
    surrogates, which no UTF-8 database or tokenizer takes)."""
    if "\x00" in text:
        raise CorpusError(f"{file}: {entry}: contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise CorpusError(f"{file}: {entry}: contains an unpaired surrogate (invalid Unicode)") from None


def _check_template(template: str, file: str, entry: str) -> None:
    _check_text(template, file, entry)
    count = template.count("{}")
    if count != 1:
        raise CorpusError(f"{file}: {entry}: a template needs exactly one '{{}}', found {count}")


def _decode_literal_escapes(text: str) -> str:
    if "\\u" not in text:
        return text
    text = _LITERAL_UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    # Escaped surrogate pairs decode to two lone surrogates; join them into one character.
    return text.encode("utf-16", "surrogatepass").decode("utf-16")


def _templates(data: dict[str, Any], key: str, file: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise CorpusError(f"{file}: {key}: expected a list of strings, got {type(value).__name__}")
    for i, template in enumerate(value):
        if not isinstance(template, str):
            raise CorpusError(f"{file}: {key}[{i}]: expected a string, got {type(template).__name__}")
        _check_template(template, file, f"{key}[{i}]")
    return tuple(value)


def _facts(samples: Any, file: str) -> tuple[Fact, ...]:
    if not isinstance(samples, list) or not samples:
        raise CorpusError(f"{file}: samples: expected a non-empty list of {{subject, object}} objects")
    facts: dict[Fact, None] = {}  # insertion-ordered set: exact duplicates keep the first occurrence
    for i, sample in enumerate(samples):
        if not isinstance(sample, dict):
            raise CorpusError(f"{file}: samples[{i}]: expected an object, got {type(sample).__name__}")
        values = []
        for key in ("subject", "object"):
            if key not in sample:
                raise CorpusError(f"{file}: samples[{i}]: missing {key!r}")
            value = sample[key]
            if not isinstance(value, str):
                raise CorpusError(
                    f"{file}: samples[{i}].{key}: expected a string, got {type(value).__name__}"
                )
            try:
                value = _decode_literal_escapes(value).strip()
            except UnicodeError:
                raise CorpusError(f"{file}: samples[{i}].{key}: an escape is not valid Unicode") from None
            if not value:
                raise CorpusError(f"{file}: samples[{i}].{key}: empty")
            _check_text(value, file, f"samples[{i}].{key}")
            values.append(value)
        facts.setdefault(Fact(values[0], values[1]), None)
    return tuple(facts)


def _optional_str(properties: dict[str, Any], key: str, file: str) -> str:
    value = properties.get(key, "")
    if not isinstance(value, str):
        raise CorpusError(f"{file}: properties.{key}: expected a string, got {type(value).__name__}")
    _check_text(value, file, f"properties.{key}")
    return value


def load_relation_file(path: str | os.PathLike[str]) -> Relation:
    file = Path(path)
    where = str(file)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CorpusError(f"{where}: file: not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CorpusError(f"{where}: file: cannot be read: {error}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise CorpusError(
            f"{where}: line {error.lineno} col {error.colno}: invalid JSON: {error.msg}"
        ) from None
    except RecursionError:
        raise CorpusError(f"{where}: invalid JSON: nested too deeply to be a relation file") from None
    if not isinstance(data, dict):
        raise CorpusError(f"{where}: top level: expected a JSON object, got {type(data).__name__}")

    title = data.get("name", file.stem.replace("_", " "))
    if not isinstance(title, str) or not title.strip():
        raise CorpusError(f"{where}: name: expected a non-empty string")
    _check_text(title, where, "name")
    properties = data.get("properties")
    if not isinstance(properties, dict):
        raise CorpusError(f"{where}: properties: missing or not an object")
    category = properties.get("relation_type")
    if category not in CATEGORIES:
        raise CorpusError(
            f"{where}: properties.relation_type: {category!r} is not one of {', '.join(CATEGORIES)}"
        )
    symmetric = properties.get("symmetric", False)
    if not isinstance(symmetric, bool):
        raise CorpusError(f"{where}: properties.symmetric: expected true or false, got {symmetric!r}")

    templates = _templates(data, "prompt_templates", where)
    templates_zs = _templates(data, "prompt_templates_zs", where)
    if not templates and not templates_zs:
        raise CorpusError(f"{where}: prompt_templates: no templates, and none in prompt_templates_zs")
    if "samples" not in data:
        raise CorpusError(f"{where}: samples: missing")
    return Relation(
        name=file.stem,
        title=title.strip(),
        category=category,
        domain=_optional_str(properties, "domain_name", where),
        range=_optional_str(properties, "range_name", where),
        symmetric=symmetric,
        prompt_templates=templates,
        prompt_templates_zs=templates_zs,
        facts=_facts(data["samples"], where),
        source=where,
    )


def load_corpus(path: str | os.PathLike[str]) -> dict[str, Relation]:
    """One relation file, or every *.json under a folder (recursive, sorted), keyed by relation name."""
    root = Path(path)
    if root.is_dir():
        files = sorted(root.rglob("*.json"))
        if not files:
            raise CorpusError(f"{root}: folder: contains no .json relation files")
    elif root.exists():
        files = [root]
    else:
        raise CorpusError(f"{root}: path: not found")
    relations: dict[str, Relation] = {}
    for file in files:
        relation = load_relation_file(file)
        if relation.name in relations:
            first = relations[relation.name].source
            raise CorpusError(f"{file}: name: relation {relation.name!r} is already defined by {first}")
        relations[relation.name] = relation
    return relations


def bundled_corpus_path() -> Path:
    """The small corpus shipped inside the package (atlas/data/corpus)."""
    return Path(__file__).resolve().parent.parent / "data" / "corpus"


def corpus_hash(relations: Iterable[Relation]) -> str:
    """sha256 over the relations' content (not their source paths), independent of the relations' order."""
    records = sorted(
        json.dumps(
            {
                "name": r.name,
                "title": r.title,
                "category": r.category,
                "domain": r.domain,
                "range": r.range,
                "symmetric": r.symmetric,
                "prompt_templates": list(r.prompt_templates),
                "prompt_templates_zs": list(r.prompt_templates_zs),
                "facts": [[f.subject, f.object] for f in r.facts],
            },
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        for r in relations
    )
    return hashlib.sha256(json.dumps(records, ensure_ascii=False).encode("utf-8")).hexdigest()
