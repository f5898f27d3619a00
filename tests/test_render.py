"""Rendering: placeholders, the text part, image URLs, template overrides, and errors that name the template."""

from __future__ import annotations

import re

import pytest
from conftest import EXAMPLE, FIXTURES, render_folder

from newsletter.errors import RenderError
from newsletter.render import (
    PACKAGE_TEMPLATES,
    RenderedIssue,
    lint_mjml,
    markdown_text,
    web_values,
)

SIMPLE = """\
subject: Un sujet assez long
preheader: Un aperçu
lang: fr
sections:
  - type: text
    text: Bonjour %%name|chère lectrice%%, voir [le site](https://example.org/?a=1&b=2).
  - type: image
    src: images/photo.png
    alt: Une photo
"""


def with_override(make_issue, name: str, text: str):
    """The SIMPLE issue in a workspace whose templates/ overrides the packaged template `name`."""
    folder = make_issue(SIMPLE, images=("images/photo.png",))
    override = folder.parent.parent / "templates" / name
    override.parent.mkdir(parents=True)
    override.write_text(text, encoding="utf-8")
    return folder


def test_placeholders_survive_mjml_and_inlining_then_fill_per_recipient(make_issue):
    rendered = render_folder(make_issue(SIMPLE, images=("images/photo.png",)))
    for name in ("unsubscribe_url", "view_online_url"):
        assert f'href="%%{name}%%"' in rendered.html
        assert f"%%{name}%%" in rendered.text
    html, text = rendered.fill(
        {
            "unsubscribe_url": "https://x.example/u/tok?a=1&b=2",
            "view_online_url": "https://x.example/v",
            "name": "Zoé",
        }
    )
    assert 'href="https://x.example/u/tok?a=1&amp;b=2"' in html  # escaped in HTML
    assert "Se désabonner : https://x.example/u/tok?a=1&b=2" in text  # verbatim in text
    assert "Bonjour Zoé," in html and "Bonjour Zoé," in text
    assert "%%" not in html and "%%" not in text


def test_placeholder_fallback_and_html_escaping_of_values(make_issue):
    rendered = render_folder(make_issue(SIMPLE, images=("images/photo.png",)))
    html, text = rendered.fill({})
    assert "Bonjour chère lectrice," in html and "Bonjour chère lectrice," in text
    html, _ = rendered.fill({"name": "<script>x</script>"})
    assert "<script>x" not in html and "&lt;script&gt;x" in html


def test_fill_is_substitution_not_rendering():
    rendered = RenderedIssue(
        "s", "fr", "subject", "<mjml/>", "<a href=%%unsubscribe_url%%>%%name|x%%</a>", "%%name%%", {}
    )
    assert rendered.fill({"unsubscribe_url": "U", "name": "N"}) == ("<a href=U>N</a>", "N")


def test_html_has_lang_doctype_and_keeps_media_queries(make_issue):
    html = render_folder(make_issue(SIMPLE, images=("images/photo.png",))).html
    assert html.startswith("<!DOCTYPE html>")
    assert '<html lang="fr"' in html
    assert "@media only screen and (min-width:480px)" in html  # kept by css-inline's keep_style_tags
    assert "<link" not in html or "fonts.googleapis" not in html
    assert "EventSource" not in html and "__version" not in html  # no preview script in an email


def test_css_is_inlined_on_markdown_elements(make_issue):
    html = render_folder(make_issue(SIMPLE, images=("images/photo.png",))).html
    assert re.search(r'<p style="[^"]*margin: 0px 0px 16px 0px', html)
    assert re.search(r'<a href="https://example.org/\?a=1&amp;b=2" style="[^"]*color: #00677f', html)


def test_image_urls_are_relative_by_default_and_absolute_with_asset_base_url(make_issue):
    folder = make_issue(SIMPLE, images=("images/photo.png",))
    assert 'src="images/photo.png"' in render_folder(folder).html
    rendered = render_folder(folder, asset_base_url="https://cdn.example.org/news")
    assert 'src="https://cdn.example.org/news/test-issue/images/photo.png"' in rendered.html
    assert rendered.images == {"photo.png": folder / "images/photo.png"}


def test_image_width_comes_from_the_file_when_not_given(make_issue):
    html = render_folder(make_issue(SIMPLE, images=("images/photo.png",))).html
    assert re.search(r'<img [^>]*src="images/photo.png"[^>]*width="1"', html)


def test_workspace_template_overrides_the_packaged_one(make_issue):
    folder = with_override(make_issue, "sections/text.txt.j2", "TEXTE: {{ section.text|markdown_text }}\n")
    rendered = render_folder(folder)
    assert "TEXTE: Bonjour %%name|chère lectrice%%" in rendered.text


def test_unknown_mjml_tag_in_an_override_names_the_template(make_issue):
    folder = with_override(
        make_issue,
        "sections/text.mjml.j2",
        "<mj-section><mj-column><mj-carousel></mj-carousel></mj-column></mj-section>\n",
    )
    with pytest.raises(RenderError, match=r"templates/sections/text\.mjml\.j2: line 1 .*<mj-carousel>"):
        render_folder(folder)


def test_template_syntax_error_names_file_and_line(make_issue):
    folder = with_override(make_issue, "footer.mjml.j2", "<mj-section>\n{% if %}\n</mj-section>\n")
    with pytest.raises(RenderError, match=r"footer\.mjml\.j2:2: template syntax"):
        render_folder(folder)


def test_mrml_error_is_reported_with_the_template(make_issue):
    folder = with_override(
        make_issue,
        "sections/text.mjml.j2",
        "<mj-section>\n  <mj-column>\n    <mj-text>unclosed\n  </mj-column>\n</mj-section>\n",
    )
    with pytest.raises(RenderError, match=r"templates/sections/text\.mjml\.j2: MJML: unexpected end of stream"):
        render_folder(folder)


def test_a_footer_without_unsubscribe_link_is_refused(make_issue):
    folder = with_override(
        make_issue, "footer.mjml.j2", "<mj-section><mj-column><mj-text>bye</mj-text></mj-column></mj-section>\n"
    )
    with pytest.raises(RenderError, match=r"footer\.mjml\.j2: the footer must contain %%unsubscribe_url%%"):
        render_folder(folder)


@pytest.mark.parametrize(
    ("fragment", "message"),
    [
        ('<mj-text padding="0 25px">x</mj-text>', "unit"),
        ('<mj-text color="#fff">x</mj-text>', "6-digit"),
        ('<mj-image alt="two\nlines" />', "line break"),
        ("<mj-foo></mj-foo>", "not an MJML tag"),
    ],
)
def test_lint_refuses_what_mrml_renders_wrongly(fragment, message):
    with pytest.raises(RenderError, match=message):
        lint_mjml(fragment, "t.mjml.j2")


def test_every_packaged_section_template_has_both_parts():
    from newsletter.issue import SECTION_TYPES

    for section_type in SECTION_TYPES:
        for part in ("mjml", "txt"):
            assert (PACKAGE_TEMPLATES / "sections" / f"{section_type}.{part}.j2").is_file()


def test_every_section_fixture_renders_each_type():
    rendered = render_folder(FIXTURES / "every-section")
    text = rendered.text
    assert "1. first\n2. second, with another link (https://example.org/b)" in text
    assert "- a bullet\n  - nested bullet" in text
    assert "> a quotation" in text
    assert "Left-aligned button: https://example.org/left" in text
    assert "HEADING LEVEL ONE" not in text and "Heading level one\n=================" in text
    assert "The caption under it, with a link (https://example.org/caption) and\nemphasis." in text
    assert "When: Wednesday, April\u00a030, 2025, 9:30\u00a0a.m. to Thursday, May\u00a01, 2025,\n4:00\u00a0p.m." in text
    assert list(rendered.calendars) == ["event-12.ics"] and "Add to calendar: event-12.ics" in text
    assert max(len(line) for line in text.splitlines() if "://" not in line) <= 76


def test_markdown_text_links_and_mailto():
    assert markdown_text("[site](https://a.org)") == "site (https://a.org)"
    assert markdown_text("<https://a.org>") == "https://a.org"
    assert markdown_text("[a@b.org](mailto:a@b.org)") == "a@b.org"
    assert markdown_text("[écrire](mailto:a@b.org)") == "écrire (a@b.org)"
    assert markdown_text("<b>raw</b>") == "<b>raw</b>"  # raw HTML is text, never markup


def test_an_image_caption_is_markdown_in_both_parts_and_its_link_is_checked(make_issue):
    from newsletter.checks import check_issue
    from newsletter.config import load_config

    caption = SIMPLE + "    caption: Photo de *Marie* ; voir [l'album](https://example.org/album) et [ici](/x).\n"
    folder = make_issue(caption, images=("images/photo.png",))
    rendered = render_folder(folder)
    assert "<em>Marie</em>" in rendered.html
    assert re.search(
        r'<a href="https://example.org/album" style="[^"]*color: #00677f[^"]*">l\'album</a>', rendered.html
    )
    assert "Photo de Marie ; voir l'album (https://example.org/album) et ici (/x)." in rendered.text
    report = check_issue(folder, load_config(folder.parent.parent)).report
    assert [(d.code, d.path) for d in report.errors] == [("relative-url", "sections[1].caption")]


YEARS = """\
subject: Les priorités régionales
preheader: Les priorités 2023-2026
lang: fr
sections:
  - type: heading
    text: Priorités 2023-2026
  - type: text
    text: Le plan 2024–2029 remplace celui de 2017-2023 ([le bilan 2017-2023](https://example.org/bilan-2017-2023)).
  - type: image
    src: images/photo.png
    alt: Affiche 2023-2026
    caption: Le forum de 2023-2026
"""
NOWRAP = '<span style="white-space:nowrap">{}</span>'


def test_a_year_range_never_breaks_at_its_dash_in_the_final_html(make_issue):
    rendered = render_folder(make_issue(YEARS, images=("images/photo.png",)))
    page = rendered.html
    for years in ("2023-2026", "2024–2029", "2017-2023"):
        assert NOWRAP.format(years) in page, years
    assert page.count(NOWRAP.format("2023-2026")) == 2  # the heading and the caption, not the alt nor the preheader
    assert 'href="https://example.org/bilan-2017-2023"' in page and 'alt="Affiche 2023-2026"' in page
    assert "<title>Les priorités régionales</title>" in page
    assert "white-space:nowrap" not in rendered.mjml  # made on the final HTML, after MJML and the CSS inliner
    assert "<span" not in rendered.text


def test_the_text_part_never_breaks_at_a_hyphen():
    from newsletter.render import wrap_text

    wrapped = wrap_text("Les priorités régionales 2017-2023 et les priorités nationales 2024-2029", width=30)
    assert wrapped.splitlines() == ["Les priorités régionales", "2017-2023 et les priorités", "nationales 2024-2029"]
    assert markdown_text("un mot-composé " * 6 + "2023-2026", width=20).splitlines()[-1].endswith("2023-2026")


def test_web_values_are_neutral(example_workspace):
    from newsletter.config import load_config

    values = web_values(load_config(example_workspace), "slug", "fr")
    assert values["unsubscribe_url"] == "mailto:alliancesolidarite@crdbsl.org?subject=D%C3%A9sabonnement"
    assert values["view_online_url"] == "https://bulletin.crdbsl.org/archive/slug/"
    assert values["name"] == ""


def test_rendering_is_deterministic():
    first = render_folder(EXAMPLE)
    assert render_folder(EXAMPLE) == first


def test_an_override_added_after_a_render_is_used_by_the_next_render(make_issue):
    folder = make_issue(SIMPLE, images=("images/photo.png",))
    assert "%%unsubscribe_url%%" in render_folder(folder).text  # the packaged footer, compiled and cached
    override = folder.parent.parent / "templates" / "footer.txt.j2"
    override.parent.mkdir(parents=True)
    override.write_text("Pied : %%unsubscribe_url%% %%view_online_url%%\n")
    assert "Pied : %%unsubscribe_url%%" in render_folder(folder).text
    override.unlink()
    assert "Pied :" not in render_folder(folder).text


def test_fallback_is_not_escaped_twice(make_issue):
    folder = make_issue(SIMPLE.replace("chère lectrice", "Lise & Léo"), images=("images/photo.png",))
    html, text = render_folder(folder).fill({})
    assert "Bonjour Lise &amp; Léo," in html and "Bonjour Lise & Léo," in text


@pytest.mark.parametrize(("kind", "options"), [("PNG", {}), ("GIF", {}), ("JPEG", {}), ("JPEG", {"progressive": True})])
def test_image_size_reads_the_header(tmp_path, kind, options):
    from PIL import Image as PillowImage

    from newsletter.render import image_size

    path = tmp_path / "picture"
    PillowImage.new("RGB", (123, 45), (200, 10, 10)).save(path, kind, **options)
    assert image_size(path) == (123, 45)
    path.write_text("not an image")
    assert image_size(path) is None
