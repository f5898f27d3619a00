"""One send, one campaign, each member in their language (issue 23), on SQLite and PostgreSQL through a real SMTP
server: a list with langs = ["fr", "en"] and members reading French, English and with no preference gets the seed
bulletin and its English translation in one campaign, each message in its member's version down to its
Content-Language, subject, footer and links; a member whose language the issue lacks gets its first language;
a campaign resumed later sends its frozen versions; content with translations is format 3, which an older reader
refuses."""

from __future__ import annotations

import asyncio
import json
import re
from email.message import EmailMessage

import httpx
import pytest
from conftest import ENGLISH_REASON, EXAMPLE_SLUG
from smtp_server import RunningSmtp, SmtpSink
from test_send import SECRET, run, send_json, sending_from, with_sending
from web_server import serving

from newsletter.errors import NewsletterError
from newsletter.sending.frozen import FrozenCampaign, NewerContentFormat
from newsletter.sending.send import send
from newsletter.sending.wiring import open_store
from newsletter.tokens import TokenSigner
from newsletter.web import create_app
from newsletter.workspace import Workspace

BILINGUAL = '\n[lists.alliances]\nlangs = ["fr", "en"]\n'
MEMBERS = [  # address, name, lang
    ("marie@example.org", "Marie Côté", "fr"),
    ("john@example.org", "John Smith", "en"),
    ("zoe@example.org", "Zoé Bœuf", ""),
]
FRENCH_SUBJECT = "Retour sur le 2e Forum des Alliances"
ENGLISH_SUBJECT = "Looking back on the 2nd Forum des Alliances"


@pytest.fixture
def database_setting(database_url) -> str:
    return database_url


@pytest.fixture
def bilingual(bilingual_workspace, monkeypatch, database_setting):
    """The example workspace with the English translation, a list in French and English, three members."""
    sending_from(bilingual_workspace, monkeypatch, database_setting)
    config = bilingual_workspace / "newsletter.toml"
    config.write_text(config.read_text(encoding="utf-8") + BILINGUAL, encoding="utf-8")
    add_members(bilingual_workspace, MEMBERS)
    return bilingual_workspace


def add_members(workspace, members) -> None:
    rows = ["courriel,nom,lang", *(",".join(member) for member in members)]
    (workspace / "subscribers").mkdir(exist_ok=True)
    (workspace / "subscribers" / "membres.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = run("subscribers", "import", "subscribers/membres.csv", "--list", "alliances")
    assert result.exit_code == 0, result.output


def by_recipient(sink: SmtpSink) -> dict[str, EmailMessage]:
    return {r.recipients[0]: r.message for r in sink.received}


def base_url(message: EmailMessage) -> str:
    """Where the message's links go: its List-Unsubscribe's origin."""
    return message["List-Unsubscribe"][1:].split("/u/")[0]


def assert_french(message: EmailMessage) -> None:
    archive = f"{base_url(message)}/archive/{EXAMPLE_SLUG}/"
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert message["Content-Language"] == "fr" and message["Subject"] == FRENCH_SUBJECT
    assert "Se désabonner" in text and "Unsubscribe" not in text
    assert f'href="{archive}"' in html  # view online: its own page
    assert f'href="{archive}en/"' in html and "Read in English" in html  # the other version's, at its top
    assert message["List-Unsubscribe"][1:-1] in html


def assert_english(message: EmailMessage) -> None:
    archive = f"{base_url(message)}/archive/{EXAMPLE_SLUG}/"
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert message["Content-Language"] == "en" and message["Subject"] == ENGLISH_SUBJECT
    assert "Unsubscribe" in text and "Se désabonner" not in text
    assert ENGLISH_REASON in " ".join(text.split())  # the footer's reason.en
    assert f'href="{archive}en/"' in html
    assert f'href="{archive}"' in html and "Lire en français" in html
    assert message["List-Unsubscribe"][1:-1] in html  # the same token's link: its page is in the member's language


def test_one_campaign_gives_each_member_their_version(bilingual):
    result, dry = send_json()
    assert result.exit_code == 0 and dry["audience"] == 3
    with RunningSmtp(SmtpSink()) as server:
        result, sent = send_json("--no-dry-run", "--transport", server.dsn())
        assert result.exit_code == 0, result.output
        received = by_recipient(server.sink)
    assert sent["campaign"] == 1 and sent["sent"] == 3
    assert set(received) == {"marie@example.org", "john@example.org", "zoe@example.org"}
    assert_french(received["marie@example.org"])
    assert_english(received["john@example.org"])
    assert_french(received["zoe@example.org"])  # no preference: the list's first language
    listed = json.loads(run("campaigns", "--json").stdout)["campaigns"]
    assert [c["id"] for c in listed] == [1]  # one campaign for both languages
    assert listed[0]["subjects"] == {"fr": FRENCH_SUBJECT, "en": ENGLISH_SUBJECT}
    shown = run("campaign", "show", "1").stdout
    assert f"subject (fr): {FRENCH_SUBJECT}\nsubject (en): {ENGLISH_SUBJECT}\n" in shown
    for address, subject in (("john@example.org", ENGLISH_SUBJECT), ("marie@example.org", FRENCH_SUBJECT)):
        (line,) = json.loads(run("delivery", address, "--json").stdout)["campaigns"]
        assert line["subject"] == subject and line["status"] == "sent"  # the subject they got

    store = open_store(Workspace.discover(bilingual))
    try:
        row = store.campaign(1)
    finally:
        store.close()
    assert row is not None and row.content is not None
    assert row.content["format"] == 3 and row.content["langs"] == ["fr", "en"]
    assert list(row.content["versions"]) == ["en"] and row.content["versions"]["en"]["path"] == "en/"
    assert row.content["versions"]["en"]["subject"] == ENGLISH_SUBJECT


def test_a_resumed_campaign_sends_its_frozen_versions(bilingual):
    """Stopped after its first message (one a second, the stop set by the first progress), the campaign is resumed
    by the next send, which builds the others' messages from its frozen versions."""
    with_sending(bilingual, rate=1)
    stop = asyncio.Event()

    def progress(counts: dict[str, int]) -> None:
        if counts.get("sent"):
            stop.set()

    workspace = Workspace.discover(bilingual)
    with RunningSmtp(SmtpSink()) as server:
        first = asyncio.run(
            send(
                workspace,
                workspace.issues_dir / EXAMPLE_SLUG,
                "alliances",
                dsn_text=server.dsn(),
                dry_run=False,
                stop=stop,
                progress=progress,
            )
        )
        assert first.stopped and first.counts["sent"] < 3
        result, again = send_json("--no-dry-run", "--transport", server.dsn())
        assert result.exit_code == 0, result.output
        received = by_recipient(server.sink)
    assert again["campaign"] == first.campaign == 1 and again["sent"] == 3
    assert set(received) == {"marie@example.org", "john@example.org", "zoe@example.org"}
    assert_french(received["marie@example.org"])
    assert_english(received["john@example.org"])
    assert_french(received["zoe@example.org"])


def test_a_member_whose_language_the_issue_lacks_gets_its_first_language(bilingual):
    (bilingual / "issues" / EXAMPLE_SLUG / "issue.en.yaml").unlink()
    with RunningSmtp(SmtpSink()) as server:
        result, sent = send_json("--no-dry-run", "--transport", server.dsn())
        assert result.exit_code == 0 and sent["sent"] == 3
        received = by_recipient(server.sink)
    john = received["john@example.org"]
    assert john["Subject"] == FRENCH_SUBJECT and "Se désabonner" in john.get_body(("plain",)).get_content()
    assert john["Content-Language"] is None  # one language: the messages are what they always were


def test_an_error_in_the_translation_blocks_the_send(bilingual):
    translation = bilingual / "issues" / EXAMPLE_SLUG / "issue.en.yaml"
    translation.write_text(translation.read_text(encoding="utf-8").replace("subject:", "subjet:", 1), "utf-8")
    result = run("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--transport", "null://")
    assert result.exit_code == 1 and "issue.en.yaml" in result.output


def test_an_older_reader_refuses_content_with_translations(bilingual, monkeypatch):
    result, sent = send_json("--no-dry-run", "--transport", "null://")
    assert result.exit_code == 0 and sent["sent"] == 3
    store = open_store(Workspace.discover(bilingual))
    try:
        row = store.campaign(1)
    finally:
        store.close()
    assert row is not None
    frozen = FrozenCampaign.of(row)
    assert FrozenCampaign.from_json(frozen.to_json()) == frozen
    monkeypatch.setattr(FrozenCampaign, "FORMAT", 2)  # a version that reads formats 1 and 2
    with pytest.raises(NewerContentFormat, match="content format 3; this one reads 1 to 2"):
        FrozenCampaign.of(row)


def test_the_dry_run_shows_each_language_and_binds_both_versions(bilingual):
    result, dry = send_json()
    assert result.exit_code == 0
    assert dry["languages"] == {"fr": 2, "en": 1}
    assert set(dry["samples"]) == {"fr", "en"}
    assert "Content-Language: fr" in dry["samples"]["fr"] and "Content-Language: en" in dry["samples"]["en"]
    assert f"Subject: {ENGLISH_SUBJECT}" in dry["samples"]["en"]
    text = run("send", EXAMPLE_SLUG, "--list", "alliances")
    assert "by language: fr 2, en 1" in text.stdout and "Content-Language: en" in text.stdout

    workspace = Workspace.discover(bilingual)
    folder = workspace.issues_dir / EXAMPLE_SLUG

    def digest() -> str | None:
        return asyncio.run(send(workspace, folder, "alliances", dsn_text="null://", dry_run=True)).message

    before = digest()
    translation = folder / "issue.en.yaml"
    translation.write_text(translation.read_text(encoding="utf-8").replace(ENGLISH_SUBJECT, "Another"), "utf-8")
    assert digest() != before  # an agent's code (and an approval) bind the English version too
    with pytest.raises(NewsletterError, match="changed since its dry run"):
        asyncio.run(send(workspace, folder, "alliances", dsn_text="null://", dry_run=False, content=before))


def test_a_dry_run_of_a_campaign_begun_counts_who_is_left_by_language(bilingual):
    with_sending(bilingual, rate=1)
    stop = asyncio.Event()
    workspace = Workspace.discover(bilingual)
    summary = asyncio.run(
        send(
            workspace,
            workspace.issues_dir / EXAMPLE_SLUG,
            "alliances",
            dsn_text="null://",
            dry_run=False,
            stop=stop,
            progress=lambda counts: stop.set() if counts.get("sent") else None,
        )
    )
    assert summary.stopped
    _, dry = send_json()
    assert dry["campaign"] == 1 and sum(dry["languages"].values()) == dry["audience"] == 3 - summary.counts["sent"]


def test_the_welcome_is_one_campaign_each_newcomer_getting_their_version(bilingual):
    """The seed bulletin as the list's welcome: one welcome campaign holding both versions, each person's message in
    their language as a campaign's (theirs; none: the list's first), with its Content-Language and links; their
    stored language counts when they are added to another list with --welcome and no --lang."""
    config = bilingual / "newsletter.toml"
    config.write_text(
        config.read_text(encoding="utf-8")
        + f'welcome = "{EXAMPLE_SLUG}"\n\n[lists.nouvelles]\nlangs = ["fr", "en"]\nwelcome = "{EXAMPLE_SLUG}"\n',
        encoding="utf-8",
    )
    for address, lang in (("lea@example.org", "en"), ("luc@example.org", None)):
        more = ["--lang", lang] if lang else []
        result = run("subscribers", "add", address, "--list", "alliances", "--welcome", *more)
        assert result.exit_code == 0, result.output
    result = run("subscribers", "add", "lea@example.org", "--list", "nouvelles", "--welcome")  # no --lang: hers
    assert result.exit_code == 0, result.output
    with RunningSmtp(SmtpSink()) as server:
        result = run("worker", "--until-idle", "--transport", server.dsn())
        assert result.exit_code == 0, result.output
        received = [(r.recipients[0], r.message) for r in server.sink.received]
    by_list = {(address, m["List-Id"].split("<")[1].split(".")[0]): m for address, m in received}
    assert set(by_list) == {
        ("lea@example.org", "alliances"),
        ("luc@example.org", "alliances"),
        ("lea@example.org", "nouvelles"),
    }
    assert_english(by_list[("lea@example.org", "alliances")])
    assert_french(by_list[("luc@example.org", "alliances")])
    assert_english(by_list[("lea@example.org", "nouvelles")])
    listed = json.loads(run("campaigns", "--json").stdout)["campaigns"]
    assert listed == []  # welcomes are in no list of sends
    store = open_store(Workspace.discover(bilingual))
    try:
        welcomes = store.campaign_list(welcome=True)
    finally:
        store.close()
    assert len(welcomes) == 2  # one per list, each in both languages
    for row, _, _ in welcomes:
        assert row.content is not None and list(row.content["versions"]) == ["en"]


def test_a_test_send_gives_one_message_in_each_language(bilingual):
    with RunningSmtp(SmtpSink()) as server:
        result, sent = send_json("--no-dry-run", "--transport", server.dsn(), "--to", "moi@example.org")
        assert result.exit_code == 0, result.output
        messages = [r.message for r in server.sink.received]
    assert sent["campaign"] is None and sent["sent"] == 2
    assert sorted((m["Content-Language"], m["Subject"]) for m in messages) == [
        ("en", f"[TEST] {ENGLISH_SUBJECT}"),
        ("fr", f"[TEST] {FRENCH_SUBJECT}"),
    ]
    assert all(r.recipients == ["moi@example.org"] for r in server.sink.received)
    assert len({m["Message-ID"] for m in messages}) == 2
    result, sent = send_json("--no-dry-run", "--to", "moi@example.org")  # the outbox: a file for each
    assert result.exit_code == 0 and sent["sent"] == 2
    written = sorted((bilingual / "build" / "outbox").glob("*.eml"))
    assert [path.name for path in written] == ["test-0.eml", "test-en-0.eml"]
    _, dry = send_json("--to", "moi@example.org")
    assert dry["languages"] == {"fr": 1, "en": 1} and "Content-Language: en" in dry["samples"]["en"]


def test_an_approver_gets_each_version_to_approve_with_the_same_buttons(bilingual, monkeypatch):
    """Each version in an email of its own, as its readers get it, under one banner naming both; the page the
    buttons lead to lists both subjects; once approved, each member gets their version."""
    config = bilingual / "newsletter.toml"
    config.write_text(config.read_text(encoding="utf-8") + '\n[approval]\napprovers = ["direction@crdbsl.org"]\n')
    workspace = Workspace.discover(bilingual)
    store = open_store(workspace)
    try:
        with serving(create_app(workspace, store, TokenSigner(SECRET))) as base, RunningSmtp(SmtpSink()) as server:
            monkeypatch.setenv("NEWSLETTER_BASE_URL", base)
            result, sent = send_json("--no-dry-run", "--transport", server.dsn())
            assert result.exit_code == 0, result.output
            asked = {r.message["Content-Language"]: r.message for r in server.sink.received}
            assert sent["status"] == "awaiting-approval" and set(asked) == {"fr", "en"}
            assert asked["fr"]["Subject"] == f"[À approuver] {FRENCH_SUBJECT}"
            assert asked["en"]["Subject"] == f"[À approuver] {ENGLISH_SUBJECT}"
            buttons = set()
            for lang, message in asked.items():
                assert message["To"] == "direction@crdbsl.org"
                text = message.get_body(("plain",)).get_content()
                banner, issue = text.split("=" * 72, 1)
                assert "Il part en 2 versions" in banner  # the banner in the campaign's first language, in both
                assert f"Français\u00a0: 2\u00a0personnes, objet «\u00a0{FRENCH_SUBJECT}\u00a0»" in banner
                assert f"English\u00a0: 1\u00a0personne, objet «\u00a0{ENGLISH_SUBJECT}\u00a0»" in banner
                assert ("Unsubscribe" in issue) == (lang == "en") and ("Se désabonner" in issue) == (lang == "fr")
                html = message.get_body(("html",)).get_content()
                buttons.add(re.search(r'href="([^"?]+/approve/[^"?]+)"', html).group(1))  # type: ignore[union-attr]
            assert len(buttons) == 1  # one request, one token: deciding from either email decides it
            page = httpx.get(buttons.pop()).text
            assert f"Objet (Français)\u00a0: {FRENCH_SUBJECT}" in page
            assert f"Objet (English)\u00a0: {ENGLISH_SUBJECT}" in page
    finally:
        store.close()

    result = run("approve", "1")
    assert result.exit_code == 0, result.output
    with RunningSmtp(SmtpSink()) as server:
        result = run("worker", "--until-idle", "--transport", server.dsn())
        assert result.exit_code == 0, result.output
        received = by_recipient(server.sink)
    assert_french(received["marie@example.org"])
    assert_english(received["john@example.org"])
    assert "/approve/" not in received["john@example.org"].get_body(("html",)).get_content()


def test_a_list_in_one_language_gets_no_link_to_a_translation_it_never_receives(bilingual):
    """A list in French only (a second list beside the bilingual one): issue.en.yaml is neither sent, nor linked
    to, nor checked for it; a draft translation with errors does not stop its send."""
    config = bilingual / "newsletter.toml"
    config.write_text(config.read_text(encoding="utf-8") + '\n[lists.nouvelles]\nlang = "fr"\n', encoding="utf-8")
    rows = "courriel,nom\nmarie@example.org,Marie\njohn@example.org,John\n"
    (bilingual / "subscribers" / "nouvelles.csv").write_text(rows, encoding="utf-8")
    assert run("subscribers", "import", "subscribers/nouvelles.csv", "--list", "nouvelles").exit_code == 0
    translation = bilingual / "issues" / EXAMPLE_SLUG / "issue.en.yaml"
    translation.write_text(translation.read_text(encoding="utf-8").replace("subject:", "subjet:", 1), "utf-8")
    with RunningSmtp(SmtpSink()) as server:
        result = run("send", EXAMPLE_SLUG, "--list", "nouvelles", "--no-dry-run", "--transport", server.dsn())
        assert result.exit_code == 0, result.output
        received = by_recipient(server.sink)
    assert set(received) == {"marie@example.org", "john@example.org"}
    for message in received.values():
        html = message.get_body(("html",)).get_content()
        assert message["Subject"] == FRENCH_SUBJECT and message["Content-Language"] is None
        assert "Read in English" not in html and f"/{EXAMPLE_SLUG}/en/" not in html
    refused = run("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--transport", "null://")
    assert refused.exit_code == 1 and "issue.en.yaml" in refused.output  # the bilingual list's send checks it
