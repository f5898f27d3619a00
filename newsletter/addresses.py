"""An email address as it is stored: checked for syntax (no DNS), the domain normalized (lower case, IDN).

email_validator does the checking. It costs some 80 µs an address, most of it on the domain, and the domains of a
list repeat (a sign-up form, a CSV of a million rows): an ASCII local part at a domain it has already accepted is
put together here, with email_validator's own rule for the local part and its limits. A test compares the two on
generated addresses.
"""

from __future__ import annotations

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
