"""Unsubscribe tokens: genuine ones verify; forged, tampered, truncated or retired ones never do."""

from __future__ import annotations

import string

import pytest

from newsletter.errors import ConfigError
from newsletter.tokens import TokenSigner

KEY = "k" * 32


def test_round_trip_and_url_safety():
    token = TokenSigner(KEY).sign(42, "alliances")
    assert TokenSigner(KEY).verify(token) == (42, "alliances")
    assert all(c.isalnum() or c in "-_." for c in token)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t[:-1],  # truncated
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # tampered signature
        lambda t: TokenSigner(KEY).sign(43, "alliances").split(".")[0] + "." + t.split(".")[1],  # another id
        lambda t: t.split(".")[0],  # no signature
        lambda t: "",
        lambda t: "....",
        lambda t: "%%%." + t.split(".")[1],
        lambda t: t + ".x",
    ],
)
def test_forged_tokens_are_refused(mutate):
    token = TokenSigner(KEY).sign(42, "alliances")
    assert TokenSigner(KEY).verify(mutate(token)) is None


def test_another_key_cannot_forge():
    assert TokenSigner(KEY).verify(TokenSigner("z" * 32).sign(42, "alliances")) is None


def test_rotation_old_keys_verify_new_key_signs():
    old_token = TokenSigner("old-key-" + "o" * 24).sign(7, "news")
    rotated = TokenSigner("new-key-" + "n" * 24, ("old-key-" + "o" * 24,))
    assert rotated.verify(old_token) == (7, "news")
    assert TokenSigner("old-key-" + "o" * 24).verify(rotated.sign(7, "news")) is None  # signed with the new key


def test_short_key_and_missing_key(monkeypatch):
    with pytest.raises(ConfigError, match="too short"):
        TokenSigner("short")
    monkeypatch.delenv("NEWSLETTER_SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="NEWSLETTER_SECRET_KEY is not set"):
        TokenSigner.from_environment(required=True)
    assert TokenSigner.from_environment(required=False).verify(
        TokenSigner.from_environment(required=False).sign(1, "x")
    ) == (1, "x")


def one_character_changes(token: str):
    """Every token that differs from this one by one character replaced, removed or inserted."""
    alphabet = string.ascii_letters + string.digits + "-_.=+/%~ "
    for i in range(len(token) + 1):
        for c in alphabet:
            yield token[:i] + c + token[i:]  # inserted
            if i < len(token):
                yield token[:i] + c + token[i + 1 :]  # replaced
        if i < len(token):
            yield token[:i] + token[i + 1 :]  # removed


@pytest.mark.parametrize("subscriber_id, slug", [(42, "alliances"), (1, "a"), (123456, "membres-2025")])
def test_only_the_canonical_spelling_verifies(subscriber_id, slug):
    signer = TokenSigner(KEY)
    token = signer.sign(subscriber_id, slug)
    changes = set(one_character_changes(token)) - {token}
    assert len(changes) > 1000
    accepted = [t for t in changes if signer.verify(t) is not None]
    assert accepted == []
    assert signer.verify(token) == (subscriber_id, slug)


def test_a_confirmation_token_names_its_request_and_older_ones_still_verify_without():
    """A confirmation link carries the sign-up request it confirms; one made before links did (subscriber,
    minute, list) reads with no request, and neither reads as the other or as an unsubscribe token."""
    import datetime as dt

    from newsletter.tokens import _CONFIRM_DOMAIN

    signer, at, week = TokenSigner(KEY), dt.datetime.now(dt.UTC), dt.timedelta(days=7)
    token = signer.sign_confirmation(42, "2024", 7, at)  # a slug of digits too
    assert signer.verify_confirmation(token, at, valid=week) == (42, "2024", 7)
    minute = int(at.timestamp() // 60)
    older = signer._seal(f"42.{minute}.2024".encode(), _CONFIRM_DOMAIN)
    assert signer.verify_confirmation(older, at, valid=week) == (42, "2024", None)
    assert signer.verify(token) is None and signer.verify_confirmation(signer.sign(42, "2024"), at, valid=week) is None
    for bad in (f"42.{minute}.0.2024", f"42.{minute}.7.", f"42.{minute}.7.8.2024", f"42.{minute}..2024"):
        assert signer.verify_confirmation(signer._seal(bad.encode(), _CONFIRM_DOMAIN), at, valid=week) is None


def test_a_return_path_token_names_its_campaign_and_recipient_in_one_case_and_fits_a_local_part():
    signer = TokenSigner(KEY)
    token = signer.sign_return_path(1234, 987654)
    assert signer.verify_return_path(token) == (1234, 987654)
    assert signer.verify_return_path(token.upper()) == (1234, 987654)  # a server may change the local part's case
    assert token == token.lower() and set(token) <= set(string.ascii_lowercase + string.digits + "-")
    assert len(f"bounces+{signer.sign_return_path(10**9, 10**9)}") <= 64  # RFC 5321: a local part's 64 octets
    assert TokenSigner("another key, long enough").verify_return_path(token) is None
    assert TokenSigner("another key, long enough", (KEY,)).verify_return_path(token) == (1234, 987654)  # rotated


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t[:-1],
        lambda t: t[:-1] + ("a" if t[-1] != "a" else "b"),
        lambda t: "1235" + t[4:],  # another campaign, the same MAC
        lambda t: t.replace("-987654-", "-987655-"),  # another subscriber
        lambda t: t + "a",
        lambda t: "",
        lambda t: TokenSigner(KEY).sign(987654, "alliances"),  # an unsubscribe token is not a return path's
    ],
)
def test_an_altered_return_path_token_matches_nobody(mutate):
    token = TokenSigner(KEY).sign_return_path(1234, 987654)
    assert TokenSigner(KEY).verify_return_path(mutate(token)) is None
