"""The grammar planner: a deterministic parser from a prompt to a :class:`Layout`.

It reads noun phrases (``two red circles``), one spatial relation between the
first two phrases (``to the left of``, ``right of``, ``above``, ``below``) and
the background (``on a black background``, ``against gray``, ``the background
is white``, ``drawn on gray``), then places the objects: a relation puts its
two objects on either side of the canvas; otherwise objects fill a row (two)
or a grid (three or four), so that no two boxes overlap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .layout import COLOUR_RGB, Layout, LayoutObject

#: Nouns the grammar recognises as objects (singular); the zoo's shapes and a few everyday things.
NOUNS: tuple[str, ...] = (
    "circle", "square", "triangle", "ball", "box", "cube", "star", "cat", "dog", "bird", "car", "tree",
    "house", "flower", "apple", "cup", "person", "chair", "book",
)
NUMBERS: dict[str, int] = {"a": 1, "an": 1, "one": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5,
                           "six": 6, "pair": 2, **{str(n): n for n in range(1, 10)}}
#: Relation phrases, longest first, and the relation each means.
RELATION_PHRASES: tuple[tuple[str, str], ...] = (
    ("on the left of", "left of"), ("to the left of", "left of"), ("left of", "left of"),
    ("on the right of", "right of"), ("to the right of", "right of"), ("right of", "right of"),
    ("on top of", "above"), ("above", "above"), ("below", "below"), ("beneath", "below"), ("under", "below"),
)
_BACKGROUND_PATTERNS: tuple[str, ...] = (
    r"(?:the )?background is (?P<c>\w+)",
    r"(?:on|against|over|in front of) (?:a |an |the )?(?P<c>\w+) (?:background|backdrop|canvas|field)",
    r"(?P<c>\w+) (?:background|backdrop|canvas)(?: with)?",
    r"(?:drawn |painted )?(?:on|against) (?P<c>\w+)$",
)
#: Most objects the planner places (a 3x3 grid).
MAX_OBJECTS = 9


@dataclass(frozen=True)
class Phrase:
    """A noun phrase: how many, of what colour (or ``""``), and the noun."""

    count: int
    colour: str
    noun: str

    @property
    def caption(self) -> str:
        return f"{self.colour} {self.noun}".strip()


@dataclass(frozen=True)
class Parse:
    """What the grammar read from a prompt."""

    phrases: tuple[Phrase, ...]
    relation: str | None
    background: str


def _singular(word: str) -> str | None:
    for candidate in (word, word[:-1] if word.endswith("s") else "", word[:-2] if word.endswith("es") else ""):
        if candidate in NOUNS:
            return candidate
    return None


def parse(prompt: str) -> Parse:
    """Read noun phrases, the relation and the background from ``prompt``."""
    text = " ".join(re.sub(r"[^a-z0-9 ]+", " ", prompt.lower()).split())
    background = ""
    for pattern in _BACKGROUND_PATTERNS:
        match = re.search(pattern, text)
        if match and match.group("c") in COLOUR_RGB:
            background = match.group("c")
            text = (text[:match.start()] + " " + text[match.end():]).strip()
            break
    relation, split_at = None, None
    for phrase, meaning in RELATION_PHRASES:
        match = re.search(rf"\b{phrase}\b", text)
        if match:
            relation, split_at = meaning, match.start()
            break
    phrases: list[Phrase] = []
    relation_phrase_index = None
    count, colour = 1, ""
    position = 0
    for word in text.split():
        if split_at is not None and relation_phrase_index is None and position >= split_at:
            relation_phrase_index = len(phrases)
        position += len(word) + 1
        if word in NUMBERS:
            count = NUMBERS[word]
        elif word in COLOUR_RGB:
            colour = word
        elif (noun := _singular(word)) is not None:
            phrases.append(Phrase(count, colour, noun))
            count, colour = 1, ""
    # A relation counts only between a phrase before it and one after it.
    if relation is not None and not (relation_phrase_index == 1 and len(phrases) >= 2):
        relation = None
    return Parse(tuple(phrases), relation, background)


def _grid(count: int) -> list[tuple[float, float]]:
    """Centres for ``count`` objects: a row of two, a triangle of three, a 2x2 grid, a 3x3 grid."""
    if count == 1:
        return [(0.5, 0.5)]
    if count == 2:
        return [(0.25, 0.5), (0.75, 0.5)]
    if count == 3:
        return [(0.25, 0.25), (0.75, 0.25), (0.5, 0.75)]
    if count == 4:
        return [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)]
    return [((col + 0.5) / 3, (row + 0.5) / 3) for row in range(3) for col in range(3)][:count]


_RELATION_CENTRES = {"left of": ((0.25, 0.5), (0.75, 0.5)), "right of": ((0.75, 0.5), (0.25, 0.5)),
                     "above": ((0.5, 0.25), (0.5, 0.75)), "below": ((0.5, 0.75), (0.5, 0.25))}


def _fill_colours(parsed: Parse, palette: tuple[str, ...], background: str) -> tuple[Phrase, ...]:
    """Give each phrase without a colour one from ``palette``: not the background's, not one the prompt names."""
    taken = {phrase.colour for phrase in parsed.phrases if phrase.colour} | {background}
    free = [colour for colour in palette if colour not in taken] or [c for c in palette if c != background]
    filled, next_free = [], 0
    for phrase in parsed.phrases:
        if not phrase.colour and free:
            phrase = Phrase(phrase.count, free[next_free % len(free)], phrase.noun)
            next_free += 1
        filled.append(phrase)
    return tuple(filled)


def plan(prompt: str, *, object_size: float = 0.28, palette: tuple[str, ...] = (),
         default_background: str = "") -> Layout:
    """Plan a layout for ``prompt``: one box per object, ``object_size`` of the canvas wide (fewer for 5+).

    With a ``palette``, objects whose colour the prompt leaves open get one
    from it that stands out from the background (and from the colours the
    prompt names), so that a generator draws nothing invisible; the layout's
    notes say so. ``default_background`` is used when the prompt names none.
    Raises ``ValueError`` when the prompt names no object the grammar knows,
    or more than :data:`MAX_OBJECTS`.
    """
    parsed = parse(prompt)
    if not parsed.phrases:
        raise ValueError(f"no object found in {prompt!r}; the grammar knows: {', '.join(NOUNS)}")
    background = parsed.background or default_background
    notes: list[str] = []
    phrases = parsed.phrases
    if palette:
        phrases = _fill_colours(parsed, palette, background)
        notes += [f"colour {p.colour!r} chosen for {p.noun!r}" for p, q in zip(phrases, parsed.phrases)
                  if p.colour != q.colour]
    captions = [phrase.caption for phrase in phrases for _ in range(phrase.count)]
    if len(captions) > MAX_OBJECTS:
        raise ValueError(f"{prompt!r} asks for {len(captions)} objects; the grammar planner places at most {MAX_OBJECTS}")
    if parsed.relation is not None and len(captions) == 2:
        centres = list(_RELATION_CENTRES[parsed.relation])
    else:
        if parsed.relation is not None:
            notes.append(f"relation {parsed.relation!r} ignored: it needs exactly two objects")
        centres = _grid(len(captions))
    size = object_size if len(captions) <= 4 else min(object_size, 0.9 / 3)
    half = size / 2
    objects = tuple(LayoutObject(caption, (max(0.0, x - half), max(0.0, y - half), min(1.0, x + half), min(1.0, y + half)))
                    for caption, (x, y) in zip(captions, centres))
    return Layout(objects, background, prompt, "grammar", tuple(notes))
