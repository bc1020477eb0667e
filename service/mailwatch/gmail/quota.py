"""Gmail quota units spent, per tenant, as a Prometheus counter.

Gmail meters every call in quota units (Google's published table, below),
per user and per project; a tenant with many mailboxes is what spends them,
so the counter is labelled by tenant id (tenants are few: a bounded label)
and by Gmail method (a fixed set). Never by mailbox or address.

Every attempted call is counted, failed ones too: Google charges a refused
request as well, and the simulator counts it the same way.
"""

from __future__ import annotations

import uuid

from prometheus_client import Counter

# https://developers.google.com/gmail/api/reference/quota
UNITS = {
    "getProfile": 1,
    "watch": 100,
    "stop": 50,
    "history.list": 2,
    "messages.list": 5,
    "messages.get": 5,
    "messages.attachments.get": 5,
    "labels.list": 1,
    "labels.get": 1,
    "settings.sendAs.list": 1,
}

NO_TENANT = "none"  # a call made outside any tenant's work (none today; kept bounded)

QUOTA_UNITS = Counter(
    "mailwatch_gmail_quota_units_total", "Gmail API quota units spent, by tenant and method", ["tenant", "method"]
)
CALLS = Counter("mailwatch_gmail_calls_total", "Gmail API calls made, by tenant and method", ["tenant", "method"])


def tenant_label(tenant_id: uuid.UUID | str | None) -> str:
    return str(tenant_id) if tenant_id else NO_TENANT


def record_call(operation: str, tenant_id: uuid.UUID | str | None) -> None:
    """Count one Gmail call of `operation` (a key of UNITS) made for `tenant_id`."""
    tenant = tenant_label(tenant_id)
    CALLS.labels(tenant=tenant, method=operation).inc()
    QUOTA_UNITS.labels(tenant=tenant, method=operation).inc(UNITS.get(operation, 0))


def units_spent(tenant_id: uuid.UUID | str | None, method: str | None = None) -> float:
    """Units counted so far in this process for a tenant (all methods, or one)."""
    tenant = tenant_label(tenant_id)
    total = 0.0
    for metric in QUOTA_UNITS.collect():
        for sample in metric.samples:
            if not sample.name.endswith("_total") or sample.labels.get("tenant") != tenant:
                continue
            if method is None or sample.labels.get("method") == method:
                total += sample.value
    return total
