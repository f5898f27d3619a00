"""What every transport promises: one outcome per message, in order; the message intact; no secret shown."""

from __future__ import annotations

import asyncio
import email
import email.policy

import pytest
from smtp_server import RunningSmtp, SmtpSink

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
