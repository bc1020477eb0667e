"""Gmail's batch endpoint: multipart/mixed in, multipart/mixed out.

Each part of the request is an `application/http` message (request line,
headers with its own Authorization, optional body) with a Content-ID; each is
answered as if called alone, in order, and the response part carries
`Content-ID: <response-ID>` and the inner HTTP response, as Google does.
Gmail allows at most 100 calls per batch.
"""

from __future__ import annotations

import email.parser
import email.policy
import uuid
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

from multidict import CIMultiDict, MultiDict

from mailwatch_devstack.gmail_sim.api import ApiRequest, ApiResponse, dispatch
from mailwatch_devstack.gmail_sim.errors import bad_request
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
        raise bad_request(f"Too many requests in batch (limit {MAX_BATCH}).", "batchSizeTooLarge")
    state.counters.record_batch(len(parts))
    rendered = []
    for part in parts:
        payload = part.get_payload(decode=False)
        if not isinstance(payload, str):
            raise bad_request("Failed to parse batch request, error: nested multipart.", "badRequest")
        try:
            inner = _parse_inner(payload)
        except Exception as exc:  # noqa: BLE001 - a malformed part is answered, not crashed on
            from mailwatch_devstack.gmail_sim.errors import GmailError

            error = exc if isinstance(exc, GmailError) else bad_request("Failed to parse batch part.", "badRequest")
            response = ApiResponse(error.code, error.body(), error.headers)
        else:
            response = await dispatch(state, inner)
        rendered.append(_render_part(part.get("Content-ID"), response))
    boundary = f"batch_{uuid.uuid4().hex}"
    out = "".join(f"--{boundary}\r\n{part}\r\n" for part in rendered) + f"--{boundary}--\r\n"
    return f"multipart/mixed; boundary={boundary}", out.encode("utf-8")
