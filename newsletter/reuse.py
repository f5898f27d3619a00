"""A new issue made from the previous one: its issue.yaml, edited as text, and the images it uses.

The YAML is edited in place, never dumped again (PyYAML would lose the author's comments, quoting and layout):
each value to change is replaced where the parser found it, and each comment is a line of its own above the key
or section it speaks of. The result is parsed again and must hold exactly the data intended, or nothing is written.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from newsletter.errors import Diagnostic, IssueError, NewsletterError
from newsletter.i18n import CATALOG, translate
from newsletter.issue import (
    Issue,
    LoadedIssue,
    YamlPath,
    format_path,
    iter_values,
    parse_yaml,
)
from newsletter.render import image_file, is_remote
from newsletter.versions import IssueVersions, load_versions

# Sections whose content is usually the same from one issue to the next; any other type, known or not, changes.
REUSED_SECTIONS = frozenset({"masthead", "logos", "contacts", "divider", "spacer"})
CHANGING_FIELDS = ("subject", "preheader")
_BREAKS = "\r\n\x85\u2028\u2029"  # what YAML counts as a line break, so that lines are those of the parser's marks
_PROPERTIES = re.compile(r"(?:[&!][^\s]*\s+)+")  # an anchor or a tag before a value: kept


@dataclass
class Reused:
    """What was taken from the previous issue: the new YAML text, the images to copy, the dates cleared."""

    text: str
    images: dict[str, Path] = field(default_factory=dict)  # src -> the previous issue's file
    cleared: list[str] = field(default_factory=list)  # YAML paths of dates set to null
    warnings: list[Diagnostic] = field(default_factory=list)  # images not copied, required dates kept


def previous_versions(folder: Path) -> IssueVersions:
    """The previous issue with its translations (issue.en.yaml), loaded; refused (one line) when any of them has
    errors, since what to reuse is then unclear."""
    try:
        return load_versions(folder)
    except IssueError as exc:
        raise NewsletterError(
            f"the previous issue has errors, so nothing was copied: {exc}; fix it first "
            f"(`newsletter check {folder.name}`)"
        ) from None


def reuse_issue(previous: LoadedIssue, *, lang: str, today: dt.date, add_date: bool = True) -> Reused:
    """The previous issue's YAML for a new issue in lang dated today, with its dates cleared and comments added.

    add_date: give it today's date when it has none (a translation without one takes issue.yaml's: add_date=False)."""
    file = previous.file
    text = file.read_bytes().decode("utf-8")  # not read_text: its line breaks (CR LF) are the author's too
    data, _ = parse_yaml(text, str(file))
    spans, keys = _spans(text)
    reused = Reused(text)
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement) in text
    comments: dict[int, list[str]] = {}  # index of a line's start -> comment lines to put above it
    expected = _copy(data)

    def comment_above(start: int | None, message: str) -> None:
        if start is not None:
            comments.setdefault(_line_start(text, start), []).append(message)

    def replace(path: YamlPath, value: str) -> None:
        start, end = spans[path]
        properties = _PROPERTIES.match(text, start)  # an anchor or a tag stays with the new value
        start = properties.end() if properties else start
        # A block scalar's span holds the line breaks after it: they stay, so the next line stays a line.
        edits.append((start, start + len(text[start:end].rstrip()), value))

    # The issue's date is the new issue's publication date: today, as `newsletter new` writes it.
    if ("date",) in spans:
        replace(("date",), today.isoformat())
        expected["date"] = today
    elif add_date and ("sections",) in keys:  # no date: one goes above sections, when that key starts its line
        key_start = keys[("sections",)]
        line_start = _line_start(text, key_start)
        indent = text[line_start:key_start]
        if indent.strip(" ") == "":
            edits.append((line_start, line_start, f"{indent}date: {today.isoformat()}{_newline(text)}"))
            expected["date"] = today
    if data.get("lang") != lang and ("lang",) in spans:
        replace(("lang",), lang)
        expected["lang"] = lang

    for name in CHANGING_FIELDS:
        if (name,) in spans:
            comment_above(keys.get((name,)), translate(lang, "previous_replace"))
    for index, section in enumerate(previous.model.sections):
        reused_kind = section.type in REUSED_SECTIONS
        comment_above(
            spans[("sections", index)][0], translate(lang, "previous_reused" if reused_kind else "previous_replace")
        )

    for path, value in dates_in(previous.model):
        if path not in spans:
            continue  # a default, not in the text
        shown = value.isoformat() if isinstance(value, dt.date) else " ".join(str(value).split())  # one line
        shown = shown if len(shown) <= 40 else shown[:40] + "…"
        if _accepts_null(data, path):
            replace(path, "null")
            _set(expected, path, None)
            reused.cleared.append(format_path(path))
            comment_above(keys.get(path), translate(lang, "previous_date_cleared", date=shown))
        else:  # the section needs one: kept, and said, since no null or placeholder would check
            comment_above(keys.get(path), translate(lang, "previous_date_kept", date=shown))
            reused.warnings.append(
                previous.diagnostic(
                    "warning",
                    "date-to-give",
                    f"{format_path(path)} is the previous issue's date ({shown}), kept because the section needs "
                    "one: give the new one in the new issue",
                    path,
                )
            )

    new_text = _apply(text, edits, comments)
    try:
        got, _ = parse_yaml(new_text, str(file))
    except IssueError:
        got = None
    if got != expected:  # an edit this module did not foresee (say, a comment inside a block scalar): write nothing
        raise NewsletterError(
            f"{file}: could not copy it without changing what it says (an unusual layout?); copy it by hand "
            "with `cp`, then edit the dates"
        )
    reused.text = new_text
    _images(previous, reused)
    return reused


def copy_images(reused: Reused, folder: Path) -> list[str]:
    """Copy the images to the same relative path in the new issue's folder; the srcs copied."""
    root = folder.resolve()
    copied = []
    for src, source in reused.images.items():
        target = folder / src
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.resolve().is_relative_to(root):  # the new folder is ours, but a hand-made symlink may be in it
            raise NewsletterError(f"{folder / src} leads outside {folder}; refused")
        shutil.copyfile(source, target)
        copied.append(src)
    return copied


def _images(previous: LoadedIssue, reused: Reused) -> None:
    """Every local image the issue names, resolved inside its folder only; what cannot be copied is reported."""
    slug = previous.slug
    for path, image, kind in iter_values(previous.model):
        if kind != "image" or is_remote(image.src) or image.src in reused.images:
            continue
        source = image_file(previous.folder, image.src)
        if source is None:
            reason = f"'{image.src}' is outside issues/{slug}; not copied: put the file in the new issue's images/"
        elif not source.is_file():
            reason = f"'{image.src}' is not in issues/{slug}; not copied: add it to the new issue's folder"
        else:
            reused.images[image.src] = source
            continue
        reused.warnings.append(previous.diagnostic("warning", "image-not-copied", reason, (*path, "src")))


def dates_in(model: BaseModel, path: YamlPath = ()) -> list[tuple[YamlPath, Any]]:
    """Every date in the model but the issue's own: a date or date-time value, or any value of a field that takes
    one (a masthead's "Novembre 2024"), whatever the section type and the field's name."""
    found: list[tuple[YamlPath, Any]] = []

    def walk(obj: Any, at: YamlPath) -> None:
        if isinstance(obj, BaseModel):
            for name, info in type(obj).model_fields.items():
                value = getattr(obj, name)
                key = (*at, info.alias or name)
                if value is None or key == ("date",):
                    continue
                if isinstance(value, dt.date) or _takes_date(info.annotation):
                    found.append((key, value))
                else:
                    walk(value, key)
        elif isinstance(obj, list | tuple):
            for index, item in enumerate(obj):
                walk(item, (*at, index))

    walk(model, path)
    return found


def _takes_date(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, dt.date):
        return True
    return any(_takes_date(arg) for arg in get_args(annotation))


def _accepts_null(data: Any, path: YamlPath) -> bool:
    """Whether the issue stays valid with this value set to null (an optional date); a required one is kept."""
    trial = _copy(data)
    _set(trial, path, None)
    try:
        Issue.model_validate(trial)
    except ValidationError:
        return False
    return True


def _copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {key: _copy(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_copy(item) for item in data]
    return data


def _set(data: Any, path: YamlPath, value: Any) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


def _spans(text: str) -> tuple[dict[YamlPath, tuple[int, int]], dict[YamlPath, int]]:
    """Where each value starts and ends, and where each key starts, as indices into text.

    Composed with the pure-Python parser, whose marks count the characters of text; parse_yaml's SourceMap
    (libyaml, for speed) has lines and columns of starts only, and an edit needs where a value ends."""
    values: dict[YamlPath, tuple[int, int]] = {}
    keys: dict[YamlPath, int] = {}

    def walk(node: yaml.Node, path: YamlPath) -> None:
        values.setdefault(path, (node.start_mark.index, node.end_mark.index))
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                child = (*path, key_node.value)
                keys.setdefault(child, key_node.start_mark.index)
                walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, ())
    return values, keys


def _line_start(text: str, index: int) -> int:
    return max(text.rfind(c, 0, index) for c in _BREAKS) + 1


def _previous_line(text: str, line_start: int) -> int:
    """The start of the line before the one that starts at line_start (past its line break, CR LF included)."""
    end = line_start - (2 if text[line_start - 2 : line_start] == "\r\n" else 1)
    return _line_start(text, end)


def _newline(text: str) -> str:
    match = re.search(r"\r\n|\r|\n", text)
    return match.group() if match else "\n"


def _our_comment(line: str) -> bool:
    """Whether line is a comment this module writes, in any language (an issue made from one made so)."""
    return any(pattern.fullmatch(line.strip()) for pattern in _OUR_COMMENTS)


_OUR_COMMENTS = [
    re.compile("# " + re.escape(CATALOG[lang][key]).replace(re.escape("{date}"), ".*"))
    for lang in CATALOG
    for key in ("previous_replace", "previous_reused", "previous_date_cleared", "previous_date_kept")
]


def _apply(text: str, edits: list[tuple[int, int, str]], comments: dict[int, list[str]]) -> str:
    """text with each edit made and each comment line put above its line, indented as that line is, in place of
    the comments a previous copy put there (so that they do not pile up from issue to issue)."""
    newline = _newline(text)
    changes = list(edits)
    for line_start, messages in comments.items():
        line = text[line_start:]
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        start = line_start
        while start > 0 and _our_comment(text[_previous_line(text, start) : start]):
            start = _previous_line(text, start)
        changes.append((start, line_start, "".join(f"{indent}# {m}{newline}" for m in messages)))
    # From the end, so that each index still points where the parser found it; at one index, comments go first.
    for start, end, replacement in sorted(changes, key=lambda c: (c[0], c[1]), reverse=True):
        text = text[:start] + replacement + text[end:]
    return text
