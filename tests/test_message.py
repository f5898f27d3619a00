"""One recipient's message: headers as RFC 2369/8058 and Gmail want them, parts that decode to the issue."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sample_messages import RECIPIENTS

from newsletter.addresses import clean_name
from newsletter.message import DkimSigner, Recipient
from newsletter.render import RenderedIssue


def parsed(outgoing):
    return email.message_from_bytes(outgoing.to_bytes(), policy=email.policy.default)


def test_headers_french_names_and_one_click(messages):
    outgoing = messages[0]
    raw = outgoing.to_bytes()
    message = parsed(outgoing)
    assert message["To"] == "Françoise Légaré-Pelletier <francoise@example.org>"
    assert message["From"] == "Le bulletin des Alliances <alliancesolidarite@crdbsl.org>"
    assert message["Subject"] == "Retour sur le 2e Forum des Alliances"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Id"] == "Le bulletin des Alliances <alliances.crdbsl.org>"
    assert message["Reply-To"] == "alliancesolidarite@crdbsl.org"
    assert re.match(r"^<12-1\.[0-9a-f]{12}@crdbsl\.org>$", message["Message-ID"])
    assert message["Date"]
    # List-Unsubscribe is written whole on one line, never as RFC 2047 encoded-words.
    (line,) = [line for line in raw.split(b"\r\n") if line.startswith(b"List-Unsubscribe:")]
    token = rb"[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+"
    assert re.fullmatch(rb"List-Unsubscribe: <https://bulletin\.crdbsl\.example/u/" + token + rb">", line)
    assert b"=?" not in line


def test_message_lines_and_encoding(messages):
    raw = messages[2].to_bytes()
    lines = raw.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76  # quoted-printable lines, RFC 2045
    assert raw.isascii()


def test_parts_decode_to_the_filled_issue(messages):
    for outgoing in messages:
        message = parsed(outgoing)
        assert message.get_content_type() == "multipart/alternative"
        html = message.get_body(("html",)).get_content().replace("\r\n", "\n")
        text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
        assert html == outgoing.html and text == outgoing.text
        assert "%%" not in html and "%%" not in text
        assert outgoing.headers["List-Unsubscribe"][1:-1] in html  # the footer link is the same one-click URL
        assert "Se désabonner : " + outgoing.headers["List-Unsubscribe"][1:-1] in text


def test_values_with_html_specials_and_long_values_are_encoded_safely(campaign):
    outgoing = campaign.build(Recipient(9, "x@example.org", "Zoé & <Cie> " + "é" * 120, {}))
    message = parsed(outgoing)
    assert message["To"].startswith("Zoé & <Cie> ") or "Zoé" in str(message["To"])
    assert max(len(line) for line in outgoing.to_bytes().split(b"\r\n")) <= 998


def test_message_id_is_stable_for_a_recipient_and_unique_across(campaign):
    first = campaign.build(RECIPIENTS[0]).message_id
    assert campaign.build(RECIPIENTS[0]).message_id == first
    assert len({campaign.build(r).message_id for r in RECIPIENTS}) == len(RECIPIENTS)


@pytest.fixture(scope="module")
def dkim_key() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def test_dkim_signature_verifies_and_covers_list_unsubscribe(messages, dkim_key):
    import base64

    private, public = dkim_key
    signed = DkimSigner("crdbsl.org", "news", private).sign(messages[0].to_bytes())
    header = signed.split(b"\r\n\r\n")[0].decode()
    assert "c=relaxed/relaxed" in header.replace("\r\n", "").replace(" ", "") or "c=relaxed/relaxed" in header
    signed_headers = re.search(r"h=([^;]+);", header.replace("\r\n", "").replace("\t", "").replace(" ", "")).group(1)
    assert "list-unsubscribe" in signed_headers.split(":") and "list-unsubscribe-post" in signed_headers.split(":")
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def dns(name, timeout=5):
        return record if name == b"news._domainkey.crdbsl.org." else None

    assert dkim.verify(signed, dnsfunc=dns)
    assert not dkim.verify(signed.replace(b"Forum des Alliances", b"Forum des Alliancez", 1), dnsfunc=dns)


def dotted_campaign(campaign):
    """The example with lines that start with "." in the HTML, in the text, and where a merge field goes."""
    rendered = campaign.rendered
    html = rendered.html.replace("<body", "<body>\n.nl-a { color: red }\n.\n%%name%%\n<i", 1)
    text = ".Net et C# : notes\n.\n" + "x" * 74 + ".y" + "\n%%name%%\n" + rendered.text
    dotted = RenderedIssue(rendered.slug, rendered.lang, rendered.subject, "", html, text, {})
    return dataclasses.replace(campaign, rendered=dotted)


@pytest.mark.parametrize("value", [".Net", ".", "..", ". " + "é" * 80, "a\n.b"])
def test_no_line_of_a_message_starts_with_a_dot_and_the_parts_decode_unchanged(campaign, value):
    outgoing = dotted_campaign(campaign).build(Recipient(3, "zoe@example.org", value))
    raw = outgoing.to_bytes()
    assert not raw.startswith(b".") and b"\n." not in raw
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76
    message = parsed(outgoing)
    assert message.get_body(("html",)).get_content().replace("\r\n", "\n") == outgoing.html
    assert message.get_body(("plain",)).get_content().replace("\r\n", "\n") == outgoing.text
    assert f"\n{value}\n" in outgoing.text


def test_a_name_with_line_breaks_stays_on_its_header_line(campaign):
    outgoing = campaign.build(Recipient(3, "zoe@example.org", "Zoé\r\nBcc: victim@example.org\n.x"))
    head = outgoing.to_bytes().split(b"\r\n\r\n", 1)[0]
    assert b"\nBcc:" not in head and b"\n." not in head
    message = parsed(outgoing)
    assert message.get("Bcc") is None
    assert message["To"].addresses[0].display_name == "Zoé Bcc: victim@example.org .x"


def header_line(outgoing, name: bytes) -> bytes:
    head = outgoing.to_bytes().split(b"\r\n\r\n", 1)[0]
    (line,) = [line for line in head.split(b"\r\n") if line.startswith(name + b":")]
    return line


def test_an_international_domain_is_written_in_a_labels_and_a_local_part_in_utf8(campaign):
    idn = campaign.build(Recipient(5, "hana@münchen.example", "Hana Müller"))
    assert header_line(idn, b"To") == b"To: =?utf-8?q?Hana_M=C3=BCller?= <hana@xn--mnchen-3ya.example>"
    assert idn.to_bytes().isascii()
    local = campaign.build(Recipient(6, "zoé@exämple.org", "Zoé"))
    # RFC 6532: the address in UTF-8, as it is, never RFC 2047-encoded (an encoded-word is no addr-spec).
    assert header_line(local, b"To") == "To: =?utf-8?q?Zo=C3=A9?= <zoé@xn--exmple-cua.org>".encode()
    assert parsed(local)["To"] == "Zoé <zoé@xn--exmple-cua.org>"
    sender = dataclasses.replace(campaign, sender=dataclasses.replace(campaign.sender, address="info@exämple.org"))
    message = sender.build(RECIPIENTS[0])
    assert header_line(message, b"From") == b"From: Le bulletin des Alliances <info@xn--exmple-cua.org>"
    assert header_line(message, b"Message-ID").endswith(b"@xn--exmple-cua.org>")
    assert header_line(message, b"List-Id") == b"List-Id: Le bulletin des Alliances <alliances.xn--exmple-cua.org>"


@pytest.mark.parametrize("name", ["😀" * 300, '"\\' * 300, "Zoé\x00 \x1b[2J\x7fBœuf" + "é" * 500])
def test_a_name_never_makes_the_to_line_longer_than_998_octets_nor_carries_a_control(campaign, name):
    for outgoing in (
        campaign.build(Recipient(3, "zoé@" + "a" * 60 + ".exämple.org", name)),
        campaign.build(Recipient(3, "zoe@example.org", name)),
    ):
        line = header_line(outgoing, b"To")
        assert len(line) <= 998
        assert not any(byte < 0x20 or byte == 0x7F for byte in line)
        assert parsed(outgoing)["To"].addresses[0].display_name == clean_name(name)
