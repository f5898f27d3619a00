"""Segments: a filter on a list written without SQL (`tag:rimouski and municipalite in ["Rimouski", "Matane"]`),
parsed into a tree of Segment nodes that prints back as one canonical text, and tested member by member here (the
reference that store/segments.py's SQL is held to). Pure Python: the CLI and the MCP import it cheaply.

The language, keywords in English or French, in any case (not > and > or; parentheses group):

    tag:rimouski    tag:"MRC Rimouski-Neigette"          a tag, by fields.tag_key (case, accents, spaces)
    municipalite = "Rimouski"    municipalite != "Rimouski"
    municipalité in ["Rimouski", "Matane"]    municipalite not in [...]
    has organisme                                       the field is there, with a value other than ""
    joined >= 2024-01-01    joined < 2024-06-01T12:00:00-04:00    (also > and <=)
    not … / non …    … and … / … et …    … or … / … ou …

- A field is named by fields.field_key (`Municipalité`, `municipalite` and `MUNICIPALITE` are one); a field named
  like a keyword (tag, has, joined, in, and, …) is written quoted: `"joined" = "oui"`.
- A value is compared with its case folded (str.lower, on both sides: the store indexes each member's values
  lower-cased so), accents kept: "Lévis" is not "Levis". A value is a person's data, not an identifier like a
  field's name or a tag.
- `f != v` is the negation of `f = v`: it includes the members without the field (write `has f and f != v` to leave
  them out). An empty value is refused: `has f` and `not has f` say what it would.
- `joined` compares the membership's join date; a member whose date is unknown matches no comparison (and so the
  negation of each). A date is that whole day, in the zone given to parse() (resolve() gives newsletter.toml's
  `timezone`), in UTC without one, never the machine's: the same segment must mean the same on every host.
  `joined > 2024-01-01` is from the next day on; a time without an offset is in that zone too.

str(segment) is canonical: keys, lower-cased values (sorted, without repeats), English keywords, join times as UTC
instants (so that it means the same whatever zone re-reads it); parse(str(s)) == s. The lead freezes it in a
campaign and binds an agent's confirmation code to it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NoReturn

from newsletter.errors import NewsletterError
from newsletter.fields import field_key, tag_key

if TYPE_CHECKING:
    from newsletter.config import Config

Comparison = Literal[">=", ">", "<", "<="]

# Words that are syntax, in either language; a field of that name is quoted (str() does).
AND_WORDS, OR_WORDS, NOT_WORDS = frozenset({"and", "et"}), frozenset({"or", "ou"}), frozenset({"not", "non"})
KEYWORDS = AND_WORDS | OR_WORDS | NOT_WORDS | {"in", "has", "tag", "joined"}
NAME = re.compile(r"[\w-]+")  # a named segment: `--segment est`

_BARE = r"[^\s()\[\],:\"'=!<>]+"  # a word: a field's name, a bare tag or value
_TOKENS = re.compile(
    r"""(?P<space>\s+)
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    |(?P<unclosed>["'])
    |(?P<date>\d{4}-\d{2}-\d{2}(?:T[0-9:.]+(?:Z|[+-]\d{2}(?::?\d{2})?)?)?(?=[\s()\[\],]|$))
    |(?P<op>!=|==|>=|<=|=|>|<)
    |(?P<punct>[()\[\],:])
    |(?P<word>"""
    + _BARE
    + r""")
    |(?P<bad>.)""",
    re.VERBOSE,
)
_BARE_TAG = re.compile(_BARE)
_COMPARISONS: dict[str, Comparison] = {">=": ">=", ">": ">", "<": "<", "<=": "<="}


class SegmentError(NewsletterError):
    """A segment that does not parse: one line naming the column, and the fix where there is one."""

    def __init__(self, text: str, column: int | None, message: str):
        self.text, self.column = text, column
        shown = re.sub(r"[\r\n\t]", " ", text)  # one line, each character where it was: the column holds
        where = f"column {column}: " if column is not None else ""
        super().__init__(f"segment '{shown}': {where}{message}")


# The tree. Every node is a Segment; constructors normalise (keys, lower-cased values, flattened and/or), so that
# two trees that print the same are equal.


class _Member:
    """One member as the nodes test it: values by field key, tag keys, join instant."""

    __slots__ = ("joined_at", "tags", "values")

    def __init__(self, fields: Mapping[str, str], tags: Collection[str], joined_at: dt.datetime | None):
        self.values: dict[str, list[str]] = {}
        for name, value in fields.items():
            if value is not None:
                self.values.setdefault(field_key(name), []).append(str(value))
        self.tags = frozenset(tag_key(tag) for tag in tags)
        if joined_at is not None and joined_at.tzinfo is None:
            joined_at = joined_at.replace(tzinfo=dt.UTC)  # as the store hands them back: written in UTC
        self.joined_at = joined_at


class Segment:
    """A filter on a list's members (a node of the tree; every sub-tree is a segment too)."""

    __slots__ = ()

    def matches(self, fields: Mapping[str, str], tags: Collection[str], joined_at: dt.datetime | None) -> bool:
        """Whether a member with these fields (by the names they were written with), tags and join date is in the
        segment: the brute-force reference of the store's SQL."""
        return self._test(_Member(fields, tags, joined_at))

    def field_keys(self) -> frozenset[str]:
        """The keys of the fields the segment names."""
        return frozenset(node.key for node in self.walk() if isinstance(node, Field | Has))

    def tag_keys(self) -> frozenset[str]:
        """The keys of the tags the segment names."""
        return frozenset(node.key for node in self.walk() if isinstance(node, Tag))

    def walk(self) -> Iterator[Segment]:
        yield self

    def _test(self, member: _Member) -> bool:
        raise NotImplementedError

    def _atomic(self) -> bool:
        """Whether str() needs no parentheses under not."""
        return True


@dataclass(frozen=True, slots=True)
class Tag(Segment):
    key: str

    def __post_init__(self) -> None:
        key = tag_key(self.key)
        if not key:
            raise ValueError(f"the tag {self.key!r} has no letter or digit to match by")
        object.__setattr__(self, "key", key)

    def _test(self, member: _Member) -> bool:
        return self.key in member.tags

    def __str__(self) -> str:
        return f"tag:{self.key}" if _BARE_TAG.fullmatch(self.key) else f"tag:{_quoted(self.key)}"


@dataclass(frozen=True, slots=True)
class Field(Segment):
    """The field is there with one of these values (case folded): `f = v`, `f in [v, w]`."""

    key: str
    values: tuple[str, ...]

    def __post_init__(self) -> None:
        key = field_key(self.key)
        if not key:
            raise ValueError(f"the field name {self.key!r} has no letter or digit to match by")
        values = tuple(sorted({value.lower() for value in self.values}))
        if not values or "" in values:
            raise ValueError("a field is compared with values that are not empty")
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "values", values)

    def _test(self, member: _Member) -> bool:
        return any(value.lower() in self.values for value in member.values.get(self.key, ()))

    def _text(self, negated: bool) -> str:
        name = _field_name(self.key)
        if len(self.values) == 1:
            return f"{name} {'!=' if negated else '='} {_quoted(self.values[0])}"
        listed = ", ".join(_quoted(value) for value in self.values)
        return f"{name} {'not in' if negated else 'in'} [{listed}]"

    def __str__(self) -> str:
        return self._text(False)


@dataclass(frozen=True, slots=True)
class Has(Segment):
    """The field is there, with a value other than ""."""

    key: str

    def __post_init__(self) -> None:
        key = field_key(self.key)
        if not key:
            raise ValueError(f"the field name {self.key!r} has no letter or digit to match by")
        object.__setattr__(self, "key", key)

    def _test(self, member: _Member) -> bool:
        return any(value != "" for value in member.values.get(self.key, ()))

    def __str__(self) -> str:
        return f"has {_field_name(self.key)}"


@dataclass(frozen=True, slots=True)
class Joined(Segment):
    """The membership's join date compared with an instant (kept in UTC)."""

    op: Comparison
    at: dt.datetime

    def __post_init__(self) -> None:
        if self.op not in (">=", ">", "<", "<="):
            raise ValueError(f"joined compares with >=, >, < or <=, not {self.op}")
        if self.at.tzinfo is None:
            raise ValueError("joined compares with an instant: a datetime with its zone")
        object.__setattr__(self, "at", self.at.astimezone(dt.UTC))

    def _test(self, member: _Member) -> bool:
        if member.joined_at is None:
            return False
        joined, at = member.joined_at, self.at
        return {">=": joined >= at, ">": joined > at, "<": joined < at, "<=": joined <= at}[self.op]

    def __str__(self) -> str:
        return f"joined {self.op} {self.at.isoformat().replace('+00:00', 'Z')}"


@dataclass(frozen=True, slots=True)
class Not(Segment):
    item: Segment

    def walk(self) -> Iterator[Segment]:
        yield self
        yield from self.item.walk()

    def _test(self, member: _Member) -> bool:
        return not self.item._test(member)

    def __str__(self) -> str:
        if isinstance(self.item, Field):
            return self.item._text(True)
        return f"not {self.item}" if self.item._atomic() else f"not ({self.item})"


@dataclass(frozen=True, slots=True)
class And(Segment):
    items: tuple[Segment, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", _flattened(And, self.items))

    def walk(self) -> Iterator[Segment]:
        yield self
        for item in self.items:
            yield from item.walk()

    def _test(self, member: _Member) -> bool:
        return all(item._test(member) for item in self.items)

    def _atomic(self) -> bool:
        return False

    def __str__(self) -> str:
        return " and ".join(f"({item})" if isinstance(item, Or) else str(item) for item in self.items)


@dataclass(frozen=True, slots=True)
class Or(Segment):
    items: tuple[Segment, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", _flattened(Or, self.items))

    def walk(self) -> Iterator[Segment]:
        yield self
        for item in self.items:
            yield from item.walk()

    def _test(self, member: _Member) -> bool:
        return any(item._test(member) for item in self.items)

    def _atomic(self) -> bool:
        return False

    def __str__(self) -> str:
        return " or ".join(str(item) for item in self.items)


def _flattened(kind: type, items: tuple[Segment, ...]) -> tuple[Segment, ...]:
    """`a and (b and c)` is `a and b and c`: one node, whatever the parentheses."""
    flat: list[Segment] = []
    for item in items:
        flat.extend(item.items if isinstance(item, And | Or) and type(item) is kind else (item,))
    if len(flat) < 2:
        raise ValueError(f"{kind.__name__} joins two segments or more")
    return tuple(flat)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _field_name(key: str) -> str:
    return _quoted(key) if key in KEYWORDS else key


# The parser: tokens, then recursive descent (or > and > not > a condition), each error at its column.


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # string, unclosed, date, op, punct, word, bad, end
    text: str
    column: int  # 1-based

    def word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.lower() in words

    def punct(self, mark: str) -> bool:
        return self.kind == "punct" and self.text == mark

    @property
    def keyword(self) -> bool:
        return self.kind == "word" and self.text.lower() in KEYWORDS

    @property
    def value(self) -> str:
        """A string's text unquoted; any other token's as written."""
        if self.kind == "string":
            return re.sub(r"\\(.)", r"\1", self.text[1:-1], flags=re.DOTALL)
        return self.text


def _tokens(text: str) -> list[_Token]:
    found = []
    for match in _TOKENS.finditer(text):
        kind = match.lastgroup or "bad"
        if kind != "space":
            found.append(_Token(kind, match.group(), match.start() + 1))
    found.append(_Token("end", "", len(text) + 1))
    return found


class _Parser:
    def __init__(self, text: str, zone: dt.tzinfo):
        self.text, self.zone = text, zone
        self.tokens, self.position = _tokens(text), 0

    def fail(self, token: _Token | int, message: str) -> NoReturn:
        raise SegmentError(self.text, token if isinstance(token, int) else token.column, message)

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.position + ahead, len(self.tokens) - 1)]

    def take(self) -> _Token:
        token = self.peek()
        self.position += 1
        return token

    def segment(self) -> Segment:
        if self.peek().kind == "end":
            self.fail(1, "the segment is empty; write a condition such as tag:rimouski")
        found = self.disjunction()
        if self.peek().kind != "end":
            self.after_condition(self.peek(), closing=None)
        return found

    def after_condition(self, token: _Token, closing: _Token | None) -> NoReturn:
        """What may follow a condition is and, or, `)` (inside parentheses) or the end: say what went wrong."""
        if token.kind == "end" and closing is not None:
            self.fail(closing, "this parenthesis is not closed; add ) after its conditions")
        if token.punct(")"):
            self.fail(token, "a ) with no ( before it; remove it or add the (")
        if token.kind == "word" and token.text in ("&", "&&"):
            self.fail(token, f"'{token.text}' is not a keyword here; write and")
        if token.kind == "word" and token.text in ("|", "||"):
            self.fail(token, f"'{token.text}' is not a keyword here; write or")
        if token.kind in ("word", "string", "unclosed") and not token.word(*AND_WORDS, *OR_WORDS):
            self.fail(token, "two conditions need and or or between them")
        expected = "and, or or )" if closing is not None else "and, or or the end of the segment"
        self.fail(token, f"expected {expected} here, not '{token.text}'")

    def disjunction(self) -> Segment:
        items = [self.conjunction()]
        while self.peek().word(*OR_WORDS):
            self.take()
            items.append(self.conjunction())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def conjunction(self) -> Segment:
        items = [self.negation()]
        while self.peek().word(*AND_WORDS):
            self.take()
            items.append(self.negation())
        return items[0] if len(items) == 1 else And(tuple(items))

    def negation(self) -> Segment:
        if self.peek().word(*NOT_WORDS):
            self.take()
            return Not(self.negation())
        return self.condition()

    def condition(self) -> Segment:
        token = self.peek()
        if token.punct("("):
            self.take()
            inside = self.disjunction()
            if not self.peek().punct(")"):
                self.after_condition(self.peek(), closing=token)
            self.take()
            return inside
        if token.kind == "end":
            before = self.tokens[self.position - 1].text if self.position else ""
            self.fail(token, f"the segment ends after '{before}'; add a condition, e.g. tag:rimouski")
        if token.word(*AND_WORDS, *OR_WORDS):
            self.fail(token, f"a condition is missing before '{token.text}'")
        if token.word("tag"):
            return self.tag()
        if token.word("has"):
            self.take()
            return Has(self.field_name(self.peek(), after="has"))
        if token.word("joined"):
            return self.joined()
        if token.word("in"):
            self.fail(token, 'a field name is missing before in, e.g. municipalite in ["Rimouski", "Matane"]')
        if token.kind in ("string", "unclosed") or (token.kind == "word" and not token.keyword):
            return self.field()
        if token.kind == "bad" and token.text == "!":
            self.fail(token, "'!' alone is no operator; write not before a condition, or != after a field")
        self.fail(
            token, f"expected a condition here (tag:…, a field, has …, joined …, not, or a '('), not '{token.text}'"
        )

    def tag(self) -> Segment:
        keyword = self.take()
        if not self.peek().punct(":"):
            after = self.peek()
            if after.kind == "op" or after.word("in"):
                self.fail(keyword, 'a tag is written tag:NAME; a field named tag is quoted: "tag" = "…"')
            self.fail(after, "a tag is written tag:NAME, e.g. tag:rimouski")
        self.take()
        token = self.take()
        if token.kind == "unclosed":
            self.fail(token, f"a quoted tag is not closed; end it with {token.text}")
        if token.kind not in ("string", "word", "date"):  # a keyword too: tag:not is the tag "not"
            self.fail(token, 'a tag is missing after tag:, e.g. tag:rimouski or tag:"MRC Rimouski-Neigette"')
        try:
            return Tag(token.value)
        except ValueError as exc:
            self.fail(token, str(exc))

    def field_name(self, token: _Token, *, after: str | None = None) -> str:
        if token.kind == "unclosed":
            self.fail(token, f"a quoted field name is not closed; end it with {token.text}")
        if token.kind == "string" or (token.kind == "word" and not token.keyword):
            if not field_key(token.value):
                self.fail(token, f"the field name '{token.value}' has no letter or digit to match by")
            self.take()
            return token.value
        if token.keyword:
            self.fail(token, f'{token.text} is a keyword; a field of that name is quoted: "{token.text}"')
        self.fail(token, f"a field name is missing after {after}, e.g. has organisme")

    def field(self) -> Segment:
        name = self.field_name(self.peek())
        token = self.take()
        if token.kind == "op" and token.text in ("=", "==", "!="):
            found: Segment = Field(name, (self.value(token, name),))
            return Not(found) if token.text == "!=" else found
        if token.word("in"):
            return Field(name, self.values(name))
        if token.word(*NOT_WORDS) and self.peek().word("in"):
            self.take()
            return Not(Field(name, self.values(name)))
        if token.kind == "op":
            self.fail(token, f"a field compares with =, != or in; only joined takes {token.text}")
        if token.punct(":"):
            self.fail(token, f'only tag takes a colon: write tag:… for a tag, or {name} = "…" for a field')
        self.fail(token, f"expected =, !=, in or not in after the field '{name}'")

    def value(self, after: _Token, name: str) -> str:
        token = self.take()
        if token.kind == "unclosed":
            self.fail(token, f"a quoted value is not closed; end it with {token.text}")
        if token.kind not in ("string", "word", "date") or (token.kind == "word" and token.keyword):
            self.fail(token, f'a value is missing after {after.text}; write it quoted, e.g. "Rimouski"')
        if token.value == "":
            if after.text == "!=":
                self.fail(token, f"an empty value; for the members who have a {name}, write has {name}")
            self.fail(token, f"an empty value; for the members without a {name}, write not has {name}")
        return token.value

    def values(self, name: str) -> tuple[str, ...]:
        opening = self.take()
        if not opening.punct("["):
            self.fail(opening, 'in takes a list in brackets: in ["Rimouski", "Matane"]')
        found: list[str] = []
        while True:
            if self.peek().punct("]"):
                if not found:
                    self.fail(self.peek(), 'the list is empty; give it a value or more: in ["Rimouski", "Matane"]')
                self.take()
                return tuple(found)
            if self.peek().kind == "end":
                self.fail(opening, "this list is not closed; add ] after its values")
            found.append(self.value(opening if not found else self.tokens[self.position - 1], name))
            token = self.peek()
            if token.punct(","):
                self.take()
            elif not token.punct("]"):
                if token.kind == "end":
                    self.fail(opening, "this list is not closed; add ] after its values")
                self.fail(token, "values in a list are separated by commas")

    def joined(self) -> Segment:
        self.take()
        token = self.take()
        if token.kind != "op":
            self.fail(token, "joined is compared with a date: joined >= 2024-01-01")
        if token.text not in _COMPARISONS:
            self.fail(
                token,
                f"joined compares with >=, >, < or <=, not {token.text}; "
                "for one day: joined >= 2024-01-01 and joined < 2024-01-02",
            )
        op = _COMPARISONS[token.text]
        moment = self.take()
        if moment.kind not in ("date", "string"):
            self.fail(moment, "joined takes a date (2024-01-01) or an ISO time (2024-01-01T09:30:00-05:00)")
        text = moment.value.strip()
        try:
            if len(text) == 10:
                day = dt.date.fromisoformat(text)
            else:
                instant = dt.datetime.fromisoformat(text)
                if instant.tzinfo is None:
                    instant = instant.replace(tzinfo=self.zone)
                return Joined(op, instant)
        except ValueError:
            self.fail(moment, f"'{text}' is not a date (2024-01-01) or an ISO time (2024-01-01T09:30:00-05:00)")
        # A date is the whole day: after it is from the next day on, up to it is before the next day.
        if op in (">", "<="):
            day += dt.timedelta(days=1)
        start = dt.datetime.combine(day, dt.time(), tzinfo=self.zone)
        return Joined(">=" if op in (">=", ">") else "<", start)


def parse(text: str, *, zone: dt.tzinfo | None = None) -> Segment:
    """The segment a text writes (see the module's docstring); a SegmentError naming the column otherwise. Dates
    and times without an offset are in `zone`, UTC without one."""
    return _Parser(text, zone or dt.UTC).segment()


def resolve(config: Config, list_slug: str, text: str) -> tuple[str | None, Segment]:
    """`send --segment NAME_OR_EXPRESSION`: a segment named in newsletter.toml for that list ([lists.SLUG.segments])
    with its name, else the expression written (name None). A single word that names none of the list's segments
    is an error listing those it has: a name mistyped must not pass for an expression."""
    zone = config.zone or dt.UTC
    named = config.list_settings(list_slug).segments
    wanted = text.strip()
    if wanted in named:
        return wanted, parse(named[wanted], zone=zone)
    if NAME.fullmatch(wanted):
        where = config.file or "newsletter.toml"
        has = f"its segments are {', '.join(sorted(named))}" if named else f"{where} defines none for it"
        raise SegmentError(
            text,
            None,
            f"the list {list_slug} has no segment named '{wanted}' ({has}, under [lists.{list_slug}.segments]); "
            f"for the tag write tag:{wanted}",
        )
    return None, parse(text, zone=zone)


def checked_segment(text: str) -> str:
    """newsletter.toml's named segments are parsed as the file loads, a bad one refused there."""
    try:
        parse(text)
    except SegmentError as exc:
        raise ValueError(str(exc)) from None
    return text
