"""Gmail quota units spent, per tenant and Google project, as a Prometheus counter.

Gmail meters every call in quota units (Google's published table, below),
per user and per project; a tenant with many mailboxes is what spends them,
so the counter is labelled by tenant id (tenants are few: a bounded label),
by the Google project the call is charged to (the project of the credentials
making it: `domain.projects.quota_project`; a deployment has few) and by
Gmail method (a fixed set). Never by mailbox or address.

Every attempted call is counted, failed ones too: Google charges a refused
request as well, and the simulator counts it the same way.
"""

from __future__ import annotations

import uuid

from prometheus_client import Counter

from mailwatch.domain.models import Credential
from mailwatch.domain.projects import quota_project

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
# Credentials that do not say their project (an OAuth client id not in Google's form).
UNKNOWN_PROJECT = "unknown"

QUOTA_UNITS = Counter(
    "mailwatch_gmail_quota_units_total", "Gmail API quota units spent, by tenant, Google project and method",
    ["tenant", "project", "method"],
)
CALLS = Counter("mailwatch_gmail_calls_total", "Gmail API calls made, by tenant and method", ["tenant", "method"])


def tenant_label(tenant_id: uuid.UUID | str | None) -> str:
    return str(tenant_id) if tenant_id else NO_TENANT


def project_label(credential: Credential) -> str:
    return quota_project(credential) or UNKNOWN_PROJECT


# (tenant, project, method) -> its two counters and the units a call adds: a call
# increments them without building the label values (the tenant id as text) and looking the
# children up again each time. Bounded as the labels are (tenants x projects x methods).
_COUNTERS: dict[tuple, tuple] = {}


def record_call(operation: str, tenant_id: uuid.UUID | str | None, credential: Credential) -> None:
    """Count one Gmail call of `operation` (a key of UNITS) made for `tenant_id` with `credential`."""
    key = (tenant_id, project_label(credential), operation)
    counters = _COUNTERS.get(key)
    if counters is None:
        tenant = tenant_label(tenant_id)
        counters = _COUNTERS[key] = (CALLS.labels(tenant=tenant, method=operation),
                                     QUOTA_UNITS.labels(tenant=tenant, project=key[1], method=operation),
                                     UNITS.get(operation, 0))
    calls, units, cost = counters
    calls.inc()
    units.inc(cost)


def units_spent(tenant_id: uuid.UUID | str | None, method: str | None = None, *, project: str | None = None) -> float:
    """Units counted so far in this process for a tenant (all methods, or one; all projects, or one)."""
    tenant = tenant_label(tenant_id)
    total = 0.0
    for metric in QUOTA_UNITS.collect():
        for sample in metric.samples:
            if not sample.name.endswith("_total") or sample.labels.get("tenant") != tenant:
                continue
            if (method is None or sample.labels.get("method") == method) and (
                    project is None or sample.labels.get("project") == project):
                total += sample.value
    return total
