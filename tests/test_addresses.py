"""normalize_address agrees with email_validator on every address, whether its domain was seen before or not;
an address as messages write it (its domain in A-labels); a name as it is stored and shown (clean_name)."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.addresses import NAME_MAX_OCTETS, a_label_address, clean_name, normalize_address

DOMAINS = [
    *"example.org Example.ORG exämple.org EXÄMPLE.org sub.example.co.uk a.b videotron.ca xn--exmple-cua.org".split(),
    *"foo.test foo.local localhost exa_mple.org a-.org -a.org x.123 x..org [127.0.0.1] gmail.com.".split(),
    "",
    "a" * 63 + ".org",
    "a" * 64 + ".org",
    ("abcdefghi." * 24) + "org",
]
LOCAL_CHARACTERS = st.sampled_from(list("abcXYZ019.!#$%&'*+-/=?^_`{|}~\"@ é\\") + ["..", "ü"])
LOCALS = st.one_of(
    st.lists(LOCAL_CHARACTERS, min_size=0, max_size=12).map("".join),
    st.integers(min_value=55, max_value=70).map(lambda n: "a" * n),
)


def expected(address: str) -> str | None:
    try:
        return validate_email(address.strip(), check_deliverability=False).normalized
    except EmailNotValidError:
        return None


def actual(address: str) -> str | None:
    try:
        return normalize_address(address)
    except ValueError:
        return None


@settings(max_examples=1500, deadline=None)
@given(local=LOCALS, domain=st.sampled_from(DOMAINS), padding=st.sampled_from(["", " ", "\t"]))
def test_the_same_answer_as_email_validator(local, domain, padding):
    actual(f"known@{domain}")  # the domain is now remembered when email_validator accepted it
    address = f"{padding}{local}@{domain}{padding}"
    assert actual(address) == expected(address)


def test_a_long_address_at_a_known_international_domain_is_measured_in_its_ascii_form():
    domain = "exämple.org"  # xn--exmple-cua.org: 17 characters against 11
    normalize_address(f"known@{domain}")
    local = "a" * 64
    labels = ".".join(["b" * 60] * 3)
    for address in (f"{local}@{labels}.{domain}", f"{local}@{domain}"):
        assert actual(address) == expected(address)


@pytest.mark.parametrize("address", ["Marie.Tremblay@Example.ORG", "m@EXÄMPLE.org"])
def test_the_domain_is_stored_in_lower_case_and_unicode(address):
    assert normalize_address(address) == normalize_address(address) == expected(address)


@pytest.mark.parametrize(
    ("address", "written"),
    [
        ("hana@münchen.example", "hana@xn--mnchen-3ya.example"),
        ("x@straße.de", "x@xn--strae-oqa.de"),  # IDNA 2008, as stored: Python's idna codec would say strasse.de
        ("zoé@exämple.org", "zoé@xn--exmple-cua.org"),  # the local part as it is: SMTPUTF8's to carry
        ("marie@example.org", "marie@example.org"),
    ],
)
def test_an_address_is_written_with_its_domain_in_a_labels(address, written):
    assert a_label_address(normalize_address(address)) == written
    assert a_label_address(written) == written


def test_a_domain_with_no_ascii_form_is_a_value_error():
    with pytest.raises(ValueError, match=r"the domain ☃\.example has no ASCII form"):
        a_label_address("neige@☃.example")


@pytest.mark.parametrize(
    ("name", "cleaned"),
    [
        ("Marie Côté", "Marie Côté"),
        ("  Jean \t Tremblay\r\n", "Jean Tremblay"),
        ("Zo\x00é\x1b[31m B\x7fœuf\x9b", "Zoé[31m Bœuf"),  # NUL, ESC, DEL and a C1 control gone
        ("Ann\u2028Example\x85Jr", "Ann Example Jr"),  # Unicode line breaks are whitespace
        ("lone \udc80 surrogate", "lone surrogate"),
        ("\x00\x1b\x7f", None),
        ("   ", None),
        ("", None),
        (None, None),
    ],
)
def test_a_name_loses_its_control_characters_and_extra_whitespace(name, cleaned):
    assert clean_name(name) == cleaned


@pytest.mark.parametrize("name", ["😀" * 300, "é" * 300, "x" * 300, "a" * 199 + "é"])
def test_a_long_name_is_cut_between_two_characters_at_200_octets(name):
    cleaned = clean_name(name)
    assert len(cleaned.encode("utf-8")) <= NAME_MAX_OCTETS and name.startswith(cleaned)
    assert len(cleaned.encode("utf-8")) > NAME_MAX_OCTETS - 4  # cut at most one character short
