"""`check`: each problem gets its code, severity and line; a clean issue gets none."""

from __future__ import annotations

import pytest
from conftest import CONFIG, render_folder

from newsletter.checks import check_issue
from newsletter.config import load_config
from newsletter.errors import ConfigError


def check(folder):
    root = folder.parent.parent
    return check_issue(folder, load_config(root), root / "templates").report


def found(report):
    return {(d.severity, d.code, d.line, d.path) for d in report.diagnostics}


HEADER = """\
subject: Un sujet de bonne longueur
preheader: Un aperçu
lang: fr
sections:
"""


def test_clean_issue_has_no_diagnostics(make_issue):
    report = check(make_issue(HEADER + "  - type: heading\n    text: Bonjour\n"))
    assert report.ok and report.diagnostics == []
    assert report.to_json() == {"ok": True, "errors": [], "warnings": []}


def test_missing_image_and_not_an_image(make_issue):
    folder = make_issue(
        HEADER
        + "  - type: image\n    src: images/absente.png\n    alt: Absente\n"
        + "  - type: image\n    src: notes.txt\n    alt: Pas une image\n"
    )
    (folder / "notes.txt").write_text("hello")
    report = check(folder)
    assert ("error", "missing-image", 6, "sections[0].src") in found(report)
    assert ("error", "not-an-image", 9, "sections[1].src") in found(report)
    assert not report.ok


def test_image_outside_the_issue_folder(make_issue):
    report = check(make_issue(HEADER + "  - type: image\n    src: ../../newsletter.toml\n    alt: x\n"))
    assert ("error", "image-outside-issue", 6, "sections[0].src") in found(report)


@pytest.mark.parametrize(
    "src", ["/etc/passwd", "images/../images/a.png", "images//../../../newsletter.toml", "out.png", "images\\a.png"]
)
def test_an_image_path_that_could_lead_out_is_an_error_and_is_never_rendered(make_issue, src):
    """Absolute paths and `..` are refused even where they land inside (as a link that leads out is): a name that
    can climb is never in the rendered issue's images, which build, send and the archive copy or serve."""
    folder = make_issue(HEADER + f"  - type: image\n    src: '{src}'\n    alt: x\n", images=("images/a.png",))
    (folder / "out.png").symlink_to(folder.parent.parent / "newsletter.toml")
    report = check(folder)
    assert ("error", "image-outside-issue", 6, "sections[0].src") in found(report)
    assert render_folder(folder).images == {}


def test_empty_alt_is_an_error(make_issue):
    report = check(make_issue(HEADER + "  - type: image\n    src: a.png\n    alt: '  '\n", images=("a.png",)))
    assert ("error", "missing-alt", 7, "sections[0].alt") in found(report)


def test_links_that_go_nowhere_are_errors(make_issue):
    report = check(
        make_issue(
            HEADER
            + "  - type: button\n    label: Lire\n    url: '#'\n"
            + "  - type: callout\n    text: Voir\n    button: {label: Aller, url: ''}\n"
            + "  - type: text\n    text: |\n      Premier paragraphe.\n\n"
            + "      Un [lien vide](#) et un [relatif](/page).\n"
            + "  - type: button\n    label: JS\n    url: javascript:alert(1)\n"
        )
    )
    codes = found(report)
    assert ("error", "empty-url", 7, "sections[0].url") in codes
    assert ("error", "empty-url", 10, "sections[1].button.url") in codes
    assert ("error", "empty-url", 15, "sections[2].text") in codes  # the Markdown link's own line
    assert ("error", "relative-url", 15, "sections[2].text") in codes
    assert ("error", "bad-url", 18, "sections[3].url") in codes


def test_optional_links_are_checked_too(make_issue):
    """`Url | None` and `Markdown | None` fields: their markers sit inside the union, where checks now find them."""
    report = check(
        make_issue(
            HEADER
            + "  - type: image\n    src: a.png\n    alt: A\n    link: '#'\n"
            + "  - type: button\n    label: Lire\n    url: https://example.org\n    lead: Voir [ici](/page).\n"
            + "  - type: logos\n    logos:\n      - {src: a.png, alt: A, link: 'javascript:alert(1)'}\n"
            + "  - type: event\n    title: Forum\n    start: 2025-02-12\n    registration: javascript:alert(1)\n",
            images=("a.png",),
        )
    )
    codes = found(report)
    assert ("error", "empty-url", 8, "sections[0].link") in codes
    assert ("error", "relative-url", 12, "sections[1].lead") in codes
    assert ("error", "bad-url", 15, "sections[2].logos[0].link") in codes
    assert ("error", "bad-url", 19, "sections[3].registration") in codes


def test_warnings_http_subject_preheader_leftovers(make_issue):
    report = check(
        make_issue(
            "subject: Court\nlang: fr\nsections:\n"
            "  - type: text\n    text: |\n      Voir [ceci](http://example.org).\n      TODO finir\n"
            "  - type: image\n    src: http://example.org/a.png\n    alt: A\n"
            "  - type: heading\n    text: Lorem ipsum dolor\n"
            "  - type: text\n    text: Bonjour %%prenom%%\n"
        )
    )
    assert report.ok  # warnings only
    codes = found(report)
    assert ("warning", "subject-length", 1, "subject") in codes
    assert any(code == "missing-preheader" for _, code, _, _ in codes)
    assert ("warning", "insecure-url", 6, "sections[0].text") in codes
    assert ("warning", "placeholder-text", 7, "sections[0].text") in codes
    assert ("warning", "insecure-url", 9, "sections[1].src") in codes
    assert ("warning", "placeholder-text", 12, "sections[2].text") in codes
    assert ("warning", "unknown-placeholder", 14, "sections[3].text") in codes


def test_an_event_that_ends_before_it_starts_is_an_error_at_its_end(make_issue):
    zoned = CONFIG.replace('lang = "fr"\n', 'lang = "fr"\ntimezone = "America/Toronto"\n')
    report = check(
        make_issue(
            HEADER
            + "  - type: event\n    title: Matinée\n    start: 2025-02-12 09:00\n    end: 08:30\n"
            + "  - type: event\n    title: Deux jours\n    start: 2025-02-14\n    end: 2025-02-13\n"
            # 10:30 in Paris is 4:30 in Toronto: it ends before 9:00 there
            + "  - type: event\n    title: Décalé\n    start: 2025-02-12 09:00\n    end: 2025-02-12T10:30+01:00\n"
            + "  - type: event\n    title: Juste\n    start: 2025-02-12 09:00\n    end: 2025-02-12T10:30-05:00\n"
            + "  - type: event\n    title: Tard\n    start: 2025-02-12\n    deadline: 2025-02-13\n",
            config=zoned,
        )
    )
    assert {d for d in found(report) if d[1] in ("event-ends-before-start", "deadline-after-start")} == {
        ("error", "event-ends-before-start", 8, "sections[0].end"),
        ("error", "event-ends-before-start", 12, "sections[1].end"),
        ("error", "event-ends-before-start", 16, "sections[2].end"),
        ("warning", "deadline-after-start", 24, "sections[4].deadline"),
    }
    (first,) = (d for d in report.errors if d.path == "sections[0].end")
    assert "de 9\u00a0h à 8\u00a0h\u00a030" in first.message and "12:00" in first.message
    assert not report.ok


def test_html_over_gmail_clip_is_a_warning(make_issue):
    paragraph = "Un paragraphe assez long pour remplir la page. " * 40
    sections = "".join(f"  - type: text\n    text: {paragraph}\n" for _ in range(60))
    report = check(make_issue(HEADER + sections))
    assert any(d.code == "html-too-large" and "102 KB" in d.message for d in report.warnings)


def test_config_without_publisher_or_address_is_an_error(make_issue):
    report = check(make_issue(HEADER + "  - type: divider\n", config='name = "x"\n[publisher]\nname = ""\n'))
    errors = {(d.code, d.path, d.line) for d in report.errors}
    assert errors == {
        ("config-missing", "publisher.name", 2),
        ("config-missing", "publisher.postal_address", 2),
        ("config-missing", "publisher.email", 2),
    }
    assert 'email = "…" or website = "…"' in report.errors[-1].message
    assert all(d.file.endswith("newsletter.toml") for d in report.errors)


def test_the_web_versions_unsubscribe_line_always_names_a_way_to_reach_the_publisher(make_issue):
    from newsletter.build import build_issue
    from newsletter.errors import IssueError
    from newsletter.workspace import Workspace

    def web_text(config: str) -> str:
        folder = make_issue(HEADER + "  - type: divider\n", config=config)
        return build_issue(Workspace.discover(folder), folder).text.read_text(encoding="utf-8")

    assert "Se désabonner : mailto:info@organisme.ca?subject=D%C3%A9sabonnement\n" in web_text(CONFIG)
    website_only = CONFIG.replace('email = "info@organisme.ca"', 'website = "https://example.org"')
    assert "Se désabonner : https://example.org\n" in web_text(website_only)
    neither = CONFIG.replace('email = "info@organisme.ca"\n', "")
    with pytest.raises(IssueError, match="no way to reach the publisher"):
        web_text(neither)


def test_load_errors_come_first_and_config_errors_too(make_issue):
    report = check(make_issue("subject: [oops\n", config=CONFIG))
    assert [d.code for d in report.errors] == ["yaml-syntax"]


def test_template_failure_is_a_check_error_not_a_traceback(make_issue):
    folder = make_issue(HEADER + "  - type: divider\n")
    override = folder.parent.parent / "templates" / "sections" / "divider.mjml.j2"
    override.parent.mkdir(parents=True)
    override.write_text("{{ section.nope }}")
    report = check(folder)
    assert [d.code for d in report.errors] == ["render-failed"]
    assert "divider.mjml.j2" in report.errors[0].message


def test_sender_addresses_must_be_valid(make_issue):
    folder = make_issue(
        "from: Le Bulletin <pas-une-adresse>\nreply_to: ok@organisme.ca\n" + HEADER + "  - type: divider\n"
    )
    report = check(folder)
    assert ("error", "bad-address", 1, "from") in found(report)
    assert not any(d.path == "reply_to" for d in report.diagnostics)


@pytest.mark.parametrize(
    "dkim_domain, sender, aligned",
    [
        ("autre-organisme.ca", "Le bulletin <alliancesolidarite@crdbsl.org>", False),
        ("crdbsl.org", "Le bulletin <alliancesolidarite@crdbsl.org>", True),
        ("CRDBSL.org.", "alliancesolidarite@crdbsl.org", True),
        ("crdbsl.org", "Le bulletin <bulletin@news.crdbsl.org>", True),  # a parent of the From domain
        ("mail.crdbsl.org", "Le bulletin <bulletin@crdbsl.org>", True),  # same organisational domain
        ("evilcrdbsl.org", "Le bulletin <bulletin@crdbsl.org>", False),  # a suffix, not a parent
    ],
)
def test_a_dkim_domain_that_does_not_align_with_from_is_a_warning(make_issue, dkim_domain, sender, aligned):
    config = CONFIG + f'[sender]\nfrom = "{sender}"\n[dkim]\ndomain = "{dkim_domain}"\nselector = "news"\n'
    report = check(make_issue(HEADER + "  - type: divider\n", config=config))
    warnings = [d for d in report.warnings if d.code == "dkim-not-aligned"]
    assert report.ok
    if aligned:
        assert warnings == []
        return
    (warning,) = warnings
    assert (
        warning.file.endswith("newsletter.toml")
        and warning.line == config.splitlines().index(f'domain = "{dkim_domain}"') + 1
    )
    assert f'"{dkim_domain}"' in warning.message and '"crdbsl.org"' in warning.message
    assert 'sign with [dkim] domain = "crdbsl.org"' in warning.message


def test_dkim_alignment_is_checked_against_the_issues_own_from(make_issue):
    config = CONFIG + '[sender]\nfrom = "x@crdbsl.org"\n[dkim]\ndomain = "crdbsl.org"\nselector = "news"\n'
    report = check(make_issue("from: Autre <autre@autre.ca>\n" + HEADER + "  - type: divider\n", config=config))
    assert [d.code for d in report.warnings] == ["dkim-not-aligned"]


def test_bounce_settings_an_smtp_sender_should_have_are_warnings_at_their_line(make_issue, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_TRANSPORT", "smtp://user:secret@mail.crdbsl.org:587")
    sender = '[sender]\nfrom = "Bulletin <bulletin@crdbsl.org>"\n'
    bare = check(make_issue(HEADER + "  - type: divider\n", config=CONFIG + sender))
    (unmatched,) = [d for d in bare.warnings if d.code == "bounces-unmatched"]
    assert "VERP" in unmatched.message and unmatched.file.endswith("newsletter.toml")

    unread = CONFIG + sender + '[bounces]\nreturn_path = "bounces+{token}@mail.crdbsl.org"\n'
    report = check(make_issue(HEADER + "  - type: divider\n", config=unread))
    assert [d.code for d in report.warnings if d.code.startswith(("bounces", "return-path"))] == ["bounces-unread"]

    elsewhere = CONFIG + sender + '[bounces]\nreturn_path = "b+{token}@bounces.example.net"\nmailbox = "maildir:///m"\n'
    report = check(make_issue(HEADER + "  - type: divider\n", config=elsewhere))
    (misaligned,) = [d for d in report.warnings if d.code == "return-path-not-aligned"]
    assert misaligned.line == elsewhere.splitlines().index('return_path = "b+{token}@bounces.example.net"') + 1
    assert '"bounces.example.net"' in misaligned.message and "SPF" in misaligned.message

    monkeypatch.setenv("NEWSLETTER_TRANSPORT", "postmark+api://token@default")  # a provider handles its bounces
    report = check(make_issue(HEADER + "  - type: divider\n", config=CONFIG + sender))
    assert not [d for d in report.warnings if d.code.startswith("bounces")]


@pytest.mark.parametrize(
    "setting, said",
    [
        ('return_path = "bounces@crdbsl.org"', "is not a return path: write the bounce address with {token}"),
        ('return_path = "bounces+{token}"', "is not a return path"),
        ('mailbox = "pop3://bounces@mail.crdbsl.org"', "is not a mailbox: write imaps://USER@HOST/INBOX"),
        ('soft_window = "un mois"', "is not a duration"),
    ],
)
def test_a_malformed_bounce_setting_is_one_line_at_its_line(tmp_path, setting, said):
    (tmp_path / "newsletter.toml").write_text(CONFIG + f"[bounces]\n{setting}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path)
    message = str(error.value)
    assert "\n" not in message and said in message
    assert message.startswith(f"{tmp_path / 'newsletter.toml'}:{CONFIG.count(chr(10)) + 2}: bounces.")
