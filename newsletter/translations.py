"""What check says of a translation beside issue.yaml (checks.check_versions calls compare_versions): warnings,
all located in the translation's file and naming the line of issue.yaml they concern:
- The sections are paired in order, as a diff pairs lines: a pair has the same type, and of the pairings that
  keep both orders, the one with the most pairs is taken, then the one whose pairs share the most links and
  images (a tie: the earliest pairs). A section left without a pair is translation-missing-section (issue.yaml
  has it) or translation-extra-section (the translation has it); two left over, one on each side, of the same
  type and with the same links and images (at least one), are one translation-section-order.
- In each pair, a link (a URL field, or a link of a Markdown text) or an image (its src) is matched with the same
  URL anywhere in the other's section, else with the one at the same place (the same field, or the same nth link
  of the same text) left unmatched: that one differs on purpose (a page or an image in the reader's language)
  and is fine. One matched neither way is translation-missing-link / -image (issue.yaml has it) or
  translation-extra-link / -image (only the translation has it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from newsletter.errors import Diagnostic
from newsletter.issue import ISSUE_FILE, LoadedIssue, Section, YamlPath, iter_values
from newsletter.render import markdown_tokens


def markdown_links(text: str) -> list[tuple[str, int]]:
    """Every link and image URL in a Markdown text, with the line of the text it is on (0-based)."""
    links = []
    for token in markdown_tokens(text):
        if token.type != "inline":
            continue
        first_line = token.map[0] if token.map else 0
        for child in token.children or []:
            href = child.attrGet("href") if child.type == "link_open" else None
            if child.type == "image":
                href = child.attrGet("src")
            if href is None:
                continue
            before = text.splitlines()[first_line:]
            offset = next((i for i, line in enumerate(before) if f"]({href}" in line), 0)
            links.append((href, first_line + offset))
    return links


@dataclass(frozen=True)
class _Reference:
    """A link or an image of a section: its URL (src), its place in the section, and where it is written."""

    kind: str  # "link" or "image"
    value: str
    place: tuple  # (its field's path in the section, n): the nth link of a Markdown text, else n = 0
    path: YamlPath  # in the issue
    line_offset: int = 0  # the line of a Markdown text's link, after the text's first


def _references(issue: LoadedIssue, index: int) -> list[_Reference]:
    section = issue.model.sections[index]
    prefix = ("sections", index)
    found = []
    for path, value, kind in iter_values(section, prefix):
        place = path[len(prefix) :]
        if kind == "image":
            found.append(_Reference("image", value.src.strip(), (place, 0), (*path, "src")))
        elif kind == "url":
            found.append(_Reference("link", value.strip(), (place, 0), path))
        elif kind == "markdown":
            block = 1 if path in issue.source.block_scalars else 0
            for n, (href, line_offset) in enumerate(markdown_links(value)):
                found.append(_Reference("link", href.strip(), (place, n), path, line_offset + block))
    return found


def _where(issue: LoadedIssue, path: YamlPath, line_offset: int = 0) -> str:
    """file:line:col in the issue's folder, as a message names a place in the other file."""
    line, column = issue.source.locate(path)
    if line is not None and line_offset:
        line, column = line + line_offset, None
    return ":".join(str(part) for part in (issue.file_name, line, column) if part is not None)


def _described(section: Section) -> str:
    """A section as a message names it: its type and the start of its first text, e.g. heading "Prochaines étapes"."""
    for name in ("title", "text", "label", "caption", "intro", "lead", "alt", "subtitle"):
        value = getattr(section, name, None)
        if isinstance(value, str) and value.strip():
            first = " ".join(value.split())
            return f'{section.type} "{first[:40]}…"' if len(first) > 40 else f'{section.type} "{first}"'
    return section.type


def _pairs(main: LoadedIssue, translation: LoadedIssue) -> list[tuple[int, int]]:
    """The sections paired, (index in issue.yaml, index in the translation), in order (see above)."""
    ones, others = main.model.sections, translation.model.sections
    mine = [Counter(r.value for r in _references(main, i)) for i in range(len(ones))]
    theirs = [Counter(r.value for r in _references(translation, j)) for j in range(len(others))]
    pair_weight = 1 + sum(sum(c.values()) for c in mine)  # one pair more outweighs any links shared

    def gain(i: int, j: int) -> int | None:
        if ones[i].type != others[j].type:
            return None
        return pair_weight + sum((mine[i] & theirs[j]).values())

    rows, columns = len(ones), len(others)
    best = [[0] * (columns + 1) for _ in range(rows + 1)]
    for i in range(rows - 1, -1, -1):
        for j in range(columns - 1, -1, -1):
            paired = gain(i, j)
            best[i][j] = max(best[i + 1][j], best[i][j + 1], -1 if paired is None else paired + best[i + 1][j + 1])
    pairs, i, j = [], 0, 0
    while i < rows and j < columns:
        paired = gain(i, j)
        if paired is not None and best[i][j] == paired + best[i + 1][j + 1]:
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif best[i][j] == best[i + 1][j]:
            i += 1
        else:
            j += 1
    return pairs


def compare_versions(main: LoadedIssue, translation: LoadedIssue) -> list[Diagnostic]:
    """What a translation lacks or has more than issue.yaml, section by section (the rule above)."""
    ones, others = main.model.sections, translation.model.sections
    pairs = _pairs(main, translation)
    paired_main = {i: j for i, j in pairs}
    paired_translation = {j: i for i, j in pairs}
    name = translation.file_name
    found: list[tuple[int, Diagnostic]] = []  # (its section in the translation, for the order of the report)

    def fingerprint(issue: LoadedIssue, index: int) -> Counter:
        return Counter((r.kind, r.value) for r in _references(issue, index))

    left_main = [i for i in range(len(ones)) if i not in paired_main]
    left_translation = [j for j in range(len(others)) if j not in paired_translation]
    moved: dict[int, int] = {}  # translation's index -> issue.yaml's
    for j in left_translation:
        mark = fingerprint(translation, j)
        for i in left_main:
            if i not in moved.values() and ones[i].type == others[j].type and mark and mark == fingerprint(main, i):
                moved[j] = i
                break

    def next_paired(index: int, pairing: dict[int, int]) -> int | None:
        """The other file's section paired with the first paired one after index: the one a missing one goes before."""
        following = [pairing[k] for k in sorted(pairing) if k > index]
        return following[0] if following else None

    for j, i in moved.items():
        found.append(
            (
                j,
                translation.diagnostic(
                    "warning",
                    "translation-section-order",
                    f"this {_described(others[j])} is sections[{j}] here but sections[{i}] in {ISSUE_FILE} "
                    f"({_where(main, ('sections', i))}): put the sections of both files in the same order",
                    ("sections", j),
                ),
            )
        )
    for i in left_main:
        if i in moved.values():
            continue
        at = next_paired(i, paired_main)
        place = "before this section"
        if at is None:  # after the last one, or in place of none
            at, place = (len(others) - 1, "after this section") if others else (None, "here")
        found.append(
            (
                at if at is not None else 0,
                translation.diagnostic(
                    "warning",
                    "translation-missing-section",
                    f"no translation of the {_described(ones[i])}, which {_where(main, ('sections', i))} has (its "
                    # the translation's place last, where the diagnostic's path (in the translation) follows it
                    f"sections[{i}]): remove it from {ISSUE_FILE}, or translate it into {name} {place}",
                    ("sections", at) if at is not None else ("sections",),
                ),
            )
        )
    for j in left_translation:
        if j in moved:
            continue
        at = next_paired(j, paired_translation)
        there = f" (it would go near {_where(main, ('sections', at))})" if at is not None else ""
        found.append(
            (
                j,
                translation.diagnostic(
                    "warning",
                    "translation-extra-section",
                    f"this {_described(others[j])} is not in {ISSUE_FILE}{there}: add it to {ISSUE_FILE} too, or "
                    f"remove it from {name}",
                    ("sections", j),
                ),
            )
        )
    for i, j in pairs:
        found.extend((j, d) for d in _compare_references(main, i, translation, j))
    return [diagnostic for _, diagnostic in sorted(found, key=lambda item: (item[0], item[1].line or 0))]


def _compare_references(main: LoadedIssue, i: int, translation: LoadedIssue, j: int) -> list[Diagnostic]:
    """The links and images of two paired sections that the other lacks (the rule above)."""
    found = []
    mine, theirs = _references(main, i), _references(translation, j)
    section = main.model.sections[i]
    for kind in ("link", "image"):
        left = [r for r in mine if r.kind == kind]
        right = [r for r in theirs if r.kind == kind]
        for reference in list(left):  # the same URL anywhere in the other's section
            twin = next((r for r in right if r.value == reference.value), None)
            if twin is not None:
                left.remove(reference)
                right.remove(twin)
        for reference in list(left):  # else the one at the same place: a URL in the reader's language
            twin = next((r for r in right if r.place == reference.place), None)
            if twin is not None:
                left.remove(reference)
                right.remove(twin)
        what = "links to" if kind == "link" else "shows the image"
        for reference in left:
            found.append(
                translation.diagnostic(
                    "warning",
                    f"translation-missing-{kind}",
                    f"{_where(main, reference.path, reference.line_offset)} {what} {reference.value} in its "
                    f"{_described(section)}, and this section of {translation.file_name} does not: add it here (one "
                    f"of its own in this language is fine), or remove it from {ISSUE_FILE}",
                    ("sections", j),
                )
            )
        for reference in right:
            found.append(
                translation.diagnostic(
                    "warning",
                    f"translation-extra-{kind}",
                    f"this {'link to' if kind == 'link' else 'image'} {reference.value} is not in the matching "
                    f"section of {ISSUE_FILE} ({_where(main, ('sections', i))}): add it there too, or remove it here",
                    reference.path,
                    line_offset=reference.line_offset,
                )
            )
    return found
