"""The workers' due-time queries are index scans: their cost follows the number
of due mailboxes, not the number registered.

Checked with EXPLAIN on a few thousand mailboxes (ANALYZEd), for the plan
Postgres picks when it knows the parameters (custom plan) and for the one it
caches for a prepared statement (generic plan: psycopg prepares a query after
five executions on a connection).
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.dialects import postgresql

from mailwatch.store import claims, renewal_claims, sync_claims

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
MAILBOXES = 5000


@pytest.fixture
def populated(database_url):
    """MAILBOXES mailboxes in the shape of a busy deployment: almost all ACTIVE, recently
    synced, renewals spread over the next day; a handful due for each worker."""
    url = database_url.replace("+psycopg", "")
    with psycopg.connect(url, autocommit=True) as conn:
        tenant = conn.execute("INSERT INTO tenants (name) VALUES ('t') RETURNING id").fetchone()[0]
        sealed = conn.execute("INSERT INTO sealed_credentials (tenant_id, kind, digest, ciphertext) "
                              "VALUES (%s, 'OAUTH', '\\x01', '\\x00') RETURNING id", (tenant,)).fetchone()[0]
        conn.execute(
            """
            INSERT INTO mailboxes (tenant_id, email_address, gmail_address, state, credential_kind, sealed_credential_id,
                                   history_id, watch_expiration, next_renewal_at, last_sync_at, sync_due_at,
                                   created)
            SELECT %(tenant)s, 'user' || n || '@example.com', 'user' || n || '@example.com',
                   CASE WHEN n %% 50 = 0 THEN 'STOPPED' WHEN n %% 77 = 0 THEN 'AUTH_FAILED' ELSE 'ACTIVE' END,
                   'OAUTH', %(sealed)s, 1000 + n,
                   %(now)s + interval '6 days',
                   %(now)s + (n %% 1440) * interval '1 minute' - interval '2 minutes',
                   %(now)s - CASE WHEN n %% 700 = 0 THEN interval '1 hour' ELSE (n %% 240) * interval '1 second' END,
                   CASE WHEN n %% 500 = 0 THEN %(now)s - interval '1 second' END,
                   %(now)s - interval '10 days'
            FROM generate_series(1, %(count)s) AS n
            """,
            {"tenant": tenant, "now": NOW, "count": MAILBOXES, "sealed": sealed},
        )
        conn.execute("ANALYZE mailboxes")
    return url


def _prepared(executed) -> tuple[str, list]:
    """The statement as the service sends it: SQL with $n placeholders, and the values
    (its own, and those of the call's parameters for one built with named parameters)."""
    statement, params = executed
    compiled = statement.compile(dialect=postgresql.psycopg.dialect())
    bound = compiled.construct_params(params)
    names: list[str] = []

    def placeholder(match: re.Match) -> str:
        names.append(match.group(1))
        return f"${len(names)}"

    text = re.sub(r"%\((\w+)\)s", placeholder, compiled.string)
    return text, [bound[name] for name in names]


def explain(url: str, statement, *, generic: bool) -> str:
    text, values = _prepared(statement)
    with psycopg.connect(url) as conn:
        conn.execute(f"SET plan_cache_mode = {'force_generic_plan' if generic else 'force_custom_plan'}")
        conn.execute(f"PREPARE due AS {text}")
        arguments = sql.SQL(", ").join(sql.Literal(v) for v in values)
        plan = conn.execute(sql.SQL("EXPLAIN EXECUTE due({})").format(arguments)).fetchall()
        conn.rollback()
    return "\n".join(row[0] for row in plan)


class CapturingSession:
    """Stands in for an AsyncSession to catch the exact statement a store function runs, with its parameters."""

    rowcount = 0

    def __init__(self) -> None:
        self.statements: list = []

    async def execute(self, statement, params=None):
        self.statements.append((statement, params or {}))
        return self

    def __iter__(self):
        return iter(())


def captured(call) -> object:
    session = CapturingSession()
    asyncio.run(call(session))
    (statement,) = session.statements
    return statement


def renewal_claim():
    return captured(lambda s: renewal_claims.claim_due_renewals(s, now=NOW, lease=timedelta(minutes=1), limit=100))


def poll_mark():
    return captured(lambda s: claims.mark_quiet_mailboxes_due(s, now=NOW, quiet_for=timedelta(minutes=5), limit=1000))


def sync_claim():
    return captured(
        lambda s: sync_claims.claim_due_syncs(s, owner="o", now=NOW, lease=timedelta(minutes=1), limit=50)
    )


@pytest.mark.parametrize("generic", [False, True], ids=["custom-plan", "generic-plan"])
@pytest.mark.parametrize(
    "query,index",
    [
        (renewal_claim, "ix_mailboxes_tenant_renewal_due"),
        (poll_mark, "ix_mailboxes_poll_due"),
        (sync_claim, "ix_mailboxes_sync_due"),
    ],
    ids=["renewal", "poll", "sync"],
)
def test_due_queries_scan_their_index(populated, query, index, generic):
    plan = explain(populated, query(), generic=generic)
    assert "Seq Scan on mailboxes" not in plan, plan
    assert re.search(rf"Index (Only )?Scan (using|on) {index}\b", plan), plan

