"""Phone numbers as authors write them, and the tel: links that dial them (RFC 3966), by Google's libphonenumber.

An author writes "418 724-5154, poste 212": the contact card shows exactly that, and its link is
tel:+1-418-724-5154;ext=212. libphonenumber knows "ext.", "x" and "#" but not the French "poste" or "p.", so the
extension is taken off here first, whatever its marker, and given back to the parsed number. A number written
without its country code is read in the workspace's region (newsletter.toml's `phone_region`, else the one its
language implies: CA for fr). A number that does not parse, or is not a valid number there, gets no link (a wrong
number dialled is worse than none) and a check warning at its line.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers

# Where a number without a country code is, by the workspace's language (the first users are in Quebec).
REGION_BY_LANG = {"fr": "CA", "en": "CA"}
DEFAULT_REGION = "CA"

# ", poste 212", " p. 212", " ext. 212", " extension 212", " x212", " #212" at the end of the text.
_EXTENSION = re.compile(r"[\s,;]*(?:poste|postes|post\.|p\.|p|extension|ext\.?|x|#)\s*(\d{1,7})\s*$", re.IGNORECASE)


def split_extension(text: str) -> tuple[str, str | None]:
    """("418 724-5154", "212") from "418 724-5154, poste 212"; (text, None) when it names no extension."""
    found = _EXTENSION.search(text)
    if found is None or not re.search(r"\d", text[: found.start()]):
        return text, None
    return text[: found.start()], found.group(1)


@lru_cache(maxsize=1024)
def parse_phone(text: str, region: str = DEFAULT_REGION) -> phonenumbers.PhoneNumber | None:
    """The number text names (in region when it has no +country code), or None unless it is a valid number."""
    number_text, extension = split_extension(text.strip())
    try:
        number = phonenumbers.parse(number_text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    if extension:
        number.extension = extension
    return number


def tel_uri(text: str, region: str = DEFAULT_REGION) -> str | None:
    """The RFC 3966 link that dials text (tel:+1-418-724-5154;ext=212), or None when it is no valid number."""
    number = parse_phone(text, region)
    return None if number is None else phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.RFC3966)


def is_region(code: str) -> bool:
    """Whether code is a region libphonenumber knows (ISO 3166-1 alpha-2: CA, FR, BE, CH, US…)."""
    return code in phonenumbers.SUPPORTED_REGIONS
