"""Mailboxes, messages and labels, and how Gmail renders them.

A `Mailbox` changes only through `insert_message`, `delete_message` and
`modify_labels`; each change takes the next history id and appends one
`HistoryRecord`, which the caller passes on to the notifier.
"""

from __future__ import annotations

import base64
import random
from itertools import islice
from dataclasses import dataclass, field
from email.utils import format_datetime
from datetime import datetime, timezone

from mailwatch_devstack.gmail_sim import mime, search
from mailwatch_devstack.gmail_sim.history import (
    LABEL_ADDED,
    LABEL_REMOVED,
    MESSAGE_ADDED,
    MESSAGE_DELETED,
    HistoryLog,
    HistoryRecord,
)

SYSTEM_LABELS = (
    "INBOX", "SPAM", "TRASH", "UNREAD", "STARRED", "IMPORTANT", "SENT", "DRAFT", "CHAT",
    "CATEGORY_PERSONAL", "CATEGORY_SOCIAL", "CATEGORY_PROMOTIONS", "CATEGORY_UPDATES", "CATEGORY_FORUMS",
)
_SYSTEM_SET = frozenset(SYSTEM_LABELS)


class UnknownLabel(ValueError):
    pass


class UnknownMessage(KeyError):
    pass


class UnknownDraft(KeyError):
    pass


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


@dataclass(slots=True)
class Message:
    id: str
    thread_id: str
    label_ids: list[str]
    internal_date: int  # ms since epoch
    history_id: int
    headers: list[tuple[str, str]]
    body: str
    visible_at: float = 0.0  # simulated time from which messages.get finds it (history lists it at once)
    # The RFC 822 source (base64) of a message inserted raw; "" for one made from fields
    # (headers + a text body), whose source is made on demand.
    source: str = ""

    @property
    def snippet(self) -> str:
        return " ".join(self.body.split())[:200]

    def all_headers(self) -> list[tuple[str, str]]:
        """The stored headers plus Date and Message-ID when the inserter gave none (made on demand);
        a raw message's headers are its source's, as they are."""
        headers = list(self.headers)
        if self.source:
            return headers
        names = {name.lower() for name, _ in headers}
        if "date" not in names:
            date = datetime.fromtimestamp(self.internal_date / 1000, tz=timezone.utc)
            headers.append(("Date", format_datetime(date)))
        if "message-id" not in names:
            headers.append(("Message-ID", f"<{self.id}@gmail-sim.invalid>"))
        return headers

    def raw(self) -> bytes:
        if self.source:
            return base64.b64decode(self.source)
        head = "".join(f"{name}: {value}\r\n" for name, value in self.all_headers())
        return (head + "Content-Type: text/plain; charset=UTF-8\r\n\r\n" + self.body).encode("utf-8")

    @property
    def mime_type(self) -> str:
        content_type = next((value for name, value in self.headers if name.lower() == "content-type"), "")
        return content_type.split(";")[0].strip().lower() or "text/plain"

    def search_view(self, user_labels: dict[str, str]) -> search.MessageView:
        """What a search query reads of this message (`user_labels`: the mailbox's id -> name)."""
        fields: dict[str, list[str]] = {}
        for name, value in self.headers:
            fields.setdefault(name.lower(), []).append(value)

        def has_attachment() -> bool:
            return bool(self.source) and any(
                part.get_filename() for part in mime.parse(self.raw()).walk() if not part.is_multipart())
        return search.MessageView(
            label_ids=frozenset(self.label_ids),
            user_label_names=frozenset(user_labels[l].casefold() for l in self.label_ids if l in user_labels),
            headers={name: " ".join(values) for name, values in fields.items()},
            body=self.body, internal_date_ms=self.internal_date, has_attachment=has_attachment,
        )

    def attachment(self, attachment_id: str) -> mime.Attachment | None:
        """One of the message's attachments by its id (MessagePartBody.attachmentId), or None."""
        return mime.attachment(mime.parse(self.raw()), self.id, attachment_id) if self.source else None

    def to_json(self, fmt: str = "full", metadata_headers: list[str] | None = None) -> dict:
        raw = self.raw()
        out = {
            "id": self.id,
            "threadId": self.thread_id,
            "labelIds": list(self.label_ids),
            "snippet": self.snippet,
            "historyId": str(self.history_id),
            "internalDate": str(self.internal_date),
            "sizeEstimate": len(raw),
        }
        if fmt == "minimal":
            return out
        if fmt == "raw":
            out["raw"] = _b64url(raw)
            return out
        if fmt == "full" and self.source:
            out["payload"] = mime.message_part(mime.parse(raw), self.id)
            return out
        headers = self.all_headers()
        if fmt == "metadata" and metadata_headers:
            wanted = {name.lower() for name in metadata_headers}
            headers = [h for h in headers if h[0].lower() in wanted]
        payload: dict = {"mimeType": self.mime_type, "headers": [{"name": n, "value": v} for n, v in headers]}
        if fmt == "full":
            body = self.body.encode("utf-8")
            payload = {"partId": "", "mimeType": "text/plain", "filename": "", "headers": payload["headers"],
                       "body": {"size": len(body), "data": _b64url(body)}}
        out["payload"] = payload
        return out


@dataclass(slots=True)
class Watch:
    topic_name: str
    label_ids: frozenset[str]
    behavior: str  # "INCLUDE" | "EXCLUDE"
    history_id: int
    expiration_ms: int

    @property
    def project_id(self) -> str:
        return self.topic_name.split("/")[1]

    def live(self, now_ms: int) -> bool:
        return now_ms < self.expiration_ms

    def matches(self, record: HistoryRecord) -> bool:
        if not self.label_ids:
            return True
        related = not self.label_ids.isdisjoint(record.related_labels())
        return related if self.behavior == "INCLUDE" else not related


@dataclass(slots=True)
class Mailbox:
    email: str
    history_id: int
    history: HistoryLog
    rng: random.Random
    messages: dict[str, Message] = field(default_factory=dict)
    thread_sizes: dict[str, int] = field(default_factory=dict)
    user_labels: dict[str, str] = field(default_factory=dict)  # id -> name
    # One push client per developer project (Gmail's rule): project id -> its watch.
    watches: dict[str, Watch] = field(default_factory=dict)
    counter: int = 0
    drafts: dict[str, str] = field(default_factory=dict)  # draft id -> the message it holds now

    @classmethod
    def create(cls, email: str, history_id: int, rng: random.Random | int) -> "Mailbox":
        """`rng` (shared by the simulator's mailboxes, or a seed) draws history-id gaps and message ids."""
        if not isinstance(rng, random.Random):
            rng = random.Random(rng)
        return cls(email=email, history_id=history_id, history=HistoryLog(floor=history_id), rng=rng)

    # -- labels ----------------------------------------------------------------------------
    def has_label(self, label_id: str) -> bool:
        return label_id in _SYSTEM_SET or label_id in self.user_labels

    def check_labels(self, label_ids) -> None:
        for label_id in label_ids:
            if not self.has_label(label_id):
                raise UnknownLabel(label_id)

    def create_label(self, name: str) -> str:
        for label_id, existing in self.user_labels.items():
            if existing == name:
                return label_id
        label_id = f"Label_{len(self.user_labels) + 1}"
        self.user_labels[label_id] = name
        return label_id

    def delete_label(self, label_id: str, *, now: float) -> list[HistoryRecord]:
        """Delete a user label: it leaves every message that had it (a labelsRemoved record each)."""
        if label_id not in self.user_labels:
            raise UnknownLabel(label_id)
        records = [record for message in list(self.messages.values()) if label_id in message.label_ids
                   for record in self.modify_labels(message.id, now=now, remove=[label_id])]
        del self.user_labels[label_id]
        return records

    def labels_json(self) -> list[dict]:
        out = [{"id": l, "name": l, "type": "system"} for l in SYSTEM_LABELS]
        out += [{"id": i, "name": n, "type": "user", "messageListVisibility": "show",
                 "labelListVisibility": "labelShow"} for i, n in self.user_labels.items()]
        return out

    def label_json(self, label_id: str) -> dict | None:
        for label in self.labels_json():
            if label["id"] == label_id:
                return label
        return None

    # -- changes ---------------------------------------------------------------------------
    def _next_history_id(self) -> int:
        # Gmail's ids increase "with random gaps in between valid IDs".
        self.history_id += 1 + self.rng.randrange(3)
        return self.history_id

    def _new_message_id(self) -> str:
        self.counter += 1
        return f"{self.rng.getrandbits(28):07x}{self.counter:09x}"

    def insert_message(
        self, *, now: float, label_ids: list[str], thread_id: str | None = None,
        headers: list[tuple[str, str]] | None = None, body: str = "", internal_date: int | None = None,
        visible_after: float = 0.0,
        source: bytes | None = None,
    ) -> tuple[Message, HistoryRecord]:
        """A new message from fields (`headers`, a text `body`) or from its RFC 822 `source`;
        `visible_after`: seconds during which messages.get does not find it yet."""
        if source is not None:
            root = mime.parse(source)
            headers, body = mime.headers(root), mime.text(root)
        labels = list(dict.fromkeys(label_ids))
        self.check_labels(labels)
        message_id = self._new_message_id()
        thread = thread_id or message_id
        hid = self._next_history_id()
        message = Message(id=message_id, thread_id=thread, label_ids=labels,
                          internal_date=internal_date if internal_date is not None else int(now * 1000),
                          history_id=hid, headers=list(headers or ()), body=body,
                          visible_at=now + visible_after if visible_after else 0.0,
                          source=base64.b64encode(source).decode("ascii") if source is not None else "")
        self.messages[message_id] = message
        self.thread_sizes[thread] = self.thread_sizes.get(thread, 0) + 1
        record = HistoryRecord(hid, now, MESSAGE_ADDED, message_id, thread, tuple(labels))
        self.history.append(record)
        return message, record

    def delete_message(self, message_id: str, *, now: float) -> HistoryRecord:
        message = self.messages.pop(message_id, None)
        if message is None:
            raise UnknownMessage(message_id)
        for draft_id in [d for d, held in self.drafts.items() if held == message_id]:
            del self.drafts[draft_id]  # deleting a draft's message deletes the draft
        remaining = self.thread_sizes.get(message.thread_id, 1) - 1
        if remaining > 0:
            self.thread_sizes[message.thread_id] = remaining
        else:
            self.thread_sizes.pop(message.thread_id, None)
        hid = self._next_history_id()
        record = HistoryRecord(hid, now, MESSAGE_DELETED, message_id, message.thread_id, tuple(message.label_ids))
        self.history.append(record)
        return record

    def modify_labels(self, message_id: str, *, now: float, add=(), remove=(),
                      one_record: bool = False) -> list[HistoryRecord]:
        """Apply a label change: one record for the labels added, one for those removed, or with
        `one_record` a single record carrying both (as Gmail records some relabels)."""
        message = self.messages.get(message_id)
        if message is None:
            raise UnknownMessage(message_id)
        self.check_labels([*add, *remove])
        current = set(message.label_ids)
        added = [l for l in dict.fromkeys(add) if l not in current and l not in remove]
        removed = [l for l in dict.fromkeys(remove) if l in current]
        records = []
        if added:
            message.label_ids.extend(added)
        if added and removed and one_record:
            gone = set(removed)
            message.label_ids[:] = [l for l in message.label_ids if l not in gone]
            hid = self._next_history_id()
            message.history_id = hid
            records.append(HistoryRecord(hid, now, LABEL_ADDED, message.id, message.thread_id,
                                         tuple(message.label_ids), tuple(added), tuple(removed)))
            added = removed = []
        if added:
            hid = self._next_history_id()
            message.history_id = hid
            records.append(HistoryRecord(hid, now, LABEL_ADDED, message.id, message.thread_id,
                                         tuple(message.label_ids), tuple(added)))
        if removed:
            gone = set(removed)
            message.label_ids[:] = [l for l in message.label_ids if l not in gone]
            hid = self._next_history_id()
            message.history_id = hid
            records.append(HistoryRecord(hid, now, LABEL_REMOVED, message.id, message.thread_id,
                                         tuple(message.label_ids), tuple(removed)))
        for record in records:
            self.history.append(record)
        return records

    # -- drafts: what Gmail records for them -------------------------------------------------
    def save_draft(self, *, now: float, draft_id: str | None = None, headers: list[tuple[str, str]] | None = None,
                   body: str = "", thread_id: str | None = None,
                   visible_after: float = 0.0) -> tuple[str, Message, list[HistoryRecord]]:
        """Create a draft, or save a new version of one (an autosave). A draft's message carries
        only DRAFT and cannot change: each version is a new message (messageAdded, DRAFT) and the
        previous one is deleted (messageDeleted), in the same thread; the draft id stays.
        `visible_after` as in `insert_message`: a version is a new message like any other."""
        previous = None
        if draft_id is not None:
            if draft_id not in self.drafts:
                raise UnknownDraft(draft_id)
            previous = self.messages[self.drafts[draft_id]]
            thread_id = previous.thread_id
        elif thread_id is not None and thread_id not in self.thread_sizes:
            raise UnknownMessage(thread_id)
        message, added = self.insert_message(now=now, label_ids=["DRAFT"], thread_id=thread_id,
                                             headers=headers, body=body, visible_after=visible_after)
        records = [added]
        if previous is not None:
            records.append(self.delete_message(previous.id, now=now))
        else:
            draft_id = f"r{self.rng.getrandbits(62)}"
        self.drafts[draft_id] = message.id
        return draft_id, message, records

    def send_draft(self, draft_id: str, *, now: float, visible_after: float = 0.0) -> tuple[Message, list[HistoryRecord]]:
        """Send a draft: a new message with SENT (a new id, the same thread and content) is added
        and the draft, with its message, is deleted. `visible_after` as in `insert_message`."""
        if draft_id not in self.drafts:
            raise UnknownDraft(draft_id)
        draft = self.messages[self.drafts[draft_id]]
        sent, added = self.insert_message(now=now, label_ids=["SENT"], thread_id=draft.thread_id,
                                          headers=list(draft.headers), body=draft.body, visible_after=visible_after)
        return sent, [added, self.delete_message(draft.id, now=now)]

    def seed_messages(self, count: int, *, now: float, label_ids: list[str]) -> int:
        """Add `count` messages that were already there before anyone watched: no history
        records, one history id for all of them. Cheap enough for 100,000 at once (a
        large mailbox for full-resync tests); returns the mailbox's new history id."""
        labels = list(dict.fromkeys(label_ids))
        self.check_labels(labels)
        hid = self._next_history_id()
        stamp = int(now * 1000)
        messages, threads = self.messages, self.thread_sizes
        for _ in range(count):
            message_id = self._new_message_id()
            messages[message_id] = Message(id=message_id, thread_id=message_id, label_ids=list(labels),
                                           internal_date=stamp, history_id=hid, headers=[], body="")
            threads[message_id] = 1
        # Whatever history there was cannot be replayed across this: like mail that
        # predates the watch, it is reached by a full sync, never by history.list.
        self.history.expire_through(hid)
        return hid

    # -- reads -----------------------------------------------------------------------------
    def list_messages(self, *, label_ids: list[str], include_spam_trash: bool, offset: int, limit: int,
                      query: search.Query | None = None):
        """Newest first; returns (page, next offset or None, total matching estimate). A `query`
        that names spam or trash searches them too, as Gmail's does."""
        wanted = set(label_ids)
        reach = include_spam_trash or (query is not None and query.reaches_spam_trash)
        hidden = set() if reach else {"SPAM", "TRASH"} - wanted
        if not wanted and not hidden and query is None:  # everything: slice without filtering (large mailboxes)
            total = len(self.messages)
            page = list(islice(reversed(self.messages.values()), offset, offset + limit))
        else:
            matched = [m for m in reversed(self.messages.values())
                       if wanted.issubset(m.label_ids) and hidden.isdisjoint(m.label_ids)
                       and (query is None or query.matches(m.search_view(self.user_labels)))]
            total = len(matched)
            page = matched[offset: offset + limit]
        next_offset = offset + limit if offset + limit < total else None
        return page, next_offset, total
