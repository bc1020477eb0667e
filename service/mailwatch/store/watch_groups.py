"""Registrations that share one Gmail watch: one address, one Google project.

Gmail keeps one watch per user per developer project, so every ACTIVE
mailbox row (of any tenant) with the same address whose watch topic is in the
same project shares it. These queries are deliberately cross-tenant, like
ingest's: they return only what the watch needs (label filters, topics) to the
lifecycle and renew code, never to an API caller, and never change another
tenant's row (a tenant must not be able to tell that another watches the same
address). A row without a
`watch_topic` (registered before topics were stored) uses the deployment's.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailwatch.domain.models import LabelFilter, LabelFilterBehavior
from mailwatch.domain import addresses
from mailwatch.store.models import mailboxes
from mailwatch.store.claims import ACTIVE


@dataclass(frozen=True)
class GroupMember:
    id: uuid.UUID
    label_filter: LabelFilter
    watch_topic: str
    watch_expiration: datetime | None = None


def _topic(deployment_topic: str):
    return func.coalesce(mailboxes.c.watch_topic, literal(deployment_topic))


def _in_group(email_address: str, project: str, deployment_topic: str, exclude: uuid.UUID | None):
    condition = (
        (mailboxes.c.email_address == addresses.normalize(email_address))
        & (mailboxes.c.state == ACTIVE)
        & (func.split_part(_topic(deployment_topic), "/", 2) == project)
    )
    if exclude is not None:
        condition = condition & (mailboxes.c.id != exclude)
    return condition


async def group_members(
    session: AsyncSession, email_address: str, project: str, *, deployment_topic: str,
    exclude: uuid.UUID | None = None,
) -> list[GroupMember]:
    """The other ACTIVE registrations sharing the (address, project) watch."""
    return (await groups_members(session, [(email_address, project, exclude)], deployment_topic=deployment_topic))[0]


async def groups_members(
    session: AsyncSession, groups: Sequence[tuple[str, str, uuid.UUID | None]], *, deployment_topic: str,
) -> list[list[GroupMember]]:
    """`group_members` of many (address, project, exclude) groups with one query, in input order."""
    if not groups:
        return []
    topic = _topic(deployment_topic)
    rows = await session.execute(
        select(mailboxes.c.id, mailboxes.c.email_address, mailboxes.c.label_ids, mailboxes.c.label_filter_behavior,
               mailboxes.c.watch_expiration, topic.label("topic"), func.split_part(topic, "/", 2).label("project"))
        .where(mailboxes.c.email_address.in_(sorted({addresses.normalize(address) for address, _, _ in groups}))
               & (mailboxes.c.state == ACTIVE))
        .order_by(mailboxes.c.created, mailboxes.c.id)
    )
    found: dict[tuple[str, str], list[GroupMember]] = {}
    for row in rows:
        found.setdefault((row.email_address, row.project), []).append(GroupMember(
            row.id, LabelFilter(tuple(row.label_ids), LabelFilterBehavior(row.label_filter_behavior)), row.topic,
            row.watch_expiration))
    return [
        [member for member in found.get((addresses.normalize(address), project), ()) if member.id != exclude]
        for address, project, exclude in groups
    ]


async def freshest_expiration(
    session: AsyncSession, email_address: str, project: str, *, deployment_topic: str, exclude: uuid.UUID,
) -> datetime | None:
    """The latest watch expiration among the other registrations sharing the watch: when one
    renewed it recently, the others need not call Gmail again."""
    return (await session.execute(
        select(func.max(mailboxes.c.watch_expiration))
        .where(_in_group(email_address, project, deployment_topic, exclude))
    )).scalar_one_or_none()
