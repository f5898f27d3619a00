"""A list's slug: what names it in every unsubscribe link and List-Id header (lowercase letters, digits, hyphens).

Kept apart from the store so that the configuration checks a slug without loading SQLAlchemy.
"""

from __future__ import annotations

import re
import unicodedata

LIST_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,99}")

_LETTERS_WITHOUT_DECOMPOSITION = str.maketrans({"œ": "oe", "æ": "ae", "ß": "ss", "ø": "o", "ł": "l", "đ": "d"})


def slugify(name: str) -> str:
    """'Membres 2025' -> 'membres-2025'; 'Élèves_FR' -> 'eleves-fr': a valid list slug for any name."""
    spelled = name.lower().translate(_LETTERS_WITHOUT_DECOMPOSITION)
    plain = unicodedata.normalize("NFKD", spelled).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", plain).strip("-")[:100].rstrip("-") or "list"
