"""Listing a mailbox's history page by page, with the labels its events need.

A message's labels at a record are rebuilt from a later state of the message
by undoing the changes listed after the record (`history_events`). The state
comes from the history itself when Gmail gave the message's labels (as of
when the page was served) and every record up to then is listed; otherwise
it is asked of Gmail (`messages.get`, batched; as of the message's last
change). Tracing back needs every change after the record: a message may have
changed after the last record listed, so the listing reads ahead (the
following page; or, at the end of the history, the last page again, which now
reaches the change). Past LOOKAHEAD_LISTINGS such reads the message is
reported rather than guessed. A registration that leaves drafts out also
reads ahead to the deletion of a message added on the page and already gone:
that deletion tells a replaced draft version from mail.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from mailwatch.domain.models import Credential, Mailbox, MessageLabels
from mailwatch.gmail.client import GmailClient
from mailwatch.gmail.history import ChangeKind, HistoryPage, HistoryRecord
from mailwatch.sync.history_events import (
    covered_through, deleted_messages, labels_needed, last_changes, served_labels, usable,
)
from mailwatch.sync.metadata import NOT_YET_VISIBLE_SECONDS

# Extra history.list calls one page may spend to trace a message's labels back to it.
LOOKAHEAD_LISTINGS = 3


@dataclass(frozen=True)
class ListedPage:
    page: HistoryPage
    later: tuple[HistoryRecord, ...]  # records listed after the page (its labels are traced back through them)
    labels: dict[str, MessageLabels | None]  # a state per message (None: Gmail no longer has it)
    covered: int  # every record up to this history id is in the page or `later`
    deleted: frozenset[str]  # messages the page or `later` delete
    # The record listed just before the page (its messages' states are in `labels` too): Gmail
    # may record a draft's replacement there and the version's deletion on this page.
    previous: HistoryRecord | None = None


@dataclass
class HistoryListing:
    """One sync's walk through a mailbox's history from its synced history id."""

    gmail: GmailClient
    credential: Credential
    mailbox: Mailbox
    start_history_id: int
    # What messages.get said about messages so far (None: Gmail no longer has it).
    fetched: dict[str, MessageLabels | None] = field(default_factory=dict)
    # Pages listed past the current one, not yet handed out: (their token, page).
    _ahead: list[tuple[str, HistoryPage]] = field(default_factory=list)
    _token: str | None = None
    _done: bool = False
    _previous: ListedPage | None = None  # the last page handed out that had records

    async def next_page(self) -> ListedPage | None:
        """The next page with the states its events need; None after the last page."""
        if self._done:
            return None
        if self._ahead:
            self._token, page = self._ahead.pop(0)
        else:
            page = await self.page(self._token)
        listed = self._after_previous(await self._label(page))
        if listed.page.next_page_token is None:
            self._done = True
        else:
            self._token = listed.page.next_page_token
        return listed

    def _after_previous(self, listed: ListedPage) -> ListedPage:
        """`listed` with the last record of the page before it (and that record's message states)."""
        before = self._previous
        if listed.page.records:
            self._previous = listed
        if before is None:
            return listed
        record = before.page.records[-1]
        states = {i: before.labels[i] for i in record.message_ids if i in before.labels}
        return replace(listed, previous=record, labels={**states, **listed.labels})

    async def page(self, token: str | None) -> HistoryPage:
        return await self.gmail.history_page(
            self.credential, self.mailbox.email_address, start_history_id=self.start_history_id,
            page_token=token, tenant_id=self.mailbox.tenant_id,
        )

    async def fetch_labels(self, needed: list[str], deleted: frozenset[str]) -> None:
        """Ask Gmail for the labels (and metadata, if wanted) of `needed` into `fetched`.
        A message the listed history deletes is gone: not asked about. Any other that
        Gmail does not find yet is asked about again for a moment (the history can list
        a message before messages.get finds it)."""
        asked = [i for i in dict.fromkeys(needed) if i not in deleted]
        for message_id in needed:
            if message_id in deleted:
                self.fetched[message_id] = None
        if asked:
            await self.gmail.message_labels(
                self.credential, self.mailbox.email_address, asked, tenant_id=self.mailbox.tenant_id,
                metadata_headers=self.mailbox.metadata_headers, into=self.fetched,
                not_found_grace=NOT_YET_VISIBLE_SECONDS,
            )

    def states(self, pages: list[HistoryPage]) -> ListedPage:
        """The first of `pages` with the best state of each message the window names."""
        records = [record for page in pages for record in page.records]
        covered = covered_through(pages)
        changed_at = last_changes(records)
        served = served_labels(pages)
        labels: dict[str, MessageLabels | None] = {}
        for message_id, last_change in changed_at.items():
            candidates = [served.get(message_id), self.fetched.get(message_id)]
            best = next((s for s in candidates if usable(s, last_change, covered)), None)
            if best is not None or message_id in self.fetched or message_id in served:
                labels[message_id] = best or next((s for s in candidates if s is not None), None)
        return ListedPage(pages[0], tuple(records[len(pages[0].records):]), labels, covered,
                          deleted_messages(records))

    def _deletions_to_find(self, page: HistoryPage, listed: ListedPage) -> list[str]:
        """Messages added on the page that Gmail no longer has, their deletion not listed yet: a
        replaced draft version is known only by how its deletion was recorded (`draft_versions`),
        so the listing reads on to it before the page's events are decided."""
        return [change.message.id for record in page.records for change in record.changes
                if change.kind is ChangeKind.MESSAGE_ADDED and change.message.id in self.fetched
                and self.fetched[change.message.id] is None and change.message.id not in listed.deleted]

    async def _label(self, page: HistoryPage) -> ListedPage:
        """Find a usable state for every message the page's events need (from the history, or
        fetched), listing far enough ahead that a state newer than the page can be traced back."""
        label_filter = self.mailbox.label_filter
        for attempt in range(LOOKAHEAD_LISTINGS + 1):
            pages = [page, *(later for _, later in self._ahead)]
            listed = self.states(pages)
            changed_at = last_changes(record for p in pages for record in p.records)
            needed = [
                i for p in pages for i in labels_needed(p.records, label_filter)
                if not usable(listed.labels.get(i), changed_at[i], listed.covered)
                and (i not in self.fetched or (self.fetched[i] is not None
                                               and self.fetched[i].history_id < changed_at[i]))
            ]
            if needed:  # else `fetched` is as it was: the states just taken stand (Gmail's usual page)
                await self.fetch_labels(needed, listed.deleted)
                listed = self.states(pages)
            # States newer than the listing: read further so they can be traced back to this page.
            beyond = [i for i in labels_needed(page.records, label_filter)
                      if not usable(listed.labels.get(i), changed_at[i], listed.covered)
                      and listed.labels.get(i) is not None and listed.labels[i].history_id > listed.covered]
            if not beyond and not self.mailbox.include_drafts:
                beyond = self._deletions_to_find(page, listed)
            if not beyond or attempt == LOOKAHEAD_LISTINGS:
                return listed
            last_token, last = self._ahead[-1] if self._ahead else (self._token, page)
            if last.next_page_token:
                self._ahead.append((last.next_page_token, await self.page(last.next_page_token)))
            elif self._ahead:
                self._ahead[-1] = (last_token, await self.page(last_token))
            else:
                page = await self.page(self._token)
        return self.states([page, *(later for _, later in self._ahead)])
