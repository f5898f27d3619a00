"""The smtp transport against a real SMTP server (aiosmtpd on 127.0.0.1): replies mapped to outcomes."""

from __future__ import annotations

import asyncio

import pytest
from sample_messages import RECIPIENTS
from smtp_server import RunningSmtp, SmtpSink

from newsletter.message import Recipient
from newsletter.transports import TransportError, transport_from_dsn


def send(dsn: str, messages):
    async def go():
        transport = transport_from_dsn(dsn)
        try:
            return await transport.send_batch(messages)
        finally:
            await transport.aclose()

    return asyncio.run(go())


def test_delivers_each_message_with_its_headers(messages):
    with RunningSmtp(SmtpSink()) as server:
        outcomes = send(server.dsn(), messages)
    assert [o.status for o in outcomes] == ["sent"] * 4
    assert outcomes[0].provider_id == messages[0].message_id
    received = server.sink.received
    assert [r.recipients for r in received] == [[r.email] for r in RECIPIENTS]
    first = received[0].message
    assert received[0].sender == "alliancesolidarite@crdbsl.org"
    assert first["To"] == "Françoise Légaré-Pelletier <francoise@example.org>"
    assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert first.get_body(("html",)) is not None and first.get_body(("plain",)) is not None


def test_connections_are_reused_across_batches(campaign):
    messages = [campaign.build(Recipient(i, f"r{i}@example.org")) for i in range(60)]

    async def go(dsn):
        transport = transport_from_dsn(dsn)
        try:
            batches = [messages[i : i + transport.max_batch] for i in range(0, 60, transport.max_batch)]
            return await asyncio.gather(*(transport.send_batch(b) for b in batches))
        finally:
            await transport.aclose()

    with RunningSmtp(SmtpSink()) as server:
        results = asyncio.run(go(server.dsn(pool="2")))
    assert all(o.status == "sent" for batch in results for o in batch)
    assert len(server.sink.received) == 60
    assert server.sink.connections <= 2


def test_a_server_that_stops_answering_is_a_retry_and_its_connection_is_dropped(campaign):
    messages = [campaign.build(Recipient(i, f"r{i}@example.org")) for i in range(2)]

    async def go(dsn):
        transport = transport_from_dsn(dsn)
        try:
            first = await transport.send_batch(messages)
            idle = transport._idle.qsize()
            return first, idle
        finally:
            await transport.aclose()

    with RunningSmtp(SmtpSink(delay=1.0)) as server:
        outcomes, idle = asyncio.run(go(server.dsn(timeout="0.2", pool="1")))
    assert [o.status for o in outcomes] == ["retry", "retry"]
    assert "no reply from the server" in outcomes[0].reason
    assert idle == 0  # the connection that went quiet is not kept for another batch


def test_credentials(campaign, messages):
    with RunningSmtp(SmtpSink(), user="bulletin", password="s3cr3t") as server:
        assert [o.status for o in send(server.dsn("bulletin:s3cr3t"), messages[:1])] == ["sent"]
        with pytest.raises(TransportError, match="refused the SMTP credentials") as caught:
            send(server.dsn("bulletin:wrong"), messages[:1])
        assert "wrong" not in str(caught.value)


def test_nobody_listening_is_a_retry(messages):
    from smtp_server import free_port

    outcomes = send(f"smtp://127.0.0.1:{free_port()}?tls=none", messages[:2])
    assert [o.status for o in outcomes] == ["retry", "retry"]


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("smtp://", "needs a host"),
        ("smtp://h?tls=maybe", "tls=maybe: use one of starttls, ssl, none"),
        ("smtp://h?pool=many", "pool= takes a number"),
        ("smtps://h", "unknown transport 'smtps://'"),
        ("nonsense", "not a transport DSN"),
    ],
)
def test_bad_dsns_say_what_to_write(dsn, message):
    from newsletter.errors import NewsletterError

    with pytest.raises(NewsletterError, match=message):
        transport_from_dsn(dsn)


def test_lines_that_start_with_a_dot_arrive_intact_without_aiosmtplibs_rewriting(campaign, monkeypatch):
    """In the HTML, in the text and in a merge field; aiosmtpd undoes dot-stuffing, so what arrives must be the
    very bytes we built. Our DATA path is taken (aiosmtplib's data() is never called) for such messages."""
    import aiosmtplib
    from test_message import dotted_campaign

    calls = []
    monkeypatch.setattr(aiosmtplib.SMTP, "data", lambda *args, **kwargs: calls.append(args))
    messages = [
        dotted_campaign(campaign).build(Recipient(i, f"r{i}@example.org", name))
        for i, name in enumerate([".Net", ".", "..", "a.b"], 1)
    ]
    with RunningSmtp(SmtpSink()) as server:
        outcomes = send(server.dsn(), messages)
    assert [o.status for o in outcomes] == ["sent"] * 4 and calls == []
    received = {r.recipients[0]: r for r in server.sink.received}
    for message in messages:
        arrived = received[message.recipient.address]
        assert arrived.data == message.to_bytes()
        assert arrived.message.get_body(("html",)).get_content().replace("\r\n", "\n") == message.html
        assert arrived.message.get_body(("plain",)).get_content().replace("\r\n", "\n") == message.text


def test_bytes_that_are_not_wire_ready_go_through_aiosmtplibs_data(campaign, monkeypatch):
    from newsletter.message import Outgoing
    from newsletter.transports.smtp import wire_ready

    odd = b"Subject: x\nX-Odd: bare line feed above\r\n\r\n.a dot\r\n"
    assert not wire_ready(odd)
    monkeypatch.setattr(Outgoing, "to_bytes", lambda self: odd)
    with RunningSmtp(SmtpSink()) as server:
        (outcome,) = send(server.dsn(), [campaign.build(Recipient(1, "r@example.org"))])
    assert outcome.status == "sent"
    assert server.sink.received[0].data == b"Subject: x\r\nX-Odd: bare line feed above\r\n\r\n.a dot\r\n"


def test_a_connection_never_carries_a_message_while_two_earlier_answers_are_unrecorded(campaign):
    """At each MAIL FROM the server sees, at most one message answered earlier on that connection is still
    unrecorded (recording is slow here): so a crash loses at most two outcomes per connection."""
    import threading

    lock = threading.Lock()
    answered: dict[int, list[str]] = {}  # connection -> recipients whose DATA it accepted
    recorded: set[str] = set()
    worst = [0]

    class Watching(SmtpSink):
        async def handle_MAIL(self, server, session, envelope, address, mail_options):
            with lock:
                waiting = [r for r in answered.get(id(session), []) if r not in recorded]
                worst[0] = max(worst[0], len(waiting))
            envelope.mail_from = address
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            reply = await super().handle_DATA(server, session, envelope)
            with lock:
                answered.setdefault(id(session), []).extend(envelope.rcpt_tos)
            return reply

    messages = [campaign.build(Recipient(i, f"r{i}@example.org")) for i in range(40)]

    async def go(dsn):
        transport = transport_from_dsn(dsn)

        async def record(batch, index, outcome):
            await asyncio.sleep(0.05)  # a ledger slower than the server
            with lock:
                recorded.add(batch[index].recipient.address)

        try:
            batches = [messages[i : i + 10] for i in range(0, 40, 10)]
            await asyncio.gather(*(transport.send_each(b, lambda i, o, b=b: record(b, i, o)) for b in batches))
        finally:
            await transport.aclose()

    with RunningSmtp(Watching()) as server:
        asyncio.run(go(server.dsn(pool="2")))
    assert len(server.sink.received) == 40 and len(recorded) == 40
    assert worst[0] == 1  # the answer just before; never two
