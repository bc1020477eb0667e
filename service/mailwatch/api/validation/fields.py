"""What both services' validation shares: the violation collector, page
requests, and checks of single fields (addresses, ids, label ids, credentials).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from mailwatch.api import tokens
from mailwatch.api.convert import LABEL_FILTER_BEHAVIOR_FROM_PROTO
from mailwatch.domain import addresses
from mailwatch.domain.errors import FieldViolation, InvalidArgument
from mailwatch.domain.models import LabelFilterBehavior, OAuthCredential, ServiceAccountCredential
from mailwatch.gmail.credentials import UnusableKey, check_service_account_key
from mailwatch.v1 import mailbox_service_pb2, resources_pb2

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_LABEL_IDS = 100
MAX_LABEL_ID_LENGTH = 256
MAX_JSON_KEY_BYTES = 64 * 1024
MAX_SECRET_LENGTH = 4096
SERVICE_ACCOUNT_KEY_FIELDS = ("client_email", "private_key", "token_uri")


# --- results ----------------------------------------------------------------


@dataclass(frozen=True)
class PageRequest:
    page_size: int  # 1..MAX_PAGE_SIZE
    position: Any  # what the previous page's encode_page_token was given; None: first page
    fingerprint: str  # pass to tokens.encode_page_token for the next page


# --- collector ----------------------------------------------------------------


class Violations:
    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)


# --- single fields --------------------------------------------------------------


def email_address(value: str, field: str, problems: Violations, *, required: bool = True) -> str:
    value = value.strip()
    if not value:
        if required:
            problems.add(field, "required")
        return ""
    if not addresses.is_registrable(value):
        problems.add(field, "must be an email address such as alice@example.com")
    return addresses.normalize(value)


def parse_uuid(value: str, field: str, problems: Violations) -> uuid.UUID | None:
    if not value:
        problems.add(field, "required")
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        problems.add(field, "must be a UUID")
        return None


def page_request(page_size: int, page_token: str, problems: Violations, *parts: Any) -> PageRequest:
    """page_size (0: default, negative: violation, capped) and a page token bound to `parts`."""
    if page_size < 0:
        problems.add("page_size", "must not be negative")
    size = DEFAULT_PAGE_SIZE if page_size <= 0 else min(page_size, MAX_PAGE_SIZE)
    fingerprint = tokens.request_fingerprint(*parts)
    position = None
    try:
        position = tokens.decode_page_token(page_token, fingerprint=fingerprint)
    except InvalidArgument as exc:
        problems.items.extend(exc.violations)
    return PageRequest(page_size=size, position=position, fingerprint=fingerprint)


def label_ids(values, problems: Violations) -> tuple[str, ...]:
    if len(values) > MAX_LABEL_IDS:
        problems.add("label_ids", f"at most {MAX_LABEL_IDS} label ids")
    seen: set[str] = set()
    for index, label_id in enumerate(values):
        field = f"label_ids[{index}]"
        if not label_id.strip():
            problems.add(field, "must not be empty")
        elif len(label_id) > MAX_LABEL_ID_LENGTH:
            problems.add(field, f"must be at most {MAX_LABEL_ID_LENGTH} characters")
        elif label_id != label_id.strip() or not label_id.isprintable():
            problems.add(field, "must not have leading or trailing whitespace or control characters")
        elif label_id in seen:
            problems.add(field, f"duplicate label id {label_id!r}")
        seen.add(label_id)
    return tuple(values)


def label_filter_behavior(value: int, problems: Violations) -> LabelFilterBehavior:
    if value == resources_pb2.LABEL_FILTER_BEHAVIOR_UNSPECIFIED:
        return LabelFilterBehavior.INCLUDE
    behavior = LABEL_FILTER_BEHAVIOR_FROM_PROTO.get(value)
    if behavior is None:
        problems.add("label_filter_behavior", f"unknown value {value}")
        return LabelFilterBehavior.INCLUDE
    return behavior


def secret(value: str, field: str, problems: Violations) -> str:
    if not value.strip():
        problems.add(field, "required")
    elif len(value) > MAX_SECRET_LENGTH:
        problems.add(field, f"must be at most {MAX_SECRET_LENGTH} characters")
    return value.strip()


def service_account(
    creds: mailbox_service_pb2.ServiceAccountCredentials, email: str, problems: Violations
) -> ServiceAccountCredential | None:
    field = "service_account.json_key"
    info = None
    if not creds.json_key.strip():
        problems.add(field, "required: the content of the service account JSON key file")
    elif len(creds.json_key.encode()) > MAX_JSON_KEY_BYTES:
        problems.add(field, f"must be at most {MAX_JSON_KEY_BYTES} bytes")
    else:
        try:
            info = json.loads(creds.json_key)
        except ValueError:
            problems.add(field, "must be JSON (the service account key file)")
        except RecursionError:  # the C parser recurses once per nesting level
            problems.add(field, "must be JSON (the service account key file), not nested this deeply")
        else:
            if not isinstance(info, dict):
                problems.add(field, "must be a JSON object (the service account key file)")
                info = None
            elif info.get("type", "service_account") != "service_account":
                problems.add(field, f"must be a service account key, not type {str(info.get('type'))[:40]!r}")
                info = None
            else:
                missing = [k for k in SERVICE_ACCOUNT_KEY_FIELDS if not isinstance(info.get(k), str) or not info[k]]
                if missing:
                    problems.add(field, f"service account key lacks {', '.join(missing)}")
                    info = None
                else:
                    try:
                        check_service_account_key(info)
                    except UnusableKey as exc:
                        problems.add(field, str(exc))
                        info = None
    subject = email_address(creds.subject, "service_account.subject", problems, required=False) or email
    if info is None:
        return None
    return ServiceAccountCredential(info=info, subject=subject)


def oauth(creds: mailbox_service_pb2.OAuthCredentials, problems: Violations) -> OAuthCredential:
    return OAuthCredential(
        client_id=secret(creds.client_id, "oauth.client_id", problems),
        client_secret=secret(creds.client_secret, "oauth.client_secret", problems),
        refresh_token=secret(creds.refresh_token, "oauth.refresh_token", problems),
    )


def validate_uuid(value: str, field: str) -> uuid.UUID:
    problems = Violations()
    parsed = parse_uuid(value, field, problems)
    problems.raise_if_any()
    assert parsed is not None
    return parsed
