"""A throwaway Dovecot IMAP server from Debian's dovecot-imapd, in a temporary folder, on free ports of 127.0.0.1.

Its own dovecot.conf (no system file, no system service): one user in a passwd-file, Maildir storage in the
folder, plain IMAP (plaintext logins allowed, STARTTLS offered) and IMAPS with a certificate from a CA made here
(`ca_file`, for SSL_CERT_FILE), and XOAUTH2 checked by Dovecot's oauth2 passdb against a tiny introspection
endpoint on 127.0.0.1 (`IntrospectionServer`, the part Microsoft's or Google's userinfo plays for real).

As root, Dovecot runs its processes as the package's `dovecot` and `dovenull` users and the mail as `nobody`
(it refuses mail as root); as anyone else, everything runs as that user. `deliver` writes a message into the
Maildir as a local delivery agent would, and `folder` reads a folder's files back, with their flags, for tests
to check what moved and what was seen without going through IMAP.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import pwd
import secrets
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

DOVECOT = shutil.which("dovecot", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
# dovecot-core has the server; dovecot-imapd adds its IMAP processes (Debian's path, then other systems').
IMAP_INSTALLED = any(Path(folder, "imap").is_file() for folder in ("/usr/lib/dovecot", "/usr/libexec/dovecot"))
USER = "bounces@crdbsl.org"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class StoredMessage:
    """One file of a Maildir folder: its name, its bytes and its Maildir flags ("S" seen, "T" trashed…)."""

    name: str
    raw: bytes
    flags: str


class IntrospectionServer:
    """An OAuth 2.0 token introspection endpoint (RFC 7662), the part Microsoft's or Google's servers play for
    real: a POST of `token=…` gets {"active": true, "username": user} for the one valid token, {"active": false}
    for any other."""

    def __init__(self, user: str):
        self.user, self.token = user, secrets.token_urlsafe(24)
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                outer.requests += 1
                form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode())
                valid = form.get("token") == [outer.token]
                body = json.dumps({"active": True, "username": outer.user} if valid else {"active": False})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/introspect"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def make_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signed for 127.0.0.1 and localhost: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "newsletter test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )  # digital_signature, key_cert_sign, crl_sign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    paths[2].chmod(0o600)
    return paths


class DovecotServer:
    """Start, deliver into and read the Maildir of, stop. `capabilities`, when given, is what the server announces
    after login instead of its own list (to see how a client does without MOVE, say); without `tls`, the server
    offers neither IMAPS nor STARTTLS; without `oauth2`, no XOAUTH2 and no introspection endpoint."""

    def __init__(
        self, *, capabilities: str | None = None, oauth2: bool = True, tls: bool = True, password: str | None = None
    ):
        if DOVECOT is None or not IMAP_INSTALLED:
            raise FileNotFoundError("no dovecot with IMAP here: install Debian's dovecot-imapd package")
        # Not ASCII by default, as a French speaker's may be: a client has to send it as UTF-8 (AUTHENTICATE PLAIN).
        self.user, self.password = USER, password or f"Mot de passe très sûr {secrets.token_hex(4)}"
        self.capabilities, self.tls = capabilities, tls
        # Short: Dovecot's Unix sockets live under it, and a socket's path has at most 107 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="nl-imap-"))
        self.maildir = self.root / "mail"
        self.log = self.root / "dovecot.log"
        self.config = self.root / "dovecot.conf"
        self.port, self.tls_port = free_port(), free_port()
        self.host = "127.0.0.1"
        self.introspection = IntrospectionServer(self.user) if oauth2 else None
        if os.geteuid() == 0:
            internal, login = pwd.getpwnam("dovecot"), pwd.getpwnam("dovenull")
            self.mail_owner = pwd.getpwnam("nobody")
        else:
            internal = login = self.mail_owner = pwd.getpwuid(os.geteuid())
        self.internal_user, self.login_user = internal, login
        self.started = False

    @property
    def oauth2_token(self) -> str:
        assert self.introspection is not None
        return self.introspection.token

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.pem"

    def url(self, folder: str = "INBOX", *, scheme: str = "imaps") -> str:
        port = self.tls_port if scheme == "imaps" else self.port
        return f"{scheme}://{self.user}@{self.host}:{port}/{folder}"

    def _write_config(self) -> None:
        _, cert, key = make_certificate(self.root)
        uid, gid = self.mail_owner.pw_uid, self.mail_owner.pw_gid
        (self.root / "passwd").write_text(f"{self.user}:{{PLAIN}}{self.password}:{uid}:{gid}::{self.maildir}\n")
        (self.root / "passwd").chmod(0o644)  # read by the auth process, as the internal user
        oauth2 = ""
        mechanisms = "plain login"
        if self.introspection is not None:
            mechanisms += " xoauth2 oauthbearer"
            (self.root / "oauth2.conf").write_text(
                f"introspection_mode = post\nintrospection_url = {self.introspection.url}\n"
                "username_attribute = username\nactive_attribute = active\nactive_value = true\n"
            )
            oauth2 = f"""
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {self.root}/oauth2.conf
}}"""
        # Without TLS, no STARTTLS either, and no IMAPS (its port 0: no listener).
        tls = f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}" if self.tls else "ssl = no"
        capability = f"protocol imap {{\n  imap_capability = {self.capabilities}\n}}\n" if self.capabilities else ""
        self.config.write_text(f"""\
# A throwaway server for the tests (tests/imap_server.py): nothing here is read from /etc/dovecot.
protocols = imap
listen = 127.0.0.1
base_dir = {self.root}/run
state_dir = {self.root}/state
instance_name = newsletter-test-{self.root.name}
log_path = {self.log}
default_internal_user = {self.internal_user.pw_name}
default_internal_group = {_group_name(self.internal_user.pw_gid)}
default_login_user = {self.login_user.pw_name}
first_valid_uid = {min(uid, 500)}
first_valid_gid = 0
mail_location = maildir:{self.maildir}
{tls}
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {self.root}/passwd
}}{oauth2}
userdb {{
  driver = passwd-file
  args = username_format=%u {self.root}/passwd
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {self.port}
  }}
  inet_listener imaps {{
    port = {self.tls_port if self.tls else 0}
    ssl = yes
  }}
}}
# No delay after a failed login, and no growing penalty for the address that failed: tests fail logins on purpose.
auth_failure_delay = 0
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
{capability}""")

    def start(self) -> DovecotServer:
        (self.root / "run").mkdir()
        (self.root / "state").mkdir()
        for sub in ("cur", "new", "tmp"):
            (self.maildir / sub).mkdir(parents=True)
        self._write_config()
        if os.geteuid() == 0:
            self.root.chmod(0o755)  # the internal and mail users go through it
            for path in (self.maildir, *self.maildir.iterdir()):
                os.chown(path, self.mail_owner.pw_uid, self.mail_owner.pw_gid)
        # Dovecot's master binds its listeners before it goes to the background: when the command returns, the
        # ports take connections.
        # Its output to a file, never a pipe: the master in the background would hold a pipe open forever.
        with open(self.root / "startup.log", "wb") as output:
            code = subprocess.call([DOVECOT, "-c", str(self.config)], stdout=output, stderr=output)
        if code != 0:
            said = (self.root / "startup.log").read_text(errors="replace").strip()
            log = self.log.read_text(errors="replace").strip() if self.log.exists() else ""
            raise RuntimeError(f"dovecot did not start: {said} {log}")
        self.started = True
        return self

    def stop(self) -> None:
        if self.started:
            # The master writes its pid once in the background, just after it listens: long done by now.
            pid = int((self.root / "run" / "master.pid").read_text())
            try:
                exited = os.pidfd_open(pid)
                os.kill(pid, signal.SIGTERM)
                select.select([exited], [], [])  # until the master has stopped its children and exited
                os.close(exited)
            except ProcessLookupError:
                pass
            self.started = False
        if self.introspection is not None:
            self.introspection.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def _folder_path(self, name: str) -> Path:
        # Maildir++: INBOX is the root, every other folder a ".Name" beside cur/new/tmp, "." between levels.
        return self.maildir if name.upper() == "INBOX" else self.maildir / ("." + name.replace("/", "."))

    def make_folder(self, name: str) -> Path:
        """The folder's directory, with its cur/, new/ and tmp/, as Dovecot would make it."""
        path = self._folder_path(name)
        for sub in ("", "cur", "new", "tmp"):
            if not (path / sub).is_dir():
                (path / sub).mkdir()
                self._own(path / sub)
        return path

    def deliver(self, raw: bytes, folder: str = "INBOX", *, flags: str | None = None) -> str:
        """Write a message into the folder as a delivery agent does (into tmp/, then renamed into new/), or into
        cur/ with these Maildir flags ("S" seen, "T" marked deleted) as a mail client leaves it; its file name."""
        path = self.make_folder(folder)
        name = f"{dt.datetime.now().timestamp():.6f}.{secrets.token_hex(6)}.{socket.gethostname()},S={len(raw)}"
        temporary = path / "tmp" / name
        temporary.write_bytes(raw)
        self._own(temporary)
        if flags is None:
            temporary.rename(path / "new" / name)
            return name
        temporary.rename(path / "cur" / f"{name}:2,{flags}")
        return f"{name}:2,{flags}"

    def environ(self, *, token: bool = False, trust: bool = True) -> dict[str, str]:
        """The environment of a client of this server: its password (or its OAuth2 token) and its CA."""
        secret = {"NEWSLETTER_BOUNCES_OAUTH2_TOKEN": self.oauth2_token} if token else {}
        secret = secret or {"NEWSLETTER_BOUNCES_PASSWORD": self.password}
        return {**secret, **({"SSL_CERT_FILE": str(self.ca_file)} if trust else {})}

    def _own(self, path: Path) -> None:
        if os.geteuid() == 0:
            os.chown(path, self.mail_owner.pw_uid, self.mail_owner.pw_gid)

    def folder(self, name: str) -> list[StoredMessage]:
        """Every message of a folder (new/ and cur/), by file name; none when the folder does not exist."""
        path = self._folder_path(name)
        found = []
        for sub in ("new", "cur"):
            if (path / sub).is_dir():
                for entry in os.scandir(path / sub):
                    flags = entry.name.partition(":2,")[2]
                    found.append(StoredMessage(entry.name, Path(entry.path).read_bytes(), flags))
        return sorted(found, key=lambda message: message.name)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _group_name(gid: int) -> str:
    import grp

    return grp.getgrgid(gid).gr_name
