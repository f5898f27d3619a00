"""Phone numbers: the link dials the number the author wrote (RFC 3966, with its extension), the card shows it as
written, and a number that does not parse gets no link and a warning at its line."""

from __future__ import annotations

import re

import pytest
from conftest import CONFIG, render_folder

from newsletter.checks import check_issue
from newsletter.config import load_config
from newsletter.errors import ConfigError
from newsletter.phones import split_extension, tel_uri


@pytest.mark.parametrize(
    "written",
    [
        "418 724-5154, poste 212",
        "418 724-5154 poste 212",
        "(418) 724-5154, poste 212",
        "418-724-5154 p. 212",
        "418 724-5154, p 212",
        "418.724.5154 ext. 212",
        "418 724-5154 ext 212",
        "418 724-5154 extension 212",
        "418 724-5154 x212",
        "418 724-5154 x 212",
        "418 724-5154 #212",
        "+1 418 724-5154, poste 212",
        "1 418 724-5154 Poste 212",
    ],
)
def test_every_common_way_of_writing_an_extension_dials_it(written):
    assert tel_uri(written, "CA") == "tel:+1-418-724-5154;ext=212"


@pytest.mark.parametrize(
    ("written", "uri"),
    [
        ("581-232-1735", "tel:+1-581-232-1735"),
        ("1 877 555-0123", "tel:+1-877-555-0123"),
        ("+33 1 42 68 53 00", "tel:+33-1-42-68-53-00"),  # its country code wins over the region
    ],
)
def test_numbers_without_extension(written, uri):
    assert tel_uri(written, "CA") == uri


def test_the_region_reads_a_number_without_country_code():
    assert tel_uri("01 42 68 53 00", "FR") == "tel:+33-1-42-68-53-00"
    assert tel_uri("01 42 68 53 00", "CA") is None


@pytest.mark.parametrize("written", ["4187245154212", "724-5154", "poste 212", "le secrétariat", "418 724-51"])
def test_what_is_not_a_valid_number_has_no_link(written):
    assert tel_uri(written, "CA") is None


def test_the_extension_is_split_off_only_after_a_number():
    assert split_extension("418 724-5154, poste 212") == ("418 724-5154", "212")
    assert split_extension("Poste 212") == ("Poste 212", None)
    assert split_extension("418 724-5154") == ("418 724-5154", None)


CONTACTS = """\
subject: Un sujet assez long
preheader: Un aperçu
lang: fr
sections:
  - type: contacts
    contacts:
      - name: Anne Charest
        phone: "418 724-5154, poste 212"
      - name: Luc Pelletier
        phone: "418 724-5154 p. 215"
      - name: Secrétariat
        phone: "724-5154"
"""


def test_a_contact_card_shows_the_number_as_written_and_dials_it_with_its_extension(make_issue):
    rendered = render_folder(make_issue(CONTACTS))
    links = dict((text, href) for href, text in re.findall(r'<a href="(tel:[^"]*)"[^>]*>([^<]*)</a>', rendered.html))
    assert links == {
        "418 724-5154, poste 212": "tel:+1-418-724-5154;ext=212",
        "418 724-5154 p. 215": "tel:+1-418-724-5154;ext=215",
    }
    assert "724-5154</p>" in rendered.html  # shown, without a link that would dial a wrong number
    assert "☎ 418 724-5154, poste 212\n" in rendered.text


def test_a_number_that_does_not_parse_is_a_warning_at_its_line(make_issue):
    folder = make_issue(CONTACTS)
    report = check_issue(folder, load_config(folder.parent.parent)).report
    assert report.ok
    (warning,) = [d for d in report.warnings if d.code == "bad-phone"]
    assert (warning.line, warning.path) == (12, "sections[0].contacts[2].phone")
    assert "'724-5154'" in warning.message and "CA" in warning.message


def test_phone_region_reads_the_workspace_numbers_and_is_validated(make_issue, tmp_path):
    folder = make_issue(CONTACTS.replace('724-5154"', '01 42 68 53 00"'), config='phone_region = "FR"\n' + CONFIG)
    config = load_config(folder.parent.parent)
    assert config.region == "FR"
    assert 'href="tel:+33-1-42-68-53-00"' in render_folder(folder).html
    (tmp_path / "newsletter.toml").write_text('phone_region = "QC"\n' + CONFIG, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"newsletter.toml:\d+: phone_region: .*'QC' is not a region"):
        load_config(tmp_path)
