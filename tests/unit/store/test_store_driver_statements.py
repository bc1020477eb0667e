"""The statements every change runs on the driver's connection (the sync's claim and page
commit, ingest's record, a stream's scan) keep psycopg's client-side work small.

psycopg converts a query's `%(name)s` placeholders to `$n` once per distinct text and
caches that, but only for a text of at most MAX_CACHED_STATEMENT_LENGTH bytes with at most
MAX_CACHED_STATEMENT_PARAMS parameters: a longer one is parsed afresh on every execute
(the 4.2 kB claim spent about 60 us of CPU per claim on it). And it adapts a Python list
parameter in Python, element by element, so the hot statements take none."""

from __future__ import annotations

import itertools
import re
import uuid
from datetime import datetime, timedelta, timezone

from psycopg import _queries as psycopg_queries  # its limits are read here only, to check against

from mailwatch.domain.models import EventType, NewEvent
from mailwatch.store import changes, notifications, sync_claims


def _hot_statements() -> dict[str, str]:
    statements = {
        "sync claim": sync_claims._compiled_claim()[0],
        "ingest's record": notifications._compiled_record(),
        "append": changes._APPEND,
    }
    for end, missed, keep in itertools.product(sync_claims.PageEnd, (False, True), (False, True)):
        update_sql, _ = sync_claims._page_update(end, notifications_missed=missed, keep_page_failures=keep)
        name = f"page commit {end.value} missed={missed} keep={keep}"
        statements[name] = update_sql
        statements[f"{name} with events"] = changes.update_then_append_sql(update_sql)
    for shape in itertools.product((False, True), repeat=3):
        statements[f"scan by mailbox/type/partition={shape}"] = changes._scan_sql(*shape)
    return statements


def test_every_hot_statement_is_short_enough_for_psycopg_to_cache_its_conversion():
    too_long = {name: len(sql.encode()) for name, sql in _hot_statements().items()
                if len(sql.encode()) > psycopg_queries.MAX_CACHED_STATEMENT_LENGTH}
    too_many = {name: sql for name, sql in _hot_statements().items()
                if len(set(re.findall(r"%\((\w+)\)s", sql))) > psycopg_queries.MAX_CACHED_STATEMENT_PARAMS}
    assert not too_long, f"bytes over {psycopg_queries.MAX_CACHED_STATEMENT_LENGTH}: {too_long}"
    assert not too_many


def test_the_hot_statements_take_no_python_list_parameter():
    now = datetime.now(timezone.utc)
    event = NewEvent(mailbox_id=uuid.uuid4(), email_address="a@example.com", type=EventType.MESSAGE_ADDED,
                     history_id=5, message_id="m", thread_id="t", label_ids=("INBOX", "UNREAD"))
    params = {
        "sync claim": sync_claims._claim_params("owner", now, timedelta(seconds=60), 4, [uuid.uuid4(), uuid.uuid4()],
                                                [uuid.uuid4()] * 3),
        "ingest's record": notifications._record_params({"a@example.com": 5, "b@example.com": 6}, now),
        "append": changes._append_params(uuid.uuid4(), [event, event]),
    }
    lists = {name: sorted(key for key, value in values.items() if isinstance(value, (list, tuple)))
             for name, values in params.items()}
    assert lists == {name: [] for name in params}
