"""The bounce mailbox: every message of one folder, read in batches, and moved to another folder once handled.

    imaps://USER@HOST[:PORT]/FOLDER   IMAP over TLS (993); USER may hold an "@" (the last one ends it) or %-escapes
    imap://USER@HOST[:PORT]/FOLDER    plain IMAP (143), then STARTTLS when the server offers it
    maildir:///ABSOLUTE/PATH          a Maildir++ on this host: its new/ and cur/; moves go to PATH/.FOLDER

FOLDER defaults to INBOX, "/" in it being the server's hierarchy separator. The secret comes from the environment
only, never from the URL or a file: NEWSLETTER_BOUNCES_PASSWORD, or NEWSLETTER_BOUNCES_OAUTH2_TOKEN, a bearer
token sent with AUTHENTICATE XOAUTH2 as Microsoft 365 and Gmail require (getting and refreshing it is the
user's OAuth client's business). A password never goes unencrypted but to a loopback address; SSL_CERT_FILE and
SSL_CERT_DIR, read from the same environment, add the certificates of a private CA.

Nothing here deletes a message or changes a flag of one it leaves: bodies are fetched with BODY.PEEK[] (never
marked seen), a move is IMAP's MOVE (RFC 6851) or else UID COPY, \\Deleted and UID EXPUNGE (RFC 4315) of those
UIDs only, and a session ends with LOGOUT, never CLOSE (which expunges every \\Deleted message of the folder). On
IMAP the folder's UIDs and sizes are listed first, 8 bytes a message, then the bodies fetched a batch at a time
(at most BATCH_MESSAGES, or BATCH_BYTES but never less than one message), so that memory stays flat whatever the
folder holds. Every failure the user can act on is one line (ConfigError for the URL and the environment,
MailboxError for the server), naming the mailbox without its secret.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import ipaddress
import os
import re
import socket
import ssl
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self
from urllib.parse import unquote, urlsplit

from newsletter.errors import ConfigError, NewsletterError

PASSWORD_VARIABLE = "NEWSLETTER_BOUNCES_PASSWORD"
TOKEN_VARIABLE = "NEWSLETTER_BOUNCES_OAUTH2_TOKEN"
TIMEOUT = 60.0  # seconds without an answer before a connection counts as lost
BATCH_MESSAGES = 250  # bodies per UID FETCH
BATCH_BYTES = 8 * 1024 * 1024  # and their sizes' sum at most, but for a single message larger than that
LIST_WINDOW = 2_000  # messages per FETCH of the listing (UID and RFC822.SIZE)
MOVE_BATCH = 500  # UIDs per MOVE (or COPY, STORE and EXPUNGE): a command line stays short
USAGE = "a bounce mailbox is imaps://USER@HOST/FOLDER, imap://USER@HOST/FOLDER or maildir:///ABSOLUTE/PATH"


class MailboxError(NewsletterError):
    """The bounce mailbox cannot be read or changed: unreachable, TLS, login refused, folder missing."""


@dataclass(frozen=True)
class MailboxMessage:
    """One message as the mailbox stores it."""

    ref: str  # the mailbox's handle for it within this session (an IMAP UID, a Maildir file's path in the folder)
    raw: bytes  # the whole message as stored


class Mailbox(Protocol):
    """One folder of a bounce mailbox, open; a context manager that closes it."""

    name: str  # the URL without secrets, for messages: "imaps://bounces@crdbsl.org@imap.host/INBOX"
    uidvalidity: int | None  # the IMAP folder's UIDVALIDITY (under another one, the same UIDs are other messages)

    def messages(self) -> Iterator[MailboxMessage]:
        """Every message of the folder when the iteration starts, fetched in batches, never all at once."""
        ...

    def move(self, refs: Sequence[str], folder: str) -> None:
        """Move these messages into `folder`, created if missing. Never deletes one; refs already gone are skipped."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None: ...


def open_mailbox(url: str, environ: Mapping[str, str] = os.environ) -> Mailbox:
    """The mailbox a URL names, connected and logged in, its folder selected."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "maildir":
        return MaildirMailbox.open(url)
    if scheme in ("imap", "imaps"):
        return ImapMailbox.open(ImapLocation.parse(url), environ)
    raise ConfigError(f"{_without_userinfo(url)}: {USAGE}")


def _without_userinfo(url: str) -> str:
    """The URL with whatever is before the host's "@" left out, to show a URL that may hold a password."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return "bounce mailbox"
    authority, slash, path = rest.partition("/")
    host = authority.rpartition("@")[2]
    return f"{scheme}://{host}{slash}{path.partition('?')[0]}"


# IMAP


@dataclass(frozen=True)
class ImapLocation:
    """An imap:// or imaps:// URL, read."""

    tls: bool  # imaps://: TLS from the first byte
    user: str
    host: str
    port: int
    folder: str
    name: str

    @classmethod
    def parse(cls, url: str) -> ImapLocation:
        shown = _without_userinfo(url)
        parts = urlsplit(url)
        userinfo, at, _ = parts.netloc.rpartition("@")
        if ":" in userinfo:
            raise ConfigError(f"{shown}: the URL holds a password: take it out and put it in {PASSWORD_VARIABLE}")
        if not at or not userinfo:
            raise ConfigError(f"{shown}: no user in the URL: write {parts.scheme}://USER@HOST/FOLDER")
        if parts.query or parts.fragment:
            raise ConfigError(f"{shown}: the URL takes no ?options or #fragment: {USAGE}")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"{shown}: the port is not a number from 1 to 65535") from None
        if not parts.hostname:
            raise ConfigError(f"{shown}: no host in the URL: {USAGE}")
        tls = parts.scheme.lower() == "imaps"
        user, host = unquote(userinfo), parts.hostname
        folder = unquote(parts.path).strip("/") or "INBOX"
        shown_host = f"[{host}]" if ":" in host else host
        shown_port = f":{port}" if port else ""
        name = f"{parts.scheme.lower()}://{user}@{shown_host}{shown_port}/{folder}"
        return cls(tls, user, host, port or (993 if tls else 143), folder, name)


def _credentials(location: ImapLocation, environ: Mapping[str, str]) -> tuple[str, str]:
    """(the variable, its value): the password or the OAuth2 token, whichever is set."""
    password, token = environ.get(PASSWORD_VARIABLE, ""), environ.get(TOKEN_VARIABLE, "")
    if password and token:
        raise ConfigError(f"{location.name}: set {PASSWORD_VARIABLE} or {TOKEN_VARIABLE}, not both")
    if not password and not token:
        raise ConfigError(
            f"{location.name}: set {PASSWORD_VARIABLE} to the mailbox's password "
            f"(or {TOKEN_VARIABLE} to an OAuth2 access token, for Microsoft 365 or Gmail)"
        )
    return (PASSWORD_VARIABLE, password) if password else (TOKEN_VARIABLE, token)


def _tls_context(environ: Mapping[str, str]) -> ssl.SSLContext:
    """The system's trusted certificates, and those SSL_CERT_FILE and SSL_CERT_DIR name in `environ` (OpenSSL reads
    them from the process's own environment; `environ` may be another)."""
    context = ssl.create_default_context()
    cafile, capath = environ.get("SSL_CERT_FILE") or None, environ.get("SSL_CERT_DIR") or None
    if cafile or capath:
        try:
            context.load_verify_locations(cafile=cafile, capath=capath)
        except (OSError, ssl.SSLError) as error:
            named = " ".join(
                f"{key}={value}" for key, value in (("SSL_CERT_FILE", cafile), ("SSL_CERT_DIR", capath)) if value
            )
            raise ConfigError(f"{named}: no certificates could be read there ({error})") from None
    return context


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


_TIMING = re.compile(r"\s*\(\d+\.\d+( \+ \d+\.\d+)* secs\)")  # what Dovecot adds to a reply: "(0.001 + 0.000 secs)"


def _tidy(text: str) -> str:
    return _TIMING.sub("", " ".join(text.split()))


def _server_text(error: BaseException) -> str:
    """What the server said, from imaplib's exception (its text may be bytes or their repr)."""
    said = error.args[0] if error.args else ""
    if isinstance(said, bytes):
        said = said.decode("utf-8", "replace")
    said = str(said)
    if said.startswith(("b'", 'b"')) and said[-1:] == said[1]:
        said = said[2:-1]
    return _tidy(said)


def _said(data: list) -> str:
    """The text of a tagged NO or BAD, from imaplib's data."""
    parts = [item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item) for item in data if item]
    return _tidy(" ".join(parts))


def quote(text: str) -> str:
    """An IMAP quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def utf7_imap(name: str) -> str:
    """A mailbox name in IMAP's modified UTF-7 (RFC 3501, 5.1.3): "Traités" is "Trait&AOk-s"."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            encoded = base64.b64encode("".join(pending).encode("utf-16-be")).decode("ascii")
            out.append("&" + encoded.rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for character in name:
        if " " <= character <= "~":
            flush()
            out.append("&-" if character == "&" else character)
        else:
            pending.append(character)
    flush()
    return "".join(out)


def uid_set(uids: Sequence[int]) -> str:
    """UIDs as an IMAP sequence set, runs written as ranges: 1:3,7,9:10."""
    ranges: list[str] = []
    ordered = sorted(set(uids))
    start = previous = ordered[0]
    for uid in [*ordered[1:], None]:
        if uid is not None and uid == previous + 1:
            previous = uid
            continue
        ranges.append(str(start) if start == previous else f"{start}:{previous}")
        if uid is not None:
            start = previous = uid
    return ",".join(ranges)


_RESPONSE_START = re.compile(rb"^\d+ \(")
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_BODY_LITERAL = re.compile(rb"BODY\[\] ~?\{(\d+)\}$")
_BODY_INLINE = re.compile(rb'BODY\[\] (NIL|"((?:[^"\\]|\\.)*)")')
_NAMESPACE = re.compile(rb'^\(\("((?:[^"\\]|\\.)*)" (?:NIL|"((?:[^"\\]|\\.)*)")')
_LIST_DELIMITER = re.compile(rb'^\([^)]*\) (?:NIL|"((?:[^"\\]|\\.)*)")')


def fetch_responses(data: list) -> Iterator[tuple[bytes, list[tuple[bytes, bytes]]]]:
    """imaplib's data for a FETCH, one response at a time: (its text outside literals, [(the text just before a
    literal, the literal)]). A response is a line "N (…", a literal a (text, bytes) tuple, and the text after a
    literal (which may hold more fields, or another literal) a line starting with a space or ")"."""
    text: list[bytes] = []
    literals: list[tuple[bytes, bytes]] = []
    for item in data:
        head = item[0] if isinstance(item, tuple) else item
        if not isinstance(head, bytes):
            continue
        if _RESPONSE_START.match(head) and (text or literals):
            yield b"".join(text), literals
            text, literals = [], []
        text.append(head)
        if isinstance(item, tuple):
            literals.append((head, item[1]))
    if text or literals:
        yield b"".join(text), literals


def fetched_body(text: bytes, literals: list[tuple[bytes, bytes]]) -> bytes | None:
    """The BODY[] of one FETCH response, None when it has none; a literal shorter than announced is an error."""
    for before, literal in literals:
        announced = _BODY_LITERAL.search(before)
        if announced:
            size = int(announced.group(1))
            if len(literal) != size:
                raise MailboxError(f"the server sent {len(literal)} of the {size} bytes it announced")
            return literal
    inline = _BODY_INLINE.search(text)
    if inline:
        quoted = inline.group(2)
        return b"" if quoted is None else re.sub(rb"\\(.)", rb"\1", quoted)
    return None


class _Closed:
    """A mailbox used as a context manager: closed when the block ends, however it ends."""

    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


class ImapMailbox(_Closed):
    """A folder of an IMAP account, selected (read-write, for MOVE). Every command that names messages is a UID
    command; only the listing walks sequence numbers, to learn each message's UID and size a window at a time (an
    expunge meanwhile can make it miss a message until the next run, never name another: RFC 3501's UIDs)."""

    def __init__(self, location: ImapLocation, imap: imaplib.IMAP4):
        self.location, self.name, self._imap = location, location.name, imap
        self.uidvalidity: int | None = None
        self._capabilities: set[str] = set()
        self._prefix, self._delimiter = "", "/"
        self._known_folders: set[str] = set()
        self._exists = 0

    @classmethod
    def open(cls, location: ImapLocation, environ: Mapping[str, str] = os.environ) -> ImapMailbox:
        variable, secret = _credentials(location, environ)  # before connecting: a missing secret fails at once
        imap = cls._connect(location, _tls_context(environ), variable)
        mailbox = cls(location, imap)
        try:
            mailbox._login(variable, secret)
            mailbox._select()
        except BaseException:
            mailbox.close()
            raise
        return mailbox

    # Connecting and logging in

    @staticmethod
    def may_send_in_clear(peer: str) -> bool:
        """Whether a secret may go unencrypted to this address: only to this host's own (loopback)."""
        return _is_loopback(peer)

    @classmethod
    def _connect(cls, location: ImapLocation, context: ssl.SSLContext, variable: str) -> imaplib.IMAP4:
        where = f"{location.name}: {location.host} port {location.port}"
        try:
            if location.tls:
                return imaplib.IMAP4_SSL(location.host, location.port, ssl_context=context, timeout=TIMEOUT)
            imap = imaplib.IMAP4(location.host, location.port, timeout=TIMEOUT)
            try:
                if "STARTTLS" in imap.capabilities:
                    imap.starttls(context)
                elif not cls.may_send_in_clear(imap.sock.getpeername()[0]):
                    raise ConfigError(
                        f"{location.name}: the server offers no STARTTLS, and {variable} would go unencrypted: "
                        f"use imaps://{location.user}@{location.host}/{location.folder} (port 993)"
                    )
            except BaseException:
                with contextlib.suppress(OSError):
                    imap.shutdown()
                raise
            return imap
        except ssl.SSLCertVerificationError as error:
            raise MailboxError(
                f"{where}: TLS failure: the server's certificate is not trusted ({error.verify_message}); if a "
                "private CA signed it, set SSL_CERT_FILE to that CA's certificate"
            ) from None
        except ssl.SSLError as error:
            hint = " (is it an IMAPS port? 993 is; 143 takes imap://)" if location.tls else ""
            raise MailboxError(f"{where}: TLS failure: {error.reason or error}{hint}") from None
        except socket.gaierror as error:
            raise MailboxError(f"{location.name}: unknown host {location.host} ({error.strerror})") from None
        except TimeoutError:
            raise MailboxError(f"{where}: unreachable, no answer in {TIMEOUT:g} s") from None
        except OSError as error:
            raise MailboxError(f"{where}: unreachable ({error.strerror or error})") from None
        except imaplib.IMAP4.error as error:
            raise MailboxError(f"{where}: no IMAP server answered ({_server_text(error)})") from None

    def _login(self, variable: str, secret: str) -> None:
        imap, user = self._imap, self.location.user
        capabilities = set(imap.capabilities)
        sent = False

        def once(response: bytes) -> bytes:
            # SASL's first message; to whatever the server says after it (XOAUTH2's JSON error), an empty one.
            nonlocal sent
            if sent:
                return b""
            sent = True
            if variable == TOKEN_VARIABLE:
                return f"user={user}\x01auth=Bearer {secret}\x01\x01".encode()
            return b"\0" + user.encode() + b"\0" + secret.encode()

        try:
            if variable == TOKEN_VARIABLE:
                if "AUTH=XOAUTH2" not in capabilities:
                    raise MailboxError(
                        f"{self.name}: the server offers no XOAUTH2 login: use {PASSWORD_VARIABLE} instead of "
                        f"{TOKEN_VARIABLE}"
                    )
                imap.authenticate("XOAUTH2", once)
            elif "AUTH=PLAIN" in capabilities:  # UTF-8 user and password (RFC 4616), where LOGIN takes ASCII only
                imap.authenticate("PLAIN", once)
            elif "LOGINDISABLED" in capabilities:
                raise MailboxError(f"{self.name}: the server refuses every password login here")
            elif not (user + secret).isascii():
                raise MailboxError(f"{self.name}: the server takes LOGIN only, and LOGIN takes no letters but ASCII")
            else:
                imap.login(user, secret)
        except imaplib.IMAP4.abort as error:
            raise MailboxError(f"{self.name}: the connection was lost at login ({_server_text(error)})") from None
        except imaplib.IMAP4.error as error:
            said = _server_text(error)
            if "[UNAVAILABLE]" in said:
                raise MailboxError(
                    f"{self.name}: the server cannot check logins now ({said}): try again later"
                ) from None
            fresh = " or get a fresh token (they last about an hour)" if variable == TOKEN_VARIABLE else ""
            raise MailboxError(
                f"{self.name}: login refused for {user}: check {variable}{fresh} (the server says: {said})"
            ) from None
        except OSError as error:
            raise MailboxError(f"{self.name}: the connection was lost at login ({error})") from None
        # The capabilities change with the login (Dovecot announces MOVE and UIDPLUS only then).
        typ, data = self._run(imap.capability)
        self._capabilities = {word.upper() for word in b" ".join(d for d in data if d).decode().split()}
        self._prefix, self._delimiter = self._personal_namespace()

    def _personal_namespace(self) -> tuple[str, str]:
        """(prefix, hierarchy delimiter) of the user's own folders: ("", ".") on Dovecot's Maildir++, ("INBOX.",
        ".") on Courier, ("", "/") on Gmail and Exchange."""
        imap = self._imap
        if "NAMESPACE" in self._capabilities:
            typ, data = self._run(imap.namespace)
            found = _NAMESPACE.match(data[0]) if typ == "OK" and data and isinstance(data[0], bytes) else None
            if found:
                return _unescape(found.group(1)), _unescape(found.group(2) or b"/")
        typ, data = self._run(imap.list, '""', '""')
        found = _LIST_DELIMITER.match(data[0]) if typ == "OK" and data and isinstance(data[0], bytes) else None
        return "", _unescape(found.group(1)) if found and found.group(1) else "/"

    def _server_name(self, folder: str) -> str:
        """A folder as written in the URL or given to move ("/" between levels), as the server names it."""
        return quote(utf7_imap(folder.replace("/", self._delimiter)))

    def _select(self) -> None:
        folder = self.location.folder
        typ, data = self._run(self._imap.select, self._server_name(folder))
        if typ != "OK":
            raise MailboxError(
                f"{self.name}: no folder {folder!r} there ({_said(data)}): create it, or name another in the URL"
            )
        self._exists = int(data[0] or 0)
        _, validity = self._imap.response("UIDVALIDITY")
        if validity and validity[0]:
            self.uidvalidity = int(validity[0])

    def _run(self, command: Callable[..., tuple[str, list]], *args: str) -> tuple[str, list]:
        """An imaplib command, its failures of the connection as one line."""
        try:
            return command(*args)
        except imaplib.IMAP4.abort as error:
            raise MailboxError(f"{self.name}: the connection was lost ({_server_text(error)})") from None
        except imaplib.IMAP4.error as error:
            raise MailboxError(f"{self.name}: the server refused a command ({_server_text(error)})") from None
        except TimeoutError:
            raise MailboxError(f"{self.name}: the server stopped answering ({TIMEOUT:g} s)") from None
        except OSError as error:
            raise MailboxError(f"{self.name}: the connection was lost ({error})") from None

    def _forget_unsolicited(self) -> None:
        """Drop the untagged responses imaplib keeps (EXPUNGE, EXISTS, FETCH of flags…), which grow with each
        command, tracking the folder's count as they tell it."""
        responses = self._imap.untagged_responses
        expunged = responses.pop("EXPUNGE", None)
        exists = responses.pop("EXISTS", None)
        if exists and isinstance(exists[-1], bytes):
            self._exists = int(exists[-1])
        elif expunged:
            self._exists -= len(expunged)
        for kind in ("FETCH", "RECENT", "VANISHED", "OK"):
            responses.pop(kind, None)

    # Reading

    def _listing(self) -> tuple[array, array]:
        """The UID and size of every message, in windows of sequence numbers: 8 bytes a message."""
        uids, sizes = array("L"), array("L")
        start = 1
        self._forget_unsolicited()
        while start <= self._exists:
            end = min(start + LIST_WINDOW - 1, self._exists)
            typ, data = self._run(self._imap.fetch, f"{start}:{end}", "(UID RFC822.SIZE)")
            if typ != "OK":
                raise MailboxError(f"{self.name}: the server would not list the folder ({_said(data)})")
            for text, _ in fetch_responses(data):
                uid, size = _UID.search(text), _SIZE.search(text)
                if uid and size:
                    uids.append(int(uid.group(1)))
                    sizes.append(int(size.group(1)))
            self._forget_unsolicited()  # another client's expunges lower the count: the next window follows
            start = end + 1
        return uids, sizes

    def _batches(self, uids: array, sizes: array) -> Iterator[list[int]]:
        batch: list[int] = []
        total = 0
        for uid, size in zip(uids, sizes, strict=True):
            if batch and (len(batch) == BATCH_MESSAGES or total + size > BATCH_BYTES):
                yield batch
                batch, total = [], 0
            batch.append(uid)
            total += size
        if batch:
            yield batch

    def messages(self) -> Iterator[MailboxMessage]:
        uids, sizes = self._listing()
        for batch in self._batches(uids, sizes):
            wanted = set(batch)
            typ, data = self._run(self._imap.uid, "FETCH", uid_set(batch), "(UID BODY.PEEK[])")
            if typ != "OK":
                raise MailboxError(f"{self.name}: the server would not send messages ({_said(data)})")
            found = []
            for text, literals in fetch_responses(data):
                found_uid = _UID.search(text)
                uid = int(found_uid.group(1)) if found_uid else None
                if uid not in wanted:
                    continue  # a change another client made, told in passing
                try:
                    body = fetched_body(text, literals)
                except MailboxError as error:
                    raise MailboxError(f"{self.name}: UID {uid}: {error}") from None
                if body is not None:
                    found.append(MailboxMessage(str(uid), body))
            del data
            self._forget_unsolicited()
            yield from found  # a message expunged since the listing is simply not there

    # Moving

    def _ensure_folder(self, folder: str) -> str:
        """The folder's quoted name on the server, created (and subscribed to) if missing."""
        name = folder if folder.startswith(self._prefix) or folder.upper() == "INBOX" else self._prefix + folder
        server_name = self._server_name(name)
        if server_name in self._known_folders:
            return server_name
        typ, data = self._run(self._imap.list, '""', server_name)
        if not (typ == "OK" and any(data)):
            typ, data = self._run(self._imap.create, server_name)
            if typ != "OK" and "[ALREADYEXISTS]" not in _said(data).upper():
                raise MailboxError(f"{self.name}: cannot create the folder {name!r} ({_said(data)})")
            self._run(self._imap.subscribe, server_name)  # for mail clients to show it; its failure is harmless
        self._known_folders.add(server_name)
        return server_name

    def move(self, refs: Sequence[str], folder: str) -> None:
        uids = [int(ref) for ref in refs]  # ValueError for a ref this mailbox never gave
        if not uids:
            return
        server_name = self._ensure_folder(folder)
        if "MOVE" not in self._capabilities and "UIDPLUS" not in self._capabilities:
            raise MailboxError(
                f"{self.name}: the server offers neither MOVE nor UIDPLUS, without which a move would expunge "
                "other messages: use another server, or a Maildir"
            )
        ordered = sorted(set(uids))
        for start in range(0, len(ordered), MOVE_BATCH):
            uids_of_batch = uid_set(ordered[start : start + MOVE_BATCH])
            steps: list[tuple[str, ...]]
            if "MOVE" in self._capabilities:
                steps = [("MOVE", uids_of_batch, server_name)]
            else:  # RFC 4315: only these UIDs are expunged, never another message marked \Deleted
                steps = [
                    ("COPY", uids_of_batch, server_name),
                    ("STORE", uids_of_batch, "+FLAGS.SILENT", r"(\Deleted)"),
                    ("EXPUNGE", uids_of_batch),
                ]
            for step in steps:
                typ, data = self._run(self._imap.uid, *step)
                if typ != "OK":
                    raise MailboxError(f"{self.name}: cannot move messages to {folder!r} ({_said(data)})")
            self._forget_unsolicited()

    def close(self) -> None:
        """LOGOUT, never CLOSE: CLOSE would expunge every message of the folder marked \\Deleted."""
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            self._imap.logout()


def _unescape(quoted: bytes) -> str:
    return re.sub(rb"\\(.)", rb"\1", quoted).decode("utf-8", "replace")


# Maildir


class MaildirMailbox(_Closed):
    """A Maildir++ folder on this host: its messages in cur/ and new/, moved by rename into PATH/.FOLDER/."""

    uidvalidity: int | None = None

    def __init__(self, path: Path):
        self.path, self.name = path, f"maildir://{path}"

    @classmethod
    def open(cls, url: str) -> MaildirMailbox:
        parts = urlsplit(url)
        if parts.netloc or not parts.path.startswith("/"):
            raise ConfigError(f"{url}: a Maildir is named by its absolute path, maildir:///home/bounces/Maildir")
        if parts.query or parts.fragment:
            raise ConfigError(f"{url}: the URL takes no ?options or #fragment: {USAGE}")
        mailbox = cls(Path(unquote(parts.path)))
        if not ((mailbox.path / "cur").is_dir() and (mailbox.path / "new").is_dir()):
            raise MailboxError(f"{mailbox.name}: no Maildir there (no cur/ and new/): create it, or fix the path")
        return mailbox

    def messages(self) -> Iterator[MailboxMessage]:
        # cur/ before new/: a message a mail client moves from new/ to cur/ meanwhile is missed (until the next
        # run), never read twice.
        for sub in ("cur", "new"):
            try:
                entries = os.scandir(self.path / sub)  # one entry at a time, however many there are
            except OSError as error:
                raise MailboxError(f"{self.name}: cannot read {sub}/ ({error.strerror})") from None
            with entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    try:
                        raw = Path(entry.path).read_bytes()
                    except (FileNotFoundError, IsADirectoryError):
                        continue  # moved or renamed (its flags changed) since the listing: the next run has it
                    except OSError as error:
                        raise MailboxError(f"{self.name}: cannot read {sub}/{entry.name} ({error.strerror})") from None
                    yield MailboxMessage(f"{sub}/{entry.name}", raw)

    def move(self, refs: Sequence[str], folder: str) -> None:
        destination = self.path / ("." + folder.strip("/").replace("/", "."))
        try:
            for sub in ("tmp", "new", "cur"):
                (destination / sub).mkdir(parents=True, exist_ok=True)
            (destination / "maildirfolder").touch()  # Maildir++ marks a subfolder so
        except OSError as error:
            raise MailboxError(f"{self.name}: cannot create {destination} ({error.strerror})") from None
        for ref in refs:
            sub, _, filename = ref.partition("/")
            if sub not in ("cur", "new") or not filename or "/" in filename or filename.startswith("."):
                raise ValueError(f"not a message of {self.name}: {ref!r}")
            where = self.path / sub / filename
            source = where if where.exists() else self._renamed(filename)
            if source is None:
                continue  # gone already
            try:
                os.rename(source, destination / source.parent.name / source.name)
            except FileNotFoundError:
                continue
            except OSError as error:
                raise MailboxError(f"{self.name}: cannot move {ref} to {destination}: {error.strerror}") from None

    def _renamed(self, filename: str) -> Path | None:
        """The file of this message now, after a mail client moved it to cur/ or changed its flags: the same
        unique name before the ":2," of its flags."""
        key = filename.partition(":")[0]
        for sub in ("cur", "new"):
            with os.scandir(self.path / sub) as entries:
                for entry in entries:
                    if entry.name.partition(":")[0] == key:
                        return Path(entry.path)
        return None

    def close(self) -> None:
        pass
