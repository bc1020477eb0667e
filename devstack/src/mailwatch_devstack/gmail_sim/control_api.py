"""HTTP JSON handlers of the control API (`/_sim/...`); see the package docstring."""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import unquote

from aiohttp import web

from mailwatch_devstack.gmail_sim.auth import GMAIL_READ_SCOPES
from mailwatch_devstack.gmail_sim.errors import GmailError
from mailwatch_devstack.gmail_sim.model import UnknownDraft, UnknownLabel, UnknownMessage
from mailwatch_devstack.gmail_sim.push import PushSubscription
from mailwatch_devstack.gmail_sim.state import SimState

STATE_KEY = web.AppKey("gmail_sim_state", SimState)
_TOPIC = re.compile(r"^projects/[^/]+/topics/[^/]+$")


class ControlError(GmailError):
    def __init__(self, message: str, code: int = 400) -> None:
        super().__init__(code, message, "invalidArgument" if code == 400 else "notFound")


def _state(request: web.Request) -> SimState:
    return request.app[STATE_KEY]


def _json(data, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


async def _body(request: web.Request) -> dict:
    raw = await request.read()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ControlError("request body is not JSON") from None
    if not isinstance(data, dict):
        raise ControlError("request body must be a JSON object")
    return data


def _mailbox(state: SimState, email: str):
    try:
        return state.mailbox(email)
    except KeyError:
        raise ControlError(f"no mailbox {email}", 404) from None


def _email_arg(request: web.Request) -> str:
    return unquote(request.match_info["email"])


def _list(data: dict, key: str) -> list:
    value = data.get(key)
    if not isinstance(value, list):
        raise ControlError(f"'{key}' must be a list")
    return value


def _watch_info(state: SimState, watch) -> dict:
    return {
        "projectId": watch.project_id, "topicName": watch.topic_name, "labelIds": sorted(watch.label_ids),
        "labelFilterBehavior": watch.behavior, "historyId": watch.history_id,
        "expiration": watch.expiration_ms, "expired": not watch.live(state.clock.now_ms()),
    }


def _mailbox_info(state: SimState, email: str) -> dict:
    mailbox = _mailbox(state, email)
    watches = sorted(mailbox.watches.values(), key=lambda w: w.project_id)
    # "watch": the most recently started one (the latest expiration), for single-project callers.
    latest = max(watches, key=lambda w: w.expiration_ms, default=None)
    return {
        "emailAddress": mailbox.email,
        "historyId": mailbox.history_id,
        "messagesTotal": len(mailbox.messages),
        "historyFloor": mailbox.history.floor,
        "historyRecords": len(mailbox.history),
        "aliases": state.aliases_of(mailbox),
        "labels": mailbox.labels_json(),
        "watch": None if latest is None else _watch_info(state, latest),
        "watches": [_watch_info(state, w) for w in watches],
    }


async def reset(request):
    _state(request).reset()
    return _json({})


async def get_config(request):
    return _json(_state(request).config())


async def set_config(request):
    data = await _body(request)
    kwargs = {}
    if "historyRetentionSeconds" in data:
        kwargs["history_retention_seconds"] = data["historyRetentionSeconds"]
    if "concurrentRequestsPerUser" in data:
        kwargs["concurrent_requests_per_user"] = data["concurrentRequestsPerUser"]
    if "userQuotaUnitsPerMinute" in data:
        kwargs["user_quota_units_per_minute"] = data["userQuotaUnitsPerMinute"]
    if "projectQuotaUnitsPerMinute" in data:
        kwargs["project_quota_units_per_minute"] = data["projectQuotaUnitsPerMinute"]
    for key, name in (("batchPartsConcurrent", "batch_parts_concurrent"), ("historyLabelIds", "history_label_ids"),
                      ("messageVisibilityDelaySeconds", "message_visibility_delay_seconds"),
                      ("emptyHistoryPages", "empty_history_pages")):
        if data.get(key) is not None:
            kwargs[name] = data[key]
    try:
        return _json(_state(request).configure(
            token_lifetime_seconds=data.get("tokenLifetimeSeconds"),
            notification_history_id_type=data.get("notificationHistoryIdType"),
            seed=data.get("seed"), **kwargs))
    except (TypeError, ValueError) as exc:
        raise ControlError(str(exc)) from None


async def create_mailboxes(request):
    state = _state(request)
    data = await _body(request)
    emails = _list(data, "emails")
    out = []
    with state.lock:
        for email in emails:
            try:
                mailbox = state.create_mailbox(email, data.get("historyId"))
            except (TypeError, ValueError) as exc:
                raise ControlError(str(exc)) from None
            out.append({"emailAddress": mailbox.email, "historyId": mailbox.history_id})
    return _json({"mailboxes": out})


async def add_aliases(request):
    state = _state(request)
    data = await _body(request)
    aliases = _list(data, "aliases")
    with state.lock:
        mailbox = _mailbox(state, _email_arg(request))
        try:
            listed = state.add_aliases(mailbox, aliases)
        except ValueError as exc:
            raise ControlError(str(exc)) from None
    return _json({"emailAddress": mailbox.email, "aliases": listed})


async def seed_messages(request):
    state = _state(request)
    data = await _body(request)
    count = data.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 1_000_000:
        raise ControlError("'count' must be an integer within [1, 1000000]")
    labels = data.get("labelIds", ["INBOX"])
    if not isinstance(labels, list) or not all(isinstance(l, str) for l in labels):
        raise ControlError("'labelIds' must be a list of label ids")
    with state.lock:
        mailbox = _mailbox(state, _email_arg(request))
        try:
            history_id = mailbox.seed_messages(count, now=state.clock.now(), label_ids=labels)
        except UnknownLabel as exc:
            raise ControlError(f"unknown label {exc.args[0]} in {mailbox.email}") from None
        return _json({"emailAddress": mailbox.email, "historyId": history_id, "messagesTotal": len(mailbox.messages),
                      "historyFloor": mailbox.history.floor})


async def get_mailbox(request):
    state = _state(request)
    with state.lock:
        return _json(_mailbox_info(state, _email_arg(request)))


async def create_label(request):
    state = _state(request)
    data = await _body(request)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ControlError("'name' is required")
    with state.lock:
        label_id = _mailbox(state, _email_arg(request)).create_label(name)
    return _json({"id": label_id, "name": name})


async def delete_label(request):
    state = _state(request)
    with state.lock:
        mailbox = _mailbox(state, _email_arg(request))
        try:
            records = mailbox.delete_label(unquote(request.match_info["label_id"]), now=state.clock.now())
        except UnknownLabel as exc:
            raise ControlError(f"no user label {exc.args[0]} in {mailbox.email}", 404) from None
        state.changed(mailbox, records)
        return _json({"historyIds": [record.id for record in records]})


def _headers(item: dict) -> list[tuple[str, str]]:
    headers = []
    for key, name in (("from", "From"), ("to", "To"), ("subject", "Subject")):
        if item.get(key) is not None:
            headers.append((name, str(item[key])))
    for pair in item.get("headers") or []:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise ControlError("'headers' must be a list of [name, value] pairs")
        headers.append((str(pair[0]), str(pair[1])))
    return headers


async def _each_item(request, key: str, apply) -> list:
    """`apply(state, mailbox, item, now)` for every object under `key`, under one lock
    and one clock reading; the results in order. A missing message is 404, an unknown label 400."""
    state = _state(request)
    data = await _body(request)
    out = []
    with state.lock:
        now = state.clock.now()
        for item in _list(data, key):
            if not isinstance(item, dict):
                raise ControlError(f"each item of '{key}' must be an object")
            mailbox = _mailbox(state, str(item.get("emailAddress", "")))
            try:
                out.append(apply(state, mailbox, item, now))
            except UnknownMessage:
                raise ControlError(f"no message {item.get('id')} in {mailbox.email}", 404) from None
            except UnknownLabel as exc:
                raise ControlError(f"unknown label {exc.args[0]} in {mailbox.email}") from None
    return out


_FIELD_KEYS = ("from", "to", "subject", "headers", "body")


def _source(item: dict) -> bytes | None:
    """The RFC 822 source of a raw insert (`raw`, base64url as in Gmail's Message.raw), or None."""
    raw = item.get("raw")
    if raw is None:
        return None
    if any(item.get(key) not in (None, "", []) for key in _FIELD_KEYS):
        raise ControlError("'raw' carries the whole message: leave out " + ", ".join(_FIELD_KEYS))
    try:
        source = base64.urlsafe_b64decode(str(raw) + "=" * (-len(str(raw)) % 4))
    except (ValueError, TypeError):
        raise ControlError("'raw' must be the message's RFC 822 source, base64url-encoded") from None
    if not source.strip():
        raise ControlError("'raw' is empty")
    return source


def _insert(state, mailbox, item: dict, now) -> dict:
    labels = item.get("labelIds")
    source = _source(item)
    message, record = mailbox.insert_message(
        now=now, label_ids=list(labels) if labels is not None else ["INBOX", "UNREAD"],
        thread_id=item.get("threadId"), headers=_headers(item) if source is None else None,
        body=str(item.get("body", "")),
        internal_date=int(item["internalDate"]) if item.get("internalDate") is not None else None,
        visible_after=state.message_visibility_delay,
        source=source,
    )
    state.changed(mailbox, [record])
    return {"emailAddress": mailbox.email, "id": message.id, "threadId": message.thread_id,
            "historyId": message.history_id}


def _delete(state, mailbox, item: dict, now) -> int:
    record = mailbox.delete_message(str(item.get("id")), now=now)
    state.changed(mailbox, [record])
    return record.id


def _modify(state, mailbox, item: dict, now) -> int:
    records = mailbox.modify_labels(str(item.get("id")), now=now, add=list(item.get("addLabelIds") or []),
                                    remove=list(item.get("removeLabelIds") or []),
                                    one_record=item.get("oneRecord") is True)
    state.changed(mailbox, records)
    return mailbox.history_id


async def save_draft(request):
    """Create a draft (no draft id in the path) or save its next version (an autosave)."""
    state = _state(request)
    data = await _body(request)
    draft_id = request.match_info.get("draft_id")
    with state.lock:
        mailbox = _mailbox(state, _email_arg(request))
        try:
            draft_id, message, records = mailbox.save_draft(
                now=state.clock.now(), draft_id=draft_id, headers=_headers(data), body=str(data.get("body", "")),
                thread_id=data.get("threadId"), visible_after=state.message_visibility_delay)
        except UnknownDraft:
            raise ControlError(f"no draft {draft_id} in {mailbox.email}", 404) from None
        except UnknownMessage:
            raise ControlError(f"no thread {data.get('threadId')} in {mailbox.email}", 404) from None
        state.changed(mailbox, records)
        return _json({"draftId": draft_id, "id": message.id, "threadId": message.thread_id,
                      "historyId": mailbox.history_id})


async def send_draft(request):
    state = _state(request)
    draft_id = request.match_info["draft_id"]
    with state.lock:
        mailbox = _mailbox(state, _email_arg(request))
        try:
            message, records = mailbox.send_draft(draft_id, now=state.clock.now(),
                                                  visible_after=state.message_visibility_delay)
        except UnknownDraft:
            raise ControlError(f"no draft {draft_id} in {mailbox.email}", 404) from None
        state.changed(mailbox, records)
        return _json({"id": message.id, "threadId": message.thread_id, "labelIds": list(message.label_ids),
                      "historyId": mailbox.history_id})


async def insert_messages(request):
    return _json({"messages": await _each_item(request, "messages", _insert)})


async def delete_messages(request):
    return _json({"historyIds": await _each_item(request, "messages", _delete)})


async def modify_messages(request):
    return _json({"historyIds": await _each_item(request, "changes", _modify)})


async def expire_history(request):
    state = _state(request)
    data = await _body(request)
    through = data.get("throughHistoryId")
    if not isinstance(through, int) or through < 0:
        raise ControlError("'throughHistoryId' must be a non-negative integer")
    with state.lock:
        mailbox = _mailbox(state, _email_arg(request))
        mailbox.history.expire_through(through)
        return _json({"historyFloor": mailbox.history.floor})


def _token_uri(request: web.Request) -> str:
    return f"{request.url.origin()}/token"


async def create_service_account(request):
    data = await _body(request)
    key = _state(request).auth.create_service_account(
        token_uri=_token_uri(request), project_id=str(data.get("projectId") or _state(request).default_project),
        name=data.get("name"))
    return _json(key)


def _domain_arg(request: web.Request) -> str:
    domain = unquote(request.match_info["domain"])
    if not domain or "@" in domain or "/" in domain:
        raise ControlError(f"not a domain: {domain!r}")
    return domain.lower()


async def grant_delegation(request):
    data = await _body(request)
    domain = _domain_arg(request)
    scopes = data.get("scopes")
    if scopes is None:
        scopes = sorted(GMAIL_READ_SCOPES)
    if not isinstance(scopes, list) or not all(isinstance(scope, str) for scope in scopes):
        raise ControlError("'scopes' must be a list of OAuth scopes")
    try:
        granted = _state(request).auth.grant_delegation(domain, str(data.get("clientId") or ""), scopes)
    except ValueError as exc:
        raise ControlError(str(exc)) from None
    return _json({"domain": domain, "clientId": str(data["clientId"]), "scopes": sorted(granted)})


async def list_delegations(request):
    domain = _domain_arg(request)
    return _json({"domain": domain, "delegations": _state(request).auth.delegations(domain)})


async def revoke_delegation(request):
    domain = _domain_arg(request)
    if not _state(request).auth.revoke_delegation(domain, unquote(request.match_info["client_id"])):
        raise ControlError(f"no delegation for {request.match_info['client_id']} in {domain}", 404)
    return _json({})


async def create_oauth_client(request):
    data = await _body(request)
    client_id, secret = _state(request).auth.create_oauth_client(str(data.get("projectId") or _state(request).default_project))
    return _json({"clientId": client_id, "clientSecret": secret, "tokenUri": _token_uri(request)})


async def delete_oauth_client(request):
    data = await _body(request)
    try:
        _state(request).auth.delete_oauth_client(unquote(request.match_info["client_id"]),
                                                 deleted=not data.get("restore", False))
    except KeyError:
        raise ControlError(f"no OAuth client {request.match_info['client_id']}", 404) from None
    return _json({})


async def issue_refresh_token(request):
    state = _state(request)
    data = await _body(request)
    email = _mailbox(state, str(data.get("emailAddress", ""))).email  # a grant is the primary address's
    try:
        token = state.auth.issue_refresh_token(str(data.get("clientId", "")), email, data.get("scopes"))
    except KeyError:
        raise ControlError(f"no OAuth client {data.get('clientId')}", 404) from None
    return _json({"refreshToken": token})


def _user_arg(request: web.Request) -> str:
    state = _state(request)
    return state.canonical(_email_arg(request)) or _email_arg(request)


async def revoke_user(request):
    _state(request).auth.revoke_user(_user_arg(request))
    return _json({})


async def restore_user(request):
    _state(request).auth.restore_user(_user_arg(request))
    return _json({})


def _clock_json(state: SimState) -> dict:
    return {"now": state.clock.now(), "nowMs": state.clock.now_ms(), "offsetSeconds": state.clock.offset}


async def get_clock(request):
    return _json(_clock_json(_state(request)))


async def advance_clock(request):
    state = _state(request)
    data = await _body(request)
    try:
        state.clock.advance(float(data.get("seconds", 0)))
    except (TypeError, ValueError) as exc:
        raise ControlError(str(exc)) from None
    return _json(_clock_json(state))


async def list_latency(request):
    return _json({"rules": [r.to_json() for r in _state(request).latency.rules()]})


async def add_latency(request):
    state = _state(request)
    data = await _body(request)
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise ControlError("'user' must be an email address")
    try:
        rule = state.latency.add(method=data.get("method"), seconds=data.get("seconds"),
                                 user=user and (state.canonical(user) or user))
    except (TypeError, ValueError) as exc:
        raise ControlError(str(exc)) from None
    return _json(rule.to_json())


async def clear_latency(request):
    _state(request).latency.clear()
    return _json({})


async def list_faults(request):
    state = _state(request)
    faults = state.faults
    return _json({"rules": [r.to_json() for r in faults.rules()],
                  "lockouts": faults.lockouts(state.clock.now()),
                  "refusals": state.refusals.all(),
                  "notifications": faults.notification_faults()})


async def refuse_user(request):
    data = await _body(request)
    try:
        _state(request).refusals.refuse(_email_arg(request), str(data.get("kind", "")))
    except ValueError as exc:
        raise ControlError(str(exc)) from None
    return _json({})


async def lift_refusal(request):
    _state(request).refusals.lift(_email_arg(request))
    return _json({})


async def add_fault(request):
    data = await _body(request)
    try:
        rule = _state(request).faults.add(
            str(data.get("kind", "")), method=str(data.get("method") or "*"), user=data.get("user"),
            fraction=data.get("fraction"), count=data.get("count"), retry_after=data.get("retryAfter"))
    except (TypeError, ValueError) as exc:
        raise ControlError(str(exc)) from None
    return _json(rule.to_json())


async def clear_faults(request):
    _state(request).faults.clear()
    return _json({})


async def delete_fault(request):
    try:
        rule_id = int(request.match_info["rule_id"])
    except ValueError:
        raise ControlError("fault id must be an integer") from None
    if not _state(request).faults.remove(rule_id):
        raise ControlError(f"no fault {rule_id}", 404)
    return _json({})


async def notification_faults(request):
    data = await _body(request)
    try:
        state = _state(request)
        email = data.get("emailAddress")
        user = None if email is None else _mailbox(state, str(email)).email
        state.faults.set_notification_faults(drop_fraction=data.get("dropFraction"),
                                             delay_seconds=data.get("delaySeconds"), user=user)
    except (TypeError, ValueError) as exc:
        raise ControlError(str(exc)) from None
    return await list_faults(request)


async def clear_mailbox_notification_faults(request):
    state = _state(request)
    state.faults.clear_notification_faults(_mailbox(state, _email_arg(request)).email)
    return await list_faults(request)


async def expire_watch(request):
    state = _state(request)
    data = await _body(request)
    project_id = data.get("projectId")
    if project_id is not None and not isinstance(project_id, str):
        raise ControlError("'projectId' must be a string")
    with state.lock:
        state.expire_watches(_mailbox(state, _email_arg(request)), project_id)
        return _json(_mailbox_info(state, _email_arg(request)))


async def refuse_watch(request):
    state = _state(request)
    data = await _body(request)
    refuse = data.get("refuse", True)
    if not isinstance(refuse, bool):
        raise ControlError("'refuse' must be true or false")
    state.refuse_watches(_mailbox(state, _email_arg(request)), refuse)
    return _json({"refused": sorted(state.watch_refusals)})


async def list_notifications(request):
    state = _state(request)
    return _json({"notifications": state.log.entries(request.query.get("emailAddress")),
                  "counts": state.log.counts(), "pending": state.publisher.pending()})


async def flush_notifications(request):
    import asyncio

    data = await _body(request)
    timeout = float(data.get("timeout", 10))
    flushed = await asyncio.to_thread(_state(request).publisher.flush, timeout)
    return _json({"flushed": flushed})


async def get_counters(request):
    state = _state(request)
    return _json({**state.counters.snapshot(), "peakConcurrentRequests": state.concurrency.peaks()})


async def reset_counters(request):
    state = _state(request)
    state.counters.reset()
    state.concurrency.reset_peaks()
    return _json({})


async def create_push_subscription(request):
    try:
        subscription = PushSubscription.from_json(await _body(request))
    except ValueError as exc:
        raise ControlError(str(exc)) from None
    _state(request).push_subscriptions.put(subscription)
    return _json(subscription.to_json())


async def set_gmail_publisher(request):
    data = await _body(request)
    topic, granted = data.get("topic"), data.get("granted")
    if not isinstance(topic, str) or not _TOPIC.match(topic):
        raise ControlError("'topic' must be projects/<project>/topics/<topic>")
    if not isinstance(granted, bool):
        raise ControlError("'granted' must be true or false")
    _state(request).set_gmail_publisher(topic, granted)
    return _json({"topic": topic, "granted": granted})


async def list_gmail_publishers(request):
    return _json({"unpublishable": sorted(_state(request).unpublishable_topics)})


async def list_push_subscriptions(request):
    return _json({"subscriptions": [s.to_json() for s in _state(request).push_subscriptions.all()]})


async def oidc_issuer(request):
    issuer = _state(request).issuer
    return _json({"issuer": issuer.url, "certsUri": f"{issuer.url}/oauth2/v1/certs",
                  "jwksUri": issuer.discovery()["jwks_uri"]})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/_sim/reset", reset)
    r.add_get("/_sim/config", get_config)
    r.add_post("/_sim/config", set_config)
    r.add_post("/_sim/mailboxes", create_mailboxes)
    r.add_get("/_sim/mailboxes/{email}", get_mailbox)
    r.add_post("/_sim/mailboxes/{email}/labels", create_label)
    r.add_delete("/_sim/mailboxes/{email}/labels/{label_id}", delete_label)
    r.add_post("/_sim/mailboxes/{email}/aliases", add_aliases)
    r.add_post("/_sim/mailboxes/{email}/messages/seed", seed_messages)
    r.add_post("/_sim/mailboxes/{email}/history/expire", expire_history)
    r.add_post("/_sim/mailboxes/{email}/drafts", save_draft)
    r.add_post("/_sim/mailboxes/{email}/drafts/{draft_id}", save_draft)
    r.add_post("/_sim/mailboxes/{email}/drafts/{draft_id}/send", send_draft)
    r.add_post("/_sim/messages", insert_messages)
    r.add_post("/_sim/messages/delete", delete_messages)
    r.add_post("/_sim/messages/modify", modify_messages)
    r.add_post("/_sim/service-accounts", create_service_account)
    r.add_post("/_sim/oauth-clients", create_oauth_client)
    r.add_post("/_sim/oauth-clients/{client_id}/delete", delete_oauth_client)
    r.add_post("/_sim/domains/{domain}/delegations", grant_delegation)
    r.add_get("/_sim/domains/{domain}/delegations", list_delegations)
    r.add_delete("/_sim/domains/{domain}/delegations/{client_id}", revoke_delegation)
    r.add_post("/_sim/refresh-tokens", issue_refresh_token)
    r.add_post("/_sim/users/{email}/revoke", revoke_user)
    r.add_post("/_sim/users/{email}/restore", restore_user)
    r.add_post("/_sim/users/{email}/refusals", refuse_user)
    r.add_delete("/_sim/users/{email}/refusals", lift_refusal)
    r.add_get("/_sim/clock", get_clock)
    r.add_post("/_sim/clock/advance", advance_clock)
    r.add_get("/_sim/latency", list_latency)
    r.add_post("/_sim/latency", add_latency)
    r.add_delete("/_sim/latency", clear_latency)
    r.add_get("/_sim/faults", list_faults)
    r.add_post("/_sim/faults", add_fault)
    r.add_delete("/_sim/faults", clear_faults)
    r.add_delete("/_sim/faults/{rule_id}", delete_fault)
    r.add_post("/_sim/notifications/faults", notification_faults)
    r.add_delete("/_sim/mailboxes/{email}/notifications/faults", clear_mailbox_notification_faults)
    r.add_post("/_sim/mailboxes/{email}/watch/expire", expire_watch)
    r.add_post("/_sim/mailboxes/{email}/watch/refusal", refuse_watch)
    r.add_get("/_sim/notifications", list_notifications)
    r.add_post("/_sim/notifications/flush", flush_notifications)
    r.add_get("/_sim/counters", get_counters)
    r.add_post("/_sim/counters/reset", reset_counters)
    r.add_post("/_sim/push-subscriptions", create_push_subscription)
    r.add_get("/_sim/push-subscriptions", list_push_subscriptions)
    r.add_post("/_sim/topics/gmail-publisher", set_gmail_publisher)
    r.add_get("/_sim/topics/gmail-publisher", list_gmail_publishers)
    r.add_get("/_sim/oidc", oidc_issuer)
