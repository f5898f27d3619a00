"""An issue in two languages in one folder: issue.yaml and its translation issue.en.yaml, loaded together, checked
each and compared, built into build/SLUG/ and build/SLUG/en/ (each version linking to the other), previewed with a
language switch, created together by `new --also`, and worked on by an agent through the MCP tools with `lang`.

The seed bulletin's English version (a few sections: tests/fixtures/2024-11-forum-des-alliances.en.yaml) is
conftest's bilingual_workspace."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import CONFIG, EXAMPLE_SLUG, ROOT, PNG_1x1
from test_cli import run

from newsletter.checks import check_issue, check_versions
from newsletter.config import load_config
from newsletter.errors import IssueError, NewsletterError
from newsletter.issue import load_issue
from newsletter.render import render_issue, version_web_values
from newsletter.versions import load_versions
from newsletter.workspace import Workspace

FRENCH = """\
subject: "Le bulletin d'hiver : trois rendez-vous"
preheader: "Trois rendez-vous et un appel aux bénévoles"
lang: fr
date: 2025-02-03
sections:
  - type: heading
    text: Trois rendez-vous
  - type: text
    text: |
      Le Forum a réuni 120 personnes. Lisez [le compte rendu](https://example.org/fr/compte-rendu)
      et [les photos](https://example.org/photos).
  - type: image
    src: images/affiche-fr.png
    alt: L'affiche du Forum
  - type: callout
    title: Bénévoles
    text: Nous cherchons des bénévoles.
    button: {label: Je m'inscris, url: "https://example.org/benevoles"}
  - type: logos
    logos:
      - {src: images/logo.png, alt: Le logo, link: "https://example.org"}
"""
ENGLISH = """\
subject: "The winter newsletter: three events"
preheader: "Three events and a call for volunteers"
lang: en
sections:
  - type: heading
    text: Three events
  - type: text
    text: |
      The Forum brought 120 people together. Read [the report](https://example.org/en/report)
      and see [the photos](https://example.org/photos).
  - type: image
    src: images/poster-en.png
    alt: The Forum's poster
  - type: callout
    title: Volunteers
    text: We are looking for volunteers.
    button: {label: Sign me up, url: "https://example.org/volunteers"}
  - type: logos
    logos:
      - {src: images/logo.png, alt: The logo, link: "https://example.org"}
"""
IMAGES = ("images/affiche-fr.png", "images/poster-en.png", "images/logo.png")
# The seed bulletin's English version leaves 9 of its 15 sections in French only: each is named at the place of
# the translation where it would go (before its contacts, lines 42, and before its logos, 55), with its line in
# issue.yaml. Nothing else is warned of: the translated sections' links and images are the French ones.
SEED_WARNINGS = [
    ("translation-missing-section", 42, "sections[4]", 'heading "Prochaines étapes"', "issue.yaml:43:5"),
    (
        "translation-missing-section",
        42,
        "sections[4]",
        'text "Le mode de fonctionnement régional prévo…"',
        "issue.yaml:46:5",
    ),
    (
        "translation-missing-section",
        42,
        "sections[4]",
        'heading "Ressources en développement social au se…"',
        "issue.yaml:54:5",
    ),
    (
        "translation-missing-section",
        42,
        "sections[4]",
        'button "Ressources en développement social des M…"',
        "issue.yaml:57:5",
    ),
    (
        "translation-missing-section",
        42,
        "sections[4]",
        'callout "Évaluation du Forum des Alliances"',
        "issue.yaml:62:5",
    ),
    ("translation-missing-section", 42, "sections[4]", "divider", "issue.yaml:69:5"),
    (
        "translation-missing-section",
        42,
        "sections[4]",
        'text "Le bulletin des Alliances est publié de …"',
        "issue.yaml:71:5",
    ),
    ("translation-missing-section", 55, "sections[5]", "divider", "issue.yaml:87:5"),
    (
        "translation-missing-section",
        55,
        "sections[5]",
        'text "Les Alliances pour la solidarité du Bas-…"',
        "issue.yaml:89:5",
    ),
]


@pytest.fixture
def pair(tmp_path, monkeypatch):
    """A workspace whose issue 2025-02-hiver is FRENCH and ENGLISH, each with a poster of its own; returns a
    function that rewrites either file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "newsletter.toml").write_text(CONFIG, encoding="utf-8")
    folder = tmp_path / "issues" / "2025-02-hiver"
    (folder / "images").mkdir(parents=True)
    for index, name in enumerate(IMAGES):
        (folder / name).write_bytes(PNG_1x1 + bytes([index]))

    def write(french: str = FRENCH, english: str | None = ENGLISH) -> Path:
        (folder / "issue.yaml").write_text(textwrap.dedent(french), encoding="utf-8")
        if english is not None:
            (folder / "issue.en.yaml").write_text(textwrap.dedent(english), encoding="utf-8")
        return folder

    return write


def compared(folder: Path) -> list[tuple[str, str, int | None, str | None]]:
    """The warnings of the comparison: (code, file name, line, path)."""
    report = check_versions(folder, load_config(folder.parent.parent)).report
    assert report.ok, [d.format() for d in report.errors]
    return [
        (d.code, Path(d.file).name, d.line, d.path) for d in report.diagnostics if d.code.startswith("translation-")
    ]


# Loading


def test_both_versions_load_and_know_of_each_other_one_file_loads_as_before(pair):
    folder = pair()
    versions = load_versions(folder)
    assert versions.langs == ["fr", "en"] and [v.file_name for v in versions] == ["issue.yaml", "issue.en.yaml"]
    main, english = versions.main, versions.translations["en"]
    assert (main.other_lang, english.other_lang) == ("en", "fr")
    assert (main.web_path, english.web_path, main.other_web_path, english.other_web_path) == ("", "en/", "en/", "")
    assert english.model.date == main.model.date  # left out: issue.yaml's
    assert english.source.file == str(folder / "issue.en.yaml") and english.file == folder / "issue.en.yaml"
    assert versions.version("en") is english and versions.version("fr") is main and versions.version(None) is main
    with pytest.raises(NewsletterError, match=r"has no de version \(issue.de.yaml\); its versions: fr \(issue.yaml\)"):
        versions.version("de")
    alone = load_issue(folder)  # what the callers of one issue get: issue.yaml, unaware of the translation
    assert alone.other_lang is None and alone.model == main.model
    assert load_issue(folder, "en").model.subject == "The winter newsletter: three events"
    assert Workspace.for_issue(str(folder / "issue.en.yaml"))[1] == folder.resolve()


@pytest.mark.parametrize(
    ("english", "code", "line", "column", "said"),
    [
        (ENGLISH.replace("lang: en", "lang: fr"), "translation-lang", 3, 7, "lang is fr, but issue.en.yaml is the"),
        (
            ENGLISH.replace("lang: en\n", "lang: en\ndate: 2025-02-04\n"),
            "translation-date",
            4,
            7,
            "date is 2025-02-04, but issue.yaml's is 2025-02-03 (issue.yaml:4:7)",
        ),
        (ENGLISH.replace("type: callout", "type: encadre"), "unknown-section-type", 14, 11, "unknown section type"),
    ],
    ids=["lang", "date", "schema"],
)
def test_a_translations_errors_are_at_its_own_lines(pair, english, code, line, column, said):
    folder = pair(english=english)
    with pytest.raises(IssueError) as raised:
        load_versions(folder)
    (error,) = raised.value.diagnostics
    assert (error.code, error.file, error.line, error.column) == (code, str(folder / "issue.en.yaml"), line, column)
    assert said in error.message
    report = check_versions(folder, load_config(folder.parent.parent))
    assert not report.report.ok and [d.code for d in report.report.errors] == [code]
    assert report.versions[0].to_json()["ok"] and not report.versions[1].to_json()["ok"]  # per file
    assert check_issue(folder, load_config(folder.parent.parent)).report.ok  # issue.yaml alone, as before


def test_the_same_date_may_be_given_and_a_translation_in_the_main_language_is_an_error(pair):
    folder = pair(english=ENGLISH.replace("lang: en\n", "lang: en\ndate: 2025-02-03\n"))
    assert load_versions(folder).translations["en"].model.date.isoformat() == "2025-02-03"
    (folder / "issue.en.yaml").unlink()
    (folder / "issue.fr.yaml").write_text(FRENCH, encoding="utf-8")
    with pytest.raises(IssueError) as raised:
        load_versions(folder)
    (error,) = raised.value.diagnostics
    assert (error.code, Path(error.file).name, error.line) == ("translation-same-language", "issue.fr.yaml", 3)
    assert "issue.yaml is in fr already" in error.message and "en" in error.message


def test_files_that_are_no_version_are_warned_of_and_left_out(pair):
    folder = pair()
    (folder / "issue.de.yaml").write_text(ENGLISH.replace("lang: en", "lang: de"), encoding="utf-8")
    (folder / "issue.old.yaml").write_text("subject: x\n", encoding="utf-8")
    (folder / ".issue.en.yaml.tmp").write_text("half", encoding="utf-8")  # an agent's write in progress
    assert load_versions(folder).langs == ["fr", "en"]
    report = check_versions(folder, load_config(folder.parent.parent)).report
    assert report.ok
    unknown = [(d.code, Path(d.file).name) for d in report.warnings if d.code == "translation-unknown-language"]
    assert unknown == [
        ("translation-unknown-language", "issue.de.yaml"),
        ("translation-unknown-language", "issue.old.yaml"),
    ]


def test_a_translation_that_leads_outside_the_folder_is_not_read(pair, tmp_path):
    folder = pair(english=None)
    secret = tmp_path / "secret.yaml"
    secret.write_text(ENGLISH, encoding="utf-8")
    (folder / "issue.en.yaml").symlink_to(secret)
    with pytest.raises(IssueError) as raised:
        load_versions(folder)
    assert [d.code for d in raised.value.diagnostics] == ["translation-outside-issue"]


# Check: each file, then the comparison


def test_the_seed_bulletin_in_english_checks_with_a_warning_for_each_section_left_in_french(bilingual_workspace):
    folder = bilingual_workspace / "issues" / EXAMPLE_SLUG
    checked = check_versions(folder, load_config(bilingual_workspace))
    report = checked.report
    assert report.ok and report.errors == []
    english = str(folder / "issue.en.yaml")
    found = [(d.code, d.line, d.path) for d in report.warnings]
    assert found == [(code, line, path) for code, line, path, _, _ in SEED_WARNINGS]
    for warning, (_, _, _, section, where) in zip(report.warnings, SEED_WARNINGS, strict=True):
        assert warning.file == english and warning.column == 5
        assert f"no translation of the {section}, which {where} has" in warning.message, warning.message
    assert checked.to_json()["files"] == [
        {"file": str(folder / "issue.yaml"), "lang": "fr", "ok": True, "errors": [], "warnings": []},
        {"file": english, "lang": "en", "ok": True, "errors": [], "warnings": [w.to_json() for w in report.warnings]},
    ]


def test_a_translation_whose_language_the_footer_s_reason_lacks_is_warned_at_its_line(bilingual_workspace):
    """Written in French only, [footer] reason leaves the English version with the tool's default sentence."""
    config = bilingual_workspace / "newsletter.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text("\n".join(line for line in text.splitlines() if not line.startswith("reason.en")), "utf-8")
    checked = check_versions(bilingual_workspace / "issues" / EXAMPLE_SLUG, load_config(bilingual_workspace))
    (warning,) = [d for d in checked.report.warnings if d.code == "footer-reason-missing"]
    lines = config.read_text(encoding="utf-8").splitlines()
    assert warning.file == str(config) and lines[warning.line - 1] == "[footer]" and warning.path == "footer.reason"
    assert "reason.en is not written" in warning.message and "write reason.en beside reason.fr" in warning.message
    assert checked.report.ok  # a warning: the English version still goes, with the default sentence


def test_an_issue_whose_first_language_is_not_the_newsletter_s_is_warned_at_its_lang(bilingual_workspace):
    """issue.yaml in English and issue.fr.yaml beside it, for a newsletter in French: the archive keys its pages
    and feeds by the newsletter's language, so check says which file to make which."""
    folder = bilingual_workspace / "issues" / EXAMPLE_SLUG
    french = (folder / "issue.yaml").read_text(encoding="utf-8")
    english = (folder / "issue.en.yaml").read_text(encoding="utf-8")
    (folder / "issue.en.yaml").unlink()
    (folder / "issue.yaml").write_text(english, encoding="utf-8")
    (folder / "issue.fr.yaml").write_text(french, encoding="utf-8")
    checked = check_versions(folder, load_config(bilingual_workspace))
    (warning,) = [d for d in checked.report.warnings if d.code == "translation-first-language"]
    assert warning.file == str(folder / "issue.yaml") and warning.path == "lang"
    assert english.splitlines()[warning.line - 1].startswith("lang:")
    assert "issue.yaml is in en, but the newsletter's language is fr" in warning.message
    assert "put the fr version in issue.yaml and this one in issue.en.yaml" in warning.message
    (folder / "issue.fr.yaml").unlink()
    assert not [
        d
        for d in check_versions(folder, load_config(bilingual_workspace)).report.warnings
        if d.code == "translation-first-language"
    ]  # in one language, an issue may be in any


def test_check_reports_each_file_then_the_whole_issue(bilingual_workspace, monkeypatch):
    monkeypatch.chdir(bilingual_workspace)
    result = run("check", EXAMPLE_SLUG)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        f"issues/{EXAMPLE_SLUG}/issue.en.yaml:42:5: warning[translation-missing-section] no translation of the "
        'heading "Prochaines étapes", which issue.yaml:43:5 has (its sections[4]): remove it from issue.yaml, or '
        "translate it into issue.en.yaml before this section (sections[4])"
    )
    assert lines[-3:] == [
        f"issues/{EXAMPLE_SLUG}/issue.yaml: 0 errors, 0 warnings",
        f"issues/{EXAMPLE_SLUG}/issue.en.yaml: 0 errors, 9 warnings",
        f"issues/{EXAMPLE_SLUG}: 0 errors, 9 warnings",
    ]
    document = json.loads(run("check", EXAMPLE_SLUG, "--json").stdout)
    assert [(f["lang"], len(f["warnings"])) for f in document["files"]] == [("fr", 0), ("en", 9)]
    assert len(document["warnings"]) == 9 and document["ok"] is True

    (bilingual_workspace / "issues" / EXAMPLE_SLUG / "issue.en.yaml").unlink()  # one language: as before
    result = run("check", EXAMPLE_SLUG)
    assert result.stdout == f"issues/{EXAMPLE_SLUG}: 0 errors, 0 warnings\n"
    document = json.loads(run("check", EXAMPLE_SLUG, "--json").stdout)
    main = str(bilingual_workspace / "issues" / EXAMPLE_SLUG / "issue.yaml")
    assert document["files"] == [{"file": main, "lang": "fr", "ok": True, "errors": [], "warnings": []}]


def test_newsletter_toml_problems_are_counted_once_and_in_no_file(pair, monkeypatch):
    folder = pair()
    (folder.parent.parent / "newsletter.toml").write_text('name = "x"\nlang = "fr"\n', encoding="utf-8")
    document = json.loads(run("check", "2025-02-hiver", "--json").stdout)
    assert [e["code"] for e in document["errors"]] == ["config-missing"] * 3
    assert [f["errors"] for f in document["files"]] == [[], []] and [f["ok"] for f in document["files"]] == [True] * 2
    assert document["ok"] is False


def test_links_and_images_that_differ_on_purpose_are_fine(pair):
    """A page in the reader's language at the same place (the first link of the text, the image of the image
    section, the button): not warned. The same URL anywhere else in the section: matched."""
    assert compared(pair()) == []


def test_a_section_in_one_language_only_or_in_another_order(pair):
    # The callout left out of the English version: named before the logos, the section that follows it.
    no_callout = re.sub(r"  - type: callout\n(    .*\n)+", "", ENGLISH)
    assert compared(pair(english=no_callout)) == [("translation-missing-section", "issue.en.yaml", 14, "sections[3]")]
    report = check_versions(pair(english=no_callout), load_config(Path.cwd())).report
    (warning,) = [d for d in report.warnings if d.code.startswith("translation-")]
    assert 'the callout "Bénévoles", which issue.yaml:15:5 has (its sections[3])' in warning.message

    # The same one, only in the English version: where it would go in issue.yaml is named.
    french = re.sub(r"  - type: callout\n(    .*\n)+", "", FRENCH)
    assert compared(pair(french=french)) == [("translation-extra-section", "issue.en.yaml", 14, "sections[3]")]

    # The image after the callout in English, both with issue.yaml's links: the callout is paired (the first that
    # can be), and the two images left over with the same src are one move.
    same = ENGLISH.replace("poster-en", "affiche-fr").replace("example.org/volunteers", "example.org/benevoles")
    image = re.search(r"  - type: image\n(    .*\n)+", same).group(0)
    callout = re.search(r"  - type: callout\n(    .*\n)+", same).group(0)
    moved = same.replace(image + callout, callout + image)
    assert compared(pair(english=moved)) == [("translation-section-order", "issue.en.yaml", 15, "sections[3]")]

    # The last section missing: named at the last one, "after this section".
    no_logos = ENGLISH[: ENGLISH.index("  - type: logos")]
    assert compared(pair(english=no_logos)) == [("translation-missing-section", "issue.en.yaml", 14, "sections[3]")]
    report = check_versions(pair(english=no_logos), load_config(Path.cwd())).report
    assert "after this section" in report.warnings[-1].message


def test_a_link_or_an_image_in_one_version_only(pair):
    # One link fewer in the English text: the other one is the same, so the French page left over is the one warned.
    fewer = ENGLISH.replace(" Read [the report](https://example.org/en/report)\n      and see", "\n      See")
    assert compared(pair(english=fewer)) == [("translation-missing-link", "issue.en.yaml", 7, "sections[1]")]
    report = check_versions(pair(english=fewer), load_config(Path.cwd())).report
    (warning,) = [d for d in report.warnings if d.code.startswith("translation-")]
    assert warning.message.startswith(
        'issue.yaml:10 links to https://example.org/fr/compte-rendu in its text "Le Forum a réuni 120 personnes.'
    )

    # A link more in the English one: at its own line of the text.
    more = ENGLISH.replace(
        "(https://example.org/photos).", "(https://example.org/photos) and [more](https://example.org/en/more)."
    )
    assert compared(pair(english=more)) == [("translation-extra-link", "issue.en.yaml", 10, "sections[1].text")]

    # The button left without its link (a callout without button): its URL is missing; a logo more is extra.
    no_button = ENGLISH.replace('    button: {label: Sign me up, url: "https://example.org/volunteers"}\n', "")
    logo = "      - {src: images/poster-en.png, alt: Another logo}\n"
    both = no_button + logo
    assert compared(pair(english=both)) == [
        ("translation-missing-link", "issue.en.yaml", 14, "sections[3]"),
        ("translation-extra-image", "issue.en.yaml", 20, "sections[4].logos[1].src"),
    ]
    no_logo = ENGLISH.replace('      - {src: images/logo.png, alt: The logo, link: "https://example.org"}\n', "")
    no_logo += "      - {src: https://example.org/other.png, alt: Another}\n"  # same place, other image, no link
    assert compared(pair(english=no_logo)) == [("translation-missing-link", "issue.en.yaml", 18, "sections[4]")]


# Build


def test_build_writes_each_version_linking_to_the_other_and_the_images_once(bilingual_workspace, monkeypatch):
    monkeypatch.chdir(bilingual_workspace)
    result = run("build", EXAMPLE_SLUG, "--json")
    assert result.exit_code == 0, result.output
    built = json.loads(result.stdout)
    out = bilingual_workspace / "build" / EXAMPLE_SLUG
    assert [(v["lang"], v["html"]) for v in built["versions"]] == [
        ("fr", str(out / "index.html")),
        ("en", str(out / "en" / "index.html")),
    ]
    assert built["html"] == str(out / "index.html") and len(built["warnings"]) == 9
    images = sorted(f"images/{p.name}" for p in (out / "images").iterdir())
    assert len(images) == 4
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == sorted(
        [
            "en",
            "en/index.html",
            "en/index.txt",
            "en/issue.mjml",
            "images",
            *images,
            "index.html",
            "index.txt",
            "issue.mjml",
        ]
    )
    french, english = (out / "index.html").read_text(), (out / "en" / "index.html").read_text()
    archive = "https://bulletin.crdbsl.org/archive/2024-11-forum-des-alliances/"  # serve's archive (base_url)
    assert re.search(rf'<a href="{archive}en/" hreflang="en" lang="en"[^>]*>Read in English</a>', french)
    assert re.search(rf'<a href="{archive}" hreflang="fr" lang="fr"[^>]*>Lire en français</a>', english)
    assert '<html lang="en"' in english and "Looking back on the 2nd Forum des Alliances" in english
    assert 'src="../images/logo-alliances.png"' in english and 'src="images/logo-alliances.png"' in french
    assert "%%" not in french + english
    assert (out / "index.txt").read_text().startswith(f"Read in English: {archive}en/\n\n")
    assert (out / "en" / "index.txt").read_text().startswith(f"Lire en français : {archive}\n\n")
    assert f"View this email in your browser: {archive}en/" in (out / "en" / "index.txt").read_text()

    human = run("build", EXAMPLE_SLUG)
    assert f"built build/{EXAMPLE_SLUG}/en/index.html (" in human.stdout

    (bilingual_workspace / "issues" / EXAMPLE_SLUG / "issue.en.yaml").unlink()  # gone: so is its build
    assert run("build", EXAMPLE_SLUG).exit_code == 0
    assert not (out / "en").exists() and "Read in English" not in (out / "index.html").read_text()


def test_from_disk_each_version_links_to_the_other_relatively(pair):
    folder = pair()
    workspace = Workspace.discover(folder)
    run("build", "2025-02-hiver")
    out = workspace.build_dir / "2025-02-hiver"
    assert 'href="en/index.html" hreflang="en"' in (out / "index.html").read_text()
    assert 'href="../index.html" hreflang="fr"' in (out / "en" / "index.html").read_text()
    assert 'src="../images/poster-en.png"' in (out / "en" / "index.html").read_text()
    assert {p.name for p in (out / "images").iterdir()} == {"affiche-fr.png", "poster-en.png", "logo.png"}


def test_a_send_fills_the_other_versions_link_like_the_view_online_one(bilingual_workspace):
    """What a send gets: the link's placeholder, with serve's archive as its fallback; filled, its value wins."""
    folder = bilingual_workspace / "issues" / EXAMPLE_SLUG
    config = load_config(bilingual_workspace)
    versions = load_versions(folder)
    french = render_issue(versions.main, config)
    english = render_issue(versions.translations["en"], config)
    archive = f"https://bulletin.crdbsl.org/archive/{EXAMPLE_SLUG}/"
    assert f'href="%%other_version_url|{archive}en/%%"' in french.html
    assert f"Read in English: %%other_version_url|{archive}en/%%" in french.text
    assert (english.path, english.other_version, french.path, french.other_version) == (
        "en/",
        ("fr", ""),
        "",
        ("en", "en/"),
    )
    html, text = french.fill({"other_version_url": "https://archive.example.org/x/en/?a=1&b=2"})
    assert 'href="https://archive.example.org/x/en/?a=1&amp;b=2"' in html
    assert "Read in English: https://archive.example.org/x/en/?a=1&b=2" in text
    html, _ = french.fill({})  # unfilled: the fallback
    assert f'href="{archive}en/"' in html
    assert version_web_values(config, english)["view_online_url"] == f"{archive}en/"
    # issue.yaml rendered alone (load_issue, as every caller of one issue): no link, byte for byte as before.
    alone = render_issue(load_issue(folder), config)
    assert "other_version_url" not in alone.html + alone.text + alone.mjml and alone.other_version is None


def test_build_refuses_when_the_translation_has_errors_and_writes_nothing(bilingual_workspace, monkeypatch):
    monkeypatch.chdir(bilingual_workspace)
    english = bilingual_workspace / "issues" / EXAMPLE_SLUG / "issue.en.yaml"
    english.write_text(english.read_text().replace("src: images/logo-alliances.png", "src: images/absent.png"))
    result = run("build", EXAMPLE_SLUG, "--json")
    assert result.exit_code == 1
    (error,) = json.loads(result.stdout)["errors"]
    assert (error["code"], Path(error["file"]).name, error["line"]) == ("missing-image", "issue.en.yaml", 12)
    assert not (bilingual_workspace / "build").exists()


def test_an_event_has_its_calendar_in_each_version(pair):
    event = '  - type: event\n    title: {title}\n    start: 2025-02-12 09:00\n    end: "12:00"\n'
    folder = pair(
        french=FRENCH + event.format(title="Forum régional"), english=ENGLISH + event.format(title="Regional forum")
    )
    assert run("build", "2025-02-hiver").exit_code == 0
    out = folder.parent.parent / "build" / "2025-02-hiver"
    french, english = (out / "event-5.ics").read_text(), (out / "en" / "event-5.ics").read_text()
    assert "SUMMARY:Forum régional" in french and "SUMMARY:Regional forum" in english
    assert "UID:2025-02-hiver-event-5@" in french and "UID:2025-02-hiver-en-event-5@" in english
    assert 'href="event-5.ics"' in (out / "en" / "index.html").read_text()


# new --also, new --from


def test_new_also_writes_both_skeletons_each_in_its_language(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "newsletter.toml").write_text(CONFIG, encoding="utf-8")
    result = run("new", "2025-02-hiver", "--lang", "fr", "--also", "en", "--json")
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    folder = tmp_path / "issues" / "2025-02-hiver"
    assert created["file"] == str(folder / "issue.yaml") and created["translations"] == [str(folder / "issue.en.yaml")]
    french, english = (folder / "issue.yaml").read_text(), (folder / "issue.en.yaml").read_text()
    assert "lang: fr\n" in french and "TODO : l'objet du courriel" in french and "Remplacez chaque TODO" in french
    assert "lang: en\n" in english and "TODO: the subject line" in english and "\ndate:" not in english
    assert "# No date here: issue.yaml's is both versions' date." in english
    versions = load_versions(folder)
    assert versions.langs == ["fr", "en"] and versions.translations["en"].model.date == versions.main.model.date
    document = json.loads(run("check", "2025-02-hiver", "--json").stdout)
    assert {w["code"] for w in document["warnings"]} == {"placeholder-text"}  # the same sections: nothing compared
    assert document["ok"] is True

    human = run("new", "2025-03-mars", "--lang", "en", "--also", "fr")
    assert human.stdout.splitlines()[:2] == [
        "wrote issues/2025-03-mars/issue.yaml",
        "wrote issues/2025-03-mars/issue.fr.yaml",
    ]
    assert "Pas de date ici" in (tmp_path / "issues" / "2025-03-mars" / "issue.fr.yaml").read_text()
    for args, said in (
        (["--lang", "fr", "--also", "fr"], "--also fr: issue.yaml is in fr already"),
        (["--also", "de"], "--also de: unknown language"),
    ):
        refused = run("new", "2025-04-avril", *args)
        assert refused.exit_code == 1 and said in refused.output
    assert not (tmp_path / "issues" / "2025-04-avril").exists()


def test_new_from_a_bilingual_issue_copies_its_translation(pair):
    folder = pair(english=ENGLISH.replace("images/poster-en.png", "images/en/poster.png"))
    (folder / "images" / "en").mkdir()
    (folder / "images" / "en" / "poster.png").write_bytes(PNG_1x1)
    result = run("new", "2025-03-mars", "--from", "2025-02-hiver", "--json")
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    new = folder.parent / "2025-03-mars"
    assert created["translations"] == [str(new / "issue.en.yaml")]
    assert created["images"] == ["images/affiche-fr.png", "images/logo.png", "images/en/poster.png"]
    english = (new / "issue.en.yaml").read_text()
    assert "# From the previous issue: replace this content with the new issue's." in english
    assert "\ndate:" not in english  # it had none: it still takes issue.yaml's
    assert "# Repris du numéro précédent" in (new / "issue.yaml").read_text()
    assert load_versions(new).langs == ["fr", "en"]

    swapped = json.loads(run("new", "2025-04-avril", "--from", "2025-02-hiver", "--lang", "en", "--json").stdout)
    assert swapped["translations"] == []
    assert [w["code"] for w in swapped["warnings"]] == ["translation-not-copied"]


def test_new_from_refuses_a_previous_issue_whose_translation_has_errors(pair):
    pair(english=ENGLISH.replace("lang: en", "lang: fr"))
    refused = run("new", "2025-03-mars", "--from", "2025-02-hiver")
    assert (
        refused.exit_code == 1
        and "the previous issue has errors" in refused.output
        and "translation-lang" in refused.output
    )


# Preview


def newsletter(*args: str) -> subprocess.CompletedProcess:
    """The command in its own process, as an agent runs it."""
    return subprocess.run([sys.executable, "-m", "newsletter", *args], capture_output=True, text=True, cwd=ROOT)


def test_the_preview_serves_each_version_with_a_switch_between_them(bilingual_workspace):
    from newsletter.preview import running_preview

    folder = bilingual_workspace / "issues" / EXAMPLE_SLUG
    with running_preview(folder) as (base, state), httpx.Client(base_url=base) as client:
        french, english = client.get("/"), client.get("/en/")
        for page in (french, english):
            assert '<nav class="versions" aria-label="Versions">' in page.text
            assert (
                '<a href="/" hreflang="fr" lang="fr"' in page.text
                and '<a href="/en/" hreflang="en" lang="en"' in page.text
            )
        assert '<a href="/" hreflang="fr" lang="fr" aria-current="page">Français</a>' in french.text
        assert '<a href="/en/" hreflang="en" lang="en" aria-current="page">English</a>' in english.text
        assert 'src="/en/email.html"' in english.text and "Alex Taylor" in english.text
        mail = client.get("/en/email.html").text
        assert "Looking back on the 2nd Forum des Alliances" in mail and ">Lire en français</a>" in mail
        assert 'src="../images/logo-alliances.png"' in mail
        # The link a member's message has, to serve's archive of the other version (render's fallback, until a
        # send fills %%other_version_url%%).
        archive = f"https://bulletin.crdbsl.org/archive/{EXAMPLE_SLUG}/"
        assert re.search(rf'<a href="{archive}" hreflang="fr" lang="fr"[^>]*>Lire en français</a>', mail)
        assert client.get("/images/logo-alliances.png").status_code == 200  # where ../images/ leads from /en/
        assert "THE ALLIANCES NEWSLETTER" in client.get("/en/email.txt").text
        assert "white-space: pre;" in client.get("/en/text.html").text
        assert ">Read in English</a>" in client.get("/email.html").text
        for missing in ("/fr/", "/de/", "/en/nothing.html", "/newsletter.toml"):
            assert client.get(missing).status_code == 404, missing
        assert len(client.get("/status.json").json()["diagnostics"]) == 9
        assert state.recipient.startswith("Camille Tremblay")  # issue.yaml's view, as before


def test_the_english_version_at_phone_width_in_chromium(bilingual_workspace, chromium_installed, tmp_path):
    """`preview --screenshot --lang en` at 375 px, as an agent runs it: the English version, its images loaded."""
    from PIL import Image

    folder = bilingual_workspace / "issues" / EXAMPLE_SLUG
    output = tmp_path / "en-375.png"
    done = newsletter("preview", str(folder), "--screenshot", str(output), "--width", "375", "--lang", "en", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["recipient"] == "Alex Taylor <alex.taylor@example.org>" and document["viewport"] == 375
    picture = Image.open(output)
    assert picture.width == 375 and picture.height == document["height"] > 1500
    french = tmp_path / "fr-375.png"
    done = newsletter("preview", str(folder), "--screenshot", str(french), "--width", "375")
    assert done.returncode == 0, done.stderr
    assert Image.open(french).height > picture.height  # the French one is whole, the English one a third of it

    refused = newsletter("preview", str(folder), "--screenshot", str(tmp_path / "x.png"), "--lang", "de")
    assert refused.returncode == 1
    assert refused.stderr == (
        f"error: issues/{EXAMPLE_SLUG} has no de version (issue.de.yaml); its versions: fr (issue.yaml), "
        "en (issue.en.yaml)\n"
    )


def test_the_switch_and_the_english_page_in_chromium_at_375_px(bilingual_workspace, chromium):
    from newsletter.preview import running_preview

    folder = bilingual_workspace / "issues" / EXAMPLE_SLUG
    with running_preview(folder) as (base, _state):
        page = chromium.new_page(viewport={"width": 1400, "height": 900})
        try:
            page.goto(base + "/#mobile", wait_until="load")
            page.get_by_role("link", name="English").click()
            page.wait_for_url(base + "/en/#mobile")
            assert page.locator("#mobile").is_visible() and not page.locator("#desktop").is_visible()  # view kept
            frame = page.frame_locator("#mobile iframe")
            frame.get_by_text("Looking back on the 2nd Forum des Alliances").first.wait_for()
            loaded = frame.locator("img").evaluate_all("images => images.map(i => i.complete && i.naturalWidth > 0)")
            assert loaded and all(loaded)
        finally:
            page.close()
        phone = chromium.new_page(viewport={"width": 375, "height": 800})
        try:
            phone.goto(base + "/en/email.html", wait_until="load")
            assert phone.evaluate("document.documentElement.scrollWidth") <= 375
            link = phone.get_by_role("link", name="Lire en français")
            assert link.is_visible() and link.get_attribute("hreflang") == "fr"
        finally:
            phone.close()


# MCP: lang


def test_an_agent_writes_checks_and_reads_the_translation(bilingual_workspace, tmp_path, monkeypatch):
    from test_mcp import connected

    monkeypatch.chdir(bilingual_workspace)
    folder = bilingual_workspace / "issues" / EXAMPLE_SLUG

    async def scenario():
        async with connected(bilingual_workspace, tmp_path / "stderr.log") as agent:
            tools = {tool.name: tool for tool in (await agent.session.list_tools()).tools}
            for name in ("read_issue", "write_issue", "check_issue", "preview_issue"):
                assert tools[name].input_schema["properties"]["lang"]["anyOf"][0]["enum"] == ["fr", "en"], name
            listed = {i["slug"]: i for i in (await agent.json("list_issues"))["issues"]}
            assert listed[EXAMPLE_SLUG]["translations"] == ["en"]

            english = (await agent.call("read_issue", issue=EXAMPLE_SLUG, lang="en"))[1][0].text
            assert english == (folder / "issue.en.yaml").read_text(encoding="utf-8")
            french = (await agent.call("read_issue", issue=EXAMPLE_SLUG, lang="fr"))[1][0].text
            assert french == (folder / "issue.yaml").read_text(encoding="utf-8")  # its own language: issue.yaml

            whole = await agent.json("check_issue", issue=EXAMPLE_SLUG)
            assert [(f["lang"], len(f["warnings"])) for f in whole["files"]] == [("fr", 0), ("en", 9)]
            one = await agent.json("check_issue", issue=EXAMPLE_SLUG, lang="en")
            assert [f["lang"] for f in one["files"]] == ["en"] and len(one["warnings"]) == 9

            broken = english.replace("lang: en", "lang: fr")
            is_error, content = await agent.call("write_issue", issue=EXAMPLE_SLUG, yaml=broken, lang="en")
            assert is_error and content[0].text.startswith(
                f"error: issues/{EXAMPLE_SLUG}/issue.en.yaml was written with 1 error, the first at "
                f"{folder / 'issue.en.yaml'}:6:7: lang is fr"
            )
            assert (await agent.json("write_issue", issue=EXAMPLE_SLUG, yaml=english, lang="en"))["ok"] is True
            assert (folder / "issue.en.yaml").read_text(encoding="utf-8") == english

            uri = f"newsletter://issues/{EXAMPLE_SLUG}/issue.en.yaml"
            resources = {str(r.uri) for r in (await agent.session.list_resources()).resources}
            assert uri in resources
            assert (await agent.session.read_resource(uri)).contents[0].text == english

            created = await agent.json("new_issue", slug="2025-02-hiver", also=["en"])
            assert created["translations"] == [str(bilingual_workspace / "issues/2025-02-hiver/issue.en.yaml")]
            french = (await agent.call("read_issue", issue="2025-02-hiver", lang="fr"))[1][0].text
            assert "lang: fr\n" in french  # issue.yaml, in the workspace's language
            assert "lang: en\n" in (await agent.call("read_issue", issue="2025-02-hiver", lang="en"))[1][0].text
            refused = await agent.error("read_issue", issue="2025-02-hiver", lang="de")
            assert refused.startswith("error: bad arguments to read_issue: lang") and "'fr' or 'en'" in refused

    with ThreadPoolExecutor(1) as thread:  # its own thread: the chromium fixture holds this one's event loop
        thread.submit(asyncio.run, scenario()).result()
    assert "Traceback" not in (tmp_path / "stderr.log").read_text()


def test_an_agent_looks_at_the_translation_at_phone_width(bilingual_workspace, tmp_path, chromium_installed):
    from PIL import Image
    from test_mcp import connected

    async def scenario():
        async with connected(bilingual_workspace, tmp_path / "stderr.log") as agent:
            is_error, content = await agent.call("preview_issue", issue=EXAMPLE_SLUG, width=375, lang="en")
            assert not is_error, content[0].text
            picture, text = content
            document = json.loads(text.text)
            assert Path(document["png"]).name == f"{EXAMPLE_SLUG}-en-375-html.png"
            assert document["recipient"] == "Alex Taylor <alex.taylor@example.org>"
            assert Image.open(io.BytesIO(base64.b64decode(picture.data))).width == 375

    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, scenario()).result()
