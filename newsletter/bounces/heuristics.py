"""The words of returned mail: how severe a failure is from its status code and the server's sentence, the failed
recipients a non-standard bounce names in its text, and the signs of auto-replies and challenge-response mail.

classify.py reads the structure (MIME, RFC 3464 fields, RFC 5965 fields); this module reads prose. Every rule errs
towards soft: a hard bounce removes a subscriber for good, so a failure is hard only when its enhanced status code
says the address does not exist (RFC 3463 X.1.1, X.1.2, X.1.3, X.1.6, X.1.10), or, without a code that decides, when
the server's words do ("user unknown", "no such mailbox", "n'existe pas"), and never when the same words also speak
of a full mailbox, a block, spam, a policy or a retry.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Severity = Literal["hard", "soft", "deferred", "delivered"]

# RFC 3463 enhanced status code; the detail may have up to three digits (Microsoft writes 5.1.351, 5.4.316).
ENHANCED_CODE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
# An SMTP reply code (RFC 5321) standing alone: "550 ...", "550-...", "said: 554", "[SMTP Error Code 550]".
BASIC_CODE = re.compile(r"(?<![\d.#-])([45][0-5]\d)(?=[ \-\]:]|$)", re.MULTILINE)

# Enhanced codes that say the recipient's address is gone (RFC 3463 section 3.2; 5.1.10 is Microsoft's
# RecipientNotFound and Null MX, RFC 7505). 5.1.0, 5.1.4, 5.1.5 and 5.1.9 say too little, and 5.1.7 and 5.1.8 are
# about the sender's address: those are decided by the text.
HARD_CODES = frozenset({"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10"})
SENDER_CODES = frozenset({"1.7", "1.8"})  # X.1.7 bad sender's mailbox address syntax, X.1.8 bad sender's system

_UNKNOWN_USER = re.compile(
    r"user(name)? unknown|unknown (or illegal )?(user|recipient|mailbox|local[- ]part|address(ee)?)|"
    r"recipient unknown|addressee unknown|no such (user|recipient|mailbox|person|local user|address)|"
    r"no mailbox (here )?by that name|mailbox (not found|does not exist|doesn't exist)|"
    r"(user|recipient|address|account) (not found|not known|does not exist|doesn't exist)|"
    r"does ?n[o']t exist|\bis not a (valid|registered|known) (\w+ )?user|not a valid user|"
    r"doesn't have an? [\w.-]+ account|does not have an? [\w.-]+ account|"
    r"not listed in (the )?(domino |public names & address book|directory)|"
    r"invalid (recipient|mailbox|final delivery userid|user)|recipient name is not recognized|"
    r"no longer (valid|active|exists|in use)|wrong or no longer valid|address (is )?(invalid|unknown)|"
    r"n'existe pas|utilisateur inconnu|destinataire inconnu|adresse inconnue|adresse invalide|"
    r"bo[iî]te (aux lettres )?inexistante|compte inexistant|unbekannt|existiert nicht|"
    r"no matches to nameserver query|does not have a final email delivery point",
    re.IGNORECASE,
)

# The sender's problem: a block, a list, spam, a policy, authentication. Never the recipient's address.
_SENDER_PROBLEM = re.compile(
    r"spam|unsolicited|\bUBE\b|bulk mail|block ?list|black ?list|\bblocked\b|\bblock(ed)? for\b|\brbl\b|"
    r"spamhaus|spamcop|barracuda|sorbs|reputation|\bpolicy\b|policies|dmarc|\bspf\b|dkim|authenticat|"
    r"unable to relay|relay(ing)? (access )?(denied|not permitted|prohibited)|not permitted to relay|"
    r"client host rejected|sender address rejected|sender (is )?(denied|rejected|not allowed)|domain of sender|"
    r"sender('s)? (address|domain|mailbox) (does not exist|is invalid|invalid|unknown)|sender verify failed|"
    r"access denied|not authori[sz]ed|content rejected|message content|virus|malware|banned|"
    r"(?<!not )\blisted (at|in|on)\b|denied by|refused by|"
    r"not accepting mail from|send mail as|does not advertise auth|sent_second_ehlo",
    re.IGNORECASE,
)

# A failure that can pass: a full mailbox, a size, a retry, a network or server fault, a loop, a disabled box.
_TRANSIENT = re.compile(
    r"quota|\bfull\b|over ?quota|exceed|insufficient|space not enough|storage|too (large|big)|size|"
    r"try again|temporar|later|timed? ?out|time-?out|not responding|not reachable|unreachable|connection|"
    r"could not connect|couldn't connect|establish an smtp connection|loop|too many hops|"
    r"disabled|discontinued|suspended|inactive|locked|frozen|not collected|"
    r"busy|overload|resources|deferred|delay|retry|retried|queue|expired|"
    r"command died|command output|unable to transfer|nameserver error|name service error|"
    r"host not found|unknown host|unrouteable",
    re.IGNORECASE,
)

_DELAY_TEXT = re.compile(
    r"delayed mail|still being retried|this is a warning|warning message only|\(delay\)|"
    r"has not yet been delivered|not yet been delivered|will (continue to )?(be )?retr(y|ied)|will keep trying|"
    r"will (continue to )?attempt (to deliver|delivery)|"
    r"delivery attempts will continue|will be retried|has been postponed|has been delayed|"
    r"message delayed|mail delivery delayed|is delayed|awaiting delivery|not been delivered yet",
    re.IGNORECASE,
)

# Words that open the list of failed recipients in a non-standard bounce.
_LEAD_IN = re.compile(
    r"following (e-?mail )?(address|recipient|destination|user)|could not be delivered|"
    r"(was )?not (be )?delivered to|did not reach|undeliverable|failed permanently|couldn't be delivered|"
    r"delivery (to .* )?(has )?failed|unable to deliver|could not deliver|not been delivered|"
    r"permanent (fatal )?error|delivery failure|failed addresses|delivery problems|intended recipient|"
    r"addressed to|invalid final delivery|unknown user:|message not delivered|rejected your message|"
    r"delivery failed \d+ attempts|no pudo ser entregado|n'a pas pu|could not be reached|not be reached",
    re.IGNORECASE,
)

# Where the bounce's own words end and the returned message begins.
_ORIGINAL_STARTS = re.compile(
    r"^\s*(-{2,}|\*{2,}|={2,}|\|-{2,})?\s*("
    r"original message|below this line is a copy|this is a copy of the message|original message follows|"
    r"start of returned message|returned mail follows|below is a copy of the original|"
    r"the original message follows|unsent message below|your message reads|a summary of the undelivered|"
    r"original message headers|header of the source mail|message text follows|old message:|"
    r"\s*the header of the original|copy of the message|original message as received|"
    r"attached is your original|--- ?below this line)",
    re.IGNORECASE,
)

ADDRESS = re.compile(
    r"(?<![\w.+=%-])([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})(?![\w-]|\.[A-Za-z0-9])"
)
# Addresses of the mail system itself, never a failed recipient.
_SYSTEM_LOCAL_PARTS = re.compile(
    r"^(postmaster|mailer[-_]?daemon|mail[-_]?daemon|maildaemon|mail\.delivery\.system)$", re.I
)
# Lines that quote headers or a transcript's trace, whose addresses are not the failed ones.
_TRACE_LINE = re.compile(
    r"^\s*>?\s*(received|from|by|with|id|for|via|return-path|reply-to|sender|errors-to|cc|to|delivered-to|"
    r"x-[\w-]+|list-[\w-]+|message-id|in-reply-to|references|resent-[\w-]+|dkim-signature|"
    r"mail from|rcpt to|envelope-from|x-original-to)\s*[:=(<]|\bfor <|\(ORCPT|for\s+\S+@\S+;",
    re.IGNORECASE,
)
_EXPLANATION = re.compile(r"error detail|recommended action", re.IGNORECASE)
_HELP_LINE = re.compile(r"please contact|contact the|send mail to|please send|for further assistance|questions", re.I)

BOUNCE_SENDER = re.compile(
    r"mailer[-_ ]?daemon|postmaster|mail delivery|delivery (sub)?system|mail administrator|mailadm|"
    r"smtp[_ ]mail[_ ]service|\bmdaemon\b|symantec|imss|ndr@|system administrator",
    re.IGNORECASE,
)
BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (status )?notification|failure notice|returned mail|mail delivery|"
    r"delivery fail|non[- ]?delivery|not delivered|could not be delivered|delivery (report|problem|error)|"
    r"mail (system )?error|failed mail|mail not delivered|delayed mail|message delayed|\bdelayed\b|"
    r"warning: message|delivery warning|processing error|user unknown|mail error|non remis|"
    r"nicht zustellbar|unzustellbar|non distribuibile|no entregado|utilisateur non|automatically rejected|"
    r"rejected: |permanent delivery failure|mail failed",
    re.IGNORECASE,
)

_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(\[?auto(matic)?[ _-]?(reply|response|answer)|auto:|autoreply|autorespon|out of (the )?office|"
    r"\bOOO\b|r[ée]ponse automatique|absence du bureau|absent(e)? du bureau|je suis absent|"
    r"absence\b|vacation|away from (the )?office|on vacation|abwesenheit|automatische antwort|"
    r"respuesta autom[aá]tica|fuera de la oficina|risposta automatica|fuori ufficio|automatisch antwoord)",
    re.IGNORECASE,
)
_AUTO_REPLY_BODY = re.compile(
    r"je suis absent|je serai absent|i am (currently )?out of (the )?office|i'm (currently )?out of (the )?office|"
    r"i will be out of (the )?office|i am away|i'm away|je suis en cong[ée]s|out of office auto",
    re.IGNORECASE,
)
_CHALLENGE = re.compile(
    r"confirm (that )?you('re| are) (a )?human|verify (that )?you('re| are) (a )?human|are you human|"
    r"verify your (e-?mail|address|message)|confirm your (e-?mail|message|address)|"
    r"to be delivered,? (please )?(verify|confirm|click)|awaiting (your )?(verification|confirmation)|"
    r"waiting for your (confirmation|verification)|sender verification|challenge[- ]response|"
    r"\btmda\b|boxbe|spam ?arrest|choicemail|mailblocks|vérifi(ez|er) votre (adresse|message)|"
    r"confirmez votre (adresse|message)|v[ée]rification de l'exp[ée]diteur|please confirm you",
    re.IGNORECASE,
)
_CHALLENGE_HEADERS = ("x-boxbe-", "x-tmda-", "x-spamarrest", "x-challenge", "x-choicemail")
_AUTO_REPLY_HEADERS = ("x-autoreply", "x-autorespond", "x-autoresponder", "x-auto-reply", "x-mail-autoreply")


@dataclass(frozen=True)
class Verdict:
    """What one failure's code and words decide."""

    severity: Severity
    sender_problem: bool
    status: str | None  # the enhanced code the decision read, when there was one


def enhanced_codes(text: str) -> list[str]:
    """The RFC 3463 codes a text carries, in order, class 2 left out (a software version reads as one)."""
    return [".".join(m.groups()) for m in ENHANCED_CODE.finditer(text) if m.group(1) != "2"]


def basic_code(text: str) -> str | None:
    """The first SMTP reply code of the text, 4xx or 5xx."""
    match = BASIC_CODE.search(text)
    return match.group(1) if match else None


def refine_status(status: str | None, text: str) -> str | None:
    """A report's generic status (5.0.0, or none) replaced by the precise code its diagnostic carries, of the same
    class: a Status of 5.0.0 beside "550 5.7.1 blocked as spam" is a 5.7.1."""
    codes = enhanced_codes(text)
    if status is None:
        return codes[0] if codes else None
    if status.endswith(".0.0"):
        for code in codes:
            if code[0] == status[0] and not code.endswith(".0.0"):
                return code
    return status


def decide(action: str, status: str | None, text: str) -> Verdict:
    """The severity of one failure from its action, its enhanced code and the server's words."""
    action = action.lower()
    if action in ("delivered", "relayed", "expanded"):
        return Verdict("delivered", False, status)
    status = refine_status(status, text)
    sender_problem = bool(_SENDER_PROBLEM.search(text)) or (status or "")[2:] in SENDER_CODES
    sender_problem = sender_problem or bool(status and status.startswith(("5.7.", "4.7.")))
    if action == "delayed":
        return Verdict("deferred", sender_problem, status)
    if status is not None:
        if status.startswith("2."):
            return Verdict("delivered", False, status)
        if status.startswith("4."):
            return Verdict("soft", sender_problem, status)
        subject = status.split(".")[1]
        if subject == "7" or sender_problem or _TRANSIENT.search(text):
            return Verdict("soft", sender_problem, status)
        if status in HARD_CODES:
            return Verdict("hard", False, status)
        if status.endswith(".0.0") or subject == "1":  # says too little: the words decide
            return Verdict("hard" if _UNKNOWN_USER.search(text) else "soft", False, status)
        # 5.2.x is the mailbox's state: 5.2.2 full, and 5.2.1 "mailbox disabled, not accepting messages", which
        # RFC 3463 says "may be a permanent error if the mailbox will never be re-enabled or a transient error if
        # the mailbox is only temporarily disabled": soft, the box exists. 5.3.x to 5.6.x: the systems, the
        # network, the protocol, the content, never the address.
        return Verdict("soft", False, status)
    code = basic_code(text)
    if code is not None and code.startswith("4"):
        return Verdict("soft", sender_problem, None)
    if sender_problem or _TRANSIENT.search(text) or code == "552":
        return Verdict("soft", sender_problem, None)
    return Verdict("hard" if _UNKNOWN_USER.search(text) else "soft", False, None)


def says_delay(text: str) -> bool:
    """The words of a warning that delivery is still being tried, not of a failure."""
    return bool(_DELAY_TEXT.search(text))


def html_to_text(markup: str) -> str:
    """Enough of an HTML body's text to read a bounce in it."""
    markup = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", markup)
    markup = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</tr>|</li>|<p\b[^>]*>", "\n", markup)
    return html.unescape(re.sub(r"<[^>]+>", " ", markup))


def own_words(text: str) -> str:
    """The bounce's own text, the returned message quoted after it cut off."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if index and _ORIGINAL_STARTS.match(line):
            return "\n".join(lines[:index])
    return text


def one_line(text: str, limit: int = 300) -> str:
    """A diagnostic as one line of at most `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def is_system_address(address: str) -> bool:
    return bool(_SYSTEM_LOCAL_PARTS.match(address.rpartition("@")[0]))


@dataclass(frozen=True)
class Found:
    """A failed recipient a non-standard bounce names, with the words around it."""

    address: str
    context: str


def failed_recipients(text: str, exclude: Iterable[str], named: Iterable[str] = ()) -> list[Found]:
    """The failed recipients of a bounce's own text: the addresses after its first lead-in ("could not be
    delivered to the following recipients"), each with the lines that follow it up to the next one. `named` are
    the addresses a header already names (X-Failed-Recipients): then only those are taken, wherever they are."""
    excluded = {a.lower() for a in exclude}
    wanted = {a.lower() for a in named}
    lines = text.splitlines()
    start = None if wanted else next((i for i, line in enumerate(lines) if _LEAD_IN.search(line)), None)
    hits = _address_hits(lines, start, excluded, wanted)
    if not hits and start:
        hits = _address_hits(lines, None, excluded, wanted)
    found: dict[str, Found] = {}
    for position, (index, address) in enumerate(hits):
        following = hits[position + 1][0] if position + 1 < len(hits) else len(lines)
        end = min(max(following, index + 1), index + 8)
        context = "\n".join(lines[index:end])
        if following == index:  # two addresses on a line: the line is the context of each
            context = lines[index]
        key = address.lower()
        if key in found:
            found[key] = Found(found[key].address, found[key].context + "\n" + context)
        else:
            found[key] = Found(address, context)
    return list(found.values())


def clean_address(address: str) -> str:
    """An address as a bounce's prose wraps it: quotes, a trailing dot, Exchange's "SMTP=" prefix taken off."""
    address = address.strip(".'\"`")
    return re.sub(r"(?i)^smtp[=:]", "", address)


def _address_hits(lines: list[str], start: int | None, excluded: set[str], wanted: set[str]) -> list[tuple[int, str]]:
    """The (line, address) pairs that may be failed recipients, from the lead-in line `start` on (None: from the
    first line, no lead-in seen)."""
    hits: list[tuple[int, str]] = []
    for index in range(start or 0, len(lines)):
        line = lines[index]
        if (hits or start is not None) and _EXPLANATION.search(
            line
        ):  # the rest explains, with example addresses of its own
            break
        if _TRACE_LINE.search(line) or _HELP_LINE.search(line) or "message-id" in line.lower():
            continue
        for match in ADDRESS.finditer(line):
            address = clean_address(match.group(1))
            lowered = address.lower()
            if wanted and lowered not in wanted:
                continue
            if lowered in excluded or is_system_address(address) or ".." in address or "@" not in address:
                continue
            if re.search(
                r"(?i)(?<!generated )(?<!expanded )\bfrom\s*[<\"']?$", line[: match.start()]
            ):  # the sender a rule refused
                continue
            hits.append((index, address))
    return hits


def looks_like_bounce(sender: str, subject: str, text: str) -> bool:
    """From a mail system, or titled or worded as a failed delivery."""
    head = "\n".join(text.splitlines()[:40])
    return bool(BOUNCE_SENDER.search(sender) or BOUNCE_SUBJECT.search(subject) or _LEAD_IN.search(head))


def auto_reply_sign(headers: dict[str, str], subject: str, text: str) -> str | None:
    """Why the message is an auto-reply (RFC 3834 and the headers and subjects responders write), or None.
    Auto-Submitted: auto-generated is not one: delivery reports carry it too."""
    submitted = headers.get("auto-submitted", "").strip().lower()
    if submitted.startswith("auto-replied"):
        return f"Auto-Submitted: {submitted}"
    for name in _AUTO_REPLY_HEADERS:
        if name in headers:
            return f"{name} header"
    if headers.get("precedence", "").strip().lower() in ("auto_reply", "auto-reply"):
        return "Precedence: auto_reply"
    if headers.get("x-autogenerated", "").strip().lower() == "reply":
        return "X-Autogenerated: Reply"
    if _AUTO_REPLY_SUBJECT.search(subject):
        return f"subject {subject!r}"
    if _AUTO_REPLY_BODY.search(text[:1000]):
        return "an out-of-office sentence"
    return None


def challenge_sign(headers: dict[str, str], subject: str, text: str) -> str | None:
    """Why the message is a challenge-response request (TMDA, Boxbe, SpamArrest, "confirm you are human")."""
    for name in headers:
        if name.startswith(_CHALLENGE_HEADERS):
            return f"{name} header"
    match = _CHALLENGE.search(subject) or _CHALLENGE.search(text[:3000])
    return f"the words {match.group(0)!r}" if match else None
