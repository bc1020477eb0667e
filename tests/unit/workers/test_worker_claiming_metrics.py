"""What ClaimingWorker counts per claim: one outcome in its own series, one duration each,
also for a claim whose processing raised."""

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from mailwatch.workers.claiming import ClaimingWorker


def scripted_worker():
    registry = CollectorRegistry()

    class Scripted(ClaimingWorker):
        outcomes = Counter("test_claims_total", "outcomes", ["outcome"], registry=registry)
        seconds = Histogram("test_claim_seconds", "durations", registry=registry)

        def __init__(self, outcomes):
            super().__init__(sessions=None, gmail=None, secret_box=None, concurrency=1, batch_size=len(outcomes))
            self.script = list(outcomes)

        async def claim(self, now, limit):
            claims, self.script = self.script[:limit], self.script[limit:]
            return claims

        async def process(self, claim):
            if isinstance(claim, Exception):
                raise claim
            return claim

    return Scripted, registry


def counted(registry, outcome):
    return registry.get_sample_value("test_claims_total", {"outcome": outcome}) or 0.0


async def test_each_outcome_is_counted_in_its_own_series_and_each_claim_timed():
    Scripted, registry = scripted_worker()
    worker = Scripted(["synced", "retry", "synced", "lease_lost", "synced"])
    assert await worker.run_once() == 5
    assert [counted(registry, o) for o in ("synced", "retry", "lease_lost")] == [3.0, 1.0, 1.0]
    assert registry.get_sample_value("test_claim_seconds_count") == 5.0
    # A second worker of the same kind counts into the same series.
    assert await Scripted(["retry"]).run_once() == 1
    assert counted(registry, "retry") == 2.0


async def test_a_claim_whose_processing_raised_is_timed_and_counts_no_outcome():
    Scripted, registry = scripted_worker()
    worker = Scripted(["synced", RuntimeError("bug")])
    with pytest.raises(RuntimeError):
        await worker.run_once()
    assert registry.get_sample_value("test_claim_seconds_count") == 2.0
    assert counted(registry, "synced") == 1.0
