"""The ingest counters the chart's alerts watch are exported at 0 from start-up."""

from __future__ import annotations

import subprocess
import sys

from mailwatch.ingest.decode import MalformedReason
from mailwatch.ingest.metrics import SOURCES


def test_alerted_counters_exist_at_zero_before_anything_happened():
    """In a fresh process (this one's counters have been moved by other tests): every source's
    write-failure counter and every (source, reason) malformed counter is there at 0, so the
    first failure is an increase Prometheus sees (tests/deploy/alerts/ fire the alerts on that)."""
    exposition = subprocess.run(
        [sys.executable, "-c", "import mailwatch.ingest.metrics, prometheus_client; "
         "print(prometheus_client.generate_latest().decode())"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.splitlines()
    for source in SOURCES:
        assert f'mailwatch_ingest_write_failures_total{{source="{source}"}} 0.0' in exposition
        for reason in MalformedReason:
            assert f'mailwatch_ingest_malformed_total{{reason="{reason.value}",source="{source}"}} 0.0' in exposition
