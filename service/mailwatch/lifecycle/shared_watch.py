"""Making the Gmail watch that registrations of one address and Google project share.

Gmail keeps one push client per user per developer project: a watch with
another topic while one is live is refused ("Only one user push notification
client allowed per developer (call /stop then try again)"). That happens when
someone else in the project watches the user, or when our own topic changed
(the operator moved MAILWATCH_PUBSUB_TOPIC, a tenant moved its topic): the way
out is what Gmail says, stop then watch again, counted and logged so an
operator sees a tug of war.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from prometheus_client import Counter

from mailwatch.domain import errors
from mailwatch.domain.models import Credential, LabelFilter
from mailwatch.domain.projects import union_filter
from mailwatch.gmail.client import GmailClient, WatchResult
from mailwatch.store.watch_groups import GroupMember

log = logging.getLogger(__name__)

# A shared watch whose expiration is further out than this was renewed within the
# last day (watches last 7 days): a registration sharing it skips its own call.
SHARED_WATCH_FRESH = timedelta(days=6)

WATCH_TAKEOVERS = Counter(
    "mailwatch_watch_takeovers_total",
    "users.watch refused because the project already watched the user with another topic; "
    "mailwatch stopped that watch and watched again",
)


async def watch_taking_over(
    gmail: GmailClient, credential: Credential, email_address: str, *, topic: str, label_filter: LabelFilter,
    tenant_id: uuid.UUID | None = None,
) -> WatchResult:
    """users.watch; on Gmail's one-push-client refusal, users.stop and users.watch again."""
    try:
        return await gmail.watch(credential, email_address, topic=topic, label_filter=label_filter,
                                 tenant_id=tenant_id)
    except errors.GmailPushClientConflict:
        WATCH_TAKEOVERS.inc()
        log.warning("the Google project already watched this user with another topic: stopping that watch "
                    "and watching with %s", topic,
                    extra={"tenant_id": str(tenant_id) if tenant_id else "", "topic": topic})
        await gmail.stop(credential, email_address, tenant_id=tenant_id)
        return await gmail.watch(credential, email_address, topic=topic, label_filter=label_filter,
                                 tenant_id=tenant_id)


def shared_watch_expiration(
    sharing: Sequence[GroupMember], *, topic: str, label_filter: LabelFilter, now: datetime,
) -> datetime | None:
    """The expiration of the watch the other registrations of this address and project keep,
    when it already does what this registration needs: same topic, renewed within the last day,
    and a filter that reports everything this one's does (adding it changes nothing). Then a
    users.watch (100 quota units) would only repeat it; otherwise None."""
    if not sharing or any(member.watch_topic != topic for member in sharing):
        return None
    current = union_filter([member.label_filter for member in sharing])
    if union_filter([label_filter, *(member.label_filter for member in sharing)]) != current:
        return None
    freshest = max((member.watch_expiration for member in sharing if member.watch_expiration), default=None)
    return freshest if freshest is not None and freshest > now + SHARED_WATCH_FRESH else None
