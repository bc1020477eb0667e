"""The Gmail API methods, as pure request → response functions.

`dispatch` takes a transport-neutral `ApiRequest` (the aiohttp handler and the
batch endpoint both build one) and returns an `ApiResponse`. Per call it:
routes the path (`gmail/v1/users/{userId}/...`), authenticates the bearer
token, resolves `userId` ("me" = the token's user; another user's mailbox is
"Delegation denied"), counts the call and its quota units, applies injected
permanent refusals, holds one of the user's concurrent-request slots (429
beyond the cap), applies lockouts and injected faults, rejects unknown or
malformed parameters with 400, then runs the method.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from multidict import CIMultiDict, MultiDict

from mailwatch_devstack.gmail_sim import mime, search
from mailwatch_devstack.gmail_sim.auth import AccessToken, project_number
from mailwatch_devstack.gmail_sim.concurrency import BatchSlots
from mailwatch_devstack.gmail_sim.errors import (
    GmailError,
    bad_request,
    forbidden,
    insufficient_scopes,
    invalid_value,
    not_found,
    project_rate_limited,
)
from mailwatch_devstack.gmail_sim.history import HISTORY_TYPES, HistoryExpired
from mailwatch_devstack.gmail_sim.quota import QUOTA_UNITS
from mailwatch_devstack.gmail_sim.refusals import mail_service_not_enabled
from mailwatch_devstack.gmail_sim.state import SimState

STANDARD_PARAMS = frozenset({
    "alt", "fields", "key", "prettyPrint", "quotaUser", "access_token", "oauth_token", "upload_protocol",
    "uploadType", "callback", "$.xgafv", "userIp",
})
_TOPIC = re.compile(r"^projects/[^/]+/topics/[^/]+$")
_MESSAGE_ID = re.compile(r"^[0-9a-fA-F]{1,40}$")
WATCH_FILTER_BEHAVIORS = ("include", "exclude")


@dataclass
class ApiRequest:
    method: str
    path: str
    query: MultiDict = field(default_factory=MultiDict)
    headers: CIMultiDict = field(default_factory=CIMultiDict)
    body: bytes = b""
    batch: BatchSlots | None = None  # a batch part: its concurrency slot is held until the batch ends


@dataclass
class ApiResponse:
    status: int
    body: dict | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body).encode("utf-8")


@dataclass
class Call:
    state: SimState
    request: ApiRequest
    token: AccessToken
    user: str
    path_args: tuple[str, ...]

    @property
    def query(self) -> MultiDict:
        return self.request.query


# -- parameter parsing --------------------------------------------------------------------------
def _one(call: Call, name: str) -> str | None:
    values = call.query.getall(name, [])
    return values[-1] if values else None


def _uint(call: Call, name: str, proto_name: str, *, bits: int = 64) -> int | None:
    raw = _one(call, name)
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) > 2**bits - 1:
        raise invalid_value(proto_name, f"TYPE_UINT{bits}", raw)
    return int(raw)


def _bool(call: Call, name: str, proto_name: str) -> bool:
    raw = _one(call, name)
    if raw is None:
        return False
    if raw.lower() not in ("true", "false", "1", "0"):
        raise invalid_value(proto_name, "TYPE_BOOL", raw)
    return raw.lower() in ("true", "1")


def _max_results(call: Call) -> int:
    value = _uint(call, "maxResults", "max_results", bits=32)
    if not value:
        return 100
    return min(value, 500)


def _page_offset(call: Call) -> int:
    raw = _one(call, "pageToken")
    if raw is None or raw == "":
        return 0
    if not raw.isdigit():
        raise bad_request("Invalid pageToken", "invalid")
    return int(raw)


# -- methods ------------------------------------------------------------------------------------
def get_profile(call: Call) -> ApiResponse:
    mailbox = call.state.mailbox(call.user)
    return ApiResponse(200, {
        "emailAddress": mailbox.email,
        "messagesTotal": len(mailbox.messages),
        "threadsTotal": len(mailbox.thread_sizes),
        "historyId": str(mailbox.history_id),
    })


def _parse_json_body(call: Call) -> dict:
    if not call.request.body:
        return {}
    try:
        body = json.loads(call.request.body)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("Invalid JSON payload received.", "parseError") from None
    if not isinstance(body, dict):
        raise bad_request("Invalid JSON payload received. Expected an object.", "parseError")
    return body


async def watch(call: Call) -> ApiResponse:
    state = call.state
    mailbox = state.mailbox(call.user)
    body = _parse_json_body(call)
    topic = body.get("topicName")
    if not isinstance(topic, str) or not _TOPIC.match(topic):
        raise bad_request("Invalid topicName does not match projects/SOME_PROJECT/topics/*", "invalidArgument")
    project_id = call.token.project_id
    if topic.split("/")[1] != project_id:
        # The topic must live in the developer project executing the watch.
        raise bad_request(f"Invalid topicName does not match projects/{project_id}/topics/*", "invalidArgument")
    label_ids = body.get("labelIds") or []
    if not isinstance(label_ids, list) or not all(isinstance(l, str) for l in label_ids):
        raise invalid_value("label_ids", "TYPE_STRING", json.dumps(label_ids))
    _refuse_unknown_labels(mailbox, label_ids)
    behavior = body.get("labelFilterBehavior")
    field_name = "label_filter_behavior"
    if behavior is None:
        behavior, field_name = body.get("labelFilterAction"), "label_filter_action"
    if behavior is None:
        behavior = "include"
    # The discovery document's enum spelling ("include" / "exclude") is the only one accepted.
    if behavior not in WATCH_FILTER_BEHAVIORS:
        raise invalid_value(field_name, "TYPE_ENUM", str(behavior))
    if state.publisher.configured:
        try:
            exists = await asyncio.to_thread(state.publisher.topic_exists, topic)
        except Exception as exc:  # noqa: BLE001 - Gmail cannot reach Pub/Sub
            raise GmailError(500, f"Error sending test message to Cloud PubSub {topic} : {type(exc).__name__}",
                             "backendError") from None
        if not exists:
            raise GmailError(404, f"Resource not found (resource={topic.rsplit('/', 1)[-1]}).", "notFound")
    if not state.gmail_may_publish(topic):
        # Gmail publishes a test message as gmail-api-push@system.gserviceaccount.com, which needs
        # the publisher role on the topic.
        raise GmailError(403, f"Error sending test message to Cloud PubSub {topic} : User not authorized to "
                              "perform this action.", "forbidden")
    registered = state.watch(mailbox, project_id, topic, label_ids, behavior.upper())
    return ApiResponse(200, {"historyId": str(registered.history_id), "expiration": str(registered.expiration_ms)})


def stop(call: Call) -> ApiResponse:
    call.state.stop(call.state.mailbox(call.user), call.token.project_id)
    return ApiResponse(204, None)


def history_list(call: Call) -> ApiResponse:
    state = call.state
    mailbox = state.mailbox(call.user)
    raw_start = _one(call, "startHistoryId")
    if raw_start is None:
        raise GmailError(400, "Missing required parameter: startHistoryId", "required")
    start = _uint(call, "startHistoryId", "start_history_id")
    types = call.query.getall("historyTypes", [])
    for value in types:
        if value not in HISTORY_TYPES:
            raise invalid_value("history_types", "TYPE_ENUM", value)
    label_id = _one(call, "labelId") or None
    max_results = _max_results(call)
    page_after, primed = None, False
    token = _one(call, "pageToken")
    if token:
        # "<id>": resume after that record; "<id>e": the same, past the empty page served first.
        digits, primed = (token[:-1], True) if token.endswith("e") else (token, False)
        if not digits.isdigit() or int(digits) < start:
            raise bad_request("Invalid pageToken", "invalid")
        page_after = int(digits)
    state.prune_history(mailbox)
    wanted = frozenset(types) if types else None
    try:
        records, next_after = mailbox.history.query(
            start, types=wanted, label_id=label_id, max_results=max_results, page_after=page_after,
        )
    except HistoryExpired:
        raise not_found() from None
    body: dict = {}
    if records and state.empty_history_pages and not primed:
        # Gmail may answer a page with a nextPageToken and no history; the records follow.
        body["nextPageToken"] = f"{start if page_after is None else page_after}e"
        body["historyId"] = str(mailbox.history_id)
        return ApiResponse(200, body)
    if records:
        labels_of = _current_labels(mailbox) if state.history_label_ids else None
        body["history"] = [record.to_json(labels_of, wanted) for record in records]
    if next_after is not None:
        body["nextPageToken"] = str(next_after)
    body["historyId"] = str(mailbox.history_id)
    return ApiResponse(200, body)


def _current_labels(mailbox):
    """A message's labels as they are now (None once the message is gone)."""
    def labels_of(message_id: str):
        message = mailbox.messages.get(message_id)
        return None if message is None else message.label_ids
    return labels_of


def _refuse_unknown_labels(mailbox, label_ids) -> None:
    """Gmail's 400 for a label id the user does not have (a label's name is not its id either), as
    users.watch and users.messages.list answer it."""
    for label_id in label_ids:
        if not mailbox.has_label(label_id):
            raise bad_request(f"Invalid label: {label_id}", "invalidArgument")


def messages_list(call: Call) -> ApiResponse:
    mailbox = call.state.mailbox(call.user)
    q = _one(call, "q")
    if q and call.token.metadata_only:
        raise forbidden("Metadata scope does not support 'q' parameter")
    query = None
    if q:
        try:
            query = search.parse(q, now_ms=call.state.clock.now_ms())
        except search.UnsupportedQuery as refused:
            # Stricter than Gmail (which answers what it can): never a silently ignored operator.
            raise bad_request(f"Invalid query: {refused}", "invalidArgument") from None
    label_ids = call.query.getall("labelIds", [])
    _refuse_unknown_labels(mailbox, label_ids)
    include = _bool(call, "includeSpamTrash", "include_spam_trash")
    limit = _max_results(call)
    offset = _page_offset(call)
    page, next_offset, total = mailbox.list_messages(label_ids=label_ids, include_spam_trash=include,
                                                     offset=offset, limit=limit, query=query)
    body: dict = {}
    if page:
        body["messages"] = [{"id": m.id, "threadId": m.thread_id} for m in page]
    if next_offset is not None:
        body["nextPageToken"] = str(next_offset)
    body["resultSizeEstimate"] = total
    return ApiResponse(200, body)


def messages_get(call: Call) -> ApiResponse:
    mailbox = call.state.mailbox(call.user)
    message_id = call.path_args[0]
    fmt = (_one(call, "format") or "full").lower()
    if fmt not in ("minimal", "full", "raw", "metadata"):
        raise invalid_value("format", "TYPE_ENUM", fmt)
    if call.token.metadata_only and fmt in ("full", "raw"):
        raise forbidden(f"Metadata scope doesn't allow format {fmt.upper()}")
    if not _MESSAGE_ID.match(message_id):
        raise bad_request("Invalid id value", "invalidArgument")
    message = mailbox.messages.get(message_id.lower())
    if message is None or call.state.clock.now() < message.visible_at:
        raise not_found()
    return ApiResponse(200, message.to_json(fmt, call.query.getall("metadataHeaders", [])))


def send_as_list(call: Call) -> ApiResponse:
    """users.settings.sendAs.list: the primary address, then each alias as a verified send-as alias."""
    if call.token.metadata_only:  # not among the method's scopes in the discovery document
        raise insufficient_scopes()
    mailbox = call.state.mailbox(call.user)
    entries = [{"sendAsEmail": mailbox.email, "displayName": "", "replyToAddress": "", "signature": "",
                "isPrimary": True, "isDefault": True}]
    entries += [{"sendAsEmail": alias, "displayName": "", "replyToAddress": "", "signature": "", "isDefault": False,
                 "treatAsAlias": True, "verificationStatus": "accepted"} for alias in call.state.aliases_of(mailbox)]
    return ApiResponse(200, {"sendAs": entries})


def attachments_get(call: Call) -> ApiResponse:
    """users.messages.attachments.get: a MessagePartBody with the attachment's bytes (base64url)."""
    if call.token.metadata_only:  # not among the method's scopes in the discovery document
        raise insufficient_scopes()
    message_id, attachment_id = call.path_args
    if not _MESSAGE_ID.match(message_id):
        raise bad_request("Invalid id value", "invalidArgument")
    message = call.state.mailbox(call.user).messages.get(message_id.lower())
    if message is None:
        raise not_found()
    found = message.attachment(attachment_id)
    if found is None:
        raise bad_request("Invalid attachment token", "invalidArgument")
    return ApiResponse(200, {"attachmentId": attachment_id, "size": found.size, "data": mime.b64url(found.data)})


def labels_list(call: Call) -> ApiResponse:
    return ApiResponse(200, {"labels": call.state.mailbox(call.user).labels_json()})


def labels_get(call: Call) -> ApiResponse:
    label = call.state.mailbox(call.user).label_json(call.path_args[0])
    if label is None:
        raise not_found()
    return ApiResponse(200, label)


_USER = r"^/gmail/v1/users/([^/]+)"
ROUTES = [
    ("GET", re.compile(_USER + r"/profile$"), "users.getProfile", get_profile, frozenset()),
    ("POST", re.compile(_USER + r"/watch$"), "users.watch", watch, frozenset()),
    ("POST", re.compile(_USER + r"/stop$"), "users.stop", stop, frozenset()),
    ("GET", re.compile(_USER + r"/history$"), "users.history.list", history_list,
     frozenset({"startHistoryId", "historyTypes", "labelId", "maxResults", "pageToken"})),
    ("GET", re.compile(_USER + r"/messages$"), "users.messages.list", messages_list,
     frozenset({"labelIds", "includeSpamTrash", "maxResults", "pageToken", "q"})),
    ("GET", re.compile(_USER + r"/messages/([^/]+)$"), "users.messages.get", messages_get,
     frozenset({"format", "metadataHeaders"})),
    ("GET", re.compile(_USER + r"/messages/([^/]+)/attachments/([^/]+)$"), "users.messages.attachments.get",
     attachments_get, frozenset()),
    ("GET", re.compile(_USER + r"/labels$"), "users.labels.list", labels_list, frozenset()),
    ("GET", re.compile(_USER + r"/settings/sendAs$"), "users.settings.sendAs.list", send_as_list, frozenset()),
    ("GET", re.compile(_USER + r"/labels/([^/]+)$"), "users.labels.get", labels_get, frozenset()),
]


def _route(method: str, path: str):
    for route_method, pattern, name, handler, params in ROUTES:
        match = pattern.match(path)
        if match and route_method == method:
            return name, handler, params, tuple(unquote(g) for g in match.groups())
    return None


async def dispatch(state: SimState, request: ApiRequest) -> ApiResponse:
    """Answer one Gmail API call; never raises (errors become Gmail-shaped responses)."""
    try:
        return await _dispatch(state, request)
    except GmailError as error:
        return ApiResponse(error.code, error.body(), error.headers)


async def _dispatch(state: SimState, request: ApiRequest) -> ApiResponse:
    routed = _route(request.method.upper(), request.path)
    if routed is None:
        raise GmailError(404, f"Method not found: {request.method} {request.path}", "notFound")
    name, handler, allowed, args = routed
    token = state.auth.authenticate(request.headers.get("Authorization"))
    user_id, rest = args[0], args[1:]
    user = token.email if user_id == "me" else user_id.lower()
    if user != token.email:
        # Tokens belong to the primary address; Gmail refuses even the user's own alias
        # here ("Delegation denied for <primary>"): call as "me" or the primary address.
        raise forbidden(f"Delegation denied for {token.email}")
    if not state.has_mailbox(user):
        raise mail_service_not_enabled()
    # Google charges quota for refused calls too: count first, against both limits.
    state.counters.record(user, name)
    units, now = QUOTA_UNITS.get(name, 0), state.clock.now()
    project_until = state.project_quota.charge(token.project_id, units, now)
    quota_until = state.user_quota.charge(user, units, now)
    if quota_until is not None:  # over 6,000 units a minute: Gmail locks the user out
        state.faults.lock_out(user, 403, "userRateLimitExceeded", quota_until)
    if project_until is not None:  # the whole project is over 1,200,000 units a minute
        raise project_rate_limited(project_number(token.project_id))
    refusal = state.refusals.api_error(user)
    if refusal is not None:
        raise refusal
    with state.concurrency.slot(user, request.batch):
        delay = state.latency.delay(name, user)
        if delay:  # a slow call holds its concurrency slot meanwhile, as at Google
            await asyncio.sleep(delay)
        fault = state.faults.answer(name, user, state.clock.now())
        if fault is not None:
            raise fault
        for key in request.query.keys():
            if key not in allowed and key not in STANDARD_PARAMS:
                raise bad_request(f'Invalid JSON payload received. Unknown name "{key}": Cannot bind query '
                                  f"parameter. Field '{key}' could not be found in request message.", "invalid")
        call = Call(state, request, token, user, rest)
        with state.lock:
            result = handler(call)
        if asyncio.iscoroutine(result):
            result = await result
        return result
