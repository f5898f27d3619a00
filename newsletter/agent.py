"""What an agent may do in a workspace, and the gate in front of a send: the library behind `newsletter mcp`.

An agent names an issue by its slug only, and writes only issues/<slug>/issue.yaml, its translations beside it
(issue.en.yaml: a version names its language) and issues/<slug>/images/<file>:
a name with `..`, a slash or an absolute path is refused, and so is any path that resolves outside issues/ (a
symlink). A send or a schedule needs a confirmation code, which only a dry run gives: the code is bound to every
byte the messages are made of (subject, HTML, text, sender, reply-to, the list's name, links, each image's bytes),
the list, the audience size and the transport of that dry run, is used once, and expires
after CONFIRMATION_LIFETIME. The codes are kept, as SHA-256 hashes, in build/confirmations.json, which is read and
rewritten under an exclusive lock and replaced atomically; a lost or unreadable file only refuses every code.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import email
import email.policy
import hashlib
import json
import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from newsletter.checks import HEAVY_IMAGE_BYTES, check_versions
from newsletter.errors import Diagnostic, IssueError, NewsletterError
from newsletter.field_placeholders import list_fields_for
from newsletter.i18n import LANGUAGES
from newsletter.issue import ISSUE_FILE, load_issue, translation_files, version_file_name
from newsletter.render import image_size
from newsletter.sending.send import SendSummary, parse_at, prepare_real_send
from newsletter.sending.send import send as send_issue
from newsletter.sending.wiring import open_store
from newsletter.store import MembershipStatus
from newsletter.workspace import SLUG_MAX, Workspace, is_slug, shown_name

CONFIRMATION_FILE = "confirmations.json"  # under build/
CONFIRMATION_LIFETIME = dt.timedelta(hours=1)
MAX_YAML_BYTES = 1024 * 1024
MAX_IMAGE_BYTES = 10 * 1024 * 1024
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")
IMAGE_TYPES = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
}
ISSUE_FORMAT_FILE = "issue-format.md"  # package data; docs/issue-format.md is its copy
AGAIN = "run send_dry_run again, look at what it shows, and use the code it gives"
NO_CODE = f"no confirmation code: a send needs the code that a dry run of exactly this gives; {AGAIN}"


# Issues, named by slug only


def issue_folder(workspace: Workspace, name: str) -> Path:
    """The folder of the issue named `name` (a slug) in this workspace; NewsletterError for anything else."""
    if not is_slug(name):
        raise NewsletterError(
            f"{shown_name(name)} is not an issue's slug: use lowercase letters, digits and hyphens (at most "
            f"{SLUG_MAX}), e.g. 2025-02-hiver (list_issues shows them); paths are refused"
        )
    issues = workspace.issues_dir.resolve()
    folder = (workspace.issues_dir / name).resolve()
    if folder.parent != issues:
        raise NewsletterError(f"issues/{name} leads outside {issues}; refused")
    if not folder.is_dir():
        raise NewsletterError(f"no issue '{name}' in {issues}; create it with new_issue or `newsletter new {name}`")
    return folder


def refuse_welcome(workspace: Workspace, name: str) -> None:
    """NewsletterError when `name` is a list's welcome email (newsletter.toml): every newcomer receives it without a
    dry run's code or a person's approval, so an agent never writes it, nor creates it."""
    for list_slug, settings in workspace.config.lists.items():
        if settings.welcome == name:
            raise NewsletterError(
                f"issues/{name} is the welcome email of the list {list_slug} ([lists.{list_slug}] welcome in "
                "newsletter.toml): each newcomer receives it with no code nor approval, so only a person edits it"
            )


def writable_folder(workspace: Workspace, name: str) -> Path:
    """The folder of an issue an agent may write: issue_folder's, and never a list's welcome (refuse_welcome)."""
    refuse_welcome(workspace, name)
    return issue_folder(workspace, name)


def list_issues(workspace: Workspace) -> dict:
    """Every issue folder: slug, subject, lang and date when its YAML loads, else the first problem."""
    found = []
    folders = sorted(workspace.issues_dir.iterdir()) if workspace.issues_dir.is_dir() else []
    for folder in folders:
        if not (is_slug(folder.name) and (folder / ISSUE_FILE).is_file()):
            continue
        item: dict = {"slug": folder.name, "file": str(folder / ISSUE_FILE)}
        try:
            model = load_issue(folder).model
        except NewsletterError as exc:
            item["problem"] = str(exc)
        else:
            item.update(subject=model.subject, lang=model.lang, date=model.date.isoformat() if model.date else None)
        item["translations"] = list(translation_files(folder)[0])  # the languages of its issue.LANG.yaml
        found.append(item)
    return {"issues": found}


def version_file(workspace: Workspace, name: str, lang: str | None = None) -> Path:
    """The file of the issue's version in lang: issue.yaml (lang None, or issue.yaml's own language), else its
    translation issue.LANG.yaml beside it, which may not exist yet; read and written only inside the folder."""
    folder = issue_folder(workspace, name)
    if lang is None:
        return folder / ISSUE_FILE
    if lang not in LANGUAGES:
        raise NewsletterError(f"{shown_name(lang)} is no language of an issue; use one of: {', '.join(LANGUAGES)}")
    try:
        if load_issue(folder).model.lang == lang:
            return folder / ISSUE_FILE
    except IssueError:
        pass  # issue.yaml does not load: lang names the translation
    file = folder / version_file_name(lang)
    if (file.exists() or file.is_symlink()) and file.resolve().parent != folder:
        raise NewsletterError(f"issues/{name}/{file.name} leads outside the issue's folder; refused")
    return file


def read_issue(workspace: Workspace, name: str, lang: str | None = None) -> str:
    """The YAML of the issue's version in lang (None: issue.yaml)."""
    file = version_file(workspace, name, lang)
    if not file.is_file():
        how = f'write_issue with lang "{lang}"' if lang else "write_issue"
        raise NewsletterError(f"{file} does not exist; write it with {how}")
    return file.read_text(encoding="utf-8")


def write_issue(workspace: Workspace, name: str, text: str, lang: str | None = None) -> dict:
    """Replace issues/<name>/issue.yaml (or with lang, its version in that language, issue.LANG.yaml beside it) with
    text (atomically), then answer with what `check --json` reports of that file."""
    refuse_welcome(workspace, name)  # a list's welcome goes out unseen: a person writes it
    file = version_file(workspace, name, lang)
    data = text.encode("utf-8")
    if len(data) > MAX_YAML_BYTES:
        raise NewsletterError(f"the YAML is {len(data) // 1024} KB; an {file.name} holds at most 1 MB")
    _replace(file, data)
    return check_report(workspace, file.parent, None if file.name == ISSUE_FILE else lang)


def check_report(workspace: Workspace, folder: Path, lang: str | None = None, *, every: bool = False) -> dict:
    """What `check --json` reports of the issue in folder: of every file (every), else of its version in lang
    (None: issue.yaml)."""
    fields = list_fields_for(workspace, None)  # {{ field }}s against the store's only list, if it has one
    checked = check_versions(folder, workspace.config, workspace.templates_dir, list_fields=fields)
    return checked.to_json() if every else checked.version_json(lang)


def add_image(workspace: Workspace, name: str, file_name: str, data_base64: str) -> dict:
    """Write an image into issues/<name>/images/, refused unless it is a PNG, JPEG or GIF; warned when heavy."""
    folder = writable_folder(workspace, name)
    if not _is_image_name(file_name):
        raise NewsletterError(
            f"{shown_name(file_name)} cannot name an image: give a file name without folders, ending in "
            f"{', '.join(IMAGE_SUFFIXES)}, e.g. logo.png"
        )
    try:
        data = base64.b64decode(data_base64, validate=True)
    except (binascii.Error, ValueError):
        raise NewsletterError("data_base64 is not base64: encode the image's bytes with base64") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise NewsletterError(f"the image weighs {len(data) / 1e6:.1f} MB; resize it (600 px wide is plenty)")
    images = folder / "images"
    images.mkdir(exist_ok=True)
    target = images / file_name
    if target.resolve().parent != images.resolve() or images.resolve().parent != folder:
        raise NewsletterError(f"issues/{name}/images leads outside the issue's folder; refused")
    temporary = images / f".{file_name}.tmp"
    temporary.write_bytes(data)
    size = image_size(temporary)
    if size is None:
        temporary.unlink()
        raise NewsletterError(f"'{file_name}' is not a PNG, JPEG or GIF image")
    os.replace(temporary, target)
    warnings = []
    if len(data) > HEAVY_IMAGE_BYTES:
        warnings.append(
            Diagnostic(
                "warning",
                "heavy-image",
                f"'images/{file_name}' weighs {len(data) / 1e6:.1f} MB; resize it "
                "(600 px wide, or 1200 for sharp screens, is plenty)",
                str(target),
            ).to_json()
        )
    return {
        "src": f"images/{file_name}",
        "file": str(target),
        "width": size[0],
        "height": size[1],
        "bytes": len(data),
        "warnings": warnings,
    }


def _is_image_name(file_name: str) -> bool:
    """A name add_image writes and an agent reads: a plain file name in images/, no folder, no hidden file."""
    return (
        Path(file_name).name == file_name
        and not file_name.startswith(".")
        and file_name.lower().endswith(IMAGE_SUFFIXES)
        and "\\" not in file_name
        and file_name.isprintable()
    )


def image_type(data: bytes) -> str | None:
    """The MIME type of a PNG, JPEG or GIF, from its first bytes; None for anything else."""
    for magic, mime in IMAGE_TYPES.items():
        if data.startswith(magic):
            return mime
    return None


def issue_images(workspace: Workspace, name: str) -> list[tuple[str, str]]:
    """(file name, MIME type) of each image in issues/<name>/images/ that read_image gives."""
    folder = issue_folder(workspace, name)
    images = folder / "images"
    if not images.is_dir() or images.resolve().parent != folder:
        return []
    found = []
    for file in sorted(images.iterdir()):
        if not _is_image_name(file.name) or file.resolve().parent != images.resolve() or not file.is_file():
            continue
        with file.open("rb") as stream:
            mime = image_type(stream.read(8))
        if mime is not None:
            found.append((file.name, mime))
    return found


def read_image(workspace: Workspace, name: str, file_name: str) -> tuple[bytes, str]:
    """The bytes and MIME type of issues/<name>/images/<file_name>, read only inside that folder."""
    folder = issue_folder(workspace, name)
    if not _is_image_name(file_name):
        raise NewsletterError(
            f"{shown_name(file_name)} names no image: images are read by their file name in images/, without "
            f"folders, ending in {', '.join(IMAGE_SUFFIXES)} (list_resources lists them)"
        )
    images = folder / "images"
    file = images / file_name
    if images.resolve().parent != folder or file.resolve().parent != images.resolve():
        raise NewsletterError(f"issues/{name}/images/{file_name} leads outside the issue's folder; refused")
    if not file.is_file():
        raise NewsletterError(f"no image '{file_name}' in issues/{name}/images (list_resources lists them)")
    if file.stat().st_size > MAX_IMAGE_BYTES:
        raise NewsletterError(f"issues/{name}/images/{file_name} weighs over 10 MB; resize it")
    data = file.read_bytes()
    mime = image_type(data)
    if mime is None:
        raise NewsletterError(f"issues/{name}/images/{file_name} is not a PNG, JPEG or GIF image")
    return data, mime


def issue_format_text() -> str:
    """The issue format (fields, section types, what check reports), from the file the package ships.

    newsletter/issue-format.md is package data, so an installed wheel has it too; docs/issue-format.md is a copy
    that tests/test_docs.py keeps identical."""
    try:
        text = resources.files("newsletter").joinpath(ISSUE_FORMAT_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return "The issue format: see `newsletter schema` (the JSON Schema of issue.yaml).\n"
    return text.strip() + "\n"


def _replace(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


# Lists


def lists_summary(workspace: Workspace) -> dict:
    store = open_store(workspace)
    try:
        found = []
        for slug in store.list_slugs():
            row = store.find_list(slug)
            found.append(
                {
                    "slug": row.slug,
                    "name": row.title(workspace.config.name),
                    "subscribed": store.count_members(row.id, MembershipStatus.SUBSCRIBED),
                    "segments": dict(workspace.config.list_settings(row.slug).segments),
                }
            )
        return {"lists": found}
    finally:
        store.close()


def subscribers_summary(workspace: Workspace, list_slug: str, *, addresses: bool = False) -> dict:
    """A list's members counted by status; their addresses only when asked."""
    store = open_store(workspace)
    try:
        row = store.find_list(list_slug)
        counts = {status: store.count_members(row.id, status) for status in MembershipStatus}
        document: dict = {
            "list": row.slug,
            "name": row.title(workspace.config.name),
            "counts": counts,
            "total": sum(counts.values()),
        }
        if addresses:
            document["members"] = [
                {"email": m.email, "name": m.name, "status": m.status, "fields": m.fields}
                for m in store.members(row.id)
            ]
        return document
    finally:
        store.close()


# The send gate


@dataclass(frozen=True)
class SendBinding:
    """What a confirmation code stands for: this content, to this list, of this size, through this transport."""

    issue: str
    list: str
    content: str  # FrozenCampaign.message_digest: subject, both parts, sender, reply-to, list, links, images' bytes
    audience: int
    transport: str  # without credentials
    segment: str | None = None  # the segment's canonical expression; None: the whole list


class ConfirmationBook:
    """Single-use confirmation codes, kept as hashes in a JSON file under an exclusive lock."""

    def __init__(self, path: Path, lifetime: dt.timedelta = CONFIRMATION_LIFETIME):
        self.path = path
        self.lifetime = lifetime

    @classmethod
    def of(cls, workspace: Workspace) -> ConfirmationBook:
        return cls(workspace.build_dir / CONFIRMATION_FILE)

    def issue(self, binding: SendBinding, *, at: dt.datetime | None = None) -> tuple[str, dt.datetime]:
        """A new code for binding, and when it expires."""
        now = at or dt.datetime.now(dt.UTC)
        code = secrets.token_hex(5)
        expires = now + self.lifetime
        with self._records(now) as records:
            records[_code_key(code)] = {
                **asdict(binding),
                "created_at": now.isoformat(),
                "expires_at": expires.isoformat(),
                "used_at": None,
            }
        return code, expires

    def redeem(self, code: str, binding: SendBinding, *, at: dt.datetime | None = None) -> None:
        """Use the code for binding, once; NewsletterError saying why it cannot be (nothing is used then)."""
        now = at or dt.datetime.now(dt.UTC)
        again = AGAIN
        if not code.strip():
            raise NewsletterError(NO_CODE)
        with self._records(now) as records:
            record = records.get(_code_key(code.strip()))
            if record is None:
                raise NewsletterError(f"confirmation code '{code}' is unknown: no dry run gave it; {again}")
            if record["used_at"]:
                raise NewsletterError(
                    f"confirmation code '{code}' was used at {record['used_at']}; a code sends once: {again}"
                )
            if dt.datetime.fromisoformat(record["expires_at"]) <= now:
                raise NewsletterError(f"confirmation code '{code}' expired at {record['expires_at']}; {again}")
            if (record["issue"], record["list"]) != (binding.issue, binding.list):
                raise NewsletterError(
                    f"confirmation code '{code}' is for {record['issue']} to the list "
                    f"'{record['list']}', not {binding.issue} to '{binding.list}'; {again}"
                )
            if record.get("segment") != binding.segment:
                shown_then = record.get("segment") or "the whole list"
                raise NewsletterError(
                    f"confirmation code '{code}' is for {shown_then}, not {binding.segment or 'the whole list'}; "
                    f"{again}"
                )
            if record["content"] != binding.content:
                raise NewsletterError(f"{binding.issue} changed since the dry run that gave code '{code}'; {again}")
            if record["audience"] != binding.audience:
                raise NewsletterError(
                    f"the audience changed since the dry run that gave code '{code}' "
                    f"({record['audience']} then, {binding.audience} now); {again}"
                )
            if record["transport"] != binding.transport:
                raise NewsletterError(
                    f"the transport changed since the dry run that gave code '{code}' "
                    f"({record['transport']} then, {binding.transport} now); {again}"
                )
            record["used_at"] = now.isoformat()

    @contextlib.contextmanager
    def _records(self, now: dt.datetime) -> Iterator[dict]:
        """The records, to read and change under the lock; written back (atomically) when the block succeeds."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(self.path.with_name(self.path.name + ".lock")):
            try:
                records = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                records = {}  # none yet, or unreadable: every code is refused, never wrongly accepted
            before = json.dumps(records, sort_keys=True)
            yield records
            horizon = now - dt.timedelta(days=1)  # expired a day ago: forgotten
            for key in [k for k, r in records.items() if dt.datetime.fromisoformat(r["expires_at"]) < horizon]:
                del records[key]
            if json.dumps(records, sort_keys=True) != before:
                _replace(self.path, json.dumps(records, indent=1, sort_keys=True).encode("utf-8"))


def _code_key(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


@contextlib.contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on lock_file across processes (flock; msvcrt on Windows)."""
    with lock_file.open("a+b") as handle:
        if sys.platform == "win32":  # no fcntl there
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
            return
        import fcntl

        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sample_parts(sample: str | None) -> dict | None:
    """One whole message as an agent reads it: its headers (decoded) and its plain-text part."""
    if not sample:
        return None
    message = email.message_from_string(sample, policy=email.policy.default)
    headers: dict[str, str] = {}
    for key, value in message.items():
        headers[key] = f"{headers[key]}, {value}" if key in headers else str(value)
    part = message.get_body(preferencelist=("plain",))
    return {"headers": headers, "text": part.get_content() if part is not None else ""}


async def _binding(
    workspace: Workspace, folder: Path, list_slug: str, dsn_text: str, segment: str | None = None
) -> tuple[SendSummary, SendBinding]:
    """A dry run, and what it showed as a SendBinding: the digest of every byte its messages are made of, the
    segment and the audience."""
    summary = await send_issue(workspace, folder, list_slug, dsn_text=dsn_text, dry_run=True, segment=segment)
    store = open_store(workspace)
    try:
        slug = store.find_list(list_slug).slug
    finally:
        store.close()
    assert summary.message is not None
    expression = summary.segment["expression"] if summary.segment else None
    binding = SendBinding(folder.name, slug, summary.message, summary.audience, summary.transport, expression)
    return summary, binding


async def confirmable_dry_run(
    workspace: Workspace, folder: Path, list_slug: str, dsn_text: str, segment: str | None = None
) -> dict:
    """The dry run's JSON (as `send --json`), its sample as headers and text, and a confirmation code for it.

    No code is given when a real send would be refused (no base_url, secret key or absolute image URLs for a
    transport that leaves this machine); `refused` says why.
    """
    summary, binding = await _binding(workspace, folder, list_slug, dsn_text, segment)
    document = summary.to_json()
    document["sample"] = sample_parts(summary.sample)
    if summary.samples is not None:  # an issue in two languages: one message of each version
        document["samples"] = {lang: sample_parts(sample) for lang, sample in summary.samples.items()}
    try:
        await prepare_real_send(workspace, folder, dsn_text, list_slug)
    except NewsletterError as exc:
        document.update(confirmation=None, refused=str(exc))
        return document
    code, expires = ConfirmationBook.of(workspace).issue(binding)
    document.update(
        confirmation=code,
        confirmation_expires_at=expires.isoformat(),
        confirmation_for={
            "issue": binding.issue,
            "list": binding.list,
            "audience": binding.audience,
            "segment": binding.segment,
            "content": binding.content[:12],
            "transport": binding.transport,
        },
    )
    return document


AGENT = "an agent, through `newsletter mcp`"  # who asks for approval of an agent's send


async def confirmed_send(
    workspace: Workspace,
    folder: Path,
    list_slug: str,
    dsn_text: str,
    code: str,
    *,
    at: str | None = None,
    requested_by: str = AGENT,
    segment: str | None = None,
) -> SendSummary:
    """Send (or schedule, with `at`) the issue to the list when code is an unused code of a dry run of exactly this.

    What would refuse the send is checked before the code is used, so a refusal leaves the code usable. With
    approvers in [approval], the campaign waits for a person's approval, which an agent cannot skip.
    """
    if not code.strip():
        raise NewsletterError(NO_CODE)
    _, binding = await _binding(workspace, folder, list_slug, dsn_text, segment)
    await prepare_real_send(workspace, folder, dsn_text, list_slug)
    if at is not None:
        parse_at(at, workspace.config.zone)
    ConfirmationBook.of(workspace).redeem(code, binding)
    return await send_issue(
        workspace,
        folder,
        list_slug,
        dsn_text=dsn_text,
        dry_run=False,
        at=at,
        content=binding.content,
        requested_by=requested_by,
        segment=segment,
    )
