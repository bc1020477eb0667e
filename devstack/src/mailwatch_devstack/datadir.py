"""What `mailwatch dev --data-dir DIR` keeps between runs, and where.

    DIR/postgres/        the database cluster (tenants, API keys, mailboxes, the change log)
    DIR/secret-key       the Fernet key that encrypts the mailboxes' Google credentials
    DIR/demo.json        the demo tenant's API key (Postgres keeps only its hash)
    DIR/gmail-sim.json   the simulator's mailboxes, history, credentials (saved on exit)

Without a directory every method answers "nothing kept" and the stack is
throwaway. $MAILWATCH_SECRET_KEYS, when set, wins over the kept key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mailwatch.secrets import generate_key


class DevDataDir:
    def __init__(self, path: Path | str | None) -> None:
        self.path = Path(path).absolute() if path is not None else None
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)

    @property
    def postgres_dir(self) -> Path | None:
        return self.path / "postgres" if self.path else None

    @property
    def simulator_file(self) -> str | None:
        return str(self.path / "gmail-sim.json") if self.path else None

    def secret_keys(self) -> tuple[str, ...]:
        configured = os.environ.get("MAILWATCH_SECRET_KEYS")
        if configured:
            return tuple(key.strip() for key in configured.split(",") if key.strip())
        if self.path is None:
            return (generate_key(),)
        key_file = self.path / "secret-key"
        if not key_file.exists():
            _write_private(key_file, generate_key())
        return (key_file.read_text().strip(),)

    def demo_api_key(self) -> str | None:
        if self.path is None:
            return None
        try:
            return json.loads((self.path / "demo.json").read_text())["apiKey"]
        except FileNotFoundError:
            return None

    def save_demo_api_key(self, api_key: str) -> None:
        if self.path is not None:
            _write_private(self.path / "demo.json", json.dumps({"apiKey": api_key}))

    def describe(self) -> str:
        return f"kept in {self.path}" if self.path else "throwaway (--data-dir DIR keeps it)"


def _write_private(path: Path, text: str) -> None:
    """Write a secret readable by its owner only, atomically."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(temporary, path)
