"""The bounce mailbox (newsletter/bounces/mailbox.py) against a real Dovecot (tests/imap_server.py) and real
Maildir folders: every message read whole and none marked seen, moves into a folder made for them, nothing else
touched, and each failure the user can act on in one line."""

from __future__ import annotations

import itertools
import ssl
from pathlib import Path

import pytest
from imap_server import DovecotServer, free_port

from newsletter.bounces.mailbox import (
    PASSWORD_VARIABLE,
    TOKEN_VARIABLE,
    ImapLocation,
    ImapMailbox,
    MailboxError,
    _is_loopback,
    fetch_responses,
    fetched_body,
    open_mailbox,
    uid_set,
    utf7_imap,
)
from newsletter.errors import ConfigError, NewsletterError

_numbers = itertools.count(1)


def bounce(number: int, *, extra: bytes = b"") -> bytes:
    """A DSN (RFC 3464) of the kind a mail server sends back, CRLF throughout, as IMAP returns it."""
    return (
        b"Return-Path: <>\r\n"
        b"From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
        b"To: bounces+" + str(number).encode() + b"@crdbsl.org\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nI could not deliver your message.\r\n" + extra + b"\r\n"
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
        b"Final-Recipient: rfc822; membre" + str(number).encode() + b"@example.org\r\nAction: failed\r\n"
        b"Status: 5.1.1\r\n\r\n--b--\r\n"
    )


@pytest.fixture
def folder(dovecot: DovecotServer) -> str:
    """A folder of the session's Dovecot for this test alone."""
    name = f"Bounces{next(_numbers)}"
    dovecot.make_folder(name)
    return name


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and text
    return text


# Reading and moving on IMAP


def test_every_message_is_read_whole_and_none_marked_seen(dovecot, folder):
    eight_bit = bounce(0, extra="Adresse inconnue : élise@exemple.québec — ½ ".encode() + b"\xe9\xff latin-1")
    large = bounce(1, extra=b"".join([b"y" * 998 + b"\r\n"] * 9_000))  # 9 MB: more than a batch's bytes alone
    delivered = [bounce(number) for number in range(2, 302)] + [eight_bit, large]
    for raw in delivered:
        dovecot.deliver(raw, folder)
    dovecot.deliver(bounce(999), folder, flags="S")  # already seen by someone: read as well
    before = {message.name: message.raw for message in dovecot.folder(folder)}

    with open_mailbox(dovecot.url(folder), dovecot.environ()) as mailbox:
        assert isinstance(mailbox.uidvalidity, int)
        assert mailbox.name == f"imaps://bounces@crdbsl.org@127.0.0.1:{dovecot.tls_port}/{folder}"
        messages = list(mailbox.messages())

    assert sorted(message.raw for message in messages) == sorted([*delivered, bounce(999)])
    assert len({message.ref for message in messages}) == len(messages) == 303
    after = dovecot.folder(folder)
    assert sorted(message.raw for message in after) == sorted(before.values())  # every byte as it was
    assert [message.flags for message in after if "S" in message.flags] == ["S"]  # BODY.PEEK[]: none newly seen


def test_move_makes_the_folder_and_leaves_the_rest_untouched_and_unseen(dovecot, folder):
    for number in range(10):
        dovecot.deliver(bounce(number), folder)
    processed = f"{folder}/Processed"  # a subfolder: "/" is the server's separator, "." on Dovecot's Maildir++

    with open_mailbox(dovecot.url(folder), dovecot.environ()) as mailbox:
        messages = list(mailbox.messages())
        handled = [message for message in messages if int(message.raw.split(b"bounces+")[1].split(b"@")[0]) % 2]
        mailbox.move([message.ref for message in handled], processed)
        mailbox.move([message.ref for message in handled], processed)  # gone already: nothing happens
        mailbox.move([], processed)
        left = list(mailbox.messages())

    assert sorted(message.raw for message in dovecot.folder(processed)) == sorted(m.raw for m in handled)
    assert sorted(message.raw for message in left) == sorted(m.raw for m in messages if m not in handled)
    assert sorted(message.raw for message in dovecot.folder(folder)) == sorted(message.raw for message in left)
    assert not any(message.flags for message in dovecot.folder(folder))  # neither seen nor marked deleted
    subscriptions = (dovecot.maildir / "subscriptions").read_text()
    assert f"{folder}\tProcessed" in subscriptions.splitlines()  # CREATE, then SUBSCRIBE

    with open_mailbox(dovecot.url(folder), dovecot.environ()) as again:  # another session sees the same
        assert sorted(message.raw for message in again.messages()) == sorted(message.raw for message in left)


def test_a_folder_named_with_accents_is_made_in_modified_utf7(dovecot, folder):
    dovecot.deliver(bounce(1), folder)
    with open_mailbox(dovecot.url(folder), dovecot.environ()) as mailbox:
        mailbox.move([message.ref for message in mailbox.messages()], "Rebonds traités")
    assert [message.raw for message in dovecot.folder("Rebonds trait&AOk-s")] == [bounce(1)]


@pytest.fixture(scope="module")
def older_dovecot(dovecot):
    """A second server, as some still are: UIDPLUS but no MOVE (RFC 6851), and no TLS at all (no STARTTLS)."""
    server = DovecotServer(
        capabilities="IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE NAMESPACE UIDPLUS UNSELECT CHILDREN",
        oauth2=False,
        tls=False,
    ).start()
    yield server
    server.stop()


def test_without_move_only_the_messages_moved_are_expunged(older_dovecot):
    for number in range(6):
        older_dovecot.deliver(bounce(number))
    marked = older_dovecot.deliver(bounce(99), flags="T")  # \Deleted by someone else, never expunged by us

    with open_mailbox(older_dovecot.url(scheme="imap"), older_dovecot.environ(trust=False)) as mailbox:
        assert "MOVE" not in mailbox._capabilities
        messages = list(mailbox.messages())
        assert len(messages) == 7
        moving = [message for message in messages if message.raw in (bounce(1), bounce(4))]
        mailbox.move([message.ref for message in moving], "Processed")

    assert sorted(message.raw for message in older_dovecot.folder("Processed")) == [bounce(1), bounce(4)]
    left = older_dovecot.folder("INBOX")
    assert sorted(message.raw for message in left) == sorted([*(bounce(n) for n in (0, 2, 3, 5)), bounce(99)])
    assert [message.flags for message in left if message.flags] == ["T"]
    assert marked.split(":")[0] in {message.name.split(":")[0] for message in left}


def test_an_empty_folder_has_no_messages(dovecot, folder):
    with open_mailbox(dovecot.url(folder), dovecot.environ()) as mailbox:
        assert list(mailbox.messages()) == []


# Logging in


def test_xoauth2_with_the_token_the_provider_knows(dovecot, folder):
    dovecot.deliver(bounce(1), folder)
    requests = dovecot.introspection.requests
    with open_mailbox(dovecot.url(folder), dovecot.environ(token=True)) as mailbox:
        assert [message.raw for message in mailbox.messages()] == [bounce(1)]
    assert dovecot.introspection.requests == requests + 1  # Dovecot asked the endpoint, which said yes
    assert "method=XOAUTH2" in dovecot.log_text()

    with pytest.raises(MailboxError) as refused:
        open_mailbox(dovecot.url(folder), {**dovecot.environ(), TOKEN_VARIABLE: "expired", PASSWORD_VARIABLE: ""})
    assert f"login refused for bounces@crdbsl.org: check {TOKEN_VARIABLE}" in one_line(refused.value)
    assert "expired" not in str(refused.value)


def test_a_wrong_password_is_one_line_naming_the_variable(dovecot):
    with pytest.raises(MailboxError) as refused:
        open_mailbox(dovecot.url(), {**dovecot.environ(), PASSWORD_VARIABLE: "pas le bon"})
    text = one_line(refused.value)
    assert text.startswith(f"imaps://bounces@crdbsl.org@127.0.0.1:{dovecot.tls_port}/INBOX: login refused")
    assert f"check {PASSWORD_VARIABLE}" in text and "pas le bon" not in text


def test_no_secret_is_refused_before_connecting():
    nobody_listens = free_port()
    with pytest.raises(ConfigError) as missing:
        open_mailbox(f"imaps://bounces@crdbsl.org@127.0.0.1:{nobody_listens}/INBOX", {})
    assert f"set {PASSWORD_VARIABLE}" in one_line(missing.value) and TOKEN_VARIABLE in str(missing.value)
    with pytest.raises(ConfigError) as both:
        open_mailbox("imaps://bounces@imap.example/INBOX", {PASSWORD_VARIABLE: "a", TOKEN_VARIABLE: "b"})
    assert "not both" in one_line(both.value)


def test_a_url_with_a_password_is_refused_without_showing_it():
    with pytest.raises(ConfigError) as refused:
        open_mailbox("imaps://bounces%40crdbsl.org:s3cret@imap.example/INBOX", {PASSWORD_VARIABLE: "x"})
    text = one_line(refused.value)
    assert f"put it in {PASSWORD_VARIABLE}" in text and "s3cret" not in text and "crdbsl" not in text


def test_plain_imap_goes_over_starttls_when_offered(dovecot, folder):
    dovecot.deliver(bounce(1), folder)
    with open_mailbox(dovecot.url(folder, scheme="imap"), dovecot.environ()) as mailbox:
        assert mailbox.name.startswith(f"imap://bounces@crdbsl.org@127.0.0.1:{dovecot.port}/")
        assert isinstance(mailbox._imap.sock, ssl.SSLSocket)
        assert [message.raw for message in mailbox.messages()] == [bounce(1)]


def test_a_password_goes_unencrypted_only_to_a_loopback_address():
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("::ffff:127.0.0.1")
    assert not _is_loopback("192.0.2.10") and not _is_loopback("2001:db8::1") and not _is_loopback("")


def test_without_starttls_the_password_goes_in_clear_to_loopback_only(older_dovecot):
    server = older_dovecot
    server.deliver(bounce(1), "Plain")
    with open_mailbox(server.url("Plain", scheme="imap"), server.environ(trust=False)) as mailbox:
        assert not isinstance(mailbox._imap.sock, ssl.SSLSocket)
        assert [message.raw for message in mailbox.messages()] == [bounce(1)]

    # The same server seen from another host: the one judgment changed is whether its address is this host's
    # (no test may reach another host); the refusal comes before the login.
    class SeenFromElsewhere(ImapMailbox):
        @staticmethod
        def may_send_in_clear(peer: str) -> bool:
            return False

    with pytest.raises(ConfigError) as refused:
        SeenFromElsewhere.open(ImapLocation.parse(server.url(scheme="imap")), server.environ(trust=False))
    text = one_line(refused.value)
    assert "offers no STARTTLS" in text and "use imaps://bounces@crdbsl.org@127.0.0.1/INBOX" in text


def test_imaps_needs_the_servers_ca(dovecot):
    with pytest.raises(MailboxError) as untrusted:
        open_mailbox(dovecot.url(), dovecot.environ(trust=False))
    text = one_line(untrusted.value)
    assert "TLS failure: the server's certificate is not trusted" in text and "SSL_CERT_FILE" in text
    with pytest.raises(MailboxError) as plain_port:
        open_mailbox(dovecot.url().replace(str(dovecot.tls_port), str(dovecot.port)), dovecot.environ())
    assert "TLS failure" in one_line(plain_port.value) and "IMAPS port" in str(plain_port.value)


def test_an_unreachable_server_and_a_missing_folder(dovecot):
    nobody_listens = free_port()
    with pytest.raises(MailboxError) as unreachable:
        open_mailbox(f"imaps://bounces@crdbsl.org@127.0.0.1:{nobody_listens}/INBOX", dovecot.environ())
    assert f"127.0.0.1 port {nobody_listens}: unreachable" in one_line(unreachable.value)
    with pytest.raises(MailboxError) as missing:
        open_mailbox(dovecot.url("Nowhere"), dovecot.environ())
    assert "no folder 'Nowhere' there" in one_line(missing.value)


def test_every_error_is_a_newsletter_error():
    assert issubclass(MailboxError, NewsletterError)


# The URL


def test_urls():
    location = ImapLocation.parse("imaps://bounces@crdbsl.org@imap.example.net/Rebonds/Traités")
    assert (location.user, location.host, location.port, location.folder) == (
        "bounces@crdbsl.org",
        "imap.example.net",
        993,
        "Rebonds/Traités",
    )
    assert location.name == "imaps://bounces@crdbsl.org@imap.example.net/Rebonds/Traités"
    escaped = ImapLocation.parse("imap://bounces%40crdbsl.org@[::1]:1143")
    assert (escaped.user, escaped.host, escaped.port, escaped.folder, escaped.tls) == (
        "bounces@crdbsl.org",
        "::1",
        1143,
        "INBOX",
        False,
    )
    assert escaped.name == "imap://bounces@crdbsl.org@[::1]:1143/INBOX"
    for url, says in [
        ("imaps://imap.example.net/INBOX", "no user in the URL"),
        ("imaps://u@imap.example.net:99999/INBOX", "port"),
        ("imaps://u@imap.example.net/INBOX?ssl=1", "no ?options"),
        ("pop3://u@imap.example.net/", "a bounce mailbox is imaps://"),
        ("maildir://relative/path", "absolute path"),
    ]:
        with pytest.raises(ConfigError) as refused:
            open_mailbox(url, {PASSWORD_VARIABLE: "x"})
        assert says in one_line(refused.value)


def test_the_pieces_of_imap():
    assert uid_set([5, 1, 2, 3, 9, 10, 7, 3]) == "1:3,5,7,9:10"
    assert utf7_imap("Rebonds traités") == "Rebonds trait&AOk-s" and utf7_imap("A&B") == "A&-B"
    assert utf7_imap("日本語") == "&ZeVnLIqe-"
    # The UID after the literal, two literals in one response, a change of flags told in passing, an empty body.
    data = [
        (b"1 (BODY[] {5}", b"hello"),
        b" UID 7)",
        b"2 (FLAGS (\\Seen))",
        (b"3 (UID 9 BODY[HEADER] {2}", b"\r\n"),
        (b" BODY[] {3}", b"abc"),
        b")",
        b'4 (UID 11 BODY[] "")',
        None,
    ]
    responses = [(text, fetched_body(text, literals)) for text, literals in fetch_responses(data)]
    assert responses == [
        (b"1 (BODY[] {5} UID 7)", b"hello"),
        (b"2 (FLAGS (\\Seen))", None),
        (b"3 (UID 9 BODY[HEADER] {2} BODY[] {3})", b"abc"),
        (b'4 (UID 11 BODY[] "")', b""),
    ]
    with pytest.raises(MailboxError):
        fetched_body(b"1 (UID 1 BODY[] {10})", [(b"1 (UID 1 BODY[] {10}", b"short")])


# Maildir


def make_maildir(root: Path) -> Path:
    for sub in ("tmp", "new", "cur"):
        (root / sub).mkdir(parents=True)
    return root


def test_a_maildir_is_read_from_new_and_cur_and_moved_into_processed(tmp_path):
    maildir = make_maildir(tmp_path / "Maildir")
    (maildir / "new" / "1701.M1P1.host,S=100").write_bytes(bounce(1))
    (maildir / "cur" / "1702.M2P2.host:2,S").write_bytes(bounce(2))  # seen by a mail client, in cur/
    (maildir / "cur" / "1703.M3P3.host:2,").write_bytes(bounce(3))
    (maildir / "cur" / ".hidden").write_bytes(b"not a message")

    with open_mailbox(f"maildir://{maildir}") as mailbox:
        assert mailbox.name == f"maildir://{maildir}" and mailbox.uidvalidity is None
        messages = {message.raw: message for message in mailbox.messages()}
        assert sorted(messages) == sorted([bounce(1), bounce(2), bounce(3)])
        # A mail client marks the third one seen meanwhile: its file is renamed, and still moved.
        (maildir / "cur" / "1703.M3P3.host:2,").rename(maildir / "cur" / "1703.M3P3.host:2,S")
        mailbox.move([messages[bounce(1)].ref, messages[bounce(2)].ref, messages[bounce(3)].ref], "Processed")
        mailbox.move([messages[bounce(1)].ref], "Processed")  # gone already
        assert list(mailbox.messages()) == []

    processed = maildir / ".Processed"
    assert sorted(path.name for path in processed.iterdir()) == ["cur", "maildirfolder", "new", "tmp"]
    assert (processed / "new" / "1701.M1P1.host,S=100").read_bytes() == bounce(1)
    assert (processed / "cur" / "1702.M2P2.host:2,S").read_bytes() == bounce(2)  # its flags kept
    assert (processed / "cur" / "1703.M3P3.host:2,S").read_bytes() == bounce(3)
    assert (maildir / "cur" / ".hidden").exists()
    with pytest.raises(ValueError):
        open_mailbox(f"maildir://{maildir}").move(["../../etc/passwd"], "Processed")


def test_a_maildir_url_that_names_no_maildir(tmp_path):
    with pytest.raises(MailboxError) as missing:
        open_mailbox(f"maildir://{tmp_path / 'nothing'}")
    assert "no Maildir there" in one_line(missing.value)
