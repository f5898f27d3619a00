"""The versions of one issue in its folder: issue.yaml and each translation beside it (issue.en.yaml), read
together by `read_versions` (each as far as it loads: what check goes through) and `load_versions` (all or an
IssueError): what they must share is checked (a translation's lang is another than issue.yaml's, its date
issue.yaml's), and each is told of the other, whose web version its top links to. Each file is issue.py's
`load_issue`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from newsletter.errors import IssueError, NewsletterError
from newsletter.i18n import LANGUAGES
from newsletter.issue import ISSUE_FILE, LoadedIssue, load_issue, translation_files, version_file_name


@dataclass
class IssueVersions:
    """Every version of one issue: issue.yaml (main) first, then each translation by language."""

    main: LoadedIssue
    translations: dict[str, LoadedIssue] = field(default_factory=dict)

    def __iter__(self) -> Iterator[LoadedIssue]:
        yield self.main
        yield from self.translations.values()

    @property
    def langs(self) -> list[str]:
        return [self.main.model.lang, *self.translations]

    def version(self, lang: str | None = None) -> LoadedIssue:
        """The version in lang (None: the main file); NewsletterError naming those there are."""
        if lang is None or lang == self.main.model.lang:
            return self.main
        if lang in self.translations:
            return self.translations[lang]
        raise no_version(self.main.slug, lang, [(issue.model.lang, issue.file_name) for issue in self])


def no_version(slug: str, lang: str, there: list[tuple[str, str]]) -> NewsletterError:
    """The error of asking an issue for a version it does not have, naming those it has: (lang, file name) each."""
    shown = ", ".join(f"{each} ({name})" for each, name in there)
    return NewsletterError(f"issues/{slug} has no {lang} version ({version_file_name(lang)}); its versions: {shown}")


def read_versions(
    folder: Path, langs: Collection[str] | None = None
) -> tuple[LoadedIssue | IssueError, dict[str, LoadedIssue | IssueError]]:
    """Each version of the folder as far as it loads: the main file and each translation by language, each loaded
    or the IssueError that stopped it, with what the versions must share checked (a translation in the main file's
    own language, another date: errors of the translation's) and other_lang set. What check goes through.

    langs: only the translations in these languages (a send's: its list's), whose readers exist; None: every one."""
    main: LoadedIssue | IssueError
    try:
        main = load_issue(folder)
    except IssueError as exc:
        main = exc
    translations: dict[str, LoadedIssue | IssueError] = {}
    for lang in translation_files(folder)[0]:
        if langs is not None and lang not in langs:
            continue
        try:
            translations[lang] = load_issue(folder, lang)
        except IssueError as exc:
            translations[lang] = exc
    if isinstance(main, IssueError):
        return main, translations
    for lang, translation in list(translations.items()):
        if isinstance(translation, LoadedIssue):
            translations[lang] = _shared_with(main, translation)
    loaded = [lang for lang, translation in translations.items() if isinstance(translation, LoadedIssue)]
    if loaded:
        main.other_lang = loaded[0]  # two languages: one translation at most (a third would need more links)
    for translation in translations.values():
        if isinstance(translation, LoadedIssue):
            translation.other_lang = main.model.lang
    return main, translations


def _shared_with(main: LoadedIssue, translation: LoadedIssue) -> LoadedIssue | IssueError:
    """The translation with what it shares with the main file checked: its language is another, its date the same
    (left out, it takes the main file's)."""
    name, lang = translation.file_name, translation.model.lang
    if lang == main.model.lang:
        return IssueError(
            [
                translation.diagnostic(
                    "error",
                    "translation-same-language",
                    f"{ISSUE_FILE} is in {lang} already: a translation is in another language; translate it "
                    f"into {', '.join(other for other in LANGUAGES if other != lang)} (issue.LANG.yaml, lang: LANG) "
                    "or remove this file",
                    ("lang",),
                )
            ]
        )
    date, main_date = translation.model.date, main.model.date
    if date is not None and date != main_date:
        if main_date is None:
            said = f"{ISSUE_FILE} gives none"
        else:
            line, column = main.source.locate(("date",))
            said = f"{ISSUE_FILE}'s is {main_date} ({ISSUE_FILE}:{line}:{column})"
        return IssueError(
            [
                translation.diagnostic(
                    "error",
                    "translation-date",
                    f"date is {date}, but {said}: both versions are one issue, of one date; remove date from "
                    f"{name} (it takes {ISSUE_FILE}'s) or give the same in both",
                    ("date",),
                )
            ]
        )
    if date is None and main_date is not None:
        translation.model = translation.model.model_copy(update={"date": main_date})
    return translation


def load_versions(folder: Path) -> IssueVersions:
    """Load every version of the issue in folder: issue.yaml, then each issue.LANG.yaml beside it. Raise IssueError
    listing every problem of every file, each with its file:line:col."""
    main, translations = read_versions(folder)
    problems = [
        d for version in (main, *translations.values()) if isinstance(version, IssueError) for d in version.diagnostics
    ]
    if problems:
        raise IssueError(problems)
    assert isinstance(main, LoadedIssue)
    return IssueVersions(main, {lang: t for lang, t in translations.items() if isinstance(t, LoadedIssue)})
