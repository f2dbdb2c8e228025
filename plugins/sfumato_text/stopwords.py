"""Small stop-word lists for prompt clean-up (function words only).

Kept deliberately short: words such as "on", "in front of" or "without" carry
meaning in prompts and are *not* listed.
"""

STOPWORDS: dict[str, frozenset[str]] = {
    "english": frozenset(
        "a an the this that these those is are was were be been being am it its of very really "
        "just some any please".split()
    ),
    "german": frozenset("der die das ein eine einen einem einer ist sind war waren sehr bitte".split()),
    "french": frozenset("le la les un une des du de est sont était très".split()),
    "spanish": frozenset("el la los las un una unos unas es son era muy".split()),
}
