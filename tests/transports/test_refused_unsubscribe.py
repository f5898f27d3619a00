"""The transports that cannot use a provider's hosted unsubscribe refuse `?unsubscribe=provider` when the DSN is
read, in one line that says why; `?unsubscribe=own` (the default) is accepted and changes nothing.

Resend: "Resend doesn't manage contact lists for transactional emails. If you manage your own list, you can add
the List-Unsubscribe … header" (https://resend.com/docs/dashboard/emails/add-unsubscribe-to-transactional-emails);
its hosted unsubscribe belongs to Broadcasts, not to /emails/batch. SMTP has no provider to host a page; the
outbox and null:// send nothing anywhere.
"""

from __future__ import annotations

import pytest

from newsletter.errors import NewsletterError
from newsletter.transports import transport_from_dsn

REFUSED = [
    (
        "resend+api://re_123456789@default?unsubscribe=provider",
        "resend+api://…?unsubscribe=provider: Resend hosts an unsubscribe page only for Broadcasts to its Audiences, "
        "not for /emails/batch; run `newsletter serve` for the links",
    ),
    (
        "smtp://news:secret@smtp.example.org:587?unsubscribe=provider",
        "smtp://…?unsubscribe=provider: an SMTP server hosts no unsubscribe page (only an API transport's provider "
        "can); run `newsletter serve` for the links",
    ),
    (
        "outbox://build/outbox?unsubscribe=provider",
        "outbox://…?unsubscribe=provider: the outbox writes files on this machine, where no provider hosts a page; "
        "run `newsletter serve` for the links",
    ),
    (
        "null://?unsubscribe=provider",
        "null://…?unsubscribe=provider: null:// discards every message, so no provider hosts a page; run "
        "`newsletter serve` for the links",
    ),
]


@pytest.mark.parametrize(("dsn", "message"), REFUSED, ids=[dsn.split(":")[0] for dsn, _ in REFUSED])
def test_unsubscribe_provider_is_refused_with_the_reason(dsn, message, tmp_path):
    with pytest.raises(NewsletterError) as caught:
        transport_from_dsn(dsn, root=tmp_path)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)
    assert "secret" not in str(caught.value) and "re_123456789" not in str(caught.value)


@pytest.mark.parametrize("dsn", [dsn.replace("=provider", "=own") for dsn, _ in REFUSED])
def test_unsubscribe_own_is_accepted(dsn, tmp_path):
    transport = transport_from_dsn(dsn, root=tmp_path)
    assert getattr(transport, "hosted_unsubscribe", None) is None


@pytest.mark.parametrize("dsn", [dsn.replace("=provider", "=hosted") for dsn, _ in REFUSED])
def test_an_unknown_value_names_the_known_ones(dsn, tmp_path):
    with pytest.raises(NewsletterError, match=r"\?unsubscribe=hosted: use one of own, provider"):
        transport_from_dsn(dsn, root=tmp_path)


def test_resend_still_refuses_other_options():
    with pytest.raises(NewsletterError, match=r"takes no options \(got \?region\)"):
        transport_from_dsn("resend+api://re_123456789@default?unsubscribe=own&region=eu")
