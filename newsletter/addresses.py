"""An email address as it is stored: checked for syntax (no DNS), the domain normalized (lower case, IDN); the
address as messages write it (the domain in A-labels); a person's name as it is stored and shown in To:.

email_validator does the checking. It costs some 80 µs an address, most of it on the domain, and the domains of a
list repeat (a sign-up form, a CSV of a million rows): an ASCII local part at a domain it has already accepted is
put together here, with email_validator's own rule for the local part and its limits. A test compares the two on
generated addresses.
"""

from __future__ import annotations

import functools
import re

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import DOT_ATOM_TEXT, EMAIL_MAX_LENGTH, LOCAL_PART_MAX_LENGTH

KNOWN_DOMAINS = 10_000  # domains remembered at most (each a few dozen bytes)
_domains: dict[str, tuple[str, int]] = {}  # as written -> (as stored, length of its ASCII form)


def normalize_address(address: str) -> str:
    """The address as it will be stored (domain lower-cased, IDN to Unicode); raise ValueError if invalid."""
    address = address.strip()
    local, _, domain = address.rpartition("@")
    known = _domains.get(domain)
    if (
        known is not None
        and len(local) <= LOCAL_PART_MAX_LENGTH
        and len(local) + 1 + known[1] <= EMAIL_MAX_LENGTH
        and DOT_ATOM_TEXT.match(local)
    ):
        return f"{local}@{known[0]}"
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    if len(_domains) < KNOWN_DOMAINS:  # the ASCII form's length: never accept here what email_validator refuses
        _domains[domain] = (checked.domain, len(checked.ascii_domain))
    return checked.normalized


@functools.lru_cache(maxsize=KNOWN_DOMAINS)
def a_label_domain(domain: str) -> str:
    """An international domain in A-labels (Punycode, RFC 5891): münchen.example -> xn--mnchen-3ya.example, as
    email_validator writes it (IDNA 2008: straße.de is xn--strae-oqa.de, where Python's idna codec would write
    another domain, strasse.de). Raise ValueError for a domain that has no such form."""
    if domain.isascii():
        return domain
    try:  # only the domain's own syntax: the address was checked when it was stored (the sender's, in the config)
        checked = validate_email(
            f"a@{domain}", check_deliverability=False, globally_deliverable=False, test_environment=True
        )
    except EmailNotValidError as exc:
        raise ValueError(f"the domain {domain} has no ASCII form: {exc}") from None
    return checked.ascii_domain


def a_label_address(address: str) -> str:
    """The address as headers and the SMTP envelope carry it: its domain in A-labels, its local part as it is.

    A local part that is not ASCII (zoé@…) stays so: only a server offering SMTPUTF8 (RFC 6531) takes it, written
    in UTF-8 in the headers too (RFC 6532). Raise ValueError for a domain that has no ASCII form.
    """
    local, at, domain = address.rpartition("@")
    return address if domain.isascii() else f"{local}{at}{a_label_domain(domain)}"


# A name is at most this many octets of UTF-8: longer than any real name, and short enough that the To: line
# stays under RFC 5322's 998 octets whatever it holds. RFC 2047's base64 makes 200 octets 280 characters (a
# quoted ASCII name, every character escaped, 402); an address is at most 510 octets (a local part of 64
# characters, 256 octets of UTF-8 at most, "@", a domain of 253): "To: " + 402 + " <" + 510 + ">" is 919.
NAME_MAX_OCTETS = 200
# The control characters (C0, DEL, C1) that are not whitespace, and lone surrogates (no UTF-8 can write them):
# removed. The whitespace ones (tab, line breaks, NEL) become one space with the rest of the whitespace.
_NOT_A_NAME = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\ud800-\udfff]")


def clean_name(name: str | None) -> str | None:
    """A person's name as it is stored and shown in To:: no control character (NUL, ESC, DEL…), its whitespace
    collapsed to single spaces, at most NAME_MAX_OCTETS of UTF-8 (cut between two characters); None if nothing
    is left. What import, `subscribers add`, sign-up and the message code all apply."""
    if not name:
        return None
    if name.isascii() and name.isprintable() and len(name) <= NAME_MAX_OCTETS and "  " not in name:
        return name.strip() or None  # the common case, without a regular expression
    name = " ".join(_NOT_A_NAME.sub("", name).split())
    encoded = name.encode("utf-8")
    if len(encoded) > NAME_MAX_OCTETS:
        name = encoded[:NAME_MAX_OCTETS].decode("utf-8", errors="ignore").rstrip()
    return name or None
