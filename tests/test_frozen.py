"""A campaign's frozen content (newsletter.sending.frozen): content stored before formats were numbered reads as
format 1, builds the same message bytes and keeps its digest (an agent's code, a resumed campaign); content frozen by
a newer version is refused by `send`, skipped by `worker` and not shown by the archive; importing it stays light."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import types

import pytest
from conftest import EXAMPLE_SLUG, ROOT
from test_send import SECRET, run
from test_send import workspace as workspace  # noqa: F401  (the fixture: example workspace and its list)

import newsletter.message
from newsletter.message import HostedUnsubscribe, Recipient
from newsletter.sending.frozen import FrozenCampaign, NewerContentFormat
from newsletter.sending.wiring import open_store
from newsletter.tokens import TokenSigner
from newsletter.workspace import Workspace

# A row of campaigns.content as written by freeze() of newsletter 4c7971c (before this module), for the example
# issue to the list `alliances`, in a workspace at /tmp/bulletin with the repository's newsletter.toml and
# NEWSLETTER_ASSET_BASE_URL=https://bulletin.crdbsl.org/archive. Its html and text are cut to their footer (the
# part with placeholders) to fit here; every other key is as written.
STORED = r"""{
    "slug": "2024-11-forum-des-alliances",
    "lang": "fr",
    "subject": "Retour sur le 2e Forum des Alliances",
    "html": "<p style=\"display: block;margin: 0px 0px 10px 0px;\"><a href=\"%%unsubscribe_url%%\" style=\"color: #00677f;text-decoration: underline;\">Se désabonner</a> &nbsp;·&nbsp; <a href=\"%%view_online_url%%\" style=\"color: #00677f;text-decoration: underline;\">Voir ce courriel dans votre navigateur</a></p>",
    "text": "Se désabonner : %%unsubscribe_url%%\nVoir ce courriel dans votre navigateur : %%view_online_url%%\n",
    "sender": {
        "name": "Le bulletin des Alliances",
        "address": "alliancesolidarite@crdbsl.org"
    },
    "reply_to": "alliancesolidarite@crdbsl.org",
    "list_slug": "alliances",
    "list_name": "Le bulletin des Alliances",
    "base_url": "https://bulletin.crdbsl.example",
    "unsubscribe_mailto": null,
    "hosted_unsubscribe": null,
    "view_online": null,
    "local_only": "a real send refuses these settings: /tmp/bulletin/newsletter.toml:7: base_url https://bulletin.crdbsl.example is on a reserved name (RFC 2606) that no reader can reach, so every link made from it goes nowhere; set base_url to your real public URL; /tmp/bulletin/newsletter.toml:19: publisher.postal_address \"123, rue de l'Exemple, bureau 000, Rimouski (Québec)  X0X 0X0\" is a placeholder ('Exemple'); CASL and CAN-SPAM want your real postal address in every message",
    "rate": null,
    "per_hour": null,
    "images": {
        "logo-alliances.png": "0e5444bcd2910a439feb66b3ea01f3140c4ffd016191032df48350f961da9d7a",
        "partenaire-crd-bsl.png": "8d32b42f9003452ae48e708f542c3bcaa92d653ea5918a3450b7dd41042e3757",
        "partenaire-entente-sectorielle.png": "2a34ead19735ecd456660ba573c570f06b03c027739481ba0598d37757f00158",
        "partenaire-solidarite-sociale.png": "383f8dc006d7d6f20ee9f62a4880ededb029377efa1253ec0eac0867569ed826"
    },
    "calendars": {},
    "images_url": "https://bulletin.crdbsl.org/archive/2024-11-forum-des-alliances/images/"
}"""  # noqa: E501  (the document as stored, its long lines whole)
# The same issue frozen by that version for a transport with SendGrid's hosted unsubscribe and archive_url set:
# what differs from STORED.
HOSTED = {
    "hosted_unsubscribe": {
        "provider": "sendgrid",
        "url": "<%asm_group_unsubscribe_raw_url%>",
        "description": "SendGrid's group",
        "fields": {"group_id": 7},
    },
    "view_online": "https://crdbsl.org/bulletin/2024-11-forum-des-alliances/",
    "local_only": None,
}
# What that version computed of them: message_digest(content), and the SHA-256 of each message of campaign 1
# (outbox file name: bytes), built with NEWSLETTER_SECRET_KEY=SECRET, at the time FIXED, for the members of
# test_send's list (ids 1 to 4).
FIXED = 1764756000  # Wed, 03 Dec 2025 10:00:00 GMT
OWN_SENT = {
    "digest": "0efedb389111a2d11ac24205e7c2da409290d802c41a4d5060de47c767dfc64a",
    "1-1.eml": "0b0b857e3c18b28ac9f66537ac059c54d43d67553139bd0c8334746a0589d292",
    "1-2.eml": "f51b210ab5e3aefc5607115e7a09f6efcf6b22cde6a7cfc8d071f701aa0073ff",
    "1-3.eml": "ac807c19321668284d949003548b38a7bebda07d2d92f28df12e2070be23691b",
    "1-4.eml": "9fed9dbb8d7a50375c6a773aa20ef072c3220688d28ea10b6e9060cfc9772ac9",
}
HOSTED_SENT = {
    "digest": "04634d2583b3768f4b8526c24ac1522143fd8b81947c2cb8aa99c71248371e50",
    "1-1.eml": "52b1fa88636558e76269e0524e97c7f0202c70a38b50e71dc7b14e5ebc331bd1",
    "1-2.eml": "91240a9d5d8fd343fa3d6db2741a57371962bd510261062d8ed3eafa6b84208c",
    "1-3.eml": "bde2532a0759539d7b26915ea7a55ca6ac063a9dc0ca510c1e65b98fdd8030be",
    "1-4.eml": "28211bd33ca31a46669a0cc818b51661f9cc8e09d7fc154a43509c8526799e05",
}
# Content frozen by the earlier versions of format 1, which lacked the keys that came later, and the digest that
# version's message_digest gives each (the commit that added the keys: the content before it).
OLDER = [
    (("hosted_unsubscribe", "view_online", "images", "images_url", "calendars"), "d379b2549aa4"),  # c28c3c3
    (("images", "images_url", "calendars"), "5abc5922d11e"),  # a9f9159: hosted unsubscribe, view online
    (("images_url", "calendars"), "90994d181c13"),  # 505c8fe: images
    (("calendars",), "3acdbb635a7c"),  # 3d17186: images_url; cef1152 added calendars
]
MEMBERS = [
    (1, "marie@example.org", "Marie Côté"),
    (2, "francoise@example.org", "Françoise Légaré-Pelletier"),
    (3, "zoe@example.org", "Zoé Bœuf"),
    (4, "jean@example.org", None),
]
NEXT = FrozenCampaign.FORMAT + 1  # a format no version reads yet
NEWER = (
    f"frozen by a newer newsletter (content format {NEXT}; this one reads 1 to {NEXT - 1}): "
    "upgrade newsletter on this host"
)


@pytest.fixture
def database_setting(database_url) -> str:
    """The tests with a store row run on SQLite and on PostgreSQL."""
    return database_url


@pytest.fixture
def fixed_time(monkeypatch):
    """Messages dated FIXED, as the literal digests above were."""
    monkeypatch.setattr(newsletter.message, "time", types.SimpleNamespace(time=lambda: FIXED))


def stored() -> dict:
    return json.loads(STORED)


def test_importing_the_frozen_content_brings_no_send_path_transport_check_nor_store():
    code = "import sys, json; import newsletter.sending.frozen; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout))
    assert "newsletter.sending.frozen" in loaded
    sending = {f"newsletter.sending.{name}" for name in ("send", "wiring", "runner", "worker")}
    heavy = sending | {"newsletter.transports", "newsletter.checks", "newsletter.store", "sqlalchemy", "httpx"}
    assert loaded.isdisjoint(heavy), loaded & heavy


@pytest.mark.parametrize(("changes", "sent"), [({}, OWN_SENT), (HOSTED, HOSTED_SENT)], ids=["own", "hosted"])
def test_content_stored_by_the_earlier_freeze_reads_as_format_1_and_builds_the_same_bytes(changes, sent, fixed_time):
    document = stored() | changes
    frozen = FrozenCampaign.from_json(document, campaign_id=1)
    assert frozen.to_json() == {"format": 1, **document}  # written back, it is what was stored
    assert frozen.message_digest() == sent["digest"]
    if changes:
        assert frozen.hosted_unsubscribe == HostedUnsubscribe(
            "sendgrid", "<%asm_group_unsubscribe_raw_url%>", "SendGrid's group", {"group_id": 7}
        )
    campaign = frozen.campaign(1, TokenSigner(SECRET))
    for subscriber_id, email, name in MEMBERS:
        data = campaign.build(Recipient(subscriber_id, email, name, {})).to_bytes()
        assert hashlib.sha256(data).hexdigest() == sent[f"1-{subscriber_id}.eml"], email


@pytest.mark.parametrize(("missing", "digest"), OLDER, ids=[str(len(stored()) - len(m)) for m, _ in OLDER])
def test_content_of_the_earlier_versions_keeps_its_keys_and_its_digest(missing, digest):
    document = {key: value for key, value in stored().items() if key not in missing}
    frozen = FrozenCampaign.from_json(document)
    assert frozen.absent == frozenset(missing) | {
        "segment",
        "segment_name",
        "return_path",
    }  # the version of STORED had none
    assert frozen.to_json() == {"format": 1, **document}
    assert frozen.message_digest().startswith(digest)
    assert (frozen.images is None) == ("images" in missing)  # the archive shows such an issue from its files


def test_a_newer_format_is_refused_in_one_line_naming_the_campaign():
    with pytest.raises(NewerContentFormat) as refused:
        FrozenCampaign.from_json(stored() | {"format": NEXT, "what_format_3_added": True}, campaign_id=12)
    assert str(refused.value) == f"campaign 12 was {NEWER}"
    assert refused.value.reason == NEWER
    with pytest.raises(Exception, match="unknown format"):
        FrozenCampaign.from_json(stored() | {"format": "1"})


def test_what_send_freezes_now_is_format_1_and_reads_back_the_same(workspace):  # noqa: F811
    from newsletter.sending.send import prepare
    from newsletter.store import ListRow

    ws = Workspace.discover(workspace)
    prepared = prepare(ws, ws.issues_dir / EXAMPLE_SLUG, "null://", "alliances", real=False)
    frozen = prepared.freeze(ListRow(1, "alliances", "alliances"))
    document = frozen.to_json()
    assert set(document) == {"format", *stored(), "segment", "segment_name", "return_path"} and document["format"] == 1
    assert not frozen.absent and document["segment"] is None
    assert FrozenCampaign.from_json(json.loads(json.dumps(document))) == frozen


def add_campaign(workspace, document: dict, content_hash: str | None = None) -> int:
    """A running campaign of the example issue to `alliances` (its ledger fixed now) with this frozen content; by
    default with the issue's content hash, so that `send` resumes it."""
    from newsletter.sending.frozen import content_hash as hash_of
    from newsletter.sending.send import prepare

    ws = Workspace.discover(workspace)
    rendered = prepare(ws, ws.issues_dir / EXAMPLE_SLUG, "null://", "alliances", real=False).rendered
    store = open_store(ws)
    try:
        return store.create_campaign(
            store.list_id("alliances"), EXAMPLE_SLUG, content_hash or hash_of(rendered), rendered.subject, document
        )
    finally:
        store.close()


def pending(workspace, campaign_id: int) -> int:
    store = open_store(Workspace.discover(workspace))
    try:
        return store.counts(campaign_id)["pending"]
    finally:
        store.close()


def test_send_resumes_a_campaign_of_the_earlier_version_with_its_bytes_and_code(workspace, fixed_time):  # noqa: F811
    import asyncio

    from newsletter.sending.send import send

    campaign_id = add_campaign(workspace, stored())
    ws = Workspace.discover(workspace)
    shown = asyncio.run(send(ws, ws.issues_dir / EXAMPLE_SLUG, "alliances", dsn_text="outbox://", dry_run=True))
    assert (shown.campaign, shown.audience, shown.message) == (campaign_id, 4, OWN_SENT["digest"])  # the same code
    result = run("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sent"] == 4
    outbox = workspace / "build" / "outbox"
    written = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in outbox.glob("*.eml")}
    assert written == {name: sha for name, sha in OWN_SENT.items() if name.endswith(".eml")}


def test_send_refuses_content_frozen_by_a_newer_version_and_sends_nothing(workspace):  # noqa: F811
    campaign_id = add_campaign(workspace, stored() | {"format": NEXT})
    for dry_run in ("--dry-run", "--no-dry-run"):
        result = run("send", EXAMPLE_SLUG, "--list", "alliances", dry_run)
        assert result.exit_code == 1
        assert result.stderr == f"error: campaign {campaign_id} was {NEWER}\n"
    assert not (workspace / "build" / "outbox").exists()
    assert pending(workspace, campaign_id) == 4


def test_a_worker_skips_content_frozen_by_a_newer_version_and_sends_the_others(workspace):  # noqa: F811
    newer = add_campaign(workspace, stored() | {"format": NEXT}, content_hash="0" * 64)
    readable = add_campaign(workspace, stored())
    result = run("worker", "--until-idle", "--json")
    assert result.exit_code == 0, result.output
    skipped = [{"campaign": newer, "reason": NEWER}]
    assert json.loads(result.stdout) == {
        "sent": 4,
        "failed": 0,
        "campaigns": [readable],
        "skipped": skipped,
        "bounce_scans": 0,
        "bounces": {},
    }
    assert pending(workspace, newer) == 4 and pending(workspace, readable) == 0
    again = run("worker", "--until-idle")
    assert again.exit_code == 0
    assert f"campaign {newer}: not sent by this worker: {NEWER}\n" in again.stderr
    assert pending(workspace, newer) == 4


def test_the_archive_does_not_show_an_issue_frozen_by_a_newer_version(workspace, caplog):  # noqa: F811
    from newsletter.archive import Entry, sent_version

    campaign_id = add_campaign(workspace, stored() | {"format": NEXT})
    ws = Workspace.discover(workspace)
    store = open_store(ws)
    try:
        entry = Entry(EXAMPLE_SLUG, "Retour sur le 2e Forum des Alliances", store.sent_issues()[0][2])
        with caplog.at_level(logging.WARNING, logger="newsletter.archive"):
            assert sent_version(ws, store, entry) is None
    finally:
        store.close()
    assert f"campaign {campaign_id} was {NEWER}" in caplog.text
