"""What `check` reports about an issue: errors that block a build or a send, and warnings worth a look.

Errors: YAML syntax, schema violations, unknown section types, missing or unreadable images, images without alt
text, links that go nowhere (empty, '#', relative, javascript:), a from or reply_to that is no address, a config
without publisher, postal address or a way to reach the publisher, a template that fails to render. Warnings:
http:// links and images, HTML over Gmail's clipping size, a subject outside 10–78 characters, no preheader,
leftover placeholder text (TK, TODO, lorem ipsum), unknown %%placeholders%%, a DKIM domain that does not align
with the From address, a phone number that does not parse (it gets no link), and what a real send refuses in the
settings (a reserved name, a placeholder postal address: real_send_refusals), so that it is known before a send.
A list's `welcome` in newsletter.toml that names no issue folder is an error at its line (welcome_diagnostics).

A subscriber's field in the text ({{ prenom | default("") }}, field_placeholders.py): anything else between braces,
or a placeholder where none is filled (the subject, a link), is an error; a field that no member of the list has
is a warning, when a list applies (`list_fields`: check's --list, else the store's only list).

An event section: ending before it starts is an error, a registration deadline after its start a warning.

An issue with a translation beside issue.yaml (issue.en.yaml): check_versions checks each file as check_issue does,
each in its own report, then compares the translation with issue.yaml (compare_versions, the rule at the end of this
module): a section, a link or an image in one file only, or sections in another order, are warnings located in the
translation that name issue.yaml's line. check_issue still checks issue.yaml alone.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import os
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email

from newsletter.config import CONFIG_FILE, OVERRIDES, Config, config_diagnostics, toml_line
from newsletter.errors import Diagnostic, IssueError, RenderError, Severity
from newsletter.events import resolve
from newsletter.field_placeholders import ListFieldKeys, issue_placeholders, unknown_field_warnings
from newsletter.i18n import LANGUAGES, format_event_when
from newsletter.issue import (
    ISSUE_FILE,
    Event,
    Image,
    ImageSection,
    LoadedIssue,
    YamlPath,
    iter_values,
    load_issue,
    translation_files,
    version_file_name,
)
from newsletter.phones import tel_uri
from newsletter.render import (
    PLACEHOLDER,
    PLACEHOLDERS,
    RenderedIssue,
    image_file,
    image_size,
    is_remote,
    render_issue,
    version_web_values,
)
from newsletter.translations import compare_versions, markdown_links
from newsletter.versions import no_version, read_versions

# Gmail shows "[Message clipped]" and hides the rest, footer and unsubscribe link included, past about 102 KB.
GMAIL_CLIP_BYTES = 102 * 1024
SUBJECT_MIN, SUBJECT_MAX = 10, 78
HEAVY_IMAGE_BYTES = 1024 * 1024
_LEFTOVER = re.compile(r"\b(?:TK|TODO|FIXME|XXX)\b|(?i:lorem ipsum)")

# Names that exist for documentation and tests and never reach anyone (RFC 2606, RFC 6761): a link or an address
# on one of them in a real message is a setting left as the example had it.
RESERVED_TLDS = ("example", "test", "invalid", "localhost")
RESERVED_DOMAINS = ("example.com", "example.net", "example.org")
# Postal addresses that are placeholders: the classic dummy postal codes (X0X 0X0 has no place in Canada Post's
# list, 00000 none in the USPS's), and the words examples are written with.
_PLACEHOLDER_ADDRESS = re.compile(
    r"\b(?:X0X ?0X0|00000)\b|\b(?:exemple|example|fictive|fictif|fictitious|anytown|placeholder|lorem|TODO|XXX)\b",
    re.IGNORECASE,
)


@dataclass
class Report:
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "errors": [d.to_json() for d in self.errors],
            "warnings": [d.to_json() for d in self.warnings],
        }


@dataclass
class CheckResult:
    """The report, and what was loaded and rendered on the way, so that build and preview need not redo it."""

    report: Report
    issue: LoadedIssue | None = None
    rendered: RenderedIssue | None = None


def check_issue(
    folder: Path,
    config: Config,
    templates_dir: Path | None = None,
    *,
    asset_base_url: str | None = None,
    list_fields: ListFieldKeys | None = None,
) -> CheckResult:
    """Load, validate and render the issue in folder (its issue.yaml: check_versions checks its translations too),
    and report every problem found. Never raises for bad input.

    list_fields (field_placeholders.list_fields_for): the list whose members' fields the placeholders are checked
    against, asked only when the issue has some."""
    try:
        issue = load_issue(folder)
    except IssueError as exc:
        return CheckResult(Report([*exc.diagnostics, *settings_diagnostics(config)]))
    return check_loaded(issue, config, templates_dir, asset_base_url=asset_base_url, list_fields=list_fields)


def check_loaded(
    issue: LoadedIssue,
    config: Config,
    templates_dir: Path | None = None,
    *,
    asset_base_url: str | None = None,
    list_fields: ListFieldKeys | None = None,
) -> CheckResult:
    """check_issue of one version already loaded (issue.yaml, or a translation)."""
    report = Report(settings_diagnostics(config))
    uses, placeholder_errors = issue_placeholders(issue)
    report.diagnostics[:0] = (
        list(_content_diagnostics(issue, config)) + placeholder_errors + list(_event_diagnostics(issue, config))
    )
    if uses and list_fields is not None and (answer := list_fields({use.placeholder.key for use in uses})):
        report.diagnostics.extend(unknown_field_warnings(issue, uses, *answer))
    if (misaligned := dkim_alignment(config, issue.model.from_ or config.sender.from_)) is not None:
        report.diagnostics.append(misaligned)
    report.diagnostics.extend(real_send_refusals(config, issue))
    report.diagnostics.extend(bounce_diagnostics(config, issue.model.from_ or config.sender.from_))
    rendered = None
    try:
        rendered = render_issue(issue, config, templates_dir, asset_base_url=asset_base_url)
    except RenderError as exc:
        report.diagnostics.append(Diagnostic("error", "render-failed", str(exc), str(issue.file)))
    if rendered is not None:
        html, _ = rendered.fill(version_web_values(config, rendered))
        size = len(html.encode("utf-8"))
        if size > GMAIL_CLIP_BYTES:
            report.diagnostics.append(
                issue.diagnostic(
                    "warning",
                    "html-too-large",
                    f"the HTML is {size / 1024:.0f} KB; Gmail clips emails over 102 KB and hides the rest, "
                    "footer included: shorten the issue or split it",
                    (),
                )
            )
    return CheckResult(report, issue, rendered)


@dataclass
class VersionCheck:
    """One file of an issue checked: issue.yaml or a translation (issue.en.yaml)."""

    file: Path
    lang: str | None  # its language (a translation's is its name's); None: an issue.yaml that does not load
    result: CheckResult

    def diagnostics_in_file(self) -> list[Diagnostic]:
        """Its report's diagnostics located in this file (or nowhere): newsletter.toml's are the whole check's."""
        return [d for d in self.result.report.diagnostics if d.file in (None, str(self.file))]

    def to_json(self) -> dict:
        found = Report(self.diagnostics_in_file())
        return {"file": str(self.file), "lang": self.lang, **found.to_json()}


@dataclass
class VersionsCheck:
    """Every version of an issue checked (issue.yaml first), then compared: what `check` reports of a folder."""

    folder: Path
    versions: list[VersionCheck]
    others: list[Diagnostic] = field(default_factory=list)  # issue.*.yaml files that are no version

    @property
    def main(self) -> CheckResult:
        return self.versions[0].result

    @property
    def translations(self) -> list[VersionCheck]:
        return self.versions[1:]

    @property
    def report(self) -> Report:
        """Every version's diagnostics, each once (newsletter.toml's are each version's), then the others."""
        found = [d for version in self.versions for d in version.result.report.diagnostics] + self.others
        return Report(list(dict.fromkeys(found)))

    def version(self, lang: str | None) -> VersionCheck:
        """The check of the version in lang (None: issue.yaml); NewsletterError naming the versions there are."""
        for version in self.versions:
            if lang is None or version.lang == lang:
                return version
        assert lang is not None  # None is issue.yaml's, always the first
        raise no_version(self.folder.name, lang, [(v.lang, v.file.name) for v in self.versions if v.lang])

    def to_json(self) -> dict:
        """{"ok", "errors", "warnings"} of the whole issue, and "files": each file's own, [{"file", "lang", "ok",
        "errors", "warnings"}], issue.yaml first."""
        return {**self.report.to_json(), "files": [version.to_json() for version in self.versions]}

    def version_json(self, lang: str | None) -> dict:
        """to_json of one version (None: issue.yaml): what checking it reports (newsletter.toml's too, and how it
        compares with issue.yaml), and "files" with its file alone."""
        version = self.version(lang)
        return {**version.result.report.to_json(), "files": [version.to_json()]}


def check_versions(
    folder: Path,
    config: Config,
    templates_dir: Path | None = None,
    *,
    asset_base_url: str | None = None,
    list_fields: ListFieldKeys | None = None,
    langs: Collection[str] | None = None,
) -> VersionsCheck:
    """Check issue.yaml and each translation beside it as check_issue does, each reported in its own file, then
    compare each translation with issue.yaml (compare_versions). Never raises for bad input. langs: only the
    translations in these languages (a send's: its list's languages), as read_versions takes them."""
    main, translations = read_versions(folder, langs)

    def checked(version: LoadedIssue | IssueError) -> CheckResult:
        if isinstance(version, IssueError):
            return CheckResult(Report([*version.diagnostics, *settings_diagnostics(config)]))
        return check_loaded(version, config, templates_dir, asset_base_url=asset_base_url, list_fields=list_fields)

    main_result = checked(main)
    versions = [
        VersionCheck(folder / ISSUE_FILE, main.model.lang if isinstance(main, LoadedIssue) else None, main_result)
    ]
    for lang, translation in translations.items():
        result = checked(translation)
        if isinstance(main, LoadedIssue) and isinstance(translation, LoadedIssue):
            result.report.diagnostics.extend(compare_versions(main, translation))
        versions.append(VersionCheck(folder / version_file_name(lang), lang, result))
    others = [
        Diagnostic(
            "warning",
            "translation-unknown-language",
            f"{path.name} is no version of this issue, which check, build and send leave out: a translation is "
            f"issue.LANG.yaml, LANG one of {', '.join(LANGUAGES)}; rename it, or move it out of the folder",
            str(path),
        )
        for path in translation_files(folder)[1]
    ]
    others.extend(footer_reason_diagnostics(config, list(translations)))
    if isinstance(main, LoadedIssue) and translations and main.model.lang != config.lang:
        main_result.report.diagnostics.append(
            main.diagnostic(
                "warning",
                "translation-first-language",
                f"{ISSUE_FILE} is in {main.model.lang}, but the newsletter's language is {config.lang} "
                f"(newsletter.toml lang): the archive would list this issue in feed.xml by this file's subject and "
                f"its {config.lang} version as a translation at {main.slug}/{config.lang}/; put the {config.lang} "
                f"version in {ISSUE_FILE} and this one in {version_file_name(main.model.lang)}",
                ("lang",),
            )
        )
    return VersionsCheck(folder, versions, others)


def footer_reason_diagnostics(config: Config, langs: list[str]) -> list[Diagnostic]:
    """A translation's readers get the tool's default "why you receive this" when [footer] reason has a sentence in
    another language but none in theirs: a warning at its line, for each such language."""
    written = config.footer.reason
    if not written or config.file is None:
        return []
    text = config.file.read_text(encoding="utf-8")
    return [
        Diagnostic(
            "warning",
            "footer-reason-missing",
            f"[footer] reason.{lang} is not written, so the {version_file_name(lang)} version's footer says why "
            f"readers receive it in the tool's default words; write reason.{lang} beside reason."
            f"{next(iter(written))}",
            file=str(config.file),
            line=toml_line(text, ("footer", "reason")) or None,
            path="footer.reason",
        )
        for lang in langs
        if lang not in written
    ]


def settings_diagnostics(config: Config) -> list[Diagnostic]:
    """What newsletter.toml lacks or gets wrong, which every check of an issue reports."""
    return config_diagnostics(config) + welcome_diagnostics(config)


def welcome_diagnostics(config: Config) -> list[Diagnostic]:
    """Errors in the welcome settings of newsletter.toml: a `[lists.SLUG] welcome` that names no issue in issues/,
    at its line (the issue itself is checked as any other, by `check` and before it is frozen)."""
    if config.file is None:
        return []
    issues = config.file.parent / "issues"
    text = config.file.read_text(encoding="utf-8")
    found = []
    for slug, settings in config.lists.items():
        name = settings.welcome
        if name is not None and not (issues / name / ISSUE_FILE).is_file():
            found.append(
                Diagnostic(
                    "error",
                    "welcome-missing",
                    f'[lists.{slug}] welcome = "{name}" names no issue: there is no issues/{name}/{ISSUE_FILE}; '
                    f"write it (`newsletter new {name}`) or name an issue that exists",
                    file=str(config.file),
                    line=toml_line(text, ("lists", slug, "welcome")) or None,
                    path=f"lists.{slug}.welcome",
                )
            )
    return found


def _content_diagnostics(issue: LoadedIssue, config: Config) -> Iterator[Diagnostic]:
    model = issue.model
    subject_length = len(model.subject)
    if not SUBJECT_MIN <= subject_length <= SUBJECT_MAX:
        yield issue.diagnostic(
            "warning",
            "subject-length",
            f"the subject has {subject_length} characters; {SUBJECT_MIN} to {SUBJECT_MAX} read best in an inbox",
            ("subject",),
        )
    if not model.preheader:
        yield issue.diagnostic(
            "warning",
            "missing-preheader",
            "no preheader: inboxes will show the first words of the email instead; add preheader: one sentence",
            (),
        )
    for field_name in ("from", "reply_to"):
        value = model.from_ if field_name == "from" else model.reply_to
        if value and (problem := address_problem(value)):
            yield issue.diagnostic("error", "bad-address", f"{field_name}: {problem}", (field_name,))
    for path, value, kind in iter_values(model):
        if kind == "image":
            yield from _image_diagnostics(issue, path, value)
        elif kind == "url":
            yield from _url_diagnostics(issue, path, value)
        elif kind == "phone":
            yield from _phone_diagnostics(issue, path, value, config.region)
        elif kind in ("text", "markdown"):
            yield from _text_diagnostics(issue, path, value)
            if kind == "markdown":
                for href, line_offset in markdown_links(value):
                    offset = line_offset + (1 if path in issue.source.block_scalars else 0)
                    yield from _url_diagnostics(issue, path, href, line_offset=offset)


def reserved_name(host: str) -> bool:
    """Whether a host or an address's domain is a reserved name that no reader can reach (RFC 2606, 6761)."""
    host = host.lower().rstrip(".")
    tld = host.rpartition(".")[2]
    return tld in RESERVED_TLDS or any(host == d or host.endswith("." + d) for d in RESERVED_DOMAINS)


def placeholder_address(text: str) -> str | None:
    """The part of a postal address that shows it is a placeholder (X0X 0X0, "rue de l'Exemple"), or None."""
    found = _PLACEHOLDER_ADDRESS.search(text)
    return found.group(0) if found else None


def _host(url: str) -> str:
    return urlsplit(url).hostname or ""


def real_send_refusals(config: Config, issue: LoadedIssue | None = None) -> list[Diagnostic]:
    """What a real send (any transport but the outbox and null) refuses in the settings its messages carry: a link
    or an address on a reserved name (base_url, asset_base_url, archive_url, the sender, reply-to, the
    publisher's website and email, unsubscribe_mailto) and a placeholder postal address. Each is located where
    it is set: newsletter.toml's line, the environment variable that overrides it, or the issue's line.

    Errors for a real send; `check` and the dry run show them as warnings, whatever the transport, so that an
    agent learns before it asks a person what a real send would refuse."""
    file = str(config.file) if config.file else CONFIG_FILE
    text = config.file.read_text(encoding="utf-8") if config.file else ""
    found: list[Diagnostic] = []

    def setting(loc: tuple[str, ...], message: str, code: str = "reserved-name") -> None:
        variable = OVERRIDES.get(loc[0]) if len(loc) == 1 else None
        if variable and os.environ.get(variable):  # the environment's value is the one sent: say so
            found.append(Diagnostic("warning", code, f"{variable}: {message}", file=variable, path=".".join(loc)))
            return
        line = toml_line(text, loc) or None
        found.append(Diagnostic("warning", code, message, file=file, line=line, path=".".join(loc)))

    for key in OVERRIDES:
        url = getattr(config, key)
        if url and reserved_name(_host(url)):
            setting(
                (key,),
                f"{key} {url} is on a reserved name (RFC 2606) that no reader can reach, so every link "
                f"made from it goes nowhere; set {key} to your real public URL",
            )
    if (website := config.publisher.website) and reserved_name(_host(website)):
        setting(
            ("publisher", "website"),
            f"publisher.website {website} is on a reserved name (RFC 2606) that no "
            "reader can reach; write your organisation's real website",
        )
    model = issue.model if issue is not None else None
    addresses = [
        (("from",) if model and model.from_ else ("sender", "from"), model and model.from_ or config.sender.from_),
        (
            ("reply_to",) if model and model.reply_to else ("sender", "reply_to"),
            model and model.reply_to or config.sender.reply_to,
        ),
        (("publisher", "email"), config.publisher.email),
        (("sending", "unsubscribe_mailto"), config.sending.unsubscribe_mailto),
    ]
    for loc, value in addresses:
        domain = email.utils.parseaddr(value or "")[1].rpartition("@")[2]
        if domain and reserved_name(domain):
            message = (
                f"{'.'.join(loc)} {value} is at a reserved domain (RFC 2606) where no mail is delivered; "
                "write your organisation's real address"
            )
            if len(loc) == 1 and issue is not None:  # the issue's own from or reply_to
                found.append(issue.diagnostic("warning", "reserved-name", message, loc))
            else:
                setting(loc, message)
    if (postal := config.publisher.postal_address) and (placeholder := placeholder_address(postal)):
        setting(
            ("publisher", "postal_address"),
            f'publisher.postal_address "{postal}" is a placeholder '
            f"('{placeholder}'); CASL and CAN-SPAM want your real postal address in every message",
            code="placeholder-address",
        )
    return found


def refusal_text(refusals: list[Diagnostic]) -> str:
    """The refusals as one line, each where and why: what a refused real send says."""
    shown = []
    for d in refusals:
        where = ":".join(str(part) for part in (d.file, d.line) if part)
        shown.append(f"{where}: {d.message}" if where else d.message)
    return "a real send refuses these settings: " + "; ".join(shown)


def address_problem(text: str) -> str | None:
    """Why 'Name <address>' or a bare address is not usable as a sender, or None."""
    name, address = email.utils.parseaddr(text)
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        return f"'{text}' is not a valid address ({exc}); write it as \"Name <news@example.org>\""
    return None


def dkim_alignment(config: Config, sender: str | None) -> Diagnostic | None:
    """A warning when the DKIM signature's domain does not align with the From address's (DMARC, relaxed).

    Aligned: the same domain, or one a parent of the other (d=crdbsl.org for news.crdbsl.org, or the reverse: both
    have the same organisational domain). Two sibling subdomains may align too, but telling so needs the public
    suffix list, so they are warned about.
    """
    signing = (config.dkim.domain or "").lower().rstrip(".")
    from_domain = email.utils.parseaddr(sender or "")[1].rpartition("@")[2].lower().rstrip(".")
    if not signing or not from_domain:
        return None
    if _aligned(signing, from_domain):
        return None
    file = str(config.file) if config.file else CONFIG_FILE
    text = config.file.read_text(encoding="utf-8") if config.file else ""
    return Diagnostic(
        "warning",
        "dkim-not-aligned",
        f'[dkim] domain "{signing}" does not align with the From address\'s domain "{from_domain}": the signature '
        "verifies but DMARC fails, which Gmail's and Yahoo's rules for bulk senders do not allow; sign with "
        f'[dkim] domain = "{from_domain}" (or a parent of it) and publish the key there, or send from an address at '
        f"{signing}",
        file=file,
        line=toml_line(text, ("dkim", "domain")) or None,
        path="dkim.domain",
    )


def bounce_diagnostics(config: Config, sender: str | None, transport: str | None = None) -> list[Diagnostic]:
    """Warnings on where an SMTP sender's bounces go: without `[bounces] return_path` (VERP) a bounce is matched only
    by what it quotes of the message, which many servers truncate or rewrite; without `mailbox` nothing reads them;
    a return path at a domain that does not align with From passes DMARC only through DKIM."""
    from newsletter.transports import Dsn, transport_dsn

    settings = config.bounces
    scheme = Dsn.parse(transport_dsn(transport)).scheme
    file = str(config.file) if config.file else CONFIG_FILE
    text = config.file.read_text(encoding="utf-8") if config.file else ""
    found = []

    def warn(code: str, message: str, key: str) -> None:
        line = toml_line(text, ("bounces", key)) or None
        found.append(Diagnostic("warning", code, message, file=file, line=line, path=f"bounces.{key}"))

    if scheme == "smtp" and not settings.return_path:
        warn(
            "bounces-unmatched",
            "[bounces] return_path is not set: this SMTP sender's bounces go to the From address and are matched "
            "only by what they quote of the message, which many servers truncate; set return_path = "
            '"bounces+{token}@<your domain>" (VERP, the reliable way) and [bounces] mailbox to read them',
            "return_path",
        )
    if settings.return_path and not settings.mailbox:
        warn(
            "bounces-unread",
            "[bounces] return_path is set but no mailbox: nothing reads the bounces; set [bounces] mailbox = "
            '"imaps://USER@HOST/INBOX" (or maildir://) and run `newsletter bounces scan` or a worker',
            "mailbox",
        )
    from_domain = email.utils.parseaddr(sender or "")[1].rpartition("@")[2].lower().rstrip(".")
    path_domain = (settings.return_path or "").rpartition("@")[2].lower().rstrip(".")
    if path_domain and from_domain and not _aligned(path_domain, from_domain) and not config.dkim.domain:
        warn(
            "return-path-not-aligned",
            f'[bounces] return_path is at "{path_domain}", which does not align with the From address\'s domain '
            f'"{from_domain}": SPF then passes for {path_domain} but not for DMARC, and without [dkim] nothing '
            f"else aligns; use a return path at {from_domain} (or a subdomain) and allow the SMTP server in its SPF "
            "record",
            "return_path",
        )
    return found


def _aligned(one: str, other: str) -> bool:
    """DMARC's relaxed alignment, without the public suffix list: the same domain, or one a parent of the other."""
    return one == other or one.endswith("." + other) or other.endswith("." + one)


def _image_diagnostics(issue: LoadedIssue, path: YamlPath, image: Image | ImageSection) -> list[Diagnostic]:
    found = []
    if not image.alt.strip():
        found.append(
            issue.diagnostic("error", "missing-alt", "image without alt text: describe what it shows", (*path, "alt"))
        )
    src = image.src
    if is_remote(src):
        if src.startswith("http://"):
            found.append(
                issue.diagnostic(
                    "warning",
                    "insecure-url",
                    f"image {src} is served over http://; use https://",
                    (*path, "src"),
                )
            )
        return found
    file = image_file(issue.folder, src)
    if file is None:
        found.append(
            issue.diagnostic(
                "error",
                "image-outside-issue",
                f"image '{src}' is outside the issue folder (an absolute path, a '..' or a link that leads out); "
                "copy the file into the issue's images/ and write src: images/NAME",
                (*path, "src"),
            )
        )
    elif not file.is_file():
        found.append(
            issue.diagnostic(
                "error",
                "missing-image",
                f"image file '{src}' not found in {issue.folder}; add the file or fix src",
                (*path, "src"),
            )
        )
    elif image_size(file) is None:
        found.append(
            issue.diagnostic("error", "not-an-image", f"'{src}' is not a PNG, JPEG or GIF image", (*path, "src"))
        )
    elif file.stat().st_size > HEAVY_IMAGE_BYTES:
        found.append(
            issue.diagnostic(
                "warning",
                "heavy-image",
                f"'{src}' weighs {file.stat().st_size / 1e6:.1f} MB; resize it (600 px wide, or 1200 for sharp "
                "screens, is plenty)",
                (*path, "src"),
            )
        )
    return found


def _url_diagnostics(issue: LoadedIssue, path: YamlPath, url: str, *, line_offset: int = 0) -> list[Diagnostic]:
    url = url.strip()

    def report(severity: Severity, code: str, message: str) -> list[Diagnostic]:
        return [issue.diagnostic(severity, code, message, path, line_offset=line_offset)]

    if url in ("", "#"):
        return report("error", "empty-url", f"a link goes nowhere ({url or 'empty'}); give its full https:// address")
    if PLACEHOLDER.fullmatch(url):
        return []
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "http":
        return report("warning", "insecure-url", f"{url} uses http://; use https:// if the site supports it")
    if scheme in ("https", "mailto", "tel"):
        return []
    if not scheme or url.startswith(("/", "#", ".")):
        return report(
            "error",
            "relative-url",
            f"'{url}' is not a full address; links in an email must start with https://",
        )
    return report("error", "bad-url", f"'{url}': only https://, http://, mailto: and tel: links work in email")


def _phone_diagnostics(issue: LoadedIssue, path: YamlPath, phone: str, region: str) -> list[Diagnostic]:
    if tel_uri(phone, region) is not None:
        return []
    return [
        issue.diagnostic(
            "warning",
            "bad-phone",
            f"'{phone}' is not a phone number of {region} (nor one with its +country code), so it is shown without "
            "a link to dial it; write it as 418 724-5154, poste 212 or +33 1 42 68 53 00 (set phone_region in "
            "newsletter.toml for numbers of another country)",
            path,
        )
    ]


def _text_diagnostics(issue: LoadedIssue, path: YamlPath, text: str) -> list[Diagnostic]:
    found = []
    for number, line in enumerate(text.splitlines() or [text]):
        if match := _LEFTOVER.search(line):
            offset = number + (1 if path in issue.source.block_scalars else 0)
            found.append(
                issue.diagnostic(
                    "warning",
                    "placeholder-text",
                    f"leftover placeholder text '{match.group(0)}'",
                    path,
                    line_offset=offset,
                )
            )
        for placeholder in PLACEHOLDER.finditer(line):
            if placeholder.group(1) not in PLACEHOLDERS:
                found.append(
                    issue.diagnostic(
                        "warning",
                        "unknown-placeholder",
                        f"unknown placeholder {placeholder.group(0)}; known: "
                        + ", ".join(f"%%{p}%%" for p in PLACEHOLDERS)
                        + ', and a subscriber\'s field as {{ prenom }} or {{ prenom | default("…") }}',
                        path,
                    )
                )
    return found


def _event_diagnostics(issue: LoadedIssue, config: Config) -> Iterator[Diagnostic]:
    """An event that ends before it starts (an error), a registration deadline after it starts (a warning). Times
    are compared as moments: a naive one in newsletter.toml's timezone, as the .ics writes it."""
    lang = issue.model.lang
    for index, section in enumerate(issue.model.sections):
        if not isinstance(section, Event):
            continue
        start, end = section.period()
        if end is not None:
            first, last = resolve(start, config.zone), resolve(end, config.zone)
            if last < first or (last == first and isinstance(first, dt.datetime)):
                yield issue.diagnostic(
                    "error",
                    "event-ends-before-start",
                    f"the event's end is not after its start ({format_event_when(start, end, lang)}); give end "
                    "a later time (a time alone, 12:00, is on the start's day) or date",
                    ("sections", index, "end"),
                )
        first_day = start.date() if isinstance(start, dt.datetime) else start
        if section.deadline is not None and section.deadline > first_day:
            yield issue.diagnostic(
                "warning",
                "deadline-after-start",
                f"the registration deadline {section.deadline} is after the event starts ({first_day}); fix deadline",
                ("sections", index, "deadline"),
            )
