"""Property tests of the pure decoders: any input decodes or is MalformedNotification,
and whatever is kept is storable in Postgres text / jsonb (no NUL, valid UTF-8)."""

from __future__ import annotations

import base64
import json
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from mailwatch.ingest.decode import (
    MalformedNotification,
    attributes_of,
    decode_notification,
    decode_push_envelope,
    parse_email_address,
)

HOSTILE = st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfff@y.z", "a\ud800@b.c", "a\x00@b.c", "😀"])
TEXT = st.text(max_size=30) | HOSTILE
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
# The same examples on every run unless MAILWATCH_FUZZ_RANDOM=1 asks for fresh ones:
# the suite gates every landing, so what it explores must not change from run to run.
FUZZ = settings(max_examples=300, deadline=None, database=None,
                derandomize=os.environ.get("MAILWATCH_FUZZ_RANDOM") != "1")


def _storable(value: str) -> bool:
    return "\x00" not in value and value.encode("utf-8", "strict").decode("utf-8") == value


@FUZZ
@given(data=st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode())
       | st.fixed_dictionaries({}, optional={"emailAddress": TEXT | JSON, "historyId": JSON}).map(
           lambda d: json.dumps(d).encode()))
def test_any_notification_data_decodes_or_is_malformed(data):
    try:
        notification = decode_notification(data)
    except MalformedNotification:
        return
    assert _storable(notification.email_address)
    assert 0 < notification.history_id < 2**63


@FUZZ
@given(body=st.binary(max_size=300) | st.builds(
    lambda message, extra: json.dumps({"message": message, **extra}).encode(),
    JSON | st.fixed_dictionaries({}, optional={
        "data": JSON | st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode()),
        "messageId": JSON, "attributes": JSON,
    }),
    st.dictionaries(TEXT, JSON, max_size=2),
))
def test_any_push_body_parses_or_is_malformed_and_keeps_only_storable_text(body):
    try:
        message = decode_push_envelope(body)
    except MalformedNotification:
        return
    assert message.message_id is None or _storable(message.message_id)
    assert all(_storable(k) and _storable(v) for k, v in message.attributes.items())


@FUZZ
@given(attributes=st.dictionaries(TEXT, TEXT, max_size=4))
def test_attributes_are_storable(attributes):
    assert all(_storable(k) and _storable(v) for k, v in attributes_of(attributes).items())


def test_an_address_postgres_cannot_store_is_malformed():
    for value in ("a\ud800@b.c",):
        try:
            parse_email_address(value)
        except MalformedNotification as exc:
            assert exc.reason.value == "bad_email_address"
        else:
            raise AssertionError(f"{value!r} accepted")
