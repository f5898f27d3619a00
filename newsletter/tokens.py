"""Signed tokens: a URL-safe value naming a subscriber and a list, that only the key can make. Unsubscribe
links carry one; a sign-up's confirmation link another kind (its own MAC domain), which also says when it was
issued (it expires) and which sign-up request it confirms (its event's id: the store lets a link confirm its own
request only, and never after the membership changed since). Confirmation links made before they named their
request (subscriber, minute, list) still verify, with no request: the store takes them for the latest one. An
approver's link (a third domain) names an approval request, its campaign, the content it asks about and the
request's nonce. A message's return path (VERP, a fourth domain) names its campaign and subscriber, so that a
bounce returned to it is matched whatever the bounce has kept of the message.

token = base64url("<subscriber id>.<list slug>") "." base64url(first 16 bytes of HMAC-SHA256(key, payload))

128 bits of MAC: a token cannot be forged, and changing the id in it to enumerate other subscribers breaks the
signature. NEWSLETTER_SECRET_KEY signs; NEWSLETTER_OLD_SECRET_KEYS (comma-separated) still verify, so the key
can be rotated without breaking the links in emails already sent.

Only the canonical spelling verifies: unpadded base64url that re-encodes to exactly what was given. Base64's last
character carries spare bits and decoders skip stray characters, so without that check one link would have
many spellings, each hashed differently in the logs and counted apart by the rate limits.

The list part is the list's slug, or in links sent before slugs were required, the name the list had then (the
store still finds the list by it): the MAC, not a pattern, is what makes it trustworthy.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import hmac
import os
import re
from typing import NamedTuple

from newsletter.errors import ConfigError

_DOMAIN = b"newsletter-unsubscribe-v1:"  # separates these MACs from any other use of the key
_CONFIRM_DOMAIN = b"newsletter-confirm-v1:"  # a confirmation link is never an unsubscribe link, nor the reverse
_APPROVAL_DOMAIN = b"newsletter-approve-v1:"  # an approver's link: never a member's, nor the reverse
_RETURN_PATH_DOMAIN = b"newsletter-return-path-v1:"  # a bounce address's token: it unsubscribes nobody by itself
_PAYLOAD = re.compile(r"(0|[1-9][0-9]*)\.(.+)", re.DOTALL)
# subscriber . minute issued . request . list slug; without the request in links made before they named it (a
# slug has no dot: the two never read as each other)
_CONFIRMATION = re.compile(r"([1-9][0-9]*)\.(0|[1-9][0-9]*)\.(?:([1-9][0-9]*)\.)?([a-z0-9][a-z0-9-]*)")
MIN_KEY_LENGTH = 16


# request . campaign . the first 16 hex digits of its content's digest . the request's nonce
_APPROVING = re.compile(r"([1-9][0-9]*)\.([1-9][0-9]*)\.([0-9a-f]{16})\.([A-Za-z0-9_-]{32,64})")


# campaign - subscriber - 13 characters of base32 (64 bits of MAC), lowercase: mail servers may change the case of
# a local part, and some refuse characters other than letters, digits and hyphens in one
_RETURN_PATH = re.compile(r"([1-9][0-9]*)-([1-9][0-9]*)-([a-z2-7]{13})")
RETURN_PATH_MAC_BYTES = 8


class Approving(NamedTuple):
    """What a genuine approval token names: the request, its campaign, the content it approves, and its nonce
    (which the store keeps only as a hash: the token is its only copy)."""

    request_id: int
    campaign_id: int
    content: str  # the first 16 hex digits of FrozenCampaign.message_digest when the request was made
    nonce: str


class Confirming(NamedTuple):
    """What a genuine confirmation token names."""

    subscriber_id: int
    list_slug: str
    request_id: int | None  # the sign-up request it confirms; None in links made before they named it


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, key: str, old_keys: tuple[str, ...] = ()):
        if len(key) < MIN_KEY_LENGTH:
            raise ConfigError(
                f"NEWSLETTER_SECRET_KEY is too short ({len(key)} characters); use at least {MIN_KEY_LENGTH}, e.g. "
                "the output of: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        self._keys = [k.encode("utf-8") for k in (key, *old_keys) if k]

    @property
    def key(self) -> bytes:
        """The current key, for other keyed hashes (derived with a label of their own)."""
        return self._keys[0]

    @classmethod
    def from_environment(cls, *, required: bool) -> TokenSigner:
        """The signer for NEWSLETTER_SECRET_KEY; without it, a fixed development key unless required."""
        key = os.environ.get("NEWSLETTER_SECRET_KEY", "")
        old = tuple(k.strip() for k in os.environ.get("NEWSLETTER_OLD_SECRET_KEYS", "").split(",") if k.strip())
        if not key:
            if required:
                raise ConfigError(
                    "NEWSLETTER_SECRET_KEY is not set: it signs the unsubscribe links; set it in the environment "
                    "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
                )
            key = "development-only-key-for-the-outbox"
        return cls(key, old)

    def _mac(self, key: bytes, payload: bytes, domain: bytes = _DOMAIN) -> bytes:
        return hmac.new(key, domain + payload, hashlib.sha256).digest()[:16]

    def _seal(self, payload: bytes, domain: bytes) -> str:
        return f"{_b64(payload)}.{_b64(self._mac(self._keys[0], payload, domain))}"

    def _open(self, token: str, domain: bytes) -> str | None:
        """The payload of a genuine token in its canonical spelling, signed for this domain by a current key."""
        try:
            encoded_payload, encoded_mac = token.split(".")
            payload, mac = _unb64(encoded_payload), _unb64(encoded_mac)
            text = payload.decode("utf-8")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None
        if _b64(payload) != encoded_payload or _b64(mac) != encoded_mac or len(mac) != 16:
            return None  # not the canonical spelling
        if not any(hmac.compare_digest(mac, self._mac(key, payload, domain)) for key in self._keys):
            return None
        return text

    def sign(self, subscriber_id: int, list_slug: str) -> str:
        return self._seal(f"{subscriber_id}.{list_slug}".encode(), _DOMAIN)

    def verify(self, token: str) -> tuple[int, str] | None:
        """Return (subscriber id, list slug) for a genuine token, None for anything else."""
        text = self._open(token, _DOMAIN)
        match = _PAYLOAD.fullmatch(text) if text is not None else None
        if match is None:
            return None
        return int(match.group(1)), match.group(2)

    def sign_confirmation(self, subscriber_id: int, list_slug: str, request_id: int, at: dt.datetime) -> str:
        """A sign-up's confirmation link: the person, the list, the request it confirms, and when it was issued
        (it expires)."""
        minute = int(at.timestamp() // 60)
        return self._seal(f"{subscriber_id}.{minute}.{request_id}.{list_slug}".encode(), _CONFIRM_DOMAIN)

    def verify_confirmation(self, token: str, at: dt.datetime, *, valid: dt.timedelta) -> Confirming | None:
        """What a genuine confirmation token issued less than `valid` before `at` names; None for anything else."""
        text = self._open(token, _CONFIRM_DOMAIN)
        match = _CONFIRMATION.fullmatch(text) if text is not None else None
        if match is None:
            return None
        issued = dt.datetime.fromtimestamp(int(match.group(2)) * 60, dt.UTC)
        if not issued - dt.timedelta(minutes=1) <= at <= issued + valid:
            return None
        request = match.group(3)
        return Confirming(int(match.group(1)), match.group(4), int(request) if request else None)

    def sign_approval(self, request_id: int, campaign_id: int, content_digest: str, nonce: str) -> str:
        """An approver's link: one request of one campaign, bound to the content asked about."""
        payload = f"{request_id}.{campaign_id}.{content_digest[:16]}.{nonce}"
        return self._seal(payload.encode(), _APPROVAL_DOMAIN)

    def verify_approval(self, token: str) -> Approving | None:
        """What a genuine approval token names; None for anything else. Whether it is still good (unused,
        unexpired, its campaign awaiting approval) is the store's to say."""
        text = self._open(token, _APPROVAL_DOMAIN)
        match = _APPROVING.fullmatch(text) if text is not None else None
        if match is None:
            return None
        return Approving(int(match.group(1)), int(match.group(2)), match.group(3), match.group(4))

    def sign_return_path(self, campaign_id: int, subscriber_id: int) -> str:
        """The token of one message's envelope sender (`bounces+TOKEN@domain`): short enough for a local part (64
        octets), in one case, and made of what every server keeps as it is."""
        payload = f"{campaign_id}-{subscriber_id}"
        return f"{payload}-{self._return_path_mac(self._keys[0], payload)}"

    def verify_return_path(self, token: str) -> tuple[int, int] | None:
        """(campaign id, subscriber id) of a genuine return-path token, in either case; None for anything else."""
        match = _RETURN_PATH.fullmatch(token.lower())
        if match is None:
            return None
        payload = f"{match.group(1)}-{match.group(2)}"
        if not any(hmac.compare_digest(match.group(3), self._return_path_mac(key, payload)) for key in self._keys):
            return None
        return int(match.group(1)), int(match.group(2))

    def _return_path_mac(self, key: bytes, payload: str) -> str:
        mac = hmac.new(key, _RETURN_PATH_DOMAIN + payload.encode(), hashlib.sha256).digest()[:RETURN_PATH_MAC_BYTES]
        return base64.b32encode(mac).decode("ascii").rstrip("=").lower()


MAX_ADDRESS = 45  # characters of the longest IP address (IPv6 with an IPv4 tail): a longer "host" is none


def ip_hash(key: bytes, host: str | None) -> str:
    """A keyed hash of a client's address (the events' ip_hash): the same person is recognisable in the record,
    never the IP, and nobody without the key can test a guess."""
    host = host or ""
    # no address is longer: anything else (a proxy's X-Forwarded-For) is hashed without taking room in the cache
    return _host_hash(key, host) if len(host) <= MAX_ADDRESS else _host_hash.__wrapped__(key, host)


@functools.lru_cache(maxsize=4096)  # the same clients come back
def _host_hash(key: bytes, host: str) -> str:
    return hmac.new(key, b"newsletter-ip:" + host.encode(), hashlib.sha256).hexdigest()[:32]
