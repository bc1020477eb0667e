"""Listing a mailbox's history page by page, with the labels its events need.

History records may name a message without its labels. The labels are then
asked of Gmail (`messages.get`, batched) as they are *now*, and traced back
to each record by undoing the changes listed after it (`history_events`).
That only works when every change after the record is listed: a message
asked about may have changed after the last record listed, so the listing
reads ahead (the following page; or, at the end of the history, the last
page again, which now reaches the change). Past LOOKAHEAD_LISTINGS such
reads the message is reported rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailwatch.domain.models import Credential, Mailbox, MessageLabels
from mailwatch.gmail.client import GmailClient
from mailwatch.gmail.history import HistoryPage, HistoryRecord
from mailwatch.sync.history_events import labels_needed, last_changes

# Extra history.list calls one page may spend to trace a message's labels back to it.
LOOKAHEAD_LISTINGS = 3


@dataclass
class HistoryListing:
    """One sync's walk through a mailbox's history from its synced history id."""

    gmail: GmailClient
    credential: Credential
    mailbox: Mailbox
    start_history_id: int
    # What Gmail said about messages' labels so far (None: Gmail no longer has it).
    known: dict[str, MessageLabels | None] = field(default_factory=dict)
    # Pages listed past the current one, not yet handed out: (their token, page).
    _ahead: list[tuple[str, HistoryPage]] = field(default_factory=list)
    _token: str | None = None
    _done: bool = False

    async def next_page(self) -> tuple[HistoryPage, tuple[HistoryRecord, ...]] | None:
        """The next page with its labels looked up (in `known`), and the records listed
        after it (which the labels are traced back through); None after the last page."""
        if self._done:
            return None
        if self._ahead:
            self._token, page = self._ahead.pop(0)
        else:
            page = await self.page(self._token)
        page = await self._label(page)
        if page.next_page_token is None:
            self._done = True
        else:
            self._token = page.next_page_token
        return page, tuple(record for _, later in self._ahead for record in later.records)

    async def page(self, token: str | None) -> HistoryPage:
        return await self.gmail.history_page(
            self.credential, self.mailbox.email_address, start_history_id=self.start_history_id,
            page_token=token, tenant_id=self.mailbox.tenant_id,
        )

    async def fetch_labels(self, needed: list[str]) -> None:
        """Ask Gmail for the labels (and metadata, if wanted) of `needed` into `known`."""
        if needed:
            self.known.update(await self.gmail.message_labels(
                self.credential, self.mailbox.email_address, list(dict.fromkeys(needed)),
                tenant_id=self.mailbox.tenant_id, metadata_headers=self.mailbox.metadata_headers,
            ))

    async def _label(self, page: HistoryPage) -> HistoryPage:
        """Fetch the labels the page's events need and list far enough ahead that labels
        fetched after a later change can be traced back to the page."""
        label_filter = self.mailbox.label_filter
        for attempt in range(LOOKAHEAD_LISTINGS + 1):
            window = [page, *(later for _, later in self._ahead)]
            changed_at = last_changes(record for p in window for record in p.records)
            known = self.known
            await self.fetch_labels([
                i for p in window for i in labels_needed(p.records, label_filter)
                if i not in known or (known[i] is not None and known[i].history_id < changed_at[i])
            ])
            listed_through = max((r.id for p in window for r in p.records), default=0)
            relevant = labels_needed(page.records, label_filter)
            newest = max((known[i].history_id for i in relevant if known.get(i) is not None), default=0)
            if newest <= listed_through or attempt == LOOKAHEAD_LISTINGS:
                return page
            last_token, last = self._ahead[-1] if self._ahead else (self._token, page)
            if last.next_page_token:
                self._ahead.append((last.next_page_token, await self.page(last.next_page_token)))
            elif self._ahead:
                self._ahead[-1] = (last_token, await self.page(last_token))
            else:
                page = await self.page(self._token)
        return page
