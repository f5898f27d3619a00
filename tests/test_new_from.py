"""`newsletter new SLUG --from PREVIOUS` and MCP new_issue(from_issue=…): the previous issue's YAML as its author
wrote it, dated today, its other dates cleared, comments on what to replace, and the images it uses copied; the
issues' images read as MCP resources, and nothing outside an issue's folder ever read or copied."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json

import pytest
import yaml
from conftest import CONFIG, EXAMPLE_SLUG, PNG_1x1
from mcp import MCPError
from pydantic import BaseModel
from test_cli import run
from test_mcp import connected

from newsletter.issue import load_issue
from newsletter.reuse import dates_in

PREVIOUS = "2025-01-hiver"
NEW = "2025-02-fevrier"
# Comments, quoting and a flow mapping of the author's own; a masthead date, an image section in a subfolder, a
# "# …" line that is text inside a block scalar, not a comment, and a reused section written in flow style.
PREVIOUS_YAML = """\
# Le bulletin des Alliances: keep this comment
subject: 'Le bulletin d''hiver : trois rendez-vous'   # quoted the author's way
preheader: "Trois rendez-vous, un appel aux bénévoles et nos partenaires"
lang: fr
date: 2025-01-15

sections:
  - type: masthead
    title: Le bulletin des Alliances
    logo: {src: images/logo-alliances.png, alt: Alliances pour la solidarité, width: 200}
    date: 2025-01-15  # shown under the title

  - type: heading
    level: 1
    text: Trois rendez-vous cet hiver

  - type: image
    src: images/photos/forum.png
    alt: La salle du Forum, pleine
    caption: Le Forum de novembre

  - type: text
    text: |
      Le Forum a réuni 120 personnes.

      # Pas un commentaire : une ligne du texte

  - type: logos
    caption: "Avec la participation financière de :"
    logos:
      - src: images/partenaire.png
        alt: Solidarité sociale Québec
        link: https://example.org/partenaires
  - {type: divider}
  - type: contacts
    contacts:
      - {name: Marie Côté, role: Coordination, email: marie@example.org}
"""


def write_previous(root, text=PREVIOUS_YAML, images=("images/logo-alliances.png", "images/photos/forum.png")):
    (root / "newsletter.toml").write_text(CONFIG, encoding="utf-8")
    folder = root / "issues" / PREVIOUS
    folder.mkdir(parents=True)
    (folder / "issue.yaml").write_text(text, encoding="utf-8")
    for index, name in enumerate((*images, "images/partenaire.png")):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(PNG_1x1 + bytes([index]))  # each file its own bytes
    return folder


def check_codes(root, slug):
    result = run("check", slug, "--json")
    report = json.loads(result.stdout)
    return {e["code"] for e in report["errors"]}, {w["code"] for w in report["warnings"]}


def test_new_from_copies_the_yaml_as_written_clears_dates_comments_and_copies_images(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    previous = write_previous(tmp_path)
    before = check_codes(tmp_path, PREVIOUS)
    assert before[0] == set()

    result = run("new", NEW, "--from", PREVIOUS, "--json")
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    folder = tmp_path / "issues" / NEW
    assert created["file"] == str(folder / "issue.yaml") and created["issue"] == str(folder)
    assert created["images"] == ["images/logo-alliances.png", "images/photos/forum.png", "images/partenaire.png"]
    assert created["cleared_dates"] == ["sections[0].date"] and created["warnings"] == []
    for src in created["images"]:
        assert (folder / src).read_bytes() == (previous / src).read_bytes()

    text = (folder / "issue.yaml").read_text(encoding="utf-8")
    lines = text.splitlines()
    # The author's comments, quoting and flow mappings, line for line, and the text's "# …" line left as text.
    for kept in (
        "# Le bulletin des Alliances: keep this comment",
        "subject: 'Le bulletin d''hiver : trois rendez-vous'   # quoted the author's way",
        "    logo: {src: images/logo-alliances.png, alt: Alliances pour la solidarité, width: 200}",
        "      # Pas un commentaire : une ligne du texte",
        "  - {type: divider}",
    ):
        assert kept in lines, kept
    assert f"date: {dt.date.today().isoformat()}" in lines  # the new issue's date: today, as `new` writes it
    replace = "# Repris du numéro précédent : remplacez ce contenu par celui du nouveau numéro."
    reused = "# Repris du numéro précédent."
    assert lines[
        lines.index("subject: 'Le bulletin d''hiver : trois rendez-vous'   # quoted the author's way") - 1
    ] == (replace)
    assert lines[lines.index('preheader: "Trois rendez-vous, un appel aux bénévoles et nos partenaires"') - 1] == (
        replace
    )
    above = {line.strip(): lines[i - 1].strip() for i, line in enumerate(lines) if line.lstrip().startswith("- ")}
    assert above["- type: masthead"] == reused
    assert above["- type: heading"] == above["- type: image"] == above["- type: text"] == replace
    assert above["- type: logos"] == above["- {type: divider}"] == above["- type: contacts"] == reused
    date_line = lines.index("    date: null  # shown under the title")
    assert lines[date_line - 1] == (
        "    # La date du numéro précédent (2025-01-15) a été effacée : indiquez la nouvelle."
    )

    # What it says is the previous issue's, but for the dates.
    new_data, old_data = yaml.safe_load(text), yaml.safe_load(PREVIOUS_YAML)
    old_data["date"], old_data["sections"][0]["date"] = dt.date.today(), None
    assert new_data == old_data
    model = load_issue(folder).model
    assert model.sections[2].src == "images/photos/forum.png" and model.lang == "fr"
    assert check_codes(tmp_path, NEW) == before  # checks as the previous one did

    human = run("new", "2025-03-mars", "--from", PREVIOUS)
    assert human.exit_code == 0
    assert "wrote issues/2025-03-mars/issue.yaml" in human.stdout and "copied 3 images" in human.stdout
    assert "cleared 1 date to give again: sections[0].date" in human.stdout


def test_the_example_issue_gives_one_that_checks_clean(example_workspace, monkeypatch):
    """The seed bulletin: its masthead's "Novembre 2024" goes (the masthead then shows the new issue's date)."""
    monkeypatch.chdir(example_workspace)
    result = run("new", "2025-02-hiver", "--from", EXAMPLE_SLUG, "--lang", "en", "--json")
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    assert len(created["images"]) == 4 and created["cleared_dates"] == ["sections[0].date"]
    text = (example_workspace / "issues" / "2025-02-hiver" / "issue.yaml").read_text(encoding="utf-8")
    assert "lang: en\n" in text and "# From the previous issue: replace this content with the new issue's." in text
    assert "# The previous issue's date (Novembre 2024) was cleared: give the new one.\n    date: null\n" in text
    assert check_codes(example_workspace, "2025-02-hiver") == (set(), set())


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_comments_do_not_pile_up_from_issue_to_issue(tmp_path, monkeypatch, newline):
    monkeypatch.chdir(tmp_path)
    previous = write_previous(tmp_path)
    (previous / "issue.yaml").write_bytes(PREVIOUS_YAML.replace("\n", newline).encode("utf-8"))
    assert run("new", "2025-02-fevrier", "--from", PREVIOUS).exit_code == 0
    second = tmp_path / "issues" / "2025-02-fevrier" / "issue.yaml"
    second.write_bytes(second.read_bytes().replace(b"date: null", b"date: 2025-02-12"))  # the author gave it
    result = run("new", "2025-03-mars", "--from", "2025-02-fevrier", "--lang", "en")
    assert result.exit_code == 0, result.output
    data = (tmp_path / "issues" / "2025-03-mars" / "issue.yaml").read_bytes()
    assert data.count(newline.encode()) == data.count(b"\n")  # its line breaks, kept
    lines = data.decode("utf-8").splitlines()
    ours = [line.strip() for line in lines if "previous issue" in line or "précédent" in line]
    assert ours == [
        "# From the previous issue: replace this content with the new issue's.",  # subject
        "# From the previous issue: replace this content with the new issue's.",  # preheader
        "# From the previous issue.",  # masthead
        "# The previous issue's date (2025-02-12) was cleared: give the new one.",
        *["# From the previous issue: replace this content with the new issue's."] * 3,  # heading, image, text
        *["# From the previous issue."] * 3,  # logos, divider, contacts
    ]


def test_images_outside_the_previous_issue_are_not_copied(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG_1x1 + b"secret")
    text = PREVIOUS_YAML.replace(
        "        link: https://example.org/partenaires\n",
        "        link: https://example.org/partenaires\n"
        "      - {src: images/lien.png, alt: Un lien vers dehors}\n"
        "      - {src: ../../secret.png, alt: Dehors}\n"
        "      - {src: images/manquant.png, alt: Manquant}\n"
        "      - {src: 'https://example.org/logo.png', alt: Distant}\n",
    )
    previous = write_previous(tmp_path, text)
    (previous / "images" / "lien.png").symlink_to(secret)

    result = run("new", NEW, "--from", PREVIOUS, "--json")
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    assert created["images"] == ["images/logo-alliances.png", "images/photos/forum.png", "images/partenaire.png"]
    warnings = {w["message"].split("'")[1]: w for w in created["warnings"]}
    assert set(warnings) == {"images/lien.png", "../../secret.png", "images/manquant.png"}
    assert {w["code"] for w in warnings.values()} == {"image-not-copied"}
    assert warnings["images/manquant.png"]["file"] == str(previous / "issue.yaml")
    assert warnings["images/manquant.png"]["line"] == text.count("\n", 0, text.index("images/manquant")) + 1
    folder = tmp_path / "issues" / NEW
    copied = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert copied == ["images/logo-alliances.png", "images/partenaire.png", "images/photos/forum.png", "issue.yaml"]
    assert not any(p.read_bytes() == secret.read_bytes() for p in folder.rglob("*.png"))
    assert "https://example.org/logo.png" in (folder / "issue.yaml").read_text()

    human = run("new", "2025-03-mars", "--from", PREVIOUS)
    assert human.exit_code == 0
    assert "warning[image-not-copied] 'images/manquant.png' is not in issues/2025-01-hiver" in human.stderr


def test_refusals_are_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    previous = write_previous(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "issue.yaml").write_text(PREVIOUS_YAML)
    (tmp_path / "issues" / "evil").symlink_to(outside, target_is_directory=True)
    (tmp_path / "issues" / "lien").mkdir()
    (tmp_path / "issues" / "lien" / "issue.yaml").symlink_to(outside / "issue.yaml")
    (tmp_path / "issues" / "casse").mkdir()
    (tmp_path / "issues" / "casse" / "issue.yaml").write_text("subject: [\n")

    def refused(*args: str) -> str:
        result = run("new", *args)
        assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
        return result.stderr

    assert f"{previous / 'issue.yaml'} already exists" in refused(PREVIOUS, "--from", PREVIOUS)
    assert "no previous issue 'n-existe-pas'" in refused(NEW, "--from", "n-existe-pas")
    for path in ("../outside", "/etc", "a/b", "Hiver"):
        assert "is not an issue's slug" in refused(NEW, "--from", path)
    assert "issues/evil leads outside" in refused(NEW, "--from", "evil")
    assert "issues/lien/issue.yaml leads outside that issue's folder" in refused(NEW, "--from", "lien")
    assert "the previous issue has errors, so nothing was copied" in refused(NEW, "--from", "casse")
    assert "not a valid slug" in refused("Fevrier 2025", "--from", PREVIOUS)
    assert sorted(p.name for p in (tmp_path / "issues").iterdir()) == ["2025-01-hiver", "casse", "evil", "lien"]
    assert (previous / "issue.yaml").read_text() == PREVIOUS_YAML


def test_dates_are_found_by_their_type_not_their_name():
    """Dates are found by their type, whatever the section and the field are called (an event's start, a
    deadline…), not by name; and the issue's own date is left to new_issue."""

    class Session(BaseModel):
        starts: dt.datetime
        room: str

    class Event(BaseModel):
        title: str
        date: dt.date | None = None  # the issue's own field name, but not at the top
        sessions: list[Session]
        deadline: dt.date | str | None = None  # a field that takes a date holds text: still a date

    class Issue(BaseModel):
        date: dt.date
        sections: list[Event]

    issue = Issue(
        date=dt.date(2025, 1, 1),
        sections=[
            Event(
                title="Forum",
                date=dt.date(2025, 1, 2),
                sessions=[Session(starts=dt.datetime(2025, 1, 2, 9), room="A")],
                deadline="mi-janvier",
            )
        ],
    )
    assert dates_in(issue) == [
        (("sections", 0, "date"), dt.date(2025, 1, 2)),
        (("sections", 0, "sessions", 0, "starts"), dt.datetime(2025, 1, 2, 9)),
        (("sections", 0, "deadline"), "mi-janvier"),
    ]


def test_mcp_new_issue_from_the_previous_one_and_its_images_as_resources(example_workspace, tmp_path, monkeypatch):
    monkeypatch.chdir(example_workspace)
    source = example_workspace / "issues" / EXAMPLE_SLUG / "images"
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG_1x1 + b"secret")
    (source / "lien.png").symlink_to(secret)
    (source / "notes.txt").write_text("not an image")

    async def scenario():
        async with connected(example_workspace, tmp_path / "stderr.log") as agent:
            tools = {tool.name: tool for tool in (await agent.session.list_tools()).tools}
            assert tools["new_issue"].input_schema["properties"]["from_issue"]["description"]
            created = await agent.json("new_issue", slug="2025-02-hiver", from_issue=EXAMPLE_SLUG)
            assert set(created) == {"issue", "file", "translations", "images", "cleared_dates", "warnings"}
            assert created["translations"] == []  # the example has none
            assert created["images"][0] == "images/logo-alliances.png" and len(created["images"]) == 4
            assert "# Repris du numéro précédent." in await_text(await agent.call("read_issue", issue="2025-02-hiver"))
            assert "no previous issue 'nope'" in await agent.error("new_issue", slug="x", from_issue="nope")
            assert "is not an issue's slug" in await agent.error("new_issue", slug="x", from_issue="../x")

            resources = {str(r.uri): r for r in (await agent.session.list_resources()).resources}
            uri = "newsletter://issues/2025-02-hiver/images/logo-alliances.png"
            assert resources[uri].mime_type == "image/png" and resources[uri].name == (
                "issues/2025-02-hiver/images/logo-alliances.png"
            )
            listed = [u for u in resources if u.startswith(f"newsletter://issues/{EXAMPLE_SLUG}/")]
            assert listed == [f"newsletter://issues/{EXAMPLE_SLUG}/issue.yaml"] + [
                f"newsletter://issues/{EXAMPLE_SLUG}/images/{name}"
                for name in sorted(p.name for p in source.glob("*.png") if p.name != "lien.png")
            ]  # the symlink out and the text file are not listed
            templates = {t.uri_template for t in (await agent.session.list_resource_templates()).resource_templates}
            assert "newsletter://issues/{slug}/images/{name}" in templates

            read = (await agent.session.read_resource(uri)).contents
            assert len(read) == 1 and read[0].mime_type == "image/png"
            assert base64.b64decode(read[0].blob) == (source / "logo-alliances.png").read_bytes()

            refusals = {
                f"newsletter://issues/{EXAMPLE_SLUG}/images/%2E%2E": "names no image",
                f"newsletter://issues/{EXAMPLE_SLUG}/images/..%2Fissue.yaml": "names no image",
                f"newsletter://issues/{EXAMPLE_SLUG}/images/%2Fetc%2Fx.png": "names no image",
                f"newsletter://issues/{EXAMPLE_SLUG}/images/sub/x.png": "names no image",
                f"newsletter://issues/{EXAMPLE_SLUG}/images/x%00.png": "names no image",
                f"newsletter://issues/{EXAMPLE_SLUG}/images/notes.txt": "names no image",
                f"newsletter://issues/{EXAMPLE_SLUG}/images/lien.png": "leads outside the issue's folder",
                f"newsletter://issues/{EXAMPLE_SLUG}/images/absent.png": "no image 'absent.png'",
                "newsletter://issues/n-existe-pas/images/logo-alliances.png": "no issue 'n-existe-pas'",
                "newsletter://issues/%2E%2E/images/logo-alliances.png": "is not an issue's slug",
            }
            for bad, reason in refusals.items():
                with pytest.raises(MCPError) as refused:
                    await agent.session.read_resource(bad)
                message = str(refused.value)
                assert message.startswith("error: ") and reason in message and "\n" not in message, (bad, message)

    asyncio.run(scenario())
    copied = example_workspace / "issues" / "2025-02-hiver" / "images"
    assert sorted(p.name for p in copied.iterdir()) == sorted(
        p.name for p in source.glob("*.png") if p.name != "lien.png"
    )
    assert "Traceback" not in (tmp_path / "stderr.log").read_text()


def await_text(call: tuple[bool, list]) -> str:
    is_error, content = call
    assert not is_error
    return content[0].text


def test_a_new_issue_without_from_is_the_skeleton_as_before(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "newsletter.toml").write_text(CONFIG, encoding="utf-8")
    created = json.loads(run("new", "2025-02-hiver", "--json").stdout)
    assert created["images"] == [] and created["cleared_dates"] == [] and created["warnings"] == []
    text = (tmp_path / "issues" / "2025-02-hiver" / "issue.yaml").read_text()
    assert text.startswith("# yaml-language-server") and "Repris" not in text
    assert "lang: fr\n" in text and f"date: {dt.date.today().isoformat()}\n" in text
