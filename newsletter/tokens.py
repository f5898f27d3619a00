"""Signed unsubscribe tokens: a URL-safe value naming a subscriber and a list, that only the key can make.

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
import hashlib
import hmac
import os
import re

from newsletter.errors import ConfigError

_DOMAIN = b"newsletter-unsubscribe-v1:"  # separates these MACs from any other use of the key
_PAYLOAD = re.compile(r"(0|[1-9][0-9]*)\.(.+)", re.DOTALL)
MIN_KEY_LENGTH = 16


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

    def _mac(self, key: bytes, payload: bytes) -> bytes:
        return hmac.new(key, _DOMAIN + payload, hashlib.sha256).digest()[:16]

    def sign(self, subscriber_id: int, list_slug: str) -> str:
        payload = f"{subscriber_id}.{list_slug}".encode()
        return f"{_b64(payload)}.{_b64(self._mac(self._keys[0], payload))}"

    def verify(self, token: str) -> tuple[int, str] | None:
        """Return (subscriber id, list slug) for a genuine token, None for anything else."""
        try:
            encoded_payload, encoded_mac = token.split(".")
            payload, mac = _unb64(encoded_payload), _unb64(encoded_mac)
            match = _PAYLOAD.fullmatch(payload.decode("utf-8"))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None
        if _b64(payload) != encoded_payload or _b64(mac) != encoded_mac:
            return None  # not the canonical spelling
        if match is None or len(mac) != 16:
            return None
        if not any(hmac.compare_digest(mac, self._mac(key, payload)) for key in self._keys):
            return None
        return int(match.group(1)), match.group(2)
