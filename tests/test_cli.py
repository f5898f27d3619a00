"""The command line: each command's output, --json shape and exit code; bad input never gives a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import EXAMPLE, EXAMPLE_SLUG, ROOT
from typer.testing import CliRunner

from newsletter.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_init_new_check_build_from_scratch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("init", "ma-lettre", "--name", "La Lettre", "--lang", "fr")
    assert result.exit_code == 0, result.output
    root = tmp_path / "ma-lettre"
    for path in (
        "newsletter.toml",
        "issues",
        "templates/README.md",
        "subscribers",
        ".gitignore",
        "issue.schema.json",
    ):
        assert (root / path).exists(), path
    assert run("init", "ma-lettre").exit_code == 1  # never overwrites a workspace

    monkeypatch.chdir(root)
    result = run("new", "2025-02-hiver", "--json")
    assert result.exit_code == 0
    created = json.loads(result.stdout)
    assert created["file"].endswith("issues/2025-02-hiver/issue.yaml")
    assert run("new", "2025-02-hiver").exit_code == 1
    assert "not a valid slug" in run("new", "Hiver 2025").output
    for slug in ("evil\n", "a" * 300):  # a folder no tool could name again; a name past the file system's limit
        refused = run("new", slug)
        assert refused.exit_code == 1 and "not a valid slug" in refused.output

    result = run("check", "2025-02-hiver", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert {e["code"] for e in report["errors"]} == {"config-missing"}  # the skeleton itself is valid
    assert {w["code"] for w in report["warnings"]} == {"placeholder-text"}
    for item in report["errors"] + report["warnings"]:
        assert set(item) == {"severity", "file", "line", "column", "path", "code", "message"}

    toml = (root / "newsletter.toml").read_text()
    toml = toml.replace('name = ""', 'name = "Org"').replace('postal_address = ""', 'postal_address = "1 rue X"')
    toml = toml.replace('email = ""', 'email = "info@organisme.ca"')
    (root / "newsletter.toml").write_text(toml)
    result = run("build", "issues/2025-02-hiver", "--json")
    assert result.exit_code == 0, result.output
    built = json.loads(result.stdout)
    assert set(built) == {"html", "text", "html_bytes", "warnings", "versions"}
    assert built["versions"] == [{"lang": "fr", **{key: built[key] for key in ("html", "text", "html_bytes")}}]
    assert Path(built["html"]) == root / "build/2025-02-hiver/index.html"
    assert Path(built["html"]).stat().st_size == built["html_bytes"]
    assert "LA LETTRE" in Path(built["text"]).read_text()


def test_check_human_output_names_file_line_and_exits_1(example_workspace, monkeypatch):
    monkeypatch.chdir(example_workspace)
    issue = example_workspace / "issues" / EXAMPLE_SLUG / "issue.yaml"
    issue.write_text(issue.read_text().replace("type: callout", "type: encadre", 1))
    result = run("check", EXAMPLE_SLUG)
    assert result.exit_code == 1
    assert f"issues/{EXAMPLE_SLUG}/issue.yaml:36:11: error[unknown-section-type] unknown section type 'encadre'" in (
        result.output
    )
    assert "1 error, 0 warnings" in result.output


def test_build_refuses_an_issue_with_errors_and_writes_nothing(example_workspace, monkeypatch):
    monkeypatch.chdir(example_workspace)
    (example_workspace / "issues" / EXAMPLE_SLUG / "images" / "partenaire-crd-bsl.png").unlink()
    result = run("build", EXAMPLE_SLUG, "--json")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["ok"] is False and document["errors"][0]["code"] == "missing-image"
    assert "nothing was built" in result.stderr
    assert not (example_workspace / "build").exists()


def test_unknown_issue_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("check", "n-existe-pas")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no issue 'n-existe-pas'") and result.stderr.count("\n") == 1


def test_invalid_newsletter_toml_is_a_one_line_error(example_workspace, monkeypatch):
    monkeypatch.chdir(example_workspace)
    (example_workspace / "newsletter.toml").write_text('name = "x"\n[brand]\nprimary_color = "#fff"\n')
    result = run("build", EXAMPLE_SLUG)
    assert result.exit_code == 1
    assert "newsletter.toml:3: brand.primary_color" in result.stderr


def test_schema_is_json_and_validates_the_example():
    result = run("schema")
    schema = json.loads(result.stdout)
    document = yaml.safe_load((EXAMPLE / "issue.yaml").read_text())
    document["date"] = document["date"].isoformat()
    jsonschema.validate(document, schema)
    document["sections"][0]["type"] = "nope"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, schema)


def test_committed_schema_is_current():
    assert (ROOT / "issue.schema.json").read_text() == run("schema").stdout


@pytest.mark.parametrize(
    "text",
    [
        "subject: [\n",
        "\x00\x01binary",
        "sections: 3\n",
        "- a\n- b\n",
        "subject: x\nlang: fr\nsections:\n  - 42\n",
    ],
)
def test_malformed_issue_never_gives_a_traceback(make_issue, text, monkeypatch):
    folder = make_issue(text)
    monkeypatch.chdir(folder.parent.parent)
    for command in ("check", "build"):
        result = runner.invoke(app, [command, "test-issue"])
        assert result.exit_code == 1
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert "Traceback" not in result.output


def test_installed_command_builds_the_example(tmp_path):
    """The console script, as the Quickstart runs it, in a separate process."""
    done = subprocess.run(
        [sys.executable, "-m", "newsletter", "build", str(EXAMPLE), "--out", str(tmp_path / "out"), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    warnings = json.loads(done.stdout)["warnings"]
    assert [w["code"] for w in warnings] == ["reserved-name", "placeholder-address"]  # the example's settings
    assert (tmp_path / "out" / "images" / "logo-alliances.png").is_file()
    assert (tmp_path / "out" / "issue.mjml").read_text().startswith('<mjml lang="fr">')


def test_subscribers_remove_reports_in_json(example_workspace, monkeypatch):
    monkeypatch.chdir(example_workspace)
    monkeypatch.delenv("NEWSLETTER_DATABASE_URL", raising=False)
    assert run("subscribers", "add", "marie@example.org", "--list", "alliances").exit_code == 0
    for expected in ("unsubscribed", "unchanged"):
        result = run("subscribers", "remove", "marie@example.org", "--list", "alliances", "--json")
        assert result.exit_code == 0
        assert json.loads(result.stdout) == {"email": "marie@example.org", "list": "alliances", "result": expected}
    result = run("subscribers", "remove", "nobody@example.org", "--list", "alliances", "--json")
    assert result.exit_code == 1 and result.stderr == "error: nobody@example.org is not on any list\n"


def test_form_pending_and_show(example_workspace, monkeypatch):
    monkeypatch.chdir(example_workspace)
    monkeypatch.delenv("NEWSLETTER_DATABASE_URL", raising=False)
    closed = run("form", "alliances")
    assert closed.exit_code == 1 and "add [lists.alliances] subscribe = true" in closed.stderr
    config = example_workspace / "newsletter.toml"
    config.write_text(config.read_text() + '\n[lists.alliances]\nsubscribe = true\ntitle = "Le bulletin"\n')
    snippet = run("form", "alliances").stdout
    assert '<form method="post" action="https://bulletin.crdbsl.org/subscribe/alliances"' in snippet
    assert 'name="website" tabindex="-1"' in snippet and "J&#39;accepte de recevoir Le bulletin" in snippet
    assert run("subscribers", "add", "marie@example.org", "--list", "alliances").exit_code == 0
    assert json.loads(run("subscribers", "pending", "--list", "alliances", "--json").stdout) == {
        "list": "alliances",
        "pending": [],
    }
    shown = json.loads(run("subscribers", "show", "marie@example.org", "--json").stdout)
    joined = shown["memberships"][0]["updated_at"]
    assert shown["memberships"] == [
        {"list": "alliances", "status": "subscribed", "updated_at": joined, "joined_at": joined}
    ]
    assert (shown["fields"], shown["tags"]) == ({}, [])
    assert [e["kind"] for e in shown["events"]] == ["subscribed"]
    missing = run("subscribers", "show", "personne@example.org")
    assert missing.exit_code == 1 and missing.stderr == "error: nothing is held about personne@example.org\n"


# What `--help` and `--version` never import: an agent calls the CLI again and again, and pays for each import on
# every call (bench/startup.py measures how long; this test only says what, so that it never depends on speed).
NEVER_AT_START = (
    "sqlalchemy",
    "httpx",
    "jinja2",
    "mjml",
    "playwright",
    "starlette",
    "uvicorn",
    "yaml",
    "css_inline",
    "markdown_it",
    "aiosmtplib",
    "dkim",
    "icalendar",
    "mcp",
    "newsletter.store",
    "newsletter.sending",
    "newsletter.sending.runner",
    "newsletter.transports",
    "newsletter.checks",
    "newsletter.render",
    "newsletter.build",
    "newsletter.config",  # pydantic models, as are these two
    "newsletter.issue",
    "newsletter.workspace",
    "newsletter.subscribers",
    "newsletter.web",
)


def imported_by(*arguments: str) -> set[str]:
    """The modules `newsletter ARGUMENTS` imports, from python -X importtime in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "newsletter", *arguments],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return {line.split("|")[2].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("arguments", [["--version"], ["--help"], ["send", "--help"]], ids=" ".join)
def test_the_cli_starts_without_importing_what_its_commands_use(arguments):
    modules = imported_by(*arguments)
    assert "newsletter.cli" in modules  # the list is the real one
    heavy = {found for found in modules if any(found == m or found.startswith(f"{m}.") for m in NEVER_AT_START)}
    assert not heavy, f"newsletter {' '.join(arguments)} imports {sorted(heavy)}"
