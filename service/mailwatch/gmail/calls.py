"""The Gmail methods mailwatch calls: the name quota metering and error classification know a call by."""

from __future__ import annotations

import enum


class GmailCall(enum.StrEnum):
    GET_PROFILE = "getProfile"
    WATCH = "watch"
    STOP = "stop"
    HISTORY_LIST = "history.list"
    MESSAGES_LIST = "messages.list"
    MESSAGES_GET = "messages.get"
    ATTACHMENTS_GET = "messages.attachments.get"
