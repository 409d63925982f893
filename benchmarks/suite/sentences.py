"""Real English sentences that ship with Python itself: the prose of the Python Language Reference.

``pydoc_data.topics.topics`` (in every CPython installation; ``help()`` reads it) holds the text of the
reference manual's sections. Code samples, grammar rules and short fragments are dropped; what is left
is ordinary technical English, in a fixed order.
"""

from __future__ import annotations

import re

__all__ = ["sentences"]

_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def sentences(min_words: int = 6, max_words: int = 40) -> list[str]:
    """Every distinct prose sentence of the reference topics with ``min_words``..``max_words`` words."""
    from pydoc_data.topics import topics

    found: list[str] = []
    seen: set[str] = set()
    for key in sorted(topics):
        for paragraph in re.split(r"\n\s*\n", topics[key]):
            lines = paragraph.splitlines()
            if any(line.startswith((" ", "\t", ">>>", "*")) for line in lines):
                continue  # code, grammar, lists
            text = " ".join(line.strip() for line in lines)
            for sentence in _SPLIT.split(text):
                sentence = sentence.strip()
                words = sentence.split()
                if not (min_words <= len(words) <= max_words) or not sentence.endswith("."):
                    continue
                if any(c in sentence for c in "\"`[]{}=<>|_") or not sentence[0].isupper():
                    continue
                if sentence not in seen:
                    seen.add(sentence)
                    found.append(sentence)
    return found
