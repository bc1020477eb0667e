"""Hypothesis strategies that build any protobuf request from its descriptor.

Every field of every request message gets values of its wire type: random
ones, boundary ones, and `Pools` of values that reach deeper code (a real
mailbox id, a real cursor, a real service-account key and broken copies of
it). A field added to a .proto is fuzzed without editing this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import strategies as st

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)
_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: INT32, FieldDescriptor.TYPE_SINT32: INT32, FieldDescriptor.TYPE_SFIXED32: INT32,
    FieldDescriptor.TYPE_INT64: INT64, FieldDescriptor.TYPE_SINT64: INT64, FieldDescriptor.TYPE_SFIXED64: INT64,
    FieldDescriptor.TYPE_UINT32: UINT32, FieldDescriptor.TYPE_FIXED32: UINT32,
    FieldDescriptor.TYPE_UINT64: UINT64, FieldDescriptor.TYPE_FIXED64: UINT64,
}

# Strings any text field may meet from a careless or hostile client.
HOSTILE_STRINGS = [
    "", " ", "\t\n", "\x00", "a\x00b", "\u202e", "\ud7ff", "😀" * 50, "Étiquette", "收件箱",
    "x" * 257, "y" * 5000, "%s%s%n", "'; DROP TABLE mailboxes; --", "../../etc/passwd",
    "00000000-0000-0000-0000-000000000000", "alice@example.com", "ALICE@EXAMPLE.COM", "a@b", "@", "a@@b.c",
    "INBOX", "Label_424242", "[" * 30000, "{" * 1000, '{"type": "service_account"}', "null", "[]", "0", "-1",
    "9" * 40, "Bearer x", "mwk_" + "0" * 40,
]
HOSTILE_BYTES = [b"", b"\x00", b"\xff" * 4, b"\x80" * 64, bytes(range(256)), b"A" * 5000]


@dataclass
class Pools:
    """Real values from the running service, mixed into the random ones."""

    strings: list[str] = field(default_factory=list)
    bytes_: list[bytes] = field(default_factory=list)

    def string_values(self) -> list[str]:
        return HOSTILE_STRINGS + self.strings

    def bytes_values(self) -> list[bytes]:
        return HOSTILE_BYTES + self.bytes_


def key_variants(key: dict) -> list[str]:
    """A working service-account key JSON and copies broken in the ways issue 16 found."""
    pem = key["private_key"]
    flipped = pem[:100] + ("B" if pem[100] != "B" else "C") + pem[101:]
    return [
        json.dumps(key),
        json.dumps({**key, "private_key": flipped}),
        json.dumps({**key, "private_key": pem.replace("\n", "\n\x00", 3)}),
        json.dumps({**key, "private_key": "not a key"}),
        json.dumps({**key, "type": "authorized_user"}),
        json.dumps({k: v for k, v in key.items() if k != "client_email"}),
        json.dumps({**key, "client_email": 42}),
        json.dumps([key]),
    ]


def _scalar(fd: FieldDescriptor, pools: Pools) -> st.SearchStrategy:
    if fd.type == FieldDescriptor.TYPE_STRING:
        return st.one_of(st.text(max_size=80), st.sampled_from(pools.string_values()), st.uuids().map(str))
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=120), st.sampled_from(pools.bytes_values()))
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if fd.type == FieldDescriptor.TYPE_ENUM:
        # proto3 enums are open: any int32 arrives, not only the declared values.
        known = sorted(fd.enum_type.values_by_number)
        return st.one_of(st.sampled_from(known), st.integers(-3, 64), st.integers(*INT32))
    if fd.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return st.floats(allow_nan=True, allow_infinity=True, width=32 if fd.type == FieldDescriptor.TYPE_FLOAT else 64)
    low, high = _INT_RANGES[fd.type]
    return st.one_of(st.integers(max(low, -3), min(high, 3000)), st.sampled_from([low, high, 0, 1, -1][: 5 if low else 3]),
                     st.integers(low, high))


def _value(fd: FieldDescriptor, pools: Pools, depth: int) -> st.SearchStrategy:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return messages(fd.message_type, pools, depth + 1)
    return _scalar(fd, pools)


def _repeated(fd: FieldDescriptor, pools: Pools, depth: int) -> st.SearchStrategy:
    element = _value(fd, pools, depth)
    few = st.lists(element, max_size=4)
    # Past the API's caps (100 labels, 1000 mailbox ids) without generating each value.
    many = st.builds(lambda value, count: [value] * count, element, st.integers(90, 1100))
    return st.one_of(few, few, many)


@st.composite
def messages(draw, descriptor: Descriptor, pools: Pools, depth: int = 0):
    """A message of `descriptor` with any subset of its fields set (one member per oneof)."""
    message = message_factory.GetMessageClass(descriptor)()
    if depth > 3:
        return message
    chosen_oneof_members = {
        draw(st.sampled_from([None, *oneof.fields])) for oneof in descriptor.oneofs
    }
    for fd in descriptor.fields:
        if fd.containing_oneof is not None:
            if fd not in chosen_oneof_members:
                continue
        elif not draw(st.booleans()):
            continue
        if fd.is_repeated:
            values = draw(_repeated(fd, pools, depth))
            target = getattr(message, fd.name)
            if fd.type == FieldDescriptor.TYPE_MESSAGE:
                for value in values:
                    target.add().CopyFrom(value)
            else:
                target.extend(values)
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(message, fd.name).CopyFrom(draw(_value(fd, pools, depth)))
        else:
            setattr(message, fd.name, draw(_value(fd, pools, depth)))
    return message
