"""A recipient's fields in an issue's text: `{{ prenom }}` and `{{ prenom | default("ami·e") }}`.

The author's text is never given to Jinja (an issue file would then run template code): this small syntax is
parsed with a regex, and anything else between braces is an error `check` locates. Before the issue is rendered,
each placeholder becomes a message placeholder, `%%field-prenom|616d69c2b765%%`: the field's key
(fields.field_key: accents and case do not count), then its default in hex (UTF-8), which no Markdown, wrapping,
escaping nor MJML changes. It passes through the templates, MJML and CSS inlining as %%name%% does, and is filled
as each message is built (RenderedIssue.fill, message.Campaign.build) from the recipient's fields by key, the
default when the field is missing or empty; the web version, which has no recipient, shows the default.

`field-` keeps the fields apart from the tool's own values (%%name%%, %%email%%, %%unsubscribe_url%%, …): a field
named "email" or "unsubscribe_url" fills {{ email }} and never replaces those. A template that writes a text in
capitals (the masthead in the text part, a Markdown heading there) gives `%%FIELD-PRENOM|…%%`: that one is filled
with the value in capitals.

Placeholders are filled in the texts: the preheader, titles, texts, labels, captions, alt texts. Not in the
subject (one per campaign: the archive, the campaign's record and a provider's batch show one), a link, a phone
number, an image's file, an address.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from newsletter.errors import Diagnostic
from newsletter.fields import field_key
from newsletter.issue import LoadedIssue, YamlPath, format_path, iter_values

if TYPE_CHECKING:
    from newsletter.workspace import Workspace

FIELD_PREFIX = "field-"  # the message placeholder's namespace: %%field-prenom%%
UPPER_FIELD_PREFIX = FIELD_PREFIX.upper()
BUILT_IN_HINTS = {
    "name": "the subscriber's own name is %%name%%",
    "email": "the recipient's address is %%email%%",
    "unsubscribe_url": "the unsubscribe link is %%unsubscribe_url%%",
    "view_online_url": "the web version's link is %%view_online_url%%",
}

# {{ name }} or {{ name | default("text") }} / default('text'): a field's name and at most a default, nothing else.
_PLACEHOLDER = re.compile(
    r"""\{\{\s*(?P<name>\w+)\s*(?:\|\s*default\s*\(\s*(?:"(?P<double>[^"\\\n]*)"|'(?P<single>[^'\\\n]*)')\s*\)\s*)?\}\}"""
)
# What starts or ends something between braces; a backslash before it shows it as written.
_BRACES = re.compile(r"\\?(?:\{\{|\}\}|\{%)")
# A single brace, a name and maybe a filter, then }}: a placeholder with a brace missing.
_HALF_OPENED = re.compile(r"(?<!\{)\{\s*(\w+)\s*(?:\|[^{}\n]*)?$")
_JINJA_WORDS = frozenset("or and not if else in is".split())
_FIELD_NAME = re.compile(r"(field|FIELD)-([A-Za-z0-9_]+)")

SUBJECT_REASON = (
    "the subject is the same for every recipient (the archive, the campaign and a provider's batch show one), "
    "so it takes no placeholder: write it without {{ }} and greet the reader in the preheader or a text"
)


@dataclass(frozen=True)
class Placeholder:
    """One {{ name | default("…") }} of an author's text, at text[start:end]."""

    name: str  # as the author wrote it: Prénom
    key: str  # fields.field_key(name): prenom
    default: str
    start: int
    end: int


@dataclass(frozen=True)
class Problem:
    """Something between braces that is no placeholder, at text[start:]."""

    start: int
    message: str


def scan(text: str) -> tuple[list[Placeholder], list[Problem]]:
    """The placeholders of a text, and what between braces is none (a filter, an expression, a brace unclosed)."""
    found: list[Placeholder] = []
    problems: list[Problem] = []
    position = 0
    while brace := _BRACES.search(text, position):
        position = brace.end()
        token = brace.group(0)
        if token.startswith("\\"):
            continue  # shown as written
        if token == "}}":
            # Only where it ends what reads as a placeholder with a brace missing ({ prenom }}): a lone }} in
            # other text (code, JSON) is shown as written, as Jinja would.
            opened = _HALF_OPENED.search(text, text.rfind("\n", 0, brace.start()) + 1, brace.start())
            if opened:
                problems.append(
                    Problem(
                        opened.start(), f"`{{{{` is missing before `}}}}`: {_what_to_write(field_key(opened.group(1)))}"
                    )
                )
            continue
        if token == "{%":
            problems.append(
                Problem(
                    brace.start(),
                    "`{% … %}` (a condition or a loop) is not something an issue's text can hold; "
                    + _what_to_write("prenom", "{%"),
                )
            )
            continue
        close = text.find("}}", brace.end())
        reopen = text.find("{{", brace.end())
        if close < 0 or 0 <= reopen < close:
            problems.append(Problem(brace.start(), f"`{{{{` is not closed by `}}}}`: {_what_to_write('prenom')}"))
            continue
        written = text[brace.start() : close + 2]
        position = close + 2
        match = _PLACEHOLDER.fullmatch(written)
        if match is None:
            shown = " ".join(written.split())
            problems.append(
                Problem(
                    brace.start(),
                    f"`{shown}` is not a placeholder this tool fills: {_what_to_write(_suggested_key(written))}",
                )
            )
            continue
        key = field_key(match.group("name"))
        if not key:
            problems.append(
                Problem(
                    brace.start(),
                    f"`{written}` names no field: a field is named by the letters and digits of its column's "
                    "header, without accents (Prénom: {{ prenom }})",
                )
            )
            continue
        default = match.group("double") if match.group("double") is not None else match.group("single") or ""
        found.append(Placeholder(match.group("name"), key, default, brace.start(), position))
    return found, problems


def _what_to_write(key: str, brace: str = "{{") -> str:
    return (
        f'write {{{{ {key or "prenom"} }}}}, or {{{{ {key or "prenom"} | default("…") }}}} for what those without '
        "the field read (a field's name and at most a default, nothing else: no other filter, expression or "
        f"condition); to show the braces as written, put a backslash before them (\\{brace})"
    )


def _suggested_key(written: str) -> str:
    """The field an unreadable placeholder seems to name: `{{ first name }}` -> first_name; else prenom."""
    inner = re.match(r"\{\{\s*([^|}]*)", written)
    words = inner.group(1).split() if inner else []
    if words and all(re.fullmatch(r"[\w-]+", w) for w in words) and not _JINJA_WORDS & set(words):
        return field_key(" ".join(words)) or "prenom"
    first = re.search(r"\w+", inner.group(1)) if inner else None
    return (field_key(first.group(0)) if first else "") or "prenom"


# The message placeholders, which render.PLACEHOLDER finds in the rendered issue.


def message_placeholder(key: str, default: str) -> str:
    """%%field-KEY%% or %%field-KEY|HEX%%: the default in hex, which nothing on the way can change."""
    return f"%%{FIELD_PREFIX}{key}|{default.encode('utf-8').hex()}%%" if default else f"%%{FIELD_PREFIX}{key}%%"


def field_part(name: str, fallback: str, escape: Callable[[str], str]) -> tuple[str, str] | None:
    """A message placeholder's (name, fallback) as RenderedIssue's parts hold it, or None unless it is a field's:
    ('field-prenom', default escaped for its part), or ('FIELD-prenom', DEFAULT) when a template wrote it in
    capitals. A fallback that is not hex (written by hand) is template text, kept as it stands."""
    match = _FIELD_NAME.fullmatch(name)
    if match is None:
        return None
    upper = match.group(1) == "FIELD"
    try:
        default = escape(bytes.fromhex(fallback).decode("utf-8"))
    except ValueError:
        default = fallback
    prefix = UPPER_FIELD_PREFIX if upper else FIELD_PREFIX
    return prefix + match.group(2).lower(), default.upper() if upper else default


def is_field_name(name: str) -> bool:
    return name.startswith((FIELD_PREFIX, UPPER_FIELD_PREFIX))


_cached_key = functools.lru_cache(maxsize=4096)(field_key)  # the same few names, for every recipient

# The import keeps a first-name column (Prénom, First Name, subscribers.FIRST_NAME_HEADERS) as the field
# first_name: {{ prenom }} reads it when the recipient has no field of its own key.
FIRST_NAME_KEYS = ("first_name", "prenom", "firstname", "given_name", "givenname", "fname")


def _alternatives(key: str) -> tuple[str, ...]:
    """The keys a placeholder's field is read from, in order: its own, then the first name's others."""
    return (key, *(k for k in FIRST_NAME_KEYS if k != key)) if key in FIRST_NAME_KEYS else (key,)


def has_field(keys: Collection[str], key: str) -> bool:
    """Whether a member with these field keys fills the placeholder of that key."""
    return any(k in keys for k in _alternatives(key))


def field_values(fields: Mapping[str, object], names: Iterable[str]) -> dict[str, str]:
    """Each field placeholder's value for one recipient, by its part name (field_part): the field of that key, in
    capitals for FIELD-; "" (its default) when the recipient has none or an empty one."""
    by_key: dict[str, str] = {}
    for name, value in fields.items():
        if value is not None and str(value).strip():
            by_key.setdefault(_cached_key(name), str(value))
    values = {}
    for name in names:
        value = next((by_key[k] for k in _alternatives(name[len(FIELD_PREFIX) :]) if k in by_key), "")
        values[name] = value.upper() if name.startswith(UPPER_FIELD_PREFIX) else value
    return values


# The issue's texts: which take placeholders, turned into message placeholders before the render.

_NOT_PERSONAL = frozenset({"type", "src", "email", "lang", "align", "from", "reply_to"})


def _texts(model: BaseModel) -> Iterator[tuple[YamlPath, str, bool, str | None]]:
    """(path, text, is Markdown, why it takes no placeholder or None) for every string of the issue."""
    for path, value, kind in iter_values(model):
        if kind == "image" or not isinstance(value, str):
            continue
        if path == ("subject",):
            yield path, value, False, SUBJECT_REASON
        elif kind in ("url", "phone") or path[-1] in _NOT_PERSONAL:
            what = "a link" if kind == "url" else "a phone number" if kind == "phone" else format_path(path)
            yield (
                path,
                value,
                False,
                f"{what} takes no placeholder: {{{{ }}}} is filled in the texts only (the preheader, titles, "
                "texts, labels, captions, alt texts); write it in full",
            )
        else:
            yield path, value, kind == "markdown", None


def _replaced(text: str, markdown: bool, replacement: Callable[[Placeholder], str]) -> str:
    """The text with each placeholder replaced; what is no placeholder stays (check reports it). In plain text a
    backslash that shows braces as written goes; Markdown takes it away itself."""
    found, _ = scan(text) if "{" in text or "}" in text else ([], [])
    out, position = [], 0
    for placeholder in found:
        out.append(text[position : placeholder.start])
        out.append(replacement(placeholder))
        position = placeholder.end
    out.append(text[position:])
    joined = "".join(out)
    if not markdown and "\\" in joined:
        joined = re.sub(r"\\(\{\{|\}\}|\{%)", r"\1", joined)
    return joined


Model = TypeVar("Model", bound=BaseModel)


def _with_texts(model: Model, convert: Callable[[str, bool], str]) -> Model:
    """A copy of the model in which every text that takes placeholders is convert(text, is_markdown)."""
    copy = model.model_copy(deep=True)
    for path, text, markdown, refused in _texts(model):
        if refused is not None:
            continue
        converted = convert(text, markdown)
        if converted == text:
            continue
        node: Any = copy
        for part in path[:-1]:
            node = node[part] if isinstance(part, int) else getattr(node, str(part))
        setattr(node, str(path[-1]), converted)
    return copy


def personalised(model: Model) -> Model:
    """The issue as render.py renders it: every {{ field }} of its texts a message placeholder."""
    return _with_texts(model, lambda text, md: _replaced(text, md, lambda p: message_placeholder(p.key, p.default)))


_MESSAGE_FIELD = re.compile(r"%%(?:field|FIELD)-[A-Za-z0-9_]+(?:\|([0-9a-fA-F]*))?%%")


def with_defaults(model: Model) -> Model:
    """A part of the personalised issue with each field's message placeholder replaced by its default: what is
    the same for every recipient (an event's .ics, published once)."""

    def default(match: re.Match[str]) -> str:
        part = field_part(match.group(0).strip("%").split("|")[0], match.group(1) or "", str)
        return part[1] if part else ""

    return _with_texts(model, lambda text, _: _MESSAGE_FIELD.sub(default, text) if "%%" in text else text)


# The text part is wrapped once, before any value is known: a field's placeholder counts as long as its default
# (VALUE_WIDTH without one), not as its own 30 characters, so that the lines filled stay near their width.
VALUE_WIDTH = 8
_STAND_IN = re.compile("\ue000\ue001*")  # private-use characters: in no text, and no space for wrapping to break at


def _width(placeholder: str) -> int:
    part = field_part(placeholder.strip("%").split("|")[0], placeholder.strip("%").partition("|")[2], str)
    return len(part[1]) if part and part[1] else VALUE_WIDTH


def stand_ins(text: str) -> tuple[str, list[str]]:
    """The text with each field's placeholder replaced by a word as wide as its value is likely to be, and the
    placeholders in order (restore() puts them back)."""
    placeholders: list[str] = []

    def stand_in(match: re.Match[str]) -> str:
        placeholders.append(match.group(0))
        return "\ue000" + "\ue001" * (_width(match.group(0)) - 1)

    return _MESSAGE_FIELD.sub(stand_in, text) if "%%" in text else text, placeholders


def restore(text: str, placeholders: list[str]) -> str:
    if not placeholders:
        return text
    given = iter(placeholders)
    return _STAND_IN.sub(lambda _: next(given), text)


def shown_length(text: str) -> int:
    """How long the text is as a reader sees it, a field's placeholder counted as wide as its value."""
    return len(stand_ins(text)[0])


_LOOSE_FIELD = re.compile(r"%%field-", re.IGNORECASE)


def mangled_placeholders(rendered: str) -> bool:
    """Whether a template changed a field's placeholder on its way (a filter such as title or truncate)."""
    return len(_LOOSE_FIELD.findall(rendered)) != len(_MESSAGE_FIELD.findall(rendered))


# What check reports.


@dataclass(frozen=True)
class Use:
    """One placeholder of the issue, where it is."""

    placeholder: Placeholder
    path: YamlPath
    line: int | None
    column: int | None


def issue_placeholders(issue: LoadedIssue) -> tuple[list[Use], list[Diagnostic]]:
    """The issue's placeholders, each located, and an error for each {{ }} that is none or stands where none is
    filled, at the file:line:col of its braces."""
    uses: list[Use] = []
    errors: list[Diagnostic] = []
    locator = _Locator(issue)
    for path, text, _markdown, refused in _texts(issue.model):
        if "{" not in text and "}" not in text:
            continue
        found, problems = scan(text)
        if refused is not None:
            problems = [Problem(p.start, refused) for p in found] + problems
            found = []
        for placeholder in found:
            uses.append(Use(placeholder, path, *locator.locate(path, text, placeholder.start)))
        for problem in problems:
            line, column = locator.locate(path, text, problem.start)
            errors.append(
                Diagnostic(
                    "error", "bad-placeholder", problem.message, issue.source.file, line, column, format_path(path)
                )
            )
    return uses, errors


def unknown_field_warnings(issue: LoadedIssue, uses: list[Use], list_slug: str, keys: set[str]) -> list[Diagnostic]:
    """A warning for each placeholder of a field that no member of the list has."""
    found = []
    for use in uses:
        placeholder = use.placeholder
        if has_field(keys, placeholder.key):
            continue
        message = (
            f"no member of '{list_slug}' has a field '{placeholder.key}'; they all get the default "
            f"'{placeholder.default}'"
        )
        if hint := BUILT_IN_HINTS.get(placeholder.key):
            message += f" ({hint})"
        found.append(
            Diagnostic(
                "warning",
                "field-nobody-has",
                message,
                issue.source.file,
                use.line,
                use.column,
                format_path(use.path),
            )
        )
    return found


class _Locator:
    """Where in issue.yaml a character of a value's text is: its value's start, then the same brace counted there
    (quoting and folding change the text around the braces, never the braces)."""

    def __init__(self, issue: LoadedIssue):
        self.issue = issue
        self._source: str | None = None
        self._line_starts: list[int] = []

    def source(self) -> str:
        if self._source is None:
            try:
                self._source = self.issue.file.read_text(encoding="utf-8")
            except OSError:
                self._source = ""
            starts, position = [0], 0
            for line_break in re.finditer(r"\r\n|[\r\n\x85\u2028\u2029]", self._source):
                position = line_break.end()
                starts.append(position)
            self._line_starts = starts
        return self._source

    def locate(self, path: YamlPath, text: str, start: int) -> tuple[int | None, int | None]:
        line, column = self.issue.source.locate(path)
        source = self.source()
        if line is None or column is None or line > len(self._line_starts):
            return line, column
        token = text[start : start + 2]
        before = _count(text, token, 0, start)
        position = self._line_starts[line - 1] + column - 1
        for _ in range(before + 1):
            found = source.find(token, position)
            if found < 0:
                return line, column
            position = found + len(token)
        found = position - len(token)
        at_line = max(i for i, s in enumerate(self._line_starts) if s <= found)
        return at_line + 1, found - self._line_starts[at_line] + 1


def _count(text: str, token: str, start: int, end: int) -> int:
    count, position = 0, start
    while (found := text.find(token, position, end)) >= 0:
        count, position = count + 1, found + len(token)
    return count


# Which list check asks about.

# (the keys the issue uses) -> (the list's slug, those of them some member of it has), or None: no list applies.
ListFieldKeys = Callable[[Collection[str]], "tuple[str, set[str]] | None"]


def list_fields_for(workspace: Workspace, list_slug: str | None) -> ListFieldKeys:
    """How check learns the fields of the list an issue goes to: `list_slug` (an unknown one is a NewsletterError
    now), else the store's only list when it has exactly one, else none. The store is opened only when the issue
    has placeholders."""
    import sqlalchemy

    from newsletter.errors import NewsletterError
    from newsletter.store import Store, database_url

    url = database_url(workspace.root)
    if list_slug is not None:
        store = Store.open(url)
        try:
            list_slug = store.find_list(list_slug).slug
        finally:
            store.close()

    def read(keys: Collection[str], slug: str | None) -> tuple[str, set[str]] | None:
        store = Store.open(url)
        try:
            if slug is None:
                slugs = store.list_slugs()
                if len(slugs) != 1:
                    return None
                slug = slugs[0]
            wanted = {alternative for key in keys for alternative in _alternatives(key)}
            return slug, store.list_field_keys(store.find_list(slug).id, wanted)
        finally:
            store.close()

    def answer(keys: Collection[str]) -> tuple[str, set[str]] | None:
        if list_slug is not None:
            return read(keys, list_slug)
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
            return None  # no store yet: nobody to ask about, and check creates none
        try:
            return read(keys, None)
        except (NewsletterError, sqlalchemy.exc.SQLAlchemyError):
            return None  # a store nobody asked check to read (unreachable, not upgraded): nothing said of fields

    return answer
