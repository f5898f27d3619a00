"""A workspace: the folder holding newsletter.toml, issues/, templates/, subscribers/ and build/.

Finds it, resolves an ISSUE argument (a folder or a slug), and scaffolds new workspaces and issues: an issue's
issue.yaml, and with --also its translations beside it (issue.en.yaml), each skeleton's words in its language.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from newsletter.config import CONFIG_FILE, Config, load_config
from newsletter.errors import Diagnostic, NewsletterError
from newsletter.i18n import LANGUAGES, translate
from newsletter.issue import ISSUE_FILE, SECTION_TYPES, TRANSLATION_FILE, issue_json_schema, version_file_name
from newsletter.reuse import Reused, copy_images, previous_versions, reuse_issue

SKELETON = Path(__file__).parent / "skeleton"
SCHEMA_FILE = "issue.schema.json"
AGENTS_FILE = "AGENTS.md"  # how an agent works in the workspace
SLUG_MAX = 100  # a folder name every file system takes, with room for build/<slug>/images/<name>
SLUG = re.compile(rf"[a-z0-9][a-z0-9-]{{0,{SLUG_MAX - 1}}}")  # fullmatch only: `$` would take "evil\n"


def is_slug(name: object) -> bool:
    """Whether name can name an issue: the one rule of the CLI and every MCP tool."""
    return isinstance(name, str) and SLUG.fullmatch(name) is not None


def shown_name(name: object) -> str:
    """A name as an error message quotes it: on one line (control characters escaped), and not too long."""
    return repr(name if not isinstance(name, str) or len(name) <= 60 else name[:60] + "…")


@dataclass
class Workspace:
    root: Path
    config: Config

    @property
    def issues_dir(self) -> Path:
        return self.root / "issues"

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"

    @property
    def build_dir(self) -> Path:
        return self.root / "build"

    @classmethod
    def discover(cls, start: Path | None = None) -> Workspace:
        """The workspace holding start: the nearest folder upwards with a newsletter.toml, else start."""
        start = (start or Path.cwd()).resolve()
        for folder in (start, *start.parents):
            if (folder / CONFIG_FILE).is_file():
                return cls(folder, load_config(folder))
        root = start.parent if start.name == "issues" else start
        return cls(root, load_config(root))

    @classmethod
    def for_issue(cls, ref: str) -> tuple[Workspace, Path]:
        """Resolve ISSUE (a folder, its issue.yaml, or a slug under issues/) and the workspace around it."""
        path = Path(ref)
        if (path.name == ISSUE_FILE or TRANSLATION_FILE.fullmatch(path.name)) and path.is_file():
            path = path.parent  # issue.yaml, or a translation beside it: the issue is the folder
        if path.is_dir():
            folder = path.resolve()
            return cls.discover(folder.parent), folder
        workspace = cls.discover()
        folder = workspace.issues_dir / ref
        if is_slug(ref) and folder.is_dir():
            return workspace, folder
        raise NewsletterError(
            f"no issue {shown_name(ref)}: neither a folder nor a slug in {workspace.issues_dir}; "
            "list them with `ls issues/` or create one with `newsletter new SLUG`"
        )


def init_workspace(target: Path, name: str, lang: str, *, force: bool = False) -> list[Path]:
    """Create a workspace in target: newsletter.toml, issues/, templates/, subscribers/, .gitignore, schema, AGENTS."""
    if lang not in LANGUAGES:
        raise NewsletterError(f"unknown language '{lang}'; use one of: {', '.join(LANGUAGES)}")
    config = target / CONFIG_FILE
    if config.exists() and not force:
        raise NewsletterError(f"{config} already exists; this is a workspace already (--force rewrites it)")
    for folder in ("issues", "templates", "subscribers"):
        (target / folder).mkdir(parents=True, exist_ok=True)
    toml_name = name.replace("\\", "\\\\").replace('"', '\\"')
    written = {
        config: Template((SKELETON / "newsletter.toml").read_text()).substitute(name=toml_name, lang=lang),
        target / ".gitignore": (SKELETON / "gitignore").read_text(),
        target / "templates" / "README.md": (SKELETON / "templates-README.md").read_text(),
        target / "subscribers" / ".gitkeep": "",
        target / SCHEMA_FILE: schema_text(),
        target / AGENTS_FILE: Template((SKELETON / AGENTS_FILE).read_text(encoding="utf-8")).safe_substitute(name=name),
    }
    for path, text in written.items():
        if path.name in (".gitignore", AGENTS_FILE) and path.exists() and not force:
            continue  # the folder's own, perhaps: a repository's AGENTS.md for its code
        path.write_text(text, encoding="utf-8")
    return sorted(written)


@dataclass
class NewIssue:
    """An issue just created: its issue.yaml (and translations) and, when made from a previous issue, what was taken
    from it."""

    file: Path
    images: list[str] = field(default_factory=list)  # the srcs copied from the previous issue's folder
    cleared: list[str] = field(default_factory=list)  # YAML paths of the dates cleared (a translation's: FILE: path)
    warnings: list[Diagnostic] = field(default_factory=list)  # images that could not be copied
    translations: list[Path] = field(default_factory=list)  # issue.en.yaml, … written beside issue.yaml

    @property
    def folder(self) -> Path:
        return self.file.parent

    def to_json(self) -> dict:
        return {
            "issue": str(self.folder),
            "file": str(self.file),
            "translations": [str(path) for path in self.translations],
            "images": self.images,
            "cleared_dates": self.cleared,
            "warnings": [w.to_json() for w in self.warnings],
        }


def new_issue(
    workspace: Workspace,
    slug: str,
    *,
    lang: str | None = None,
    also: Sequence[str] = (),
    from_issue: str | None = None,
    today: dt.date | None = None,
) -> NewIssue:
    """Create issues/<slug>/issue.yaml from the commented skeleton, or from the issue from_issue; never overwrite.
    also: the languages of its translations, each written beside it from the skeleton in that language
    (issue.en.yaml).

    From a previous issue: its YAML as its author wrote it, dated today, its other dates cleared, a comment above
    what to replace, and the images it uses copied to the same paths (see newsletter.reuse); its translations
    likewise, but one in the new issue's own language, and the languages of `also` it has no translation in from
    the skeleton.
    """
    if not is_slug(slug):
        raise NewsletterError(
            f"{shown_name(slug)} is not a valid slug: use lowercase letters, digits and hyphens (at most {SLUG_MAX}), "
            "e.g. 2025-02-hiver"
        )
    previous = None
    if from_issue is not None:
        previous = previous_versions(_previous_folder(workspace, from_issue))
    lang = lang or (previous.main.model.lang if previous else workspace.config.lang)
    if lang not in LANGUAGES:
        raise NewsletterError(f"unknown language '{lang}'; use one of: {', '.join(LANGUAGES)}")
    for other in also:
        if other not in LANGUAGES:
            raise NewsletterError(f"--also {other}: unknown language; use one of: {', '.join(LANGUAGES)}")
        if other == lang:
            raise NewsletterError(
                f"--also {other}: issue.yaml is in {lang} already; a translation is in another language"
            )
    folder = workspace.issues_dir / slug
    if (folder / ISSUE_FILE).exists() or (folder / ISSUE_FILE).is_symlink():
        raise NewsletterError(f"{folder / ISSUE_FILE} already exists; pick another slug or edit that file")
    if folder.exists() and folder.resolve().parent != workspace.issues_dir.resolve():
        raise NewsletterError(f"issues/{slug} leads outside {workspace.issues_dir}; refused")
    today = today or dt.date.today()
    # Everything is known before anything is written: the main file's text, and each translation's.
    main: Reused | str
    translations: dict[str, Reused | str] = {}
    warnings: list[Diagnostic] = []
    if previous is None:
        main = _skeleton(workspace, slug, lang, today)
    else:
        main = reuse_issue(previous.main, lang=lang, today=today)
        for other, translation in previous.translations.items():
            if other == lang:
                warnings.append(
                    Diagnostic(
                        "warning",
                        "translation-not-copied",
                        f"{translation.file_name} was not copied: the new issue.yaml is in {lang} already",
                        str(translation.file),
                    )
                )
                continue
            translations[other] = reuse_issue(translation, lang=other, today=today, add_date=False)
    for other in also:
        translations.setdefault(other, _skeleton(workspace, slug, other, today, translation=True))
    for translated in translations:
        target = folder / version_file_name(translated)
        if target.exists() or target.is_symlink():
            raise NewsletterError(f"{target} already exists; pick another slug or edit that file")

    (folder / "images").mkdir(parents=True, exist_ok=True)
    created = NewIssue(folder / ISSUE_FILE, warnings=warnings)
    versions: list[tuple[str | None, Reused | str]] = [(None, main), *translations.items()]
    for version_lang, text in versions:
        file = folder / version_file_name(version_lang)
        if isinstance(text, str):
            file.write_text(text, encoding="utf-8")
        else:
            for src in copy_images(text, folder):
                if src not in created.images:
                    created.images.append(src)
            file.write_bytes(text.text.encode("utf-8"))  # its line breaks as they were
            prefix = f"{file.name}: " if version_lang is not None else ""
            created.cleared += [prefix + path for path in text.cleared]
            created.warnings += text.warnings
        if version_lang is not None:
            created.translations.append(file)
    return created


def _skeleton(workspace: Workspace, slug: str, lang: str, today: dt.date, *, translation: bool = False) -> str:
    """The commented skeleton of an issue in lang, its words in that language (skeleton/issue.LANG.yaml, else
    skeleton/issue.yaml's English). A translation's leaves the date out: it takes issue.yaml's."""
    template = SKELETON / f"issue.{lang}.yaml"
    text = Template((template if template.is_file() else SKELETON / "issue.yaml").read_text(encoding="utf-8"))
    filled = text.substitute(
        name=workspace.config.name, slug=slug, lang=lang, date=today.isoformat(), types=", ".join(SECTION_TYPES)
    )
    if translation:
        said = translate(lang, "skeleton_translation_date")
        filled = filled.replace(f"\ndate: {today.isoformat()}\n", f"\n# {said}\n", 1)
    return filled


def _previous_folder(workspace: Workspace, name: str) -> Path:
    """The folder of the previous issue named `name`: a slug under issues/, confined as every slug is."""
    if not is_slug(name):
        raise NewsletterError(
            f"{shown_name(name)} is not an issue's slug: name the previous issue by its folder under issues/ "
            "(lowercase letters, digits and hyphens), e.g. --from 2024-11-forum-des-alliances"
        )
    issues = workspace.issues_dir.resolve()
    folder = (workspace.issues_dir / name).resolve()
    if folder.parent != issues:
        raise NewsletterError(f"issues/{name} leads outside {issues}; refused")
    file = folder / ISSUE_FILE
    if not file.is_file():
        raise NewsletterError(f"no previous issue '{name}' in {issues}: `ls issues/` lists them")
    if file.resolve().parent != folder:
        raise NewsletterError(f"issues/{name}/{ISSUE_FILE} leads outside that issue's folder; refused")
    return folder


def schema_text() -> str:
    return json.dumps(issue_json_schema(), indent=2, ensure_ascii=False) + "\n"
