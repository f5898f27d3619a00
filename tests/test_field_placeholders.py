"""A subscriber's fields in an issue: {{ prenom | default("…") }} filled per recipient from the issue rendered once.

A campaign through a real SMTP server gives each member their own values or the defaults, in both parts, escaped in
the HTML; the web version, the dry run's sample and the preview; what check says of a field nobody has and of
braces that are no placeholder, where they are; and that a field never stands in for the tool's own values.
"""

from __future__ import annotations

import email
import email.policy
import json
import re

import pytest
from conftest import CONFIG
from smtp_server import RunningSmtp, SmtpSink
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.config import load_config
from newsletter.field_placeholders import FIRST_NAME_KEYS, field_values, scan
from newsletter.store import Store

SECRET = "a-test-secret-key-of-sufficient-length"
SLUG = "bonjour"
ISSUE = """\
subject: Des nouvelles de la région
preheader: "Pour {{ prenom | default('vous') }}, les nouvelles du mois"
lang: fr
sections:
  - type: masthead
    title: "Bulletin de {{ prenom | default('tous') }}"
  - type: heading
    text: 'Bonjour {{ PRÉNOM | default("ami·e") }}'
  - type: text
    text: |
      Des nouvelles de {{ Municipalité | default("votre municipalité") }}, envoyées à %%email%%.

      Votre champ courriel : {{ email | default("aucun") }}. Votre organisme : {{ organisme | default("à venir") }}.
"""
# (address, name, fields as an import or a sign-up wrote them)
MEMBERS = [
    ("marie@example.org", "Marie Côté", {"Prénom": "Marie", "Municipalité": "Rimouski"}),
    ("jean@example.org", "Jean Roy", {}),
    ("zoe@example.org", "Zoé Bœuf", {"prenom": "<script>alert('x')</script>", "municipalite": "  "}),
    # Fields named like the tool's own values: they fill {{ email }}, never %%email%% nor the unsubscribe link.
    (
        "luc@example.org",
        "Luc",
        {"first_name": "Luc", "email": "pirate@evil.example", "unsubscribe_url": "https://evil.example/u"},
    ),
]


def run(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def database_setting(database_url) -> str:
    return database_url


@pytest.fixture
def workspace(example_workspace, monkeypatch, database_setting):
    """The example workspace with issues/bonjour and a list `alliances` of the four MEMBERS."""
    monkeypatch.chdir(example_workspace)
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", SECRET)
    for variable in ("NEWSLETTER_TRANSPORT", "NEWSLETTER_BASE_URL", "NEWSLETTER_ASSET_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_setting)
    folder = example_workspace / "issues" / SLUG
    folder.mkdir()
    (folder / "issue.yaml").write_text(ISSUE, encoding="utf-8")
    store = Store.open(database_setting)
    try:
        list_id = store.ensure_list("alliances", None)
        for address, name, fields in MEMBERS:
            assert store.subscribe(list_id, address, name, fields, "import") == "added"
    finally:
        store.close()
    return example_workspace


def parts(message) -> tuple[str, str]:
    return message.get_body(("html",)).get_content(), message.get_body(("plain",)).get_content()


def test_a_campaign_gives_each_member_their_own_fields_or_the_defaults_and_runs_mjml_once(workspace, monkeypatch):
    import newsletter.render

    compiled = []
    real_mjml2html = newsletter.render.mjml.mjml2html
    monkeypatch.setattr(
        newsletter.render.mjml, "mjml2html", lambda *a, **k: compiled.append(1) or real_mjml2html(*a, **k)
    )
    with RunningSmtp(SmtpSink()) as server:
        result = run("send", SLUG, "--list", "alliances", "--no-dry-run", "--json", "--transport", server.dsn())
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sent"] == 4
    assert len(compiled) == 1  # the issue was rendered once, for four recipients with four sets of values
    received = {r.recipients[0]: r.message for r in server.sink.received}
    assert set(received) == {address for address, _, _ in MEMBERS}

    html, text = parts(received["marie@example.org"])
    for part in (html, text):
        assert "Bonjour Marie" in part and "Des nouvelles de Rimouski, envoyées à marie@example.org" in part
        assert "Votre champ courriel : aucun" in part and "Votre organisme : à venir" in part
    assert "Pour Marie, les nouvelles du mois" in html  # the preheader, per recipient too
    assert "Bulletin de Marie" in html and "BULLETIN DE MARIE" in text  # the masthead's text part is in capitals
    assert "%%" not in html + text

    html, text = parts(received["jean@example.org"])
    for part in (html, text):
        assert "Bonjour ami·e" in part and "Des nouvelles de votre municipalité" in part
    assert "Pour vous, les nouvelles" in html and "BULLETIN DE TOUS" in text

    html, text = parts(received["zoe@example.org"])
    assert "Bonjour &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html and "<script>alert" not in html
    assert "Bonjour <script>alert('x')</script>" in text  # the text part shows it as it is
    assert "Des nouvelles de votre municipalité" in text  # a field of spaces is empty: the default

    luc = received["luc@example.org"]
    html, text = parts(luc)
    assert "Bonjour Luc" in html  # {{ prenom }} reads the first name an import keeps as first_name
    assert "envoyées à luc@example.org" in text and "Votre champ courriel : pirate@evil.example" in text
    unsubscribe = luc["List-Unsubscribe"][1:-1]
    assert unsubscribe.startswith("https://bulletin.crdbsl.org/u/") and unsubscribe in html and unsubscribe in text
    assert "evil.example/u" not in html + text


def test_the_web_version_shows_the_defaults_and_the_dry_run_and_preview_a_member(workspace):
    assert run("build", SLUG).exit_code == 0
    page = (workspace / "build" / SLUG / "index.html").read_text(encoding="utf-8")
    plain = (workspace / "build" / SLUG / "index.txt").read_text(encoding="utf-8")
    for part in (page, plain):
        assert "Bonjour ami·e" in part and "Des nouvelles de votre municipalité" in part and "%%field" not in part
    assert "envoyées à ." in plain  # the tool's own %%email%% is empty on the web, as before

    result = run("send", SLUG, "--list", "alliances", "--json")
    sample = email.message_from_string(json.loads(result.stdout)["sample"], policy=email.policy.default)
    assert sample["To"] == "Marie Côté <marie@example.org>"
    assert "Bonjour Marie" in parts(sample)[0] and "Des nouvelles de Rimouski" in parts(sample)[1]

    from newsletter.preview import PreviewState

    folder = workspace / "issues" / SLUG
    member = PreviewState(folder, list_slug="alliances")
    assert "Bonjour Marie" in member.html and "BULLETIN DE MARIE" in member.text
    sample_member = PreviewState(folder)  # a sample member, who has no fields
    assert "Bonjour ami·e" in sample_member.html and "Des nouvelles de votre municipalité" in sample_member.text


def test_check_warns_of_a_field_no_member_of_the_list_has_where_it_is(workspace):
    result = run("check", SLUG, "--list", "alliances", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    lines = ISSUE.splitlines()
    number = next(i for i, line in enumerate(lines, 1) if "{{ organisme" in line)
    assert [w for w in report["warnings"] if w["code"] == "field-nobody-has"] == [
        {
            "severity": "warning",
            "code": "field-nobody-has",
            "message": "no member of 'alliances' has a field 'organisme'; they all get the default 'à venir'",
            "file": str(workspace / "issues" / SLUG / "issue.yaml"),
            "line": number,
            "column": lines[number - 1].index("{{ organisme") + 1,
            "path": "sections[2].text",
        }
    ]
    # Without --list, the store's only list; with two lists, none (nothing said of fields).
    assert json.loads(run("check", SLUG, "--json").stdout) == report
    text = run("check", SLUG, "--list", "alliances").stdout
    assert f"issue.yaml:{number}:{lines[number - 1].index('{{ organisme') + 1}: warning[field-nobody-has]" in text
    assert run("subscribers", "add", "autre@example.org", "--list", "autre").exit_code == 0
    assert not [w for w in json.loads(run("check", SLUG, "--json").stdout)["warnings"] if "field" in w["code"]]
    refused = run("check", SLUG, "--list", "inconnue")
    assert refused.exit_code == 1 and "inconnue" in refused.stderr


def test_list_field_keys_asks_the_registry_of_field_names(workspace, database_setting):
    store = Store.open(database_setting)
    try:
        list_id = store.list_id("alliances")
        everyone = {"prenom", "municipalite", "first_name", "email", "unsubscribe_url"}
        assert store.list_field_keys(list_id, everyone | {"organisme"}) == everyone
        store.set_status(store.find_subscriber("luc@example.org"), list_id, "unsubscribed", "cli")
        assert store.list_field_keys(list_id, everyone) == {"prenom", "municipalite"}  # the subscribed only
    finally:
        store.close()


# What check says of braces, without a store.

HEADER = """\
subject: Un sujet de bonne longueur
preheader: Un aperçu
lang: fr
sections:
"""


def check(folder, **kwargs):
    from newsletter.checks import check_issue

    root = folder.parent.parent
    return check_issue(folder, load_config(root), root / "templates", **kwargs)


def position(yaml_text: str, pattern: str) -> tuple[int, int]:
    """The 1-based line and column of the first match of pattern in the YAML."""
    offset = re.search(pattern, yaml_text).start()
    line = yaml_text.count("\n", 0, offset) + 1
    return line, offset - (yaml_text.rfind("\n", 0, offset) + 1) + 1


BAD_BRACES = (
    HEADER
    + r"""  - type: heading
    text: "Bonjour {{ prenom | upper }}"
  - type: text
    text: |
      Première ligne, {{ prenom }} bien écrit.

      Puis {{ nom or "x" }}, {% if prenom %}, et { prenom }} et {{ prenom | default("a")
  - type: callout
    title: >
      Un titre plié
      sur {{ first name }} deux lignes
    text: '{{ 名前 }} et {{ x | default(''ok'') }} puis {{ y | d("z") }}'
  - type: button
    label: "Voir \\{{ ceci }} tel quel"
    url: "https://example.org/?p={{ prenom }}"
"""
)


def test_braces_that_are_no_placeholder_are_errors_at_their_line_and_column(make_issue):
    report = check(make_issue(BAD_BRACES)).report
    expected = [  # (where: a pattern of the YAML, path, what the message says)
        (r"\{\{ prenom \| upper", "sections[0].text", "`{{ prenom | upper }}` is not a placeholder this tool fills"),
        (
            r"\{\{ nom or",
            "sections[1].text",
            '`{{ nom or "x" }}` is not a placeholder this tool fills: write {{ nom }}',
        ),
        (r"\{% if", "sections[1].text", "`{% … %}` (a condition or a loop)"),
        (r"(?<!\{)\{ prenom \}\}", "sections[1].text", "`{{` is missing before `}}`: write {{ prenom }}"),
        (r'\{\{ prenom \| default\("a"\)\n', "sections[1].text", "`{{` is not closed by `}}`"),
        (r"\{\{ first name", "sections[2].title", "write {{ first_name }}"),
        (r"\{\{ 名前", "sections[2].text", "names no field"),
        (r'\{\{ y \| d\("z"\)', "sections[2].text", "is not a placeholder"),
        (r"(?<=\?p=)\{\{ prenom", "sections[3].url", "a link takes no placeholder"),
    ]
    errors = report.errors
    assert len(errors) == len(expected), [e.format() for e in errors]
    for error, (pattern, path, message) in zip(errors, expected, strict=True):
        assert (error.code, error.path) == ("bad-placeholder", path)
        assert (error.line, error.column) == position(BAD_BRACES, pattern), (pattern, error.format())
        assert message in error.message, error.message
    assert "put a backslash before them (\\{{)" in errors[0].message  # how to show braces as written
    assert not report.ok


def test_the_subject_takes_no_placeholder_and_a_backslash_shows_braces(make_issue):
    yaml_text = (
        "subject: 'Bonjour {{ prenom }}, des nouvelles'\npreheader: Un aperçu\nlang: fr\nsections:\n"
        "  - type: heading\n    text: 'Voir \\{{ ceci }} tel quel'\n"
        "  - type: text\n    text: 'Et \\{{ cela }} aussi, {{ x | default(\"<b>gras</b> & co\") }}'\n"
    )
    result = check(make_issue(yaml_text))
    (error,) = result.report.errors
    assert (error.code, error.line, error.column, error.path) == ("bad-placeholder", 1, 19, "subject")
    assert error.message.startswith("the subject is the same for every recipient")
    html, text = result.rendered.fill({})
    assert "Voir {{ ceci }} tel quel" in html and "Et {{ cela }} aussi" in html
    assert "Voir {{ ceci }} tel quel" in text and "Et {{ cela }} aussi" in text
    assert "&lt;b&gt;gras&lt;/b&gt; &amp; co" in html and "<b>gras</b> & co" in text  # a default is text too
    assert result.rendered.subject == "Bonjour {{ prenom }}, des nouvelles"  # as written: the error says why


def test_a_template_that_changes_a_placeholder_is_a_render_error(make_issue):
    folder = make_issue(HEADER + "  - type: heading\n    text: 'Bonjour {{ prenom }}'\n")
    override = folder.parent.parent / "templates" / "sections" / "heading.mjml.j2"
    override.parent.mkdir(parents=True)
    override.write_text(
        "<mj-section><mj-column><mj-text>{{ section.text|truncate(20, true, leeway=0) }}</mj-text></mj-column>"
        "</mj-section>"
    )
    errors = check(folder).report.errors
    assert [e.code for e in errors] == ["render-failed"]
    assert "changed the placeholder of a field" in errors[0].message


def test_placeholder_names_match_whatever_their_accents_and_case():
    found, problems = scan("{{ Municipalité }} {{ MUNICIPALITE|default('x') }} {{municipalite}} {{ Prénom }}")
    assert not problems and [(p.key, p.default) for p in found] == [
        ("municipalite", ""),
        ("municipalite", "x"),
        ("municipalite", ""),
        ("prenom", ""),
    ]
    fields = {"Municipalité": "Matane", "First Name": "Ève"}
    assert field_values(fields, ["field-municipalite", "FIELD-municipalite", "field-prenom", "field-nom"]) == {
        "field-municipalite": "Matane",
        "FIELD-municipalite": "MATANE",
        "field-prenom": "Ève",  # the import's first name, whichever way the placeholder names it
        "field-nom": "",
    }


def test_the_first_name_keys_are_those_the_import_reads_as_a_first_name():
    from newsletter.sources import FIRST_NAME_HEADERS  # header keys: no spaces nor underscores

    assert {key.replace("_", "") for key in FIRST_NAME_KEYS} == FIRST_NAME_HEADERS


def test_content_with_fields_is_frozen_as_format_2_and_other_content_as_format_1(make_issue):
    from newsletter.message import Mailbox, Recipient
    from newsletter.sending.frozen import FrozenCampaign, freeze
    from newsletter.store import ListRow
    from newsletter.tokens import TokenSigner

    def frozen(text: str) -> FrozenCampaign:
        folder = make_issue(HEADER + f"  - type: heading\n    text: '{text}'\n", config=CONFIG)
        rendered = check(folder).rendered
        config = load_config(folder.parent.parent)
        sender = Mailbox("Bulletin", "bulletin@organisme.ca")
        return freeze(
            config,
            rendered,
            ListRow(1, "alliances", "alliances"),
            sender=sender,
            reply_to=None,
            hosted=None,
            local_only=None,
        )

    with_fields = frozen('Bonjour {{ prenom | default("toi") }}')
    assert with_fields.to_json()["format"] == 2
    back = FrozenCampaign.from_json(json.loads(json.dumps(with_fields.to_json())))
    assert back == with_fields
    message = back.campaign(1, TokenSigner(SECRET)).build(Recipient(1, "a@example.org", None, {"Prénom": "Ana"}))
    assert (
        "Bonjour Ana" in message.text
        and "Bonjour toi" in back.campaign(1, TokenSigner(SECRET)).build(Recipient(2, "b@example.org", None, {})).text
    )
    assert frozen("Bonjour").to_json()["format"] == 1


def test_message_placeholders_survive_what_renders_the_text():
    """Markdown emphasis around it, a heading, underscores in the key, a long default: one placeholder each."""
    from newsletter.field_placeholders import personalised
    from newsletter.issue import Issue
    from newsletter.render import markdown_html, markdown_text, split_placeholders

    model = Issue.model_validate(
        {
            "subject": "s",
            "lang": "fr",
            "sections": [
                {
                    "type": "text",
                    "text": "# À {{ first_name }}\n\n"
                    "**{{ Date_Adhésion | default('un jour * _de_ [x](y) 2023-2026') }}**",
                }
            ],
        }
    )
    text = personalised(model).sections[0].text
    for rendered in (markdown_html(text), markdown_text(text)):
        placeholders = [p for p in split_placeholders(rendered) if isinstance(p, tuple)]
        assert [name.lower() for name, _ in placeholders] == ["field-first_name", "field-date_adhesion"]
        assert re.search(r"un jour \* _de_ \[x\]\(y\) 2023-2026", placeholders[1][1], re.IGNORECASE)
