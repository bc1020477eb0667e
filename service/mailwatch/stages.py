"""Where a notification's time goes inside the service, by stage (one Prometheus histogram).

A change travels: Gmail records it → Gmail publishes the notification to
Pub/Sub → ingest pulls it → ingest records it (the mailbox is due) → the sync
worker claims the mailbox → Gmail answers history.list (and messages.get) →
the page commits → streams read it. The service sees these stages of it:

- `published_to_pulled`: Pub/Sub's publish time to the pull's return, per
  message (wall clocks of two hosts in production: skew shows up here);
- `pulled_to_recorded`: the batch's one-statement write, per batch;
- `due_to_claimed`: the mailbox's `sync_due_at` (its oldest unsynced
  notification's record time) to its claim, per claim;
- `claimed_to_committed`: the whole sync (`mailwatch_sync_seconds` too);
- `commit`: a page's one-statement commit inside it (the rest of the sync is
  Gmail's answers and our CPU).

What follows the commit (NOTIFY, the stream's read, gRPC) is each event's
`observe_time` to its arrival, seen by the client. `benchmarks/pipeline.py`
prints these next to the simulator's own change → publish delay.
"""

from __future__ import annotations

from prometheus_client import Histogram

PUBLISHED_TO_PULLED = "published_to_pulled"
PULLED_TO_RECORDED = "pulled_to_recorded"
DUE_TO_CLAIMED = "due_to_claimed"
CLAIMED_TO_COMMITTED = "claimed_to_committed"
COMMIT = "commit"
STAGES = (PUBLISHED_TO_PULLED, PULLED_TO_RECORDED, DUE_TO_CLAIMED, CLAIMED_TO_COMMITTED, COMMIT)

# Fine at the low end (a healthy stage takes milliseconds), up to the fallback poll's minutes.
BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 300)

STAGE_SECONDS = Histogram(
    "mailwatch_pipeline_stage_seconds",
    "Time a notification spends in each stage the service sees (see mailwatch.stages)",
    ["stage"],
    buckets=BUCKETS,
)
_BY_STAGE = {stage: STAGE_SECONDS.labels(stage) for stage in STAGES}  # every series exists from start-up


def observe(stage: str, seconds: float) -> None:
    """One sample of `stage` (negative values, from clock skew, count as 0)."""
    _BY_STAGE[stage].observe(max(0.0, seconds))
