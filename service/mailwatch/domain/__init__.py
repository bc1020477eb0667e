"""Pure domain types: dataclasses, enums and exceptions. No I/O here."""
