"""Gmail's batch endpoint: multipart/mixed in, multipart/mixed out.

Each part of the request is an `application/http` message (request line,
headers with its own Authorization, optional body) with a Content-ID; each is
answered as a call of its own, and the response part (in the request's order)
carries `Content-ID: <response-ID>` and the inner HTTP response, as Google does.

Each part counts against its user's quota. With `batchPartsConcurrent: true`
(Gmail's way, the default), the parts
are separate requests run at the same time: each holds its concurrency slot
until the whole batch is answered, so with the default cap of 10 the 11th part
for one user onwards is answered 429 "Too many concurrent requests for user."
(the batch itself is 200). Off, they run one at a time (each slot released
before the next part starts).
Gmail allows at most 100 calls per batch; more is 400 "Inner request count
exceeds the limit. Received: N, Limit: 100" (Google's text, no `errors` list).
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import uuid
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

from multidict import CIMultiDict, MultiDict

from mailwatch_devstack.gmail_sim.api import ApiRequest, ApiResponse, dispatch
from mailwatch_devstack.gmail_sim.concurrency import BatchSlots
from mailwatch_devstack.gmail_sim.errors import GmailError, bad_request
from mailwatch_devstack.gmail_sim.state import SimState

MAX_BATCH = 100


def _parse_inner(payload: str) -> ApiRequest:
    text = payload.replace("\r\n", "\n").lstrip("\n")
    request_line, _, rest = text.partition("\n")
    bits = request_line.split()
    if len(bits) < 2:
        raise bad_request("Failed to parse batch request, error: invalid request line.", "badRequest")
    head, sep, body = rest.partition("\n\n")
    if not sep:
        head, body = rest, ""
    headers: CIMultiDict = CIMultiDict()
    for line in head.split("\n"):
        if ":" in line:
            name, value = line.split(":", 1)
            headers.add(name.strip(), value.strip())
    target = urlsplit(bits[1])
    return ApiRequest(method=bits[0].upper(), path=target.path,
                      query=MultiDict(parse_qsl(target.query, keep_blank_values=True)),
                      headers=headers, body=body.encode("utf-8"))


def _render_part(content_id: str | None, response: ApiResponse) -> str:
    reason = HTTPStatus(response.status).phrase if response.status in HTTPStatus._value2member_map_ else ""
    lines = ["Content-Type: application/http"]
    if content_id:
        inner = content_id.strip()
        if inner.startswith("<") and inner.endswith(">"):
            inner = inner[1:-1]
        lines.append(f"Content-ID: <response-{inner}>")
    lines += ["", f"HTTP/1.1 {response.status} {reason}"]
    for name, value in response.headers.items():
        lines.append(f"{name}: {value}")
    body = response.encoded().decode("utf-8")
    if response.body is not None:
        lines += ["Content-Type: application/json; charset=UTF-8", f"Content-Length: {len(body.encode())}"]
    lines += ["", body]
    return "\r\n".join(lines)


async def handle_batch(state: SimState, content_type: str, body: bytes) -> tuple[str, bytes]:
    """Returns (response content type, response body); raises GmailError for a bad envelope."""
    if not content_type.lower().startswith("multipart/mixed") or "boundary" not in content_type.lower():
        raise bad_request("Failed to parse batch request, error: Invalid content type. "
                          "Expected multipart/mixed with a boundary.", "badRequest")
    parser = email.parser.BytesParser(policy=email.policy.compat32)
    message = parser.parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise bad_request("Failed to parse batch request, error: 0 items.", "badRequest")
    parts = message.get_payload()
    if not parts:
        raise bad_request("Failed to parse batch request, error: 0 items.", "badRequest")
    if len(parts) > MAX_BATCH:
        raise GmailError(400, f"Inner request count exceeds the limit. Received: {len(parts)}, "
                              f"Limit: {MAX_BATCH}", None)
    state.counters.record_batch(len(parts))
    inner: list[ApiRequest | ApiResponse] = []
    for part in parts:
        payload = part.get_payload(decode=False)
        if not isinstance(payload, str):
            raise bad_request("Failed to parse batch request, error: nested multipart.", "badRequest")
        try:
            inner.append(_parse_inner(payload))
        except GmailError as error:  # a malformed part is answered, not crashed on
            inner.append(ApiResponse(error.code, error.body(), error.headers))
        except Exception:  # noqa: BLE001
            error = bad_request("Failed to parse batch part.", "badRequest")
            inner.append(ApiResponse(error.code, error.body(), error.headers))
    responses = await _run_parts(state, inner)
    rendered = [_render_part(part.get("Content-ID"), response) for part, response in zip(parts, responses)]
    boundary = f"batch_{uuid.uuid4().hex}"
    out = "".join(f"--{boundary}\r\n{part}\r\n" for part in rendered) + f"--{boundary}--\r\n"
    return f"multipart/mixed; boundary={boundary}", out.encode("utf-8")


async def _run_parts(state: SimState, inner: list[ApiRequest | ApiResponse]) -> list[ApiResponse]:
    """Answer the parsed parts: all at once, each holding its concurrency slot until every part
    is answered (Gmail's way), or one after the other when `batchPartsConcurrent` is off."""
    if not state.batch_parts_concurrent:
        return [item if isinstance(item, ApiResponse) else await dispatch(state, item) for item in inner]
    slots = BatchSlots()
    try:
        # gather starts the parts in order, so which of them get a slot is deterministic.
        async def answer(item):
            if isinstance(item, ApiResponse):
                return item
            item.batch = slots
            return await dispatch(state, item)

        return list(await asyncio.gather(*(answer(item) for item in inner)))
    finally:
        state.concurrency.release_all(slots)
