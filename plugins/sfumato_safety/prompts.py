"""``safety.screen_prompt``: refuse or flag prompts before anything is generated.

Two checks, both configurable per graph (or per server policy):

- explicit terms: whole words or phrases, matched case-insensitively after
  Unicode normalization, so ``Gore`` and ``gore!`` match ``gore`` but
  ``gorey`` does not;
- concepts: each concept is a name and a few example phrases; the prompt and
  each of its clauses (split at ``,``, ``;``, ``.``, ``|`` and new lines) are
  embedded with a sentence encoder (the shipped all-MiniLM-L6-v2 by default,
  through the ``encode.sentence`` node type) and compared by cosine
  similarity with every example. A clause is checked on its own because a
  harmful clause at the end of a long, harmless prompt barely moves the
  embedding of the whole prompt.

The node's ``screening`` output says what matched and why; a refused prompt
raises :class:`PromptRefusedError`, so nothing downstream (the generator) runs
and ``sfumato run`` ends with the reason and exit code 1.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any, Literal

from sfumato import Field, Port, RunContext, SfumatoError, node

DEFAULT_ENCODER = "all-MiniLM-L6-v2"

#: Similarity (cosine, all-MiniLM-L6-v2) at or above which a clause matches a concept. Measured on
#: the examples below: harmless shape prompts score 0.1-0.35, the matching prompts in
#: tests/test_safety.py 0.6-1.0, borderline ones ("a nude figure drawing") about 0.55.
DEFAULT_THRESHOLD = 0.55

#: The default concept list: a name and example phrases for each. Deployments replace it with
#: their own (the ``concepts`` input, or a server policy file).
DEFAULT_CONCEPTS: dict[str, list[str]] = {
    "graphic violence": ["graphic violence", "a bloody corpse", "gore and mutilation", "a person being killed",
                         "a mass shooting"],
    "sexual content": ["explicit sexual content", "a naked person", "pornography"],
    "sexualised minors": ["sexualised children", "a naked child"],
    "self-harm": ["self-harm", "suicide", "a person cutting themselves"],
    "hate": ["hate symbols", "a nazi flag", "extremist propaganda", "racist imagery"],
}

_CLAUSE_SEPARATORS = re.compile(r"[,;.|\n]+")


class PromptRefusedError(SfumatoError):
    """Safety screening refused a prompt; ``reasons`` lists what matched."""

    def __init__(self, reasons: list[dict[str, Any]]) -> None:
        self.reasons = reasons
        super().__init__("the prompt was refused by safety screening: " + "; ".join(map(describe_reason, reasons)))


def describe_reason(reason: dict[str, Any]) -> str:
    """One line for a reason of the ``screening`` output."""
    if reason["kind"] == "term":
        return f"it contains the blocked term {reason['term']!r}"
    return (f"it resembles the concept {reason['concept']!r} (similarity {reason['similarity']:.2f} to "
            f"{reason['example']!r}, threshold {reason['threshold']:.2f})")


def _words(text: str) -> str:
    """Text reduced to lower-case words separated by single spaces, framed by spaces."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " " + " ".join(re.findall(r"\w+", folded)) + " "


def matching_terms(text: str, terms: list[str]) -> list[str]:
    """The ``terms`` (words or phrases) that occur in ``text`` as whole words."""
    words = _words(text)
    return [term for term in terms if _words(term).strip() and _words(term) in words]


def clauses(text: str) -> list[str]:
    """The prompt itself and each of its clauses, without repeats."""
    parts = [text.strip()] + [part.strip() for part in _CLAUSE_SEPARATORS.split(text)]
    return list(dict.fromkeys(part for part in parts if part))


def _check_concepts(concepts: dict[str, list[str]]) -> None:
    for name, examples in concepts.items():
        if not name.strip():
            raise ValueError("input 'concepts': a concept name is empty")
        if not examples or not all(isinstance(e, str) and e.strip() for e in examples):
            raise ValueError(f"input 'concepts': concept {name!r} needs at least one non-empty example phrase")


def concept_matches(context: RunContext, text: str, concepts: dict[str, list[str]], threshold: float,
                    model: str) -> list[dict[str, Any]]:
    """The concepts a clause of ``text`` resembles at ``threshold`` or more, best match per concept."""
    names = [name for name, examples in concepts.items() for _ in examples]
    examples = [example for examples in concepts.values() for example in examples]
    parts = clauses(text)
    if not examples or not parts:
        return []  # nothing to compare (an empty prompt resembles nothing)
    vectors = context.call_node("encode.sentence", texts=examples + parts, model=model).vectors
    similarity = vectors[len(examples):] @ vectors[:len(examples)].T  # unit vectors: cosine
    best: dict[str, dict[str, Any]] = {}
    for column, (name, example) in enumerate(zip(names, examples)):
        score = float(similarity[:, column].max())
        if score >= threshold and score > best.get(name, {}).get("similarity", -1.0):
            best[name] = {"kind": "concept", "concept": name, "example": example,
                          "similarity": round(score, 4), "threshold": threshold}
    return sorted(best.values(), key=lambda reason: -reason["similarity"])


# The encoder runs on the run's device and dtype, the default cache keys of a node with a context.
@node("safety.screen_prompt", category="safety", outputs={"text": str, "screening": dict})
def screen_prompt(
    text: str,
    context: RunContext,
    action: Literal["refuse", "flag"] = "refuse",
    concepts: Annotated[dict[str, list[str]], Port("JSON")] = DEFAULT_CONCEPTS,
    terms: list[str] = [],  # noqa: B006 - never mutated; JSON literal default
    threshold: Annotated[float, Field(ge=0.0, le=1.0)] = DEFAULT_THRESHOLD,
    model: str = DEFAULT_ENCODER,
) -> dict[str, Any]:
    """Refuse or flag a prompt that contains a blocked term or resembles a listed concept.

    Link the generator's prompt through ``text``: a refused prompt stops the
    run here (the error names the concept or term, and ``sfumato run`` exits
    with 1), so it never reaches the generator. With ``action="flag"`` the
    prompt passes unchanged and ``screening`` records what matched; make it a
    graph output to see it in the run report.

    Args:
        text: the prompt to screen; passed on unchanged when it is not refused.
        action: ``refuse`` stops the run; ``flag`` only reports.
        concepts: concept name -> example phrases (the default list covers violence,
            sexual content, minors, self-harm and hate); ``{}`` turns concept screening off.
        terms: words or phrases refused wherever they occur as whole words.
        threshold: the cosine similarity to an example phrase at which a clause matches.
        model: the sentence encoder (a model name or folder).
    """
    _check_concepts(concepts)
    reasons: list[dict[str, Any]] = [{"kind": "term", "term": term} for term in matching_terms(text, terms)]
    reasons += concept_matches(context, text, concepts, threshold, model)
    if reasons and action == "refuse":
        raise PromptRefusedError(reasons)
    return {"text": text, "screening": screening_summary(reasons, action, threshold, model)}


def screening_summary(reasons: list[dict[str, Any]], action: str, threshold: float, model: str) -> dict[str, Any]:
    """The ``screening`` output: flat (text and numbers only), so a run report shows it whole."""
    concepts = [reason for reason in reasons if reason["kind"] == "concept"]
    return {
        "verdict": "flagged" if reasons else "passed",
        "action": action,
        "reason": "; ".join(map(describe_reason, reasons)),
        "concepts": ", ".join(reason["concept"] for reason in concepts),
        "terms": ", ".join(reason["term"] for reason in reasons if reason["kind"] == "term"),
        "similarity": concepts[0]["similarity"] if concepts else None,
        "threshold": threshold,
        "model": model,
    }
