"""Text as Postgres can store it. Pure; used wherever text from outside lands in a column.

Postgres refuses U+0000 in `text` and `jsonb`, and text that is not valid UTF-8
(a lone surrogate, which JSON can spell as `\\ud800`). Pub/Sub attributes, and
Gmail's headers, snippets and ids, are the sender's to choose: one such
character would make the durable write fail on every attempt.
"""

from __future__ import annotations


def storable_text(value: object) -> str:
    """`value` as text Postgres accepts in `text` and `jsonb`: NUL becomes U+FFFD,
    anything that is not valid UTF-8 is replaced."""
    if type(value) is str and value.isascii() and "\x00" not in value:
        return value  # nearly all text (Gmail's ids and label ids): nothing to replace, nothing to copy
    return str(value).replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
