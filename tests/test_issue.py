"""Loading issue.yaml: every malformed input gives the right error code, at the right line, and no traceback."""

from __future__ import annotations

from typing import Literal

import pytest

from newsletter.errors import IssueError
from newsletter.i18n import CATALOG, LANGUAGES
from newsletter.issue import SECTION_TYPES, Section, format_path, load_issue

VALID = """\
subject: Un sujet assez long
lang: fr
sections:
  - type: heading
    text: Bonjour
"""


def errors_of(folder):
    with pytest.raises(IssueError) as caught:
        load_issue(folder)
    return caught.value.diagnostics


def test_valid_issue_loads_with_positions(make_issue):
    issue = load_issue(make_issue(VALID))
    assert issue.model.sections[0].text == "Bonjour"
    assert issue.source.locate(("sections", 0, "text")) == (5, 11)
    assert issue.slug == "test-issue"


def test_yaml_syntax_error_has_line_and_column(make_issue):
    folder = make_issue("subject: Un sujet\nlang: fr\nsections:\n  - type: text\n    text: [unclosed\n")
    (error,) = errors_of(folder)
    assert error.code == "yaml-syntax"
    assert error.file.endswith("issue.yaml")
    assert error.line == 6 and error.column == 1
    assert "YAML syntax" in error.message


def test_tab_indentation_is_a_syntax_error_on_its_line(make_issue):
    folder = make_issue("subject: Un sujet assez long\nlang: fr\nsections:\n\t- type: text\n")
    (error,) = errors_of(folder)
    assert error.code == "yaml-syntax" and error.line == 4


def test_unknown_section_type_lists_known_types_and_points_at_type(make_issue):
    folder = make_issue(VALID + "  - type: callot\n    text: Boîte\n")
    (error,) = errors_of(folder)
    assert error.code == "unknown-section-type"
    assert (error.line, error.column, error.path) == (6, 11, "sections[1].type")
    assert "did you mean 'callout'" in error.message
    for known in SECTION_TYPES:
        assert known in error.message


def test_wrong_type_points_at_the_value(make_issue):
    folder = make_issue(VALID + "  - type: spacer\n    height: beaucoup\n")
    (error,) = errors_of(folder)
    assert error.code == "schema"
    assert (error.line, error.path) == (7, "sections[1].height")
    assert "integer" in error.message and "beaucoup" in error.message


def test_missing_alt_on_a_nested_image(make_issue):
    folder = make_issue(VALID + "  - type: logos\n    logos:\n      - src: images/a.png\n        link: https://a.org\n")
    (error,) = errors_of(folder)
    assert error.code == "missing-alt"
    assert (error.line, error.path) == (8, "sections[1].logos[0].alt")


def test_missing_required_field_points_at_its_mapping(make_issue):
    folder = make_issue(VALID + "  - type: button\n    label: Lire\n")
    (error,) = errors_of(folder)
    assert error.code == "missing-field" and error.path == "sections[1].url"
    assert error.line == 6


def test_unknown_field_points_at_the_key_and_suggests(make_issue):
    folder = make_issue(VALID + "  - type: callout\n    titre: Accès\n    text: Voir\n")
    (error,) = errors_of(folder)
    assert error.code == "unknown-field"
    assert (error.line, error.column) == (7, 5)
    assert "did you mean 'title'" in error.message


def test_duplicate_key_is_an_error(make_issue):
    folder = make_issue(VALID + "subject: Encore\n")
    (error,) = errors_of(folder)
    assert error.code == "duplicate-key" and error.line == 6 and "line 1" in error.message


def test_every_error_is_reported_at_once(make_issue):
    folder = make_issue("subject: 12\nlang: de\nsections:\n  - type: nope\n  - type: image\n    src: a.png\n")
    codes = {(e.code, e.line) for e in errors_of(folder)}
    assert ("unknown-section-type", 4) in codes
    assert ("missing-alt", 5) in codes
    assert any(code == "schema" and line == 2 for code, line in codes)  # lang
    assert any(line == 1 for _, line in codes)  # subject must be a string


def test_not_a_mapping_and_empty_file(make_issue):
    for text in ("- just\n- a list\n", ""):
        (error,) = errors_of(make_issue(text))
        assert error.code == "schema" and error.line == 1


def test_missing_issue_file(tmp_path):
    (error,) = errors_of(tmp_path)
    assert error.code == "no-issue-file" and "newsletter new" in error.message


def test_non_utf8_file(make_issue):
    folder = make_issue(VALID)
    (folder / "issue.yaml").write_bytes("subject: Été\n".encode("cp1252"))
    (error,) = errors_of(folder)
    assert error.code == "encoding"


def test_every_section_class_is_in_the_sections_union():
    assert set(SECTION_TYPES.values()) == set(Section.__subclasses__())
    assert all(cls.model_fields["type"].annotation == Literal[tag] for tag, cls in SECTION_TYPES.items())


def test_the_languages_an_issue_may_use_are_the_catalog_s():
    assert tuple(CATALOG) == LANGUAGES


def test_format_path():
    assert format_path(("sections", 3, "button", "url")) == "sections[3].button.url"
    assert format_path(()) == ""


def test_unknown_field_in_a_nested_mapping_lists_that_mapping_s_fields(make_issue):
    folder = make_issue(
        VALID + "  - type: logos\n    logos:\n      - src: a.png\n        alt: A\n        lien: https://a.org\n"
    )
    (error,) = errors_of(folder)
    assert error.code == "unknown-field" and error.path == "sections[1].logos[0].lien"
    assert "did you mean 'link'" in error.message and "Allowed here: src, alt, link, width" in error.message
