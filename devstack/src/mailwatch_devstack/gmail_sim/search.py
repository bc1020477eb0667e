"""Gmail's search query (`q` of users.messages.list), as far as the simulator's messages can answer it.

The operators are those of Google's "Refine searches in Gmail" (and the API's
"Search for messages" guide): `from:`, `to:`, `cc:`, `bcc:`, `subject:`,
`label:`, `in:`, `is:`, `has:`, `category:`, `after:` / `before:` (a date,
midnight Pacific time, or epoch seconds), `older_than:` / `newer_than:` (`Nd`,
`Nm`, `Ny`), quoted phrases, plain words, `-` (not), `OR` / `AND`, `( )`
groups and `{ }` (any of). Words match whole words, case-insensitively, a
multi-word value as a phrase. A Gmail operator the simulator cannot evaluate
(`filename:`, `size:`, `is:muted`, …) is refused with `UnsupportedQuery`
naming it, never ignored: the simulator may be stricter than Gmail, never looser.

`parse(q)` returns a `Query`: `matches(view)` for one message, and
`reaches_spam_trash`, true when the query names spam or trash (`in:trash`,
`in:anywhere`, `label:spam`, …), in which Gmail searches them without
`includeSpamTrash`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable
from zoneinfo import ZoneInfo

PACIFIC = ZoneInfo("America/Los_Angeles")  # "dates … are interpreted as midnight on that date in the PST timezone"

# Operators Gmail has that the simulator cannot answer from what its messages hold.
UNSUPPORTED_OPERATORS = frozenset({
    "filename", "size", "larger", "smaller", "list", "deliveredto", "rfc822msgid", "around", "older", "newer",
    "label_id",
})
_IN = {"inbox": ("INBOX",), "sent": ("SENT",), "drafts": ("DRAFT",), "draft": ("DRAFT",), "trash": ("TRASH",),
       "spam": ("SPAM",), "starred": ("STARRED",), "important": ("IMPORTANT",), "chats": ("CHAT",)}
_IS = {"unread": ("UNREAD", True), "read": ("UNREAD", False), "starred": ("STARRED", True),
       "important": ("IMPORTANT", True)}
_CATEGORY = {"primary": "CATEGORY_PERSONAL", "social": "CATEGORY_SOCIAL", "promotions": "CATEGORY_PROMOTIONS",
             "updates": "CATEGORY_UPDATES", "forums": "CATEGORY_FORUMS"}
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_TOKEN = re.compile(r'\s*(?:(?P<open>[({])|(?P<close>[)}])|(?P<neg>-)(?=\S)|(?P<term>(?:[^\s(){}"]|"[^"]*"?)+))')
_RELATIVE = re.compile(r"^(\d+)([dmy])$")


class UnsupportedQuery(ValueError):
    """The query uses an operator (or a value) the simulator cannot evaluate, or is malformed."""


@dataclass(frozen=True)
class MessageView:
    """What a search reads of one message (built by the caller from its model)."""

    label_ids: frozenset[str]
    user_label_names: frozenset[str]  # lower-cased names of the message's user labels
    headers: dict[str, str]  # lower-cased name -> the values joined by a space
    body: str
    internal_date_ms: int
    has_attachment: Callable[[], bool]  # asked only by has:attachment (it parses a raw message's MIME)


Predicate = Callable[[MessageView], bool]


@dataclass(frozen=True)
class Query:
    matches: Predicate
    reaches_spam_trash: bool


def words(text: str) -> list[str]:
    return [w.casefold() for w in _WORD.findall(text)]


def _contains(haystack: list[str], needle: list[str]) -> bool:
    """`needle` occurs in `haystack` as consecutive words (an empty needle never matches)."""
    n = len(needle)
    return bool(n) and any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def _text_in(fields: Iterable[str], value: str) -> Predicate:
    needle = words(value)
    if not needle:
        raise UnsupportedQuery(f"no words to search for in {value!r}")
    names = tuple(fields)

    def check(view: MessageView) -> bool:
        return any(_contains(words(view.body if name == "body" else view.headers.get(name, "")), needle)
                   for name in names)
    return check


def _has_label(label_id: str, present: bool = True) -> Predicate:
    return lambda view: (label_id in view.label_ids) == present


def _label(value: str) -> Predicate:
    """label:NAME: a system label by id or a user label by name (Gmail writes spaces and '/' as '-')."""
    wanted = value.casefold()
    variants = {wanted, wanted.replace("-", " "), wanted.replace("-", "/")}
    system = wanted.upper()
    return lambda view: system in view.label_ids or not variants.isdisjoint(view.user_label_names)


def _midnight_pacific(value: str) -> int:
    """after:/before:'s value in epoch ms: YYYY/MM/DD (or with '-'), MM/DD/YYYY, or epoch seconds."""
    if value.isdigit():
        return int(value) * 1000
    for fmt in ("%Y/%m/%d", "%Y-%m-%d", "%m/%d/%Y"):
        try:
            day = datetime.strptime(value, fmt)
        except ValueError:
            continue
        return int(day.replace(tzinfo=PACIFIC).timestamp() * 1000)
    raise UnsupportedQuery(f"cannot read the date {value!r} (YYYY/MM/DD or epoch seconds)")


def _months_back(now: datetime, months: int) -> datetime:
    month_index = now.year * 12 + now.month - 1 - months
    year, month = divmod(month_index, 12)
    for day in range(now.day, 0, -1):  # the 31st of a shorter month is its last day
        try:
            return now.replace(year=year, month=month + 1, day=day)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def _relative_ms(value: str, now_ms: int) -> int:
    match = _RELATIVE.match(value.lower())
    if not match:
        raise UnsupportedQuery(f"cannot read the age {value!r} (a number and d, m or y)")
    count, unit = int(match.group(1)), match.group(2)
    now = datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc)
    if unit == "d":
        then = now - timedelta(days=count)
    else:
        then = _months_back(now, count * (12 if unit == "y" else 1))
    return int(then.timestamp() * 1000)


def _operator(name: str, value: str, now_ms: int) -> tuple[Predicate, bool]:
    """The predicate of `name:value`, and whether it reaches spam/trash."""
    low = value.casefold()
    if name in ("from", "to", "cc", "bcc", "subject"):
        return _text_in((name,), value), False
    if name == "label":
        return _label(value), low in ("spam", "trash")
    if name == "in":
        if low == "anywhere":
            return (lambda view: True), True
        if low not in _IN:
            raise UnsupportedQuery(f"the simulator cannot evaluate the search operator 'in:{value}'")
        return _has_label(_IN[low][0]), low in ("spam", "trash")
    if name == "is":
        if low not in _IS:
            raise UnsupportedQuery(f"the simulator cannot evaluate the search operator 'is:{value}'")
        label_id, present = _IS[low]
        return _has_label(label_id, present), False
    if name == "has":
        if low == "attachment":
            return (lambda view: view.has_attachment()), False
        if low in ("userlabels", "nouserlabels"):
            want = low == "userlabels"
            return (lambda view: bool(view.user_label_names) == want), False
        raise UnsupportedQuery(f"the simulator cannot evaluate the search operator 'has:{value}'")
    if name == "category":
        if low not in _CATEGORY:
            raise UnsupportedQuery(f"the simulator cannot evaluate the search operator 'category:{value}'")
        return _has_label(_CATEGORY[low]), False
    if name in ("after", "before"):
        at = _midnight_pacific(value)
        if name == "after":
            return (lambda view: view.internal_date_ms >= at), False
        return (lambda view: view.internal_date_ms < at), False
    if name in ("newer_than", "older_than"):
        at = _relative_ms(value, now_ms)
        if name == "newer_than":
            return (lambda view: view.internal_date_ms > at), False
        return (lambda view: view.internal_date_ms <= at), False
    raise UnsupportedQuery(f"the simulator cannot evaluate the search operator '{name}:'")


_KNOWN = frozenset({"from", "to", "cc", "bcc", "subject", "label", "in", "is", "has", "category", "after",
                    "before", "newer_than", "older_than"}) | UNSUPPORTED_OPERATORS
_FREE_TEXT = ("subject", "body", "from", "to", "cc")


def _term(text: str, now_ms: int) -> tuple[Predicate, bool]:
    name, colon, value = text.partition(":")
    if colon and name.lower() in _KNOWN:
        if value.startswith('"'):
            value = value.strip('"')
        if not value:
            raise UnsupportedQuery(f"the search operator '{name}:' has no value")
        return _operator(name.lower(), value, now_ms)
    return _text_in(_FREE_TEXT, text.replace('"', " ")), False


class _Parser:
    """query := clause+ (AND); clause := unary ('OR' unary)*; unary := '-' unary | '(' query ')'
    | '{' unary+ '}' (any of) | term."""

    def __init__(self, q: str, now_ms: int) -> None:
        self.tokens: list[tuple[str, str]] = []
        position = 0
        q = q.strip()
        while position < len(q):
            match = _TOKEN.match(q, position)
            if match is None or match.end() == position:
                raise UnsupportedQuery(f"cannot read the query at {q[position:]!r}")
            kind = match.lastgroup or "term"
            self.tokens.append((kind, match.group(kind)))
            position = match.end()
            while position < len(q) and q[position].isspace():
                position += 1
        self.at = 0
        self.now_ms = now_ms
        self.spam_trash = False
        self.negated = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def query(self, closing: str | None) -> Predicate:
        clauses = []
        while (token := self.peek()) is not None and not (token[0] == "close"):
            if token == ("term", "AND"):
                self.take()
                continue
            clauses.append(self.clause())
        if closing is None and self.peek() is not None:
            raise UnsupportedQuery(f"unbalanced {self.peek()[1]!r} in the query")
        if not clauses:
            raise UnsupportedQuery("an empty group in the query")
        return lambda view: all(clause(view) for clause in clauses)

    def clause(self) -> Predicate:
        options = [self.unary()]
        while self.peek() == ("term", "OR"):
            self.take()
            if self.peek() is None or self.peek()[0] == "close":
                raise UnsupportedQuery("'OR' needs a term on each side")
            options.append(self.unary())
        if len(options) == 1:
            return options[0]
        return lambda view: any(option(view) for option in options)

    def unary(self) -> Predicate:
        kind, text = self.take()
        if kind == "neg":
            if self.peek() is None:
                raise UnsupportedQuery("'-' needs a term after it")
            self.negated += 1  # a negated in:trash keeps spam and trash out
            inner = self.unary()
            self.negated -= 1
            return lambda view: not inner(view)
        if kind == "open":
            closing = ")" if text == "(" else "}"
            inner = self.query(closing) if text == "(" else self._any_of()
            if self.peek() != ("close", closing):
                raise UnsupportedQuery(f"a {text!r} without its {closing!r} in the query")
            self.take()
            return inner
        if kind == "close":
            raise UnsupportedQuery(f"unbalanced {text!r} in the query")
        if text in ("OR", "AND"):
            raise UnsupportedQuery(f"'{text}' needs a term on each side")
        predicate, spam_trash = _term(text, self.now_ms)
        self.spam_trash = self.spam_trash or (spam_trash and not self.negated)
        return predicate

    def _any_of(self) -> Predicate:
        options = []
        while (token := self.peek()) is not None and token[0] != "close":
            if token == ("term", "OR"):
                self.take()
                continue
            options.append(self.unary())
        if not options:
            raise UnsupportedQuery("an empty group in the query")
        return lambda view: any(option(view) for option in options)


def parse(q: str, *, now_ms: int) -> Query:
    """The query `q` (Gmail's search syntax) as a predicate; UnsupportedQuery when the simulator
    cannot evaluate it. `now_ms` (the simulated clock) anchors older_than/newer_than."""
    parser = _Parser(q, now_ms)
    if not parser.tokens:
        return Query(lambda view: True, False)
    predicate = parser.query(None)
    return Query(predicate, parser.spam_trash)
