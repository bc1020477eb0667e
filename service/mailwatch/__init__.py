"""mailwatch: Gmail mailboxes as durable, resumable change streams over gRPC."""

__version__ = "0.1.0"
