"""How a subscriber's field names and tags are matched: whatever their case and accents, as people write them.

A field is kept under the name it was written with ("Municipalité", "First Name") for display and export, and
matched by its key ("municipalite", "first_name"): the same key is what an issue's placeholder
(`{{ municipalite }}`) and a segment (`municipalite = "Rimouski"`) name it by. A tag ("MRC Rimouski-Neigette") is
matched by its key too ("mrc rimouski-neigette"): case, accents and runs of spaces do not count.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping

_NOT_WORD = re.compile(r"[^a-z0-9]+")


def _unaccented(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().casefold()


def field_key(name: str) -> str:
    """'Municipalité' -> 'municipalite'; 'First Name' -> 'first_name'; 'E-mail' -> 'e_mail'."""
    return _NOT_WORD.sub("_", _unaccented(name)).strip("_")


def tag_key(tag: str) -> str:
    """'MRC  Rimouski-Neigette ' -> 'mrc rimouski-neigette'."""
    return " ".join(_unaccented(tag).split())


def clean_tag(tag: str) -> str:
    """A tag as it is kept: its spaces collapsed, at most 200 characters."""
    return " ".join(tag.split())[:200]


def merge_fields(before: Mapping[str, str], new: Mapping[str, str]) -> dict[str, str]:
    """before updated by new, matched by key: 'municipalite' replaces 'Municipalité' (and takes its place in the
    display), so that a subscriber holds each field once whatever the spellings it came with."""
    keys = {field_key(name): name for name in new}
    merged = {name: value for name, value in before.items() if field_key(name) not in keys}
    merged.update(new)
    return merged


def field_value(fields: Mapping[str, str], key: str) -> str | None:
    """The value of the field of that key (field_key of its name), or None."""
    for name, value in fields.items():
        if field_key(name) == key:
            return value
    return None


def by_key(fields: Mapping[str, object]) -> dict[str, str]:
    """The fields by key, for a placeholder's lookup: {'municipalite': 'Rimouski'}."""
    return {field_key(name): str(value) for name, value in fields.items()}


def distinct_tags(tags: Iterable[str]) -> list[str]:
    """Tags cleaned, without empty ones and without two of the same key (the first spelling kept)."""
    seen: dict[str, str] = {}
    for tag in tags:
        cleaned = clean_tag(tag)
        key = tag_key(cleaned)
        if key and key not in seen:
            seen[key] = cleaned
    return list(seen.values())
