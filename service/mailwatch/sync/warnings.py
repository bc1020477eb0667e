"""NOTIFICATIONS_MISSED: a sync that no notification asked for found changes.

A sync starts either because a notification announced a history id beyond
the synced one, or because the fallback poll found the mailbox quiet. In the
second case, any change the sync finds is one Gmail never announced: its
notifications were dropped. The consumer hears about it once per episode;
the next notification that arrives ends the episode (`store.notifications`).
"""

from __future__ import annotations

from prometheus_client import Counter

from mailwatch.domain.models import EventType, Mailbox, NewEvent

NOTIFICATIONS_MISSED = Counter(
    "mailwatch_notifications_missed_total", "Syncs without a notification that found changes (episodes)"
)


def unannounced(mailbox: Mailbox) -> bool:
    """Whether no notification announced anything beyond what was synced when this sync was claimed."""
    notified = mailbox.notified_history_id
    return mailbox.history_id is not None and (notified is None or notified <= mailbox.history_id)


def notifications_missed_event(mailbox: Mailbox, announced: int) -> NewEvent | None:
    """The NOTIFICATIONS_MISSED event to write before the sync's changes, if this is a new
    episode: `announced` of them are changes the mailbox's watch would have announced (a
    change outside its label filter comes with no notification, so finding one proves nothing)."""
    if not announced or mailbox.notifications_missed_reported or not unannounced(mailbox):
        return None
    NOTIFICATIONS_MISSED.inc()
    return NewEvent(
        mailbox_id=mailbox.id, email_address=mailbox.email_address, type=EventType.NOTIFICATIONS_MISSED,
        history_id=mailbox.history_id,
        detail={
            "last_notification_time": mailbox.last_notification_at.isoformat() if mailbox.last_notification_at else "",
            "from_history_id": str(mailbox.history_id),
        },
    )
