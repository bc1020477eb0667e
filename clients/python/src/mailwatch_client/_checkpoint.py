"""Where a change stream remembers its cursor between runs."""

from __future__ import annotations

import base64
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable


def cursor_to_str(cursor: bytes) -> str:
    """A printable, copy-pasteable form of an opaque cursor (logs, files, command lines)."""
    return base64.urlsafe_b64encode(cursor).rstrip(b"=").decode("ascii")


def cursor_from_str(text: str) -> bytes:
    """The cursor `cursor_to_str` printed. ValueError when `text` is not one."""
    text = text.strip()
    try:
        cursor = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a mailwatch cursor: {text!r}") from exc
    if not cursor:
        raise ValueError("empty cursor")
    return cursor


@runtime_checkable
class CheckpointStore(Protocol):
    """Persists a stream's cursor. `load` returns None when nothing was saved yet.

    A change stream calls `save` from the thread (or event loop thread, via
    `asyncio.to_thread`) that iterates it, never concurrently.
    """

    def load(self) -> bytes | None: ...

    def save(self, cursor: bytes) -> None: ...


class MemoryCheckpointStore:
    """Keeps the cursor in memory (tests; sharing a position between iterators)."""

    def __init__(self, cursor: bytes | None = None) -> None:
        self.cursor = cursor

    def load(self) -> bytes | None:
        return self.cursor

    def save(self, cursor: bytes) -> None:
        self.cursor = cursor


class FileCheckpointStore:
    """Keeps the cursor in a small text file, replaced atomically.

    Each save writes a temporary file next to the target, flushes it to disk
    and `os.replace`s it over the target, so a crash leaves either the old or
    the new cursor, never a torn one. `fsync=False` skips the flushes (faster;
    a power loss may then lose the latest saves, not the file).
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync

    def load(self) -> bytes | None:
        try:
            text = self.path.read_text(encoding="ascii")
        except FileNotFoundError:
            return None
        return cursor_from_str(text) if text.strip() else None

    def save(self, cursor: bytes) -> None:
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as file:
                file.write(cursor_to_str(cursor) + "\n")
                if self.fsync:
                    file.flush()
                    os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        if self.fsync:
            _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (Windows).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
