"""What every transport promises: one outcome per message, in order; the message intact; no secret shown."""

from __future__ import annotations

import asyncio
import email
import email.policy
import email.utils
import json
import re

import httpx
import pytest
import respx
from smtp_server import RunningSmtp, SmtpSink

from newsletter.message import Recipient
from newsletter.transports import TRANSPORTS, transport_from_dsn
from newsletter.transports.base import Dsn, redact


def deliver(dsn: str, messages, **context):
    async def go():
        transport = transport_from_dsn(dsn, **context)
        try:
            return await transport.send_batch(messages), str(transport)
        finally:
            await transport.aclose()

    return asyncio.run(go())


def read_outbox(folder):
    return [path.read_bytes() for path in sorted(folder.glob("*.eml"))]


@pytest.mark.parametrize("kind", ["outbox", "smtp"])
def test_contract(kind, messages, tmp_path):
    if kind == "outbox":
        outcomes, shown = deliver("outbox://out", messages, root=tmp_path)
        delivered = read_outbox(tmp_path / "out")
        assert [p.name for p in sorted((tmp_path / "out").glob("*"))] == [f"{m.key}.eml" for m in messages]
    else:
        with RunningSmtp(SmtpSink(), user="u", password="p@ss/word") as server:
            outcomes, shown = deliver(server.dsn("u:p%40ss%2Fword"), messages)
        delivered = [r.data for r in server.sink.received]
        assert "p@ss" not in shown and "word" not in shown
    assert [o.status for o in outcomes] == ["sent"] * len(messages)
    assert len(delivered) == len(messages)
    for raw, outgoing in zip(delivered, messages, strict=True):
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert parsed["To"].addresses[0].addr_spec == outgoing.recipient.address
        assert parsed["To"].addresses[0].display_name == outgoing.recipient.name
        assert parsed["List-Unsubscribe"] == outgoing.headers["List-Unsubscribe"]
        assert b"List-Unsubscribe: <https://" in raw  # written whole, not RFC 2047-encoded


def test_outbox_rerun_overwrites_instead_of_duplicating(messages, tmp_path):
    deliver("outbox://out", messages, root=tmp_path)
    deliver("outbox://out", messages, root=tmp_path)
    assert len(list((tmp_path / "out").iterdir())) == len(messages)  # no temporary files left either


def test_null_discards_but_builds(messages):
    outcomes, shown = deliver("null://", messages)
    assert shown == "null://" and [o.status for o in outcomes] == ["sent"] * 4


@pytest.mark.parametrize(
    ("dsn", "scheme", "shown"),
    [
        ("outbox://build/outbox", "outbox", None),
        ("smtp://user:secret@mail.example.org:587", "smtp", "smtp://mail.example.org:587"),
        ("postmark+api://TOKEN-SECRET@default?stream=broadcast", "postmark+api", None),
        ("sendgrid+api://SG.SECRET@default", "sendgrid+api", None),
        ("mailgun+api://KEY-SECRET:mg.example.org@default?region=eu", "mailgun+api", None),
        ("ses+api://AKIDEXAMPLE:SECRET%2Fkey@default?region=ca-central-1", "ses+api", None),
        ("resend+api://re_SECRET@default", "resend+api", None),
    ],
)
def test_every_scheme_makes_its_transport_and_never_shows_a_secret(dsn, scheme, shown, tmp_path):
    transport = transport_from_dsn(dsn, root=tmp_path)
    assert transport.scheme == scheme and scheme in TRANSPORTS
    assert "SECRET" not in str(transport) and "secret" not in str(transport)
    assert "SECRET" not in repr(Dsn.parse(dsn)) and "secret" not in redact(dsn).split("@")[0].replace("user:", "")
    if shown:
        assert str(transport) == shown
    asyncio.run(transport.aclose())


# One batch, four addresses: plain, an international domain, a local part that is not ASCII, and a domain with no
# ASCII form (never stored by the tool, but a row can hold anything): each gets its own outcome, the batch goes.
INTERNATIONAL = [("marie@example.org", "Marie Côté"), ("hana@münchen.example", "Hana Müller"),
                 ("zoé@exämple.org", "Zoé"), ("neige@☃.example", "Neige")]  # fmt: skip
A_LABELS = ["marie@example.org", "hana@xn--mnchen-3ya.example", "zoé@xn--exmple-cua.org"]


def international(campaign):
    return [campaign.build(Recipient(i + 1, address, name)) for i, (address, name) in enumerate(INTERNATIONAL)]


def to_address(raw: bytes) -> str:
    # The email package's Address gives an RFC 6532 local part back as surrogates; the header's text is right.
    return email.utils.parseaddr(str(email.message_from_bytes(raw, policy=email.policy.default)["To"]))[1]


def api_fake(scheme: str, seen: list[str]):
    """A respx answer that accepts what the provider's request carries (the address of each, kept in `seen`), as
    the provider would; Postmark refuses a local part that is not ASCII in that message's own result, as it does
    (Stranger6667/postmarker#178: "[300] Error parsing 'To': Illegal email mailbox")."""

    def answer(request: httpx.Request) -> httpx.Response:
        if scheme == "mailgun+api":
            text = request.content.decode("utf-8")
            seen.extend(re.findall(r'name="to"\r\n\r\n[^<\r]*<?([^>\r]+)>?\r\n', text))
            return httpx.Response(200, json={"id": "<batch@mg.crdbsl.org>", "message": "Queued. Thank you."})
        body = json.loads(request.content)
        if scheme == "postmark+api":
            tos = [email.utils.parseaddr(item["To"])[1] or item["To"].split("<")[-1].rstrip(">") for item in body]
            seen.extend(tos)
            return httpx.Response(200, json=[
                {"ErrorCode": 300, "Message": f"Error parsing 'To': Illegal email mailbox '{to.split('@')[0]}'"}
                if not to.isascii() else {"ErrorCode": 0, "Message": "OK", "MessageID": f"id-{i}", "To": to}
                for i, to in enumerate(tos)
            ])  # fmt: skip
        if scheme == "sendgrid+api":
            seen.extend(p["to"][0]["email"] for p in body["personalizations"])
            return httpx.Response(202, headers={"X-Message-Id": "sg-batch"})
        if scheme == "resend+api":
            seen.extend(email.utils.parseaddr(item["to"][0])[1] or item["to"][0] for item in body)
            return httpx.Response(200, json={"data": [{"id": f"re-{i}"} for i in range(len(body))]})
        seen.extend(e["Destination"]["ToAddresses"][0].split("<")[-1].rstrip(">") for e in body["BulkEmailEntries"])
        results = [{"Status": "SUCCESS", "MessageId": f"ses-{i}"} for i in range(len(body["BulkEmailEntries"]))]
        return httpx.Response(200, json={"BulkEmailEntryResults": results})

    return answer


API_DSNS = {
    "postmark+api": "postmark+api://TOKEN@default?stream=outbound",
    "sendgrid+api": "sendgrid+api://SG.KEY@default",
    "mailgun+api": "mailgun+api://KEY:mg.crdbsl.org@default?region=eu",
    "resend+api": "resend+api://re_KEY@default",
    "ses+api": "ses+api://AKIDEXAMPLE:SECRET@default?region=ca-central-1",
}
TAKES_A_NON_ASCII_LOCAL_PART = {"outbox", "null", "smtp+SMTPUTF8", "sendgrid+api", "resend+api"}


@pytest.mark.parametrize("kind", ["outbox", "null", "smtp", "smtp+SMTPUTF8", *API_DSNS])
def test_an_address_a_transport_cannot_take_fails_alone_and_idn_domains_go_in_a_labels(kind, campaign, tmp_path):
    messages = international(campaign)
    seen: list[str] = []
    if kind == "outbox":
        outcomes, _ = deliver("outbox://out", messages, root=tmp_path)
        seen = [to_address(raw) for raw in read_outbox(tmp_path / "out")]
    elif kind == "null":
        outcomes, _ = deliver("null://", messages)
        seen = A_LABELS  # discarded: only the outcomes to check
    elif kind.startswith("smtp"):
        with RunningSmtp(SmtpSink(), smtputf8=kind.endswith("SMTPUTF8")) as server:
            outcomes, _ = deliver(server.dsn(), messages)
        seen = [r.recipients[0] for r in server.sink.received]
        for received in server.sink.received:  # the envelope and the To header agree
            assert to_address(received.data) == received.recipients[0]
    else:
        with respx.mock:
            respx.post(url__regex=r"https://[^/]+/").mock(side_effect=api_fake(kind, seen))
            outcomes, _ = deliver(API_DSNS[kind], messages)
    takes_it = kind in TAKES_A_NON_ASCII_LOCAL_PART
    assert [o.status for o in outcomes[:3]] == ["sent", "sent", "sent" if takes_it else "failed"], outcomes
    assert sorted(seen) == sorted(A_LABELS if takes_it or kind == "postmark+api" else A_LABELS[:2])
    if not takes_it:
        assert "ASCII" in outcomes[2].reason or "Illegal email mailbox" in outcomes[2].reason
        assert not outcomes[2].bounce  # another transport may deliver it: the subscriber is not marked bounced
    assert outcomes[3].status == "failed" and "☃.example" in outcomes[3].reason
