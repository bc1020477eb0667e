"""`mailwatch tail --save-attachments DIR`: each new or backfilled message's attachments, saved as files.

For every MESSAGE_ADDED (and a backfill's MESSAGE_EXISTING) event the message is read in
FULL format (its MIME tree names each attachment) and every part with a file name is written to DIR/<message id>/<file name>:
bodies Gmail left out of the tree come from GetAttachment, inline ones from the message's
own part chunks. File names are the sender's text, so only their last path component is
used, and a name taken twice in one message gets its part id added.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator


def _parts(part) -> Iterator:
    yield part
    for child in part.parts:
        yield from _parts(child)


def safe_name(filename: str, part_id: str) -> str:
    """A file name that stays inside the message's folder (no separators, not '.' or '..')."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].replace("\x00", "").strip()
    if name in ("", ".", ".."):
        name = f"part-{part_id or 'root'}"
    return name


def _unused(folder: Path, name: str, part_id: str) -> Path:
    path = folder / name
    if not path.exists():
        return path
    stem, ext = os.path.splitext(name)
    return folder / f"{stem} ({part_id}){ext}"


def save_attachments(client, event, directory: str) -> list[Path]:
    """Write the attachments of the MESSAGE_ADDED `event`'s message under `directory`; the paths written."""
    fetched = client.get_message(event.mailbox_id, event.message_id, format="full")
    folder = Path(directory) / event.message_id
    saved: list[Path] = []
    for part in _parts(fetched.message.payload):
        if not part.filename:
            continue
        if part.attachment_id:
            data = client.get_attachment(event.mailbox_id, event.message_id, part.attachment_id)
        else:
            data = fetched.part_bodies.get(part.part_id, b"")
        folder.mkdir(parents=True, exist_ok=True)
        path = _unused(folder, safe_name(part.filename, part.part_id), part.part_id)
        path.write_bytes(data)
        saved.append(path)
    return saved
