"""Issue → MJML → email HTML with inlined CSS, and Issue → plain text, from the same sections.

MJML runs once per issue, never per recipient. Per-recipient values (the unsubscribe and view-online URLs, the
subscriber's name and address) are written as `%%name%%` placeholders (`%%name|fallback%%` gives a default),
which pass through MJML and CSS inlining untouched: `%%` cannot occur in a valid URL or in the HTML that the
templates write. Sending fills them by plain substitution with RenderedIssue.fill(), without rendering again.
The author's `{{ prenom | default("…") }}` (a subscriber's field) is rendered as `%%field-prenom|HEX%%`, in a
namespace of its own (newsletter/field_placeholders.py).

Templates: `email.mjml.j2` and `email.txt.j2` lay out the email; `sections/<type>.mjml.j2` and
`sections/<type>.txt.j2` render one section type each; `footer.*.j2` is the footer. A file of the same name in
the workspace's templates/ folder overrides the packaged one.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import struct
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import css_inline
import jinja2
import mjml
from markdown_it import MarkdownIt
from markupsafe import Markup

from newsletter.config import Config
from newsletter.errors import RenderError
from newsletter.events import calendar_domain, calendar_name, event_calendar
from newsletter.field_placeholders import (
    field_part,
    is_field_name,
    mangled_placeholders,
    personalised,
    restore,
    shown_length,
    stand_ins,
    with_defaults,
)
from newsletter.i18n import format_date, format_day, format_event_when, translate
from newsletter.issue import Event, Image, LoadedIssue
from newsletter.phones import tel_uri

PACKAGE_TEMPLATES = Path(__file__).parent / "templates"
PLACEHOLDERS = ("name", "email", "unsubscribe_url", "view_online_url")
# The link to the issue's other version, at the top of each version of a bilingual issue: the layout's, not the
# author's. Filled like view_online_url; rendered with the other version's published URL as its fallback
# (%%other_version_url|https://…/archive/SLUG/en/%%) when newsletter.toml gives one.
OTHER_VERSION_URL = "other_version_url"
# %%name%%, %%name|fallback%%; a field's %%field-prenom|HEX%% (FIELD-PRENOM when a template wrote it in capitals).
PLACEHOLDER = re.compile(r"%%((?:field|FIELD)-[A-Za-z0-9_]+|[a-z_][a-z0-9_]*)(?:\|([^%\n]*))?%%")
TEXT_WIDTH = 76
CONTENT_WIDTH = 600  # px, the email's body width

# MJML tags that MRML renders like the reference MJML (REFERENCE-RENDERING.md): no mj-carousel (its arrows show
# everywhere), no mj-html-attributes (MRML fails), no mj-include (no loader is given).
ALLOWED_MJML_TAGS = frozenset(
    """mjml mj-head mj-body mj-attributes mj-all mj-class mj-style mj-title mj-preview mj-breakpoint mj-font
    mj-section mj-column mj-group mj-wrapper mj-hero mj-text mj-image mj-button mj-divider mj-spacer mj-table
    mj-raw mj-social mj-social-element mj-navbar mj-navbar-link mj-accordion mj-accordion-element
    mj-accordion-title mj-accordion-text""".split()
)
_MJML_TAG = re.compile(r"<\s*/?\s*(mj[a-z-]*)\b([^>]*)>")
_ATTRIBUTE = re.compile(r'([a-z-]+)\s*=\s*"([^"]*)"')
_SHORT_HEX = re.compile(r"#[0-9a-fA-F]{3}\b(?![0-9a-fA-F])")
_UNITLESS_LENGTH = re.compile(r"(?:^|\s)\d+(?:\.\d+)?(?=\s|$)")

# JPEG start-of-frame markers, which carry the image size (C4, C8 and CC are other segments).
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}

_markdown = MarkdownIt("commonmark", {"html": False, "typographer": False}).enable("strikethrough")
# Created once: its defaults delete the <style> that holds MJML's media queries and fetch remote stylesheets.
_inliner = css_inline.CSSInliner(keep_style_tags=True, keep_link_tags=True, load_remote_stylesheets=False)


class Verbatim(str):
    """A placeholder's value written as it stands in both parts, never HTML-escaped: a provider's own unsubscribe
    placeholder ({{{ pm:unsubscribe }}}, <%asm_group_unsubscribe_raw_url%>), which the provider replaces."""

    __slots__ = ()


def escape_value(value: str) -> str:
    """A placeholder's value as the HTML part carries it."""
    return value if isinstance(value, Verbatim) else html.escape(value)


@dataclass(frozen=True)
class RenderedIssue:
    """One issue, rendered once: the MJML, the email HTML and the text part, with %%placeholders%% left in."""

    slug: str
    lang: str
    subject: str
    mjml: str
    html: str
    text: str
    images: dict[str, Path]  # file name under build/<slug>/images/ -> the file in the issue folder
    calendars: dict[str, str] = field(default_factory=dict)  # event-3.ics -> its text, published beside the page
    # Which version of the issue it is: where its web version lives in the issue's ("", or "en/" for issue.en.yaml),
    # and the other version's (language, path), whose web version the top links to (%%other_version_url%%).
    path: str = ""
    other_version: tuple[str, str] | None = None
    html_parts: list = field(init=False, repr=False, compare=False)  # split_placeholders(html)
    text_parts: list = field(init=False, repr=False, compare=False)
    field_names: frozenset[str] = field(init=False, repr=False, compare=False)  # its fields' placeholders

    def __post_init__(self) -> None:
        object.__setattr__(self, "html_parts", split_placeholders(self.html, html.escape))
        object.__setattr__(self, "text_parts", split_placeholders(self.text))
        names = {part[0] for part in (*self.html_parts, *self.text_parts) if isinstance(part, tuple)}
        object.__setattr__(self, "field_names", frozenset(name for name in names if is_field_name(name)))

    def fill(self, values: Mapping[str, str]) -> tuple[str, str]:
        """Return (html, text) with each placeholder replaced by its value (HTML-escaped in the HTML part).

        A placeholder without a value takes its fallback (%%name|fallback%%), else the empty string.
        """
        return (
            _join_placeholders(self.html_parts, values, escape_value),
            _join_placeholders(self.text_parts, values, str),
        )


def split_placeholders(template: str, escape: Callable[[str], str] = str) -> list[str | tuple[str, str]]:
    """The template as literal strings alternating with (name, fallback) placeholders, literal first and last.

    A fallback is template text, as it stands; a field's default (field_placeholders.field_part) is the author's
    text, given escape (html.escape for the HTML part)."""
    parts: list = []
    position = 0
    for match in PLACEHOLDER.finditer(template):
        parts.append(template[position : match.start()])
        name, fallback = match.group(1), match.group(2) or ""
        parts.append(field_part(name, fallback, escape) or (name, fallback))
        position = match.end()
    parts.append(template[position:])
    return parts


def _join_placeholders(
    parts: list[str | tuple[str, str]], values: Mapping[str, str], escape: Callable[[str], str]
) -> str:
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        else:
            name, fallback = part
            value = values.get(name)
            out.append(escape(value) if value else fallback)  # the fallback is template text, already escaped
    return "".join(out)


def web_values(
    config: Config, slug: str, lang: str, *, path: str = "", other_path: str | None = None
) -> dict[str, str]:
    """Neutral values for the web version of an issue (build output, preview, archive): nobody's personal links.

    View online is where the archive publishes the issue: archive_url's static copy, else serve's /archive/, else
    the page itself (a build opened from disk). path: the version's place in the issue's web folder ("", "en/");
    other_path: the other version's, whose page %%other_version_url%% links to (relatively from disk)."""
    unsubscribe = ""
    if config.publisher.email:
        unsubscribe = f"mailto:{config.publisher.email}?subject={quote(translate(lang, 'unsubscribe_subject'))}"
    elif config.publisher.website:
        unsubscribe = config.publisher.website
    view_online = published_url(config, slug, path) or "index.html"
    values = {"unsubscribe_url": unsubscribe, "view_online_url": view_online, "name": "", "email": ""}
    if other_path is not None:
        up = "../" * path.count("/")
        values[OTHER_VERSION_URL] = published_url(config, slug, other_path) or f"{up}{other_path}index.html"
    return values


def version_web_values(config: Config, rendered: RenderedIssue) -> dict[str, str]:
    """web_values for this version of the issue: its own page, and the other version's."""
    other_path = rendered.other_version[1] if rendered.other_version else None
    return web_values(config, rendered.slug, rendered.lang, path=rendered.path, other_path=other_path)


def published_url(config: Config, slug: str, name: str = "") -> str | None:
    """Where the archive publishes a file of the issue's web version (its page, an event's .ics): under archive_url,
    else under serve's /archive/; None when neither is known (a build opened from disk links it relatively)."""
    if config.archive_url:
        return f"{config.archive_url}/{slug}/{name}"
    if config.base_url:
        return f"{config.base_url}/archive/{slug}/{name}"
    return None


def image_size(path: Path) -> tuple[int, int] | None:
    """Return (width, height) of a PNG, GIF or JPEG file from its header, or None when it is none of those."""
    try:
        with path.open("rb") as stream:
            head = stream.read(26)
            if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
                return struct.unpack(">II", head[16:24])
            if head[:6] in (b"GIF87a", b"GIF89a"):
                return struct.unpack("<HH", head[6:10])
            if head.startswith(b"\xff\xd8"):
                stream.seek(2)
                while True:
                    marker = stream.read(2)
                    if len(marker) < 2 or marker[0] != 0xFF:
                        return None
                    length = struct.unpack(">H", stream.read(2))[0]
                    if marker[1] in _JPEG_FRAME_MARKERS:
                        height, width = struct.unpack(">xHH", stream.read(5))
                        return width, height
                    stream.seek(length - 2, 1)
    except (OSError, struct.error):
        return None
    return None


def is_remote(src: str) -> bool:
    return src.startswith(("https://", "http://"))


def image_file(folder: Path, src: str) -> Path | None:
    """The file an image's src names, or None unless it lies inside the issue's folder: an absolute path, a `..`
    or a symlink that leads out names nothing (check reports it), so no build, send or archive ever reads it."""
    path = PurePosixPath(src)
    if path.is_absolute() or ".." in path.parts or "\\" in src or src.startswith("~"):
        return None
    file = (folder / src).resolve()
    return file if file.is_relative_to(folder.resolve()) else None


def image_output_name(src: str) -> str:
    """The file's name under build/<slug>/images/: its path in the issue folder, less a leading images/."""
    parts = PurePosixPath(src).parts
    return "/".join(parts[1:] if parts and parts[0] == "images" else parts)


class _Renderer:
    """Holds what one render of one issue needs: the template environment, config, and the images it used."""

    def __init__(self, issue: LoadedIssue, config: Config, templates_dir: Path | None, asset_base_url: str | None):
        self.issue = issue
        self.model = personalised(issue.model)  # what the templates render: {{ fields }} as %%placeholders%%
        self.config = config
        self.lang = issue.model.lang
        self.path = issue.web_path  # "" or "en/": relative links from its page climb out of it
        self.asset_base_url = asset_base_url
        self.images: dict[str, Path] = {}
        self.calendars: dict[str, str] = {}
        self.env = template_environment(templates_dir, template_files(templates_dir))
        other_lang, other_path = issue.other_lang, issue.other_web_path
        self.other_version = (other_lang, other_path) if other_lang is not None and other_path is not None else None
        self.other_link = self._other_link()

    def image_url(self, image: Image | str) -> str:
        src = image if isinstance(image, str) else image.src
        if is_remote(src):
            return src
        name = image_output_name(src)
        file = image_file(self.issue.folder, src)
        if file is None:
            return ""  # nothing outside the issue's folder is ever linked or copied
        self.images[name] = file
        if self.asset_base_url:
            return f"{self.asset_base_url}/{self.issue.slug}/images/{name}"
        return "../" * self.path.count("/") + f"images/{name}"  # the versions share the issue's images/

    def image_width(self, image: Image, max_width: int = CONTENT_WIDTH) -> int:
        """The display width: the author's, else the file's own, never wider than max_width."""
        width = image.width
        if width is None and not is_remote(image.src):
            size = image_size(self.issue.folder / image.src)
            width = size[0] if size else None
        return min(width or max_width, max_width)

    def calendar_url(self, event: Event, index: int) -> str:
        """The link to the event's .ics, made here once: absolute where the archive publishes it, else relative."""
        name = calendar_name(index)
        model, config = self.issue.model, self.config
        event = with_defaults(event)  # published once, for everyone: the fields' defaults
        # A translation's own: its sections' indexes need not be the main file's.
        version = f"{self.lang}-" if self.issue.is_translation else ""
        if name not in self.calendars:
            self.calendars[name] = event_calendar(
                event,
                lang=self.lang,
                zone=config.zone,
                uid=f"{self.issue.slug}-{version}{name.removesuffix('.ics')}@"
                f"{calendar_domain(config, model.from_ or config.sender.from_)}",
                stamp=dt.datetime.fromtimestamp(int(self.issue.file.stat().st_mtime), dt.UTC),  # when it changed
                description=markdown_text(event.text, width=10_000) if event.text else None,  # no wrapping there
                url=published_url(config, self.issue.slug, self.path) or event.registration,
            )
        return published_url(config, self.issue.slug, self.path + name) or name

    def context(self) -> dict:
        model = self.model
        return {
            "renderer": self,
            "issue": model,
            "lang": self.lang,
            "brand": self.config.brand,
            "publisher": self.config.publisher,
            "config": self.config,
            "reason": self.config.footer_reason(self.lang)
            or translate(self.lang, "reason", publisher=self.config.publisher.name or self.config.name),
            "content_width": CONTENT_WIDTH,
            "other_version": self.other_link,
        }

    def _other_link(self) -> dict[str, str] | None:
        """The link to the other version at the top, in the other version's language: its lang, its label ("Read
        in English"), its placeholder (HTML-escaped by the MJML template) and its line in the text part."""
        if self.other_version is None:
            return None
        other_lang, other_path = self.other_version
        url = published_url(self.config, self.issue.slug, other_path) or ""
        # A fallback cannot hold % (nor a line break): such a URL is left to whoever fills the placeholder.
        placeholder = f"%%{OTHER_VERSION_URL}|{url}%%" if url and "%" not in url else f"%%{OTHER_VERSION_URL}%%"
        label = translate(other_lang, "other_version")
        return {
            "lang": other_lang,
            "label": label,
            "url": placeholder,
            "text": translate(other_lang, "label_url", label=label, url=placeholder),
        }

    def render_template(self, name: str, **values: object) -> str:
        try:
            template = self.env.get_template(name)
            return template.render(**self.context(), **values)
        except jinja2.TemplateSyntaxError as exc:
            raise RenderError(f"{exc.filename or name}:{exc.lineno}: template syntax: {exc.message}") from None
        except jinja2.TemplateNotFound as exc:
            raise RenderError(f"template {exc.name} not found in templates/ or the package") from None
        except (jinja2.UndefinedError, TypeError, ValueError, AttributeError) as exc:
            raise RenderError(f"template {name}: {exc}") from None

    def render(self) -> RenderedIssue:
        model = self.model
        fragments: list[tuple[str, str]] = []
        texts: list[str] = []
        for index, section in enumerate(model.sections):
            name = f"sections/{section.type}.mjml.j2"
            fragments.append((name, self.render_template(name, section=section, index=index)))
            texts.append(self.render_template(f"sections/{section.type}.txt.j2", section=section, index=index))
        footer = self.render_template("footer.mjml.j2")
        fragments.append(("footer.mjml.j2", footer))
        source = self.render_template(
            "email.mjml.j2", sections=[Markup(f) for _, f in fragments[:-1]], footer=Markup(footer)
        )

        def where(offset: int) -> str:
            """The template that wrote the character at offset of the composed MJML, and its line there."""
            for name, fragment in fragments:
                start = source.find(fragment)
                if 0 <= start <= offset <= start + len(fragment):
                    return (
                        f"{self.template_origin(name)}: line {source.count(chr(10), start, offset) + 1} of its output"
                    )
            return f"{self.template_origin('email.mjml.j2')}: line {source.count(chr(10), 0, offset) + 1}"

        def culprit(message: str) -> str:
            """The first template whose output MRML refuses on its own (MRML often gives no position)."""
            for name, fragment in fragments:
                try:
                    mjml.mjml2html(f"<mjml><mj-body>{fragment}</mj-body></mjml>", fonts={})
                except ValueError:
                    return self.template_origin(name)
            return self.template_origin("email.mjml.j2")

        lint_mjml(source, where)
        email_html = keep_year_ranges_together(inline_css(compile_mjml(source, where, culprit), self.issue.slug))
        text = self.render_template("email.txt.j2", sections=texts, footer=self.render_template("footer.txt.j2"))
        for part, content in (("email.mjml.j2", email_html), ("email.txt.j2", text)):
            if mangled_placeholders(content):
                raise RenderError(
                    f"{self.template_origin(part)}: a template changed the placeholder of a field ({{{{ … }}}} in the "
                    "issue's text), with a filter such as truncate or replace; write the text as given"
                )
        for required in ("unsubscribe_url", "view_online_url"):
            for part, content in (("footer.mjml.j2", email_html), ("footer.txt.j2", text)):
                if f"%%{required}%%" not in content:
                    raise RenderError(
                        f"{self.template_origin(part)}: the footer must contain %%{required}%% "
                        "(every email needs a working unsubscribe link and a web version)"
                    )
        return RenderedIssue(
            slug=self.issue.slug,
            lang=self.lang,
            subject=model.subject,
            mjml=source,
            html=email_html,
            text=tidy_text(text),
            images=dict(self.images),
            calendars=dict(self.calendars),
            path=self.path,
            other_version=self.other_version,
        )

    def template_origin(self, name: str) -> str:
        """The file a template name resolves to: the workspace's override or the package's."""
        try:
            return self.env.get_template(name).filename or name
        except jinja2.TemplateError:
            return name


def template_files(templates_dir: Path | None) -> tuple:
    """Every template file with its modification time, workspace's and package's: a key for the cache below."""
    folders = [f for f in (templates_dir, PACKAGE_TEMPLATES) if f is not None and f.is_dir()]
    return tuple((str(path), path.stat().st_mtime_ns) for folder in folders for path in sorted(folder.rglob("*.j2")))


@lru_cache(maxsize=8)
def template_environment(templates_dir: Path | None, files: tuple = ()) -> jinja2.Environment:
    """Jinja2 with autoescape for MJML (not for text), StrictUndefined, and workspace overrides first.

    Kept while `files` (template_files) stays the same, so that templates compile once per process; a template
    added, removed or changed (as while previewing) gives a new environment. Jinja's own auto_reload would miss
    an override added beside a packaged template already loaded.
    """
    loaders: list[jinja2.BaseLoader] = []
    if templates_dir is not None:
        loaders.append(jinja2.FileSystemLoader(templates_dir))
    loaders.append(jinja2.FileSystemLoader(PACKAGE_TEMPLATES))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("mjml.j2", "html"), disabled_extensions=("txt.j2",), default=True
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=False,
    )
    env.filters.update(
        # A title's underline in the text part (`"-" * (title|length)`) as long as the title a reader sees: a
        # field's placeholder counts as wide as its value. Anything but a string with one is Jinja's length.
        length=lambda value: shown_length(value) if isinstance(value, str) else len(value),
        oneline=oneline,
        markdown=markdown_html,
        markdown_text=markdown_text,
        wrap=wrap_text,
        # The RFC 3966 link that dials a phone number, "" when it is none (checks warn): never a wrong number.
        tel=jinja2.pass_context(lambda ctx, phone: tel_uri(phone, ctx["config"].region) or ""),
        # These need the render in progress (its language, its images), which the context carries.
        image_url=jinja2.pass_context(lambda ctx, image: ctx["renderer"].image_url(image)),
        image_width=jinja2.pass_context(
            lambda ctx, image, max_width=CONTENT_WIDTH: ctx["renderer"].image_width(image, max_width)
        ),
        date=jinja2.pass_context(lambda ctx, value, style="day": format_date(value, ctx["lang"], style)),
        label_url=jinja2.pass_context(
            lambda ctx, label, url: translate(ctx["lang"], "label_url", label=label, url=url)
        ),
    )
    # The event section: when it is (format_event_when), a day ('5 février 2025'), its .ics link (made then).
    env.filters.update(
        when=_event_when,
        day=jinja2.pass_context(lambda ctx, value: format_day(value, ctx["lang"])),
        calendar_url=jinja2.pass_context(lambda ctx, event, index: ctx["renderer"].calendar_url(event, index)),
    )
    env.globals["t"] = jinja2.pass_context(lambda ctx, key, **values: translate(ctx["lang"], key, **values))
    return env


@jinja2.pass_context
def _event_when(ctx: jinja2.runtime.Context, event: Event) -> str:
    """The filter `when`: when the event takes place, as a sentence in the issue's language."""
    start, end = event.period()
    return format_event_when(start, end, ctx["lang"])


def render_issue(
    issue: LoadedIssue,
    config: Config,
    templates_dir: Path | None = None,
    *,
    asset_base_url: str | None = None,
) -> RenderedIssue:
    """Render an issue to MJML, inlined email HTML and plain text. Raise RenderError naming the template."""
    return _Renderer(issue, config, templates_dir, asset_base_url).render()


def oneline(value: object) -> str:
    """Collapse all whitespace to single spaces: MRML writes a newline in an attribute as a literal \\n."""
    return " ".join(str(value).split())


@lru_cache(maxsize=512)
def markdown_tokens(text: str) -> tuple:
    """The parsed Markdown, shared by the HTML part, the text part and the checks (read-only)."""
    return tuple(_markdown.parse(text))


def markdown_html(text: str) -> Markup:
    """Markdown to HTML (raw HTML in the source is escaped, not rendered)."""
    return Markup(_markdown.renderer.render(list(markdown_tokens(text)), _markdown.options, {}).strip())


# A year range (2023-2026, 2023–2026) from the author or the tool: never broken at its dash. A span with
# white-space:nowrap rather than U+2011: the text stays what was written (found by search, copied as typed, read
# aloud as a range), and needs no glyph the reader's font may lack. Only in the text of the body: never in an
# attribute, a comment (Outlook's conditional ones), the <title>, a <style> or the preheader, which shows no lines.
_YEAR_RANGE = re.compile(r"(?<![\w\u2010-\u2014-])\d{4}[-\u2013]\d{4}(?![\w\u2010-\u2014-])")
_MARKUP = re.compile(r"<!--.*?-->|<(?:[^>\"']|\"[^\"]*\"|'[^']*')*>", re.DOTALL)
_NO_LINES = re.compile(r"<(style|script|title|textarea)\b|<div class=\"nl-preheader\"", re.IGNORECASE)


def keep_year_ranges_together(page: str) -> str:
    """Wrap each year range in the text of the page's body in <span style="white-space:nowrap">."""
    body = page.find("<body")
    if body < 0 or not _YEAR_RANGE.search(page, body):
        return page
    out = [page[:body]]
    position, skip_until = body, None
    for markup in _MARKUP.finditer(page, body):
        text = page[position : markup.start()]
        out.append(text if skip_until else _YEAR_RANGE.sub(r'<span style="white-space:nowrap">\g<0></span>', text))
        tag = markup.group(0)
        if skip_until is None and (opening := _NO_LINES.match(tag)):
            skip_until = f"</{opening.group(1).lower()}" if opening.group(1) else "</div"
        elif skip_until and tag.lower().startswith(skip_until):
            skip_until = None
        out.append(tag)
        position = markup.end()
    out.append(page[position:])
    return "".join(out)


def lint_mjml(source: str, where: Callable[[int], str] | str) -> None:
    """Refuse MJML that MRML would render wrongly or silently: unknown tags, multi-line attributes, #abc colours.

    MRML validates nothing: an unknown tag is copied into the HTML as-is and a newline in an attribute becomes a
    literal backslash-n that breaks the style (REFERENCE-RENDERING.md). `where` names the template that wrote an
    offset of source.
    """
    locate = where if callable(where) else (lambda offset: f"{where}: line {source.count(chr(10), 0, offset) + 1}")
    for match in _MJML_TAG.finditer(source):
        tag, attributes = match.group(1), match.group(2)
        if tag not in ALLOWED_MJML_TAGS:
            raise RenderError(
                f"{locate(match.start())}: <{tag}> is not an MJML tag this tool renders "
                f"(allowed: {', '.join(sorted(ALLOWED_MJML_TAGS))})"
            )
        for name, value in _ATTRIBUTE.findall(attributes):
            problem = None
            if any(ch in value for ch in "\n\t\\"):
                problem = "contains a line break, tab or backslash, which MRML mangles; use the |oneline filter"
            elif _SHORT_HEX.search(value):
                problem = "has a 3-digit colour; write colours as 6-digit hex"
            elif "padding" in name and _UNITLESS_LENGTH.search(value):
                problem = "has a length without unit; give every length one (0px)"
            if problem:
                raise RenderError(f'{locate(match.start())}: <{tag} {name}="{oneline(value)}"> {problem}')


_POSITION = re.compile(r"at position (\d+):(\d+)")


def compile_mjml(source: str, where: Callable[[int], str], culprit: Callable[[str], str]) -> str:
    """Run MRML; turn its ValueError (a byte offset at best) into a message naming the template and line.

    `where` names the template behind an offset; `culprit` finds it when MRML gives none.
    """
    try:
        return mjml.mjml2html(source, fonts={})
    except ValueError as exc:
        message = str(exc)
        if position := _POSITION.search(message):
            offset = len(source.encode("utf-8")[: int(position.group(1))].decode("utf-8", errors="ignore"))
            raise RenderError(f"{where(offset)}: MJML: {message}") from None
        raise RenderError(f"{culprit(message)}: MJML: {message}") from None


def inline_css(page: str, slug: str) -> str:
    try:
        return _inliner.inline(page)
    except css_inline.InlineError as exc:
        raise RenderError(f"{slug}: inlining CSS failed ({exc}); a template wrote an invalid style attribute") from None


# Plain text from Markdown, walking markdown-it's tokens: paragraphs wrapped, links as "text (URL)", lists kept.


def markdown_text(text: str, width: int = TEXT_WIDTH) -> str:
    tokens = markdown_tokens(text)
    out: list[str] = []
    prefixes: list[str] = []  # list-item and blockquote indentation, innermost last
    counters: list[int | None] = []  # one per open list: its next number, None for bullets
    first_line_prefix: str | None = None
    tight_previous = False  # the last block was an item of a tight list: the next item follows without a gap

    def add(block: str, tight: bool = False) -> None:
        nonlocal tight_previous
        if out:
            out.append("\n" if tight and tight_previous else "\n\n")
        out.append(block)
        tight_previous = tight

    for position, token in enumerate(tokens):
        kind = token.type
        if kind in ("bullet_list_open", "ordered_list_open"):
            if not counters:
                tight_previous = False  # a new list starts after a blank line
            counters.append(None if kind == "bullet_list_open" else int(token.attrGet("start") or 1))
        elif kind in ("bullet_list_close", "ordered_list_close"):
            counters.pop()
            if not counters:
                tight_previous = False
        elif kind == "list_item_open":
            number = counters[-1]
            marker = "- " if number is None else f"{number}. "
            if number is not None:
                counters[-1] = number + 1
            first_line_prefix = "".join(prefixes) + marker
            prefixes.append(" " * len(marker))
        elif kind == "list_item_close":
            prefixes.pop()
        elif kind == "blockquote_open":
            prefixes.append("> ")
        elif kind == "blockquote_close":
            prefixes.pop()
        elif kind == "hr":
            add("".join(prefixes) + "-" * 20)
        elif kind in ("fence", "code_block"):
            add(textwrap.indent(token.content.rstrip("\n"), "".join(prefixes) + "    "))
        elif kind == "inline":
            opener = tokens[position - 1] if position else None
            content = _inline_text(token.children or [])
            if opener is not None and opener.type == "heading_open":
                content = content.upper()
            indent = "".join(prefixes)
            first = first_line_prefix if first_line_prefix is not None else indent
            first_line_prefix = None
            tight = bool(counters) and opener is not None and opener.hidden  # markdown-it hides tight <p>
            add(wrap_text(content, width, first, indent), tight)
    return "".join(out)


def _inline_text(children: list) -> str:
    out: list[str] = []
    link_stack: list[tuple[str, int]] = []
    for child in children:
        kind = child.type
        if kind in ("text", "code_inline"):
            out.append(child.content)
        elif kind == "softbreak":
            out.append(" ")
        elif kind == "hardbreak":
            out.append("\n")
        elif kind == "image":
            out.append(f"[{child.content}]")
        elif kind == "link_open":
            link_stack.append((child.attrGet("href") or "", len(out)))
        elif kind == "link_close" and link_stack:
            href, start = link_stack.pop()
            label = "".join(out[start:])
            shown = href.removeprefix("mailto:")
            if shown != label and href != label:
                out.append(f" ({href.removeprefix('mailto:') if href.startswith('mailto:') else href})")
    return "".join(out)


def wrap_text(text: str, width: int = TEXT_WIDTH, first_prefix: str = "", prefix: str = "") -> str:
    """Wrap each line of text at width, never breaking a word or URL; a field's placeholder counts as wide as its
    value is likely to be (field_placeholders.stand_ins)."""
    text, placeholders = stand_ins(str(text))
    lines = []
    for index, line in enumerate(text.split("\n")):
        lead = first_prefix if index == 0 else prefix
        lines.append(
            textwrap.fill(
                line,
                width=width,
                initial_indent=lead,
                subsequent_indent=prefix,
                break_long_words=False,
                break_on_hyphens=False,
            )
            or lead.rstrip()
        )
    return restore("\n".join(lines), placeholders)


def tidy_text(text: str) -> str:
    """Strip trailing spaces and keep at most one blank line between blocks."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)) + "\n"
