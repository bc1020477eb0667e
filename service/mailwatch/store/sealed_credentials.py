"""Queries on `sealed_credentials`: a tenant's Google credentials, one row per key.

A row is the part of a credential that a tenant's mailboxes share (a
service-account key, an OAuth client), sealed once; mailboxes and the tenant's
Google settings refer to it. Every query names the tenant, so a row is never
shared across tenants.

- `put_secrets`: the rows of sealed secrets, by digest (existing ones reused);
- `put_replacing`: a tenant's new key for the same identity, one row rewritten;
- `sweep` / `sweep_unused`: delete rows nothing refers to any more (no secret left behind);
- `with_sealed` / `stored_of`: a claim's mailboxes with their `SealedCredential`;
- `rotate_all`: re-encrypt every sealed row and refresh token under the current key.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import and_, exists, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mailwatch.domain.errors import CredentialUndecryptable
from mailwatch.domain.models import CredentialKind, SealedCredential
from mailwatch.secrets import SealedSecret, SecretBox
from mailwatch.store._errors import is_foreign_key_violation, is_unique_violation
from mailwatch.store.db import Sessions, transaction
from mailwatch.store.models import mailboxes, sealed_credentials, tenant_google_settings

_sealed = sealed_credentials
_UNIQUE_DIGEST = "uq_sealed_credentials_tenant_id_digest"


Opens = Callable[[SealedCredential], bool]


def _always(_: SealedCredential) -> bool:
    return True


@dataclass(frozen=True)
class Pin:
    """Where a tenant-default registration read its key: the settings' sealed row, and the
    settings' credential then (its id and project; the kind is the secret's)."""

    row_id: uuid.UUID
    credential_id: str
    project_id: str


async def _follow_settings(
    session: AsyncSession, tenant_id: uuid.UUID, gone: Mapping[bytes, Pin], secrets: Mapping[bytes, SealedSecret],
) -> dict[bytes, uuid.UUID]:
    """The settings' current row (locked) for each secret whose pinned row is gone, when the
    settings still hold the credential it was pinned with: a new key of that identity already
    sealed for the tenant took the pinned row's references (`put_replacing`)."""
    current = (await session.execute(
        select(tenant_google_settings.c.sealed_credential_id, tenant_google_settings.c.credential_kind,
               tenant_google_settings.c.credential_id, tenant_google_settings.c.project_id)
        .where(tenant_google_settings.c.tenant_id == tenant_id))).one_or_none()
    if current is None:
        return {}
    following = [digest for digest, pin in gone.items()
                 if (current.credential_kind, current.credential_id, current.project_id)
                 == (secrets[digest].kind.value, pin.credential_id, pin.project_id)]
    if not following:
        return {}
    # Locked like the others, so a concurrent `sweep` skips it; gone meanwhile (the settings
    # moved again and it was deleted): the secret is sealed anew.
    locked = (await session.execute(
        select(_sealed.c.id).where(_sealed.c.tenant_id == tenant_id, _sealed.c.id == current.sealed_credential_id)
        .with_for_update())).scalar_one_or_none()
    return {} if locked is None else {digest: locked for digest in following}


async def put_secrets(
    session: AsyncSession, tenant_id: uuid.UUID, secrets: Iterable[SealedSecret], *, opens: Opens = _always,
    pinned: Mapping[bytes, Pin] | None = None,
) -> dict[bytes, uuid.UUID]:
    """The row id of each secret (by digest): inserted, or the tenant's existing row for that digest.

    An existing row keeps its ciphertext (one tenant registering mailboxes one
    by one does not rewrite a 3 KB row each time) unless `opens` says no
    configured key opens it any more: then it takes the new one, so registering
    again mends it. Existing rows are locked until the caller commits, so a
    concurrent `sweep` cannot delete one before the caller's reference to it
    is written; digests are taken in order, so two callers cannot deadlock.

    `pinned` (digest -> `Pin`) names the row a secret was read from (the
    tenant's settings' row, for a registration using the tenant's defaults):
    while that row exists it is the secret's row, as it is now. A new key of
    the same identity rewrites that row in place (`put_replacing`), so a
    registration that read the old key before the rewrite refers to the new
    one instead of sealing the replaced key into a row of its own. When the
    tenant already had a row for the new key, `put_replacing` moves the
    references there and the pinned row is deleted: while the settings still
    hold the identity the pin was read with, the secret's row is the
    settings' row now (never the replaced key sealed anew, which fails once
    the old key is deleted in Google). Settings moved to another identity
    leave the secret to be sealed anew.
    """
    distinct = dict(sorted({secret.digest: secret for secret in secrets}.items()))
    if not distinct:
        return {}
    pins = {digest: pin for digest, pin in (pinned or {}).items() if digest in distinct}
    rows = (await session.execute(
        select(_sealed.c.id, _sealed.c.kind, _sealed.c.digest, _sealed.c.ciphertext)
        .where(_sealed.c.tenant_id == tenant_id,
               _sealed.c.digest.in_(list(distinct)) | _sealed.c.id.in_([pin.row_id for pin in pins.values()]))
        .order_by(_sealed.c.digest).with_for_update())).all()
    # A pinned row still there is its secret's row, whatever key it holds now, and is never
    # rewritten with the key read before.
    found = {row.id for row in rows}
    ids: dict[bytes, uuid.UUID] = {digest: pin.row_id for digest, pin in pins.items() if pin.row_id in found}
    gone = {digest: pin for digest, pin in pins.items() if pin.row_id not in found}
    if gone:
        ids.update(await _follow_settings(session, tenant_id, gone, distinct))
    pinned_rows = {pin.row_id for pin in pins.values()} | set(ids.values())
    for row in rows:
        digest = bytes(row.digest)
        if row.id in pinned_rows or digest in ids:
            continue
        ids[digest] = row.id
        if not opens(SealedCredential(row.id, CredentialKind(row.kind), digest, bytes(row.ciphertext))):
            await session.execute(update(_sealed).where(_sealed.c.id == row.id)
                                  .values(ciphertext=distinct[digest].ciphertext))
    missing = [secret for digest, secret in distinct.items() if digest not in ids]
    if missing:
        statement = insert(_sealed).values([
            dict(tenant_id=tenant_id, kind=secret.kind.value, digest=secret.digest, ciphertext=secret.ciphertext)
            for secret in missing
        ])
        # Inserted meanwhile by another registration of the tenant: sealed just now, taken as it is (and locked).
        statement = statement.on_conflict_do_update(
            constraint=_UNIQUE_DIGEST, set_={"kind": _sealed.c.kind},
        ).returning(_sealed.c.digest, _sealed.c.id)
        ids.update({bytes(row.digest): row.id for row in await session.execute(statement)})
    return ids


async def put_replacing(
    session: AsyncSession, tenant_id: uuid.UUID, secret: SealedSecret, replaced: uuid.UUID, *, opens: Opens = _always,
) -> uuid.UUID:
    """The row for `secret`, taking over every reference to the tenant's row `replaced`
    (a new key of the same service account or a new secret of the same OAuth client):
    that one row is rewritten in place, so its mailboxes use the new key at once. If
    the tenant already has a row for the new key, the references move to it instead,
    those of a registration writing its reference to `replaced` meanwhile included."""
    found = (await session.execute(
        select(_sealed.c.id).where(_sealed.c.tenant_id == tenant_id, _sealed.c.digest == secret.digest)
    )).scalar_one_or_none()
    if found is None:
        try:
            async with session.begin_nested():
                updated = (await session.execute(
                    update(_sealed).where(_sealed.c.tenant_id == tenant_id, _sealed.c.id == replaced)
                    .values(kind=secret.kind.value, digest=secret.digest, ciphertext=secret.ciphertext)
                    .returning(_sealed.c.id))).scalar_one_or_none()
        except IntegrityError as exc:
            # A registration of the tenant sealed the new key meanwhile (its row was
            # not visible to the read above): the references move to that row below.
            if not is_unique_violation(exc, _UNIQUE_DIGEST):
                raise
            updated = None
        if updated is not None:
            return updated
    found = (await put_secrets(session, tenant_id, [secret], opens=opens))[secret.digest]
    if found != replaced:
        # A tenant-default registration pinned to `replaced` holds it locked until it commits
        # (`put_secrets`): waited for, so the move below sees its mailbox too instead of leaving
        # it on the replaced key.
        await session.execute(select(_sealed.c.id).where(_sealed.c.tenant_id == tenant_id, _sealed.c.id == replaced)
                              .with_for_update())
        await session.execute(
            update(mailboxes).where(mailboxes.c.tenant_id == tenant_id, mailboxes.c.sealed_credential_id == replaced)
            .values(sealed_credential_id=found, updated=mailboxes.c.updated))
    return found


def _unreferenced():
    return and_(
        ~exists().where(mailboxes.c.sealed_credential_id == _sealed.c.id),
        ~exists().where(tenant_google_settings.c.sealed_credential_id == _sealed.c.id),
    )


async def sweep(session: AsyncSession, *, tenant_id: uuid.UUID | None = None) -> int:
    """Delete the tenant's (None: every tenant's) rows that no mailbox or settings refer
    to; how many went. A tenant has a row per key, so this is a handful of index probes.

    A row another transaction holds locked is skipped, not waited for: a
    registration locks the rows it is about to refer to (`put_secrets`; the
    foreign key check of its mailbox row locks it too), so the row is about to
    be used, and waiting would let a registration locking its rows in digest
    order deadlock against this delete taking them in scan order. A reference
    committed between this read and the delete makes the foreign key refuse it:
    the rows are kept (still used; the prune worker's next `sweep_unused` takes
    any other), never an error. A registration never refers to a deleted row:
    it finds its rows under a lock, so it sees this delete committed and seals
    the row anew, or this delete sees its lock.
    """
    unused = select(_sealed.c.id).where(_unreferenced())
    if tenant_id is not None:
        unused = unused.where(_sealed.c.tenant_id == tenant_id)
    try:
        async with session.begin_nested():
            ids = (await session.execute(unused.with_for_update(skip_locked=True))).scalars().all()
            if not ids:
                return 0
            return (await session.execute(_sealed.delete().where(_sealed.c.id.in_(ids)))).rowcount
    except IntegrityError as exc:
        if not is_foreign_key_violation(exc):  # a mailbox's or the settings' reference
            raise
        return 0


async def sweep_unused(sessions: Sessions) -> int:
    """`sweep` of every tenant's rows, as its own transaction (the prune worker's safety net)."""
    async with transaction(sessions) as session:
        return await sweep(session)


def with_sealed(claim):
    """`claim` (an UPDATE of mailboxes returning `mailboxes.COLUMNS` and the refresh token)
    as a CTE, each returned row joined to its sealed row: the join comes after the
    claim, so the claim's own plan (its index scans, its locks) stays as it was.

    `claimed.*` (the claim's RETURNING columns, in their order and with their names),
    not the forty columns spelled out a second time: that keeps the sync claim's text
    (3.3 kB) within the 4 kB up to which psycopg caches a statement's conversion;
    beyond it, every claim would parse its placeholders afresh."""
    claimed = claim.cte("claimed")
    return (select(literal_column("claimed.*"), _sealed.c.kind.label("sealed_kind"),
                   _sealed.c.digest.label("sealed_digest"), _sealed.c.ciphertext.label("sealed_ciphertext"))
            .join_from(claimed, _sealed, _sealed.c.id == claimed.c.sealed_credential_id))


def stored_of(row) -> SealedCredential:
    """A mailbox's credential from a row of `with_sealed` (or `load_stored`'s query)."""
    return SealedCredential(
        sealed_credential_id=row.sealed_credential_id, kind=CredentialKind(row.sealed_kind),
        digest=bytes(row.sealed_digest), ciphertext=bytes(row.sealed_ciphertext),
        subject=row.subject or row.email_address,
        refresh_token_ciphertext=None if row.refresh_token_ciphertext is None else bytes(row.refresh_token_ciphertext),
    )


async def load_stored(
    session: AsyncSession, tenant_id: uuid.UUID, mailbox_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, SealedCredential]:
    """The credentials of the tenant's mailboxes among `mailbox_ids` (a STOPPED one has none), by id."""
    if not mailbox_ids:
        return {}
    rows = await session.execute(
        select(mailboxes.c.id, mailboxes.c.email_address, mailboxes.c.sealed_credential_id, mailboxes.c.subject,
               mailboxes.c.refresh_token_ciphertext, _sealed.c.kind.label("sealed_kind"),
               _sealed.c.digest.label("sealed_digest"), _sealed.c.ciphertext.label("sealed_ciphertext"))
        .join_from(mailboxes, _sealed, _sealed.c.id == mailboxes.c.sealed_credential_id)
        .where((mailboxes.c.tenant_id == tenant_id) & mailboxes.c.id.in_(list(mailbox_ids)))
    )
    return {row.id: stored_of(row) for row in rows}


async def rotate_all(sessions: Sessions, box: SecretBox, *, batch: int = 500) -> tuple[int, int, int]:
    """Re-encrypt under the first configured key every sealed row and every mailbox's
    refresh token; (rows, refresh tokens) re-encrypted and how many no configured key
    opens (left as they are: their mailboxes need registering again). Batches of
    `batch`, each its own transaction, so a large deployment is not one long lock;
    safe to run again (each value is re-read and rewritten whole) and alongside the service."""
    counts, unreadable = [], 0
    for table, column in ((_sealed, _sealed.c.ciphertext), (mailboxes, mailboxes.c.refresh_token_ciphertext)):
        done, after = 0, None
        while True:
            async with transaction(sessions) as session:
                statement = select(table.c.id, column).where(column.is_not(None)).order_by(table.c.id).limit(batch)
                if after is not None:
                    statement = statement.where(table.c.id > after)
                rows = (await session.execute(statement.with_for_update())).all()
                for row in rows:
                    try:
                        rotated = box.rotate(bytes(row[1]))
                    except CredentialUndecryptable:
                        unreadable += 1
                        continue
                    # `updated` kept: the mailbox did not change, its sealing did.
                    await session.execute(update(table).where(table.c.id == row.id)
                                          .values({column.name: rotated, "updated": table.c.updated}))
                    done += 1
            if len(rows) < batch:
                break
            after = rows[-1].id
        counts.append(done)
    return counts[0], counts[1], unreadable
