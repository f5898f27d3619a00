"""The issue format: the Issue model, its section types, and YAML loading that locates every error.

An issue is a folder holding issue.yaml and its images. Each section type is one model class here (its `type`
is the tag) and one pair of templates, `sections/<type>.mjml.j2` and `sections/<type>.txt.j2`. To add a type,
add a class below that subclasses Section, name it in AnySection, and write its two templates: the JSON Schema
and the checks pick it up from there.

An issue may have versions in other languages beside issue.yaml: issue.en.yaml (issue.LANG.yaml, LANG one of
i18n.LANGUAGES other than issue.yaml's own), with the same schema, sharing images/. `load_issue` reads one file;
versions.py reads them all together.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError

from newsletter.errors import Diagnostic, IssueError, Severity
from newsletter.i18n import LANGUAGES, Language

ISSUE_FILE = "issue.yaml"
# issue.en.yaml: a version of the issue in another language. Any middle part matches, so that check can say that
# issue.eng.yaml or issue.old.yaml is no version (TRANSLATION_FILE.fullmatch: nothing else of the name may follow).
TRANSLATION_FILE = re.compile(r"issue\.([^./\\]+)\.yaml")
# libyaml's parser when PyYAML has it (its wheels do): the same nodes and marks, several times faster.
try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:
    from yaml import SafeLoader as _BaseLoader


class _Loader(_BaseLoader):
    """YAML 1.1 reads `end: 12:30` as the base-60 number 750: here it stays the text '12:30', as YAML 1.2 and
    the editors' YAML language server read it (and as the schema says it is)."""


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, re.compile("(?!.*:)" + regexp.pattern, regexp.flags) if tag.endswith((":int", ":float")) else regexp)
        for tag, regexp in resolvers
    ]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}

YamlPath = tuple[str | int, ...]


# Markers carried in field metadata, so that checks find every URL and every Markdown text of any section type.
class _UrlField:
    pass


class _MarkdownField:
    pass


class _PhoneField:
    pass


URL_FIELD = _UrlField()
MARKDOWN_FIELD = _MarkdownField()
PHONE_FIELD = _PhoneField()

Url = Annotated[str, URL_FIELD, Field(description="An https:// URL (mailto: and tel: also work).")]
Markdown = Annotated[
    str,
    MARKDOWN_FIELD,
    Field(
        description="Markdown: *emphasis*, **strong**, [links](https://…), lists. Raw HTML is not rendered. "
        'A subscriber\'s field: {{ prenom | default("…") }}.'
    ),
]
Phone = Annotated[
    str,
    PHONE_FIELD,
    Field(
        description="A phone number as readers should see it, e.g. '418 724-5154, poste 212' (an extension after "
        "poste, p., ext. or x); without +country code it is read in newsletter.toml's phone_region."
    ),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Image(_Model):
    """An image file in the issue folder (or an https:// URL), with the text that replaces it when not shown."""

    src: str = Field(description="Path relative to the issue folder (e.g. images/logo.png), or an https:// URL.")
    alt: str = Field(description="What the image shows, for screen readers and for mail clients that block images.")
    link: Url | None = Field(None, description="Where a click on the image leads.")
    width: int | None = Field(None, ge=1, le=600, description="Display width in px; the file's own width otherwise.")


class ButtonLink(_Model):
    label: str = Field(min_length=1, description="The button's text, e.g. 'Consulter les documents!'.")
    url: Url


class Contact(_Model):
    name: str
    role: str | None = None
    phone: Phone | None = None
    email: str | None = None


class Column(_Model):
    title: str | None = None
    image: Image | None = None
    text: Markdown | None = None
    button: ButtonLink | None = None


class Section(_Model):
    """Base of every section type; `type` names the type and its templates."""

    type: str


class Masthead(Section):
    """The top of the email: a logo, the newsletter's title and the issue's date."""

    type: Literal["masthead"]
    title: str
    logo: Image | None = None
    subtitle: str | None = None
    date: dt.date | str | None = Field(
        None,
        description="Shown under the title; a date is written in the issue's language. Default: issue date.",
    )


class Heading(Section):
    type: Literal["heading"]
    text: str = Field(min_length=1)
    level: Literal[1, 2, 3] = 2


class Text(Section):
    """Paragraphs of Markdown."""

    type: Literal["text"]
    text: Markdown


class ImageSection(Section):
    type: Literal["image"]
    src: str = Field(description="Path relative to the issue folder (e.g. images/photo.jpg), or an https:// URL.")
    alt: str = Field(description="What the image shows, for screen readers and for mail clients that block images.")
    link: Url | None = None
    width: int | None = Field(None, ge=1, le=600, description="Display width in px; the file's own width otherwise.")
    caption: Markdown | None = Field(None, description="Shown under the image; Markdown, as in text.")

    def as_image(self) -> Image:
        return Image(src=self.src, alt=self.alt, link=self.link, width=self.width)


class Button(Section):
    """A call to action: optional lead text, then one button."""

    type: Literal["button"]
    label: str = Field(min_length=1)
    url: Url
    lead: Markdown | None = None
    align: Literal["left", "center", "right"] = "center"


class Callout(Section):
    """A boxed block: title, text and an optional button."""

    type: Literal["callout"]
    title: str | None = None
    text: Markdown
    button: ButtonLink | None = None


class Contacts(Section):
    """Contact cards: name, role, phone, email, two to a row."""

    type: Literal["contacts"]
    title: str | None = None
    intro: Markdown | None = None
    contacts: list[Contact] = Field(min_length=1)


class Logos(Section):
    """A row of logos (partners, funders) under a caption."""

    type: Literal["logos"]
    caption: Markdown | None = None
    logos: list[Image] = Field(min_length=1)


class Columns(Section):
    """Two or three columns side by side on a desktop, stacked on a phone."""

    type: Literal["columns"]
    columns: list[Column] = Field(min_length=2, max_length=3)


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME = re.compile(r"(\d{1,2}):(\d{2})")
_ONE_DIGIT_HOUR = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d):")  # 2025-02-12 9:00, which fromisoformat refuses


def _moment(value: Any, *, time_alone: bool = False) -> dt.datetime | dt.date | dt.time:
    """An event's start or end as written: a date, a date and time (naive, or with its offset), or, for an end,
    a time alone (that day)."""
    if isinstance(value, dt.date):  # YAML made it: 2025-02-12, or 2025-02-12 09:00:00 with seconds
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            if _DATE.fullmatch(text):
                return dt.date.fromisoformat(text)
            if time_alone and (match := _TIME.fullmatch(text)):
                return dt.time(int(match.group(1)), int(match.group(2)))
            return dt.datetime.fromisoformat(_ONE_DIGIT_HOUR.sub(r"\1 0\2:", text))
        except ValueError:
            pass
    if time_alone:
        raise PydanticCustomError(
            "event_time",
            "not a time or a date; write 12:00 (that day), 2025-02-13 17:00, "
            "or the last day of a day-long event, 2025-02-14",
        )
    raise PydanticCustomError(
        "event_time", "not a date and time; write it as 2025-02-12 09:00, or 2025-02-12 for a day-long event"
    )


_DATE_PATTERN = r"\d{4}-\d{2}-\d{2}([ T]\d{1,2}:\d{2}(:\d{2})?(Z|[+-]\d{2}:?\d{2})?)?"
EventStart = Annotated[
    dt.datetime | dt.date,
    PlainValidator(_moment),
    WithJsonSchema({"type": "string", "pattern": f"^{_DATE_PATTERN}$", "examples": ["2025-02-12 09:00", "2025-02-12"]}),
]
EventEnd = Annotated[
    dt.datetime | dt.date | dt.time,
    PlainValidator(lambda value: _moment(value, time_alone=True)),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": f"^(\\d{{1,2}}:\\d{{2}}|{_DATE_PATTERN})$",
            "examples": ["12:00", "2025-02-13 17:00", "2025-02-14"],
        }
    ),
]


class Event(Section):
    """A meeting: what, when, where, how to register, and an "add to calendar" link to its .ics file."""

    type: Literal["event"]
    title: str = Field(min_length=1, description="What the event is, e.g. 'Forum régional 2025'.")
    start: EventStart = Field(
        description="When it starts: '2025-02-12 09:00' (in newsletter.toml's timezone, else the machine's; "
        "an offset such as 2025-02-12T09:00-05:00 may be given), or a date alone for a day-long event."
    )
    end: EventEnd | None = Field(
        None,
        description="When it ends: a time that day ('12:00'), a date and time ('2025-02-13 17:00'), or, for a "
        "day-long event, its last day ('2025-02-14').",
    )
    place: str | None = Field(None, description="Where: the venue's name, e.g. 'Salle Desjardins, Cégep de Rimouski'.")
    address: str | None = Field(None, description="The venue's street address, e.g. '60, rue de l'Évêché Ouest'.")
    registration: Url | None = Field(None, description="Where to register: a 'Register' button links to it.")
    deadline: dt.date | None = Field(None, description="The last day to register (YYYY-MM-DD).")
    text: Markdown | None = Field(None, description="A short description, in Markdown.")

    @field_validator("end")
    @classmethod
    def _end_like_start(
        cls, end: dt.datetime | dt.date | dt.time | None, info: ValidationInfo
    ) -> dt.datetime | dt.date | dt.time | None:
        start = info.data.get("start")
        if end is None or start is None:
            return end
        day_long = not isinstance(start, dt.datetime)
        if day_long and (isinstance(end, dt.datetime) or not isinstance(end, dt.date)):
            raise PydanticCustomError(
                "event_time",
                "the event lasts whole days (start is a date): give its last "
                "day as end, e.g. 2025-02-14, or a time in start",
            )
        if not day_long and not isinstance(end, dt.datetime | dt.time):
            raise PydanticCustomError(
                "event_time",
                "start has a time: give end as a time that day (12:00) or a date and time (2025-02-13 17:00)",
            )
        return end

    def period(self) -> tuple[dt.datetime | dt.date, dt.datetime | dt.date | None]:
        """(start, end) as written, end made whole: a time alone is on the start's day, with its offset if any."""
        end = self.end
        if isinstance(end, dt.time):
            assert isinstance(self.start, dt.datetime), "_end_like_start lets a time alone end only a timed start"
            end = dt.datetime.combine(self.start.date(), end, tzinfo=self.start.tzinfo)
        return self.start, end


class Divider(Section):
    type: Literal["divider"]


class Spacer(Section):
    type: Literal["spacer"]
    height: int = Field(24, ge=1, le=200, description="Height in px.")


# Every section type, in the order the JSON Schema lists them; `type` picks one (a test checks none is left out).
AnySection = Annotated[
    Masthead | Heading | Text | ImageSection | Button | Callout | Contacts | Logos | Columns | Event | Divider | Spacer,
    Discriminator("type"),
]


def _section_types() -> dict[str, type[Section]]:
    """Each section type's tag (its `type: Literal["x"]`) and class."""
    (union, _discriminator) = get_args(AnySection)
    classes: tuple[type[Section], ...] = get_args(union)
    return {get_args(cls.model_fields["type"].annotation)[0]: cls for cls in classes}


SECTION_TYPES: dict[str, type[Section]] = _section_types()


class Issue(_Model):
    """One issue of the newsletter, as written in issue.yaml."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={"title": "newsletter issue.yaml"},
    )

    subject: str = Field(min_length=1, description="The email's subject line (10 to 78 characters reads best).")
    preheader: str | None = Field(
        None,
        description="The line mail clients show after the subject in the inbox; it may hold a subscriber's field, "
        '{{ prenom | default("…") }} (the subject may not).',
    )
    lang: Language = Field(
        description="The issue's language; the footer and dates follow it. In a translation beside issue.yaml "
        "(issue.en.yaml), the language its name gives."
    )
    date: dt.date | None = Field(
        None, description="Publication date (YYYY-MM-DD). A translation takes issue.yaml's: leave it out there."
    )
    from_: str | None = Field(None, alias="from", description='Overrides newsletter.toml, e.g. "Name <a@b.org>".')
    reply_to: str | None = None
    sections: list[AnySection] = Field(min_length=1)


@dataclass
class SourceMap:
    """Where each value and each key of a YAML document starts (1-based line and column)."""

    file: str
    values: dict[YamlPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[YamlPath, tuple[int, int]] = field(default_factory=dict)
    block_scalars: set[YamlPath] = field(default_factory=set)  # | or > values: text starts on the next line

    def locate(self, path: YamlPath, *, key: bool = False) -> tuple[int | None, int | None]:
        """Return the position of path, or of its nearest ancestor that exists in the document."""
        table = self.keys if key else self.values
        if path in table:
            return table[path]
        while path:
            path = path[:-1]
            if path in self.values:
                return self.values[path]
        return (None, None)


@dataclass
class LoadedIssue:
    """A validated issue with the folder it came from and the positions of its YAML.

    One version of the issue: issue.yaml (file_name), or a translation beside it (issue.en.yaml). other_lang is
    the language of the folder's other version when load_versions read it (its web version is linked at the top);
    load_issue, which reads one file, leaves it None."""

    model: Issue
    folder: Path
    source: SourceMap
    file_name: str = ISSUE_FILE
    other_lang: str | None = None

    @property
    def slug(self) -> str:
        return self.folder.name

    @property
    def file(self) -> Path:
        return self.folder / self.file_name

    @property
    def is_translation(self) -> bool:
        return self.file_name != ISSUE_FILE

    @property
    def web_path(self) -> str:
        """Where its web version lives in the issue's: "" (build/SLUG/index.html) or "en/" for a translation."""
        return f"{self.model.lang}/" if self.is_translation else ""

    @property
    def other_web_path(self) -> str | None:
        """The other version's web_path, None when there is none."""
        if self.other_lang is None:
            return None
        return "" if self.is_translation else f"{self.other_lang}/"

    def diagnostic(
        self, severity: Severity, code: str, message: str, path: YamlPath, *, line_offset: int = 0
    ) -> Diagnostic:
        line, column = self.source.locate(path)
        if line is not None and line_offset:
            line, column = line + line_offset, None
        return Diagnostic(severity, code, message, self.source.file, line, column, format_path(path))


def format_path(path: YamlPath) -> str:
    """('sections', 3, 'url') -> 'sections[3].url'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_yaml(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document safely, recording where each value and key starts.

    Raise IssueError with line and column on a syntax error or a duplicate key (PyYAML would keep the last one
    silently, and the author would wonder where their text went).
    """
    source = SourceMap(file)
    loader = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.reader.ReaderError as exc:  # a control character or invalid byte
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise IssueError(
            [
                Diagnostic(
                    "error",
                    "yaml-syntax",
                    f"YAML: character {exc.character!r} is not allowed; remove it",
                    file,
                    line,
                    column,
                )
            ]
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(str(part) for part in (exc.problem, exc.context) if part)
        raise IssueError(
            [
                Diagnostic(
                    "error",
                    "yaml-syntax",
                    f"YAML syntax: {problem}; check indentation and quote text that contains ': ' or starts with "
                    "a special character",
                    file,
                    mark.line + 1 if mark else None,
                    mark.column + 1 if mark else None,
                )
            ]
        ) from None
    except (yaml.YAMLError, ValueError) as exc:  # e.g. an impossible date such as 2024-13-45
        raise IssueError([Diagnostic("error", "yaml-syntax", f"YAML: {exc}", file)]) from None
    finally:
        if loader is not None:
            loader.dispose()

    duplicates: list[Diagnostic] = []

    def walk(node: yaml.Node, path: YamlPath) -> None:
        source.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
            source.block_scalars.add(path)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value
                child = (*path, key)
                if child in source.keys:
                    first = source.keys[child][0]
                    duplicates.append(
                        Diagnostic(
                            "error",
                            "duplicate-key",
                            f"'{key}' is given twice (first on line {first}); keep one",
                            file,
                            key_node.start_mark.line + 1,
                            key_node.start_mark.column + 1,
                            format_path(child),
                        )
                    )
                    continue
                source.keys[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    if node is not None:
        walk(node, ())
    if duplicates:
        raise IssueError(duplicates)
    return data, source


def version_file_name(lang: str | None = None) -> str:
    """issue.yaml for the main file (lang None), issue.LANG.yaml for its translation into lang."""
    return ISSUE_FILE if lang is None else f"issue.{lang}.yaml"


def translation_files(folder: Path) -> tuple[dict[str, Path], list[Path]]:
    """The folder's translations by language (in i18n.LANGUAGES' order), and the other issue.*.yaml files, which
    name no language this tool writes (issue.de.yaml, issue.old.yaml): no version, which check warns of."""
    found: dict[str, Path] = {}
    others = []
    names = sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []
    for name in names:
        match = TRANSLATION_FILE.fullmatch(name)
        if match is None or not (folder / name).is_file():
            continue
        if match.group(1) in LANGUAGES:
            found[match.group(1)] = folder / name
        else:
            others.append(folder / name)
    return {lang: found[lang] for lang in LANGUAGES if lang in found}, others


def load_issue(folder: Path, lang: str | None = None) -> LoadedIssue:
    """Load and validate folder/issue.yaml, or with lang its translation folder/issue.LANG.yaml (whose lang must
    be LANG). Raise IssueError listing every problem, each with file:line:col."""
    name = version_file_name(lang)
    file = folder / name
    if not file.is_file():
        hint = "create it with `newsletter new SLUG`"
        if lang is not None:
            hint = f"write the {lang} version there, beside {ISSUE_FILE} (`newsletter new SLUG --also {lang}`)"
        raise IssueError([Diagnostic("error", "no-issue-file", f"{file} does not exist; {hint}")])
    if lang is not None and file.resolve().parent != folder.resolve():
        raise IssueError(
            [
                Diagnostic(
                    "error",
                    "translation-outside-issue",
                    f"{name} leads outside the issue's folder (a link); copy the file itself into {folder}",
                    str(file),
                )
            ]
        )
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise IssueError(
            [Diagnostic("error", "encoding", f"not UTF-8 (byte {exc.start}); save the file as UTF-8", str(file))]
        ) from None
    data, source = parse_yaml(text, str(file))
    if not isinstance(data, dict):
        raise IssueError(
            [
                Diagnostic(
                    "error",
                    "schema",
                    "the file must be a mapping with subject, lang and sections (see `newsletter schema`)",
                    str(file),
                    1,
                    1,
                )
            ]
        )
    try:
        model = Issue.model_validate(data)
    except ValidationError as exc:
        diagnostics = _validation_diagnostics(exc, data, source)
        raise IssueError(diagnostics) from None
    loaded = LoadedIssue(model, folder, source, name)
    if lang is not None and model.lang != lang:
        raise IssueError(
            [
                loaded.diagnostic(
                    "error",
                    "translation-lang",
                    f"lang is {model.lang}, but {name} is the issue's {lang} version: write lang: {lang}, or "
                    f"rename the file {version_file_name(model.lang)}",
                    ("lang",),
                )
            ]
        )
    return loaded


def _validation_diagnostics(exc: ValidationError, data: Any, source: SourceMap) -> list[Diagnostic]:
    found: dict[tuple[str, str], Diagnostic] = {}
    for err in exc.errors():
        path = _data_path(err["loc"], data)
        if err["type"] == "union_tag_invalid":
            path = (*path, "type")
        code, message, at_key = _explain(err, path, data)
        line, column = source.locate(path[:-1] if err["type"] == "missing" else path, key=at_key)
        diagnostic = Diagnostic("error", code, message, source.file, line, column, format_path(path))
        found.setdefault((diagnostic.path or "", code), diagnostic)
    return sorted(found.values(), key=lambda d: (d.line or 0, d.column or 0))


_MISSING = object()


def _data_path(loc: tuple, data: Any) -> YamlPath:
    """Turn a pydantic error location into the path of the YAML value (dropping union tags and type names)."""
    path: list[str | int] = []
    node = data
    previous = None
    for part in loc:
        after_index, previous = isinstance(previous, int), part
        if isinstance(node, dict):
            if after_index and node.get("type") == part:
                continue  # the tag pydantic adds after a list index for a discriminated union
            if part in node:
                path.append(part)
                node = node[part]
            else:
                path.append(part)  # a missing or unknown key
                node = _MISSING
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            path.append(part)
            node = node[part]
        else:
            break  # inside a scalar: the rest names union members, not YAML
    return tuple(path)


def _container(path: YamlPath, data: Any) -> Any:
    node = data
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _explain(err: ErrorDetails, path: YamlPath, data: Any) -> tuple[str, str, bool]:
    """Return (code, message, located at the key rather than the value) for one pydantic error."""
    kind = err["type"]
    known = ", ".join(SECTION_TYPES)
    if kind == "union_tag_invalid":
        tag = err["ctx"]["tag"]
        close = difflib.get_close_matches(tag, SECTION_TYPES, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return ("unknown-section-type", f"unknown section type '{tag}'{hint} Known types: {known}", False)
    if kind == "union_tag_not_found":
        return ("missing-field", f"this section has no 'type'; add one of: {known}", False)
    name = path[-1] if path else ""
    if kind == "missing":
        if name == "alt":
            return (
                "missing-alt",
                "image without alt text: add alt: describing what it shows (read aloud, and shown when images "
                "are blocked)",
                False,
            )
        return ("missing-field", f"missing required field '{name}'", False)
    if kind == "extra_forbidden":
        allowed = _allowed_fields(path, data)
        close = difflib.get_close_matches(str(name), allowed, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return ("unknown-field", f"unknown field '{name}'{hint} Allowed here: {', '.join(allowed)}", True)
    got = err.get("input")
    shown = f" (got {got!r})" if isinstance(got, str | int | float | bool) else ""
    return ("schema", f"{name}: {err['msg']}{shown}" if name else f"{err['msg']}{shown}", False)


def _allowed_fields(path: YamlPath, data: Any) -> list[str]:
    """The field names allowed in the mapping that holds the unknown key at path, found by walking the models."""

    def narrow(models: list[type[BaseModel]], node: Any) -> list[type[BaseModel]]:
        if len(models) > 1 and isinstance(node, dict) and node.get("type") in SECTION_TYPES:
            return [SECTION_TYPES[node["type"]]]  # a section: its type picks the model
        return models

    candidates: list[type[BaseModel]] = [Issue]
    node = data
    for part in path[:-1]:
        node = _container((part,), node)
        if isinstance(part, int):
            candidates = narrow(candidates, node)
            continue
        fields = {info.alias or name: info for name, info in candidates[0].model_fields.items()}
        if part not in fields:
            return []
        candidates = _models_in(fields[part].annotation)
    candidates = narrow(candidates, node)
    return [info.alias or name for name, info in candidates[0].model_fields.items()] if len(candidates) == 1 else []


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models an annotation can hold: Image in `Image | None`, every section in the sections union."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def iter_values(obj: Any, path: YamlPath = ()) -> Iterator[tuple[YamlPath, Any, str]]:
    """Yield (path, value, kind) for every string and image in a model: kind is url, markdown, phone, text or image.

    This is how checks reach the URLs, texts and images of every section type, present and future.
    """
    if isinstance(obj, Image | ImageSection):
        yield path, obj, "image"
    if isinstance(obj, BaseModel):
        for name, info in type(obj).model_fields.items():
            value = getattr(obj, name)
            if value is None:
                continue
            key = (*path, info.alias or name)
            if isinstance(value, str):
                yield key, value, _string_kind(info)
            else:
                yield from iter_values(value, key)
    elif isinstance(obj, list):
        for index, item in enumerate(obj):
            yield from iter_values(item, (*path, index))


_KINDS = ((_UrlField, "url"), (_MarkdownField, "markdown"), (_PhoneField, "phone"))


def _string_kind(info: FieldInfo) -> str:
    """url, markdown, phone or text, by the marker on the field's type: on `Url` itself, or inside `Url | None`
    (pydantic keeps the metadata of an Annotated member of a union on that member, not on the field)."""
    markers = list(info.metadata)
    for member in get_args(info.annotation):
        if get_origin(member) is Annotated:
            markers.extend(get_args(member)[1:])
    for marker_type, kind in _KINDS:
        if any(isinstance(marker, marker_type) for marker in markers):
            return kind
    return "text"


def issue_json_schema() -> dict:
    """Return the JSON Schema of issue.yaml, for editors (yaml-language-server) and agents."""
    schema = Issue.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
