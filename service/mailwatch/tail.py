"""`mailwatch tail`: print a tenant's change events as they arrive.

    mailwatch tail --target 127.0.0.1:50051 --api-key KEY [--mailbox ID ...] [--types MESSAGE_ADDED,...]
                   [--from earliest|now|CURSOR] [--checkpoint FILE] [--json] [--save-attachments DIR]
                   [--tls] [--ca-cert FILE] [--client-cert FILE --client-key FILE] [--server-name NAME]

One line per event (or one JSON object per line with --json) on stdout.
Disconnects and server restarts are survived by the client library's resuming
iterator (a note goes to stderr). Ctrl-C (or SIGTERM) stops it with exit code
0 and prints the last cursor to stderr, ready for `--from`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import sys
from typing import Any, TextIO


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the `tail` subcommand on the `mailwatch` command's subparsers."""
    parser = subparsers.add_parser(
        "tail", help="print change events as they arrive (resumes after disconnects)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--target", default=os.environ.get("MAILWATCH_TARGET", "127.0.0.1:50051"),
                        help="mailwatch HOST:PORT (default: $MAILWATCH_TARGET or 127.0.0.1:50051)")
    parser.add_argument("--api-key", default=os.environ.get("MAILWATCH_API_KEY"),
                        help="tenant API key (default: $MAILWATCH_API_KEY)")
    parser.add_argument("--tls", action="store_true", help="use TLS with the system's root certificates")
    parser.add_argument("--ca-cert", metavar="FILE", default=os.environ.get("MAILWATCH_TAIL_CA_CERT"),
                        help="trust this PEM CA instead of the system roots (implies --tls)")
    parser.add_argument("--client-cert", metavar="FILE", default=os.environ.get("MAILWATCH_TAIL_CLIENT_CERT"),
                        help="PEM client certificate for mutual TLS (implies --tls; needs --client-key)")
    parser.add_argument("--client-key", metavar="FILE", default=os.environ.get("MAILWATCH_TAIL_CLIENT_KEY"),
                        help="PEM private key of --client-cert")
    parser.add_argument("--server-name", metavar="NAME",
                        help="name to check the server's certificate against (when --target is an IP or a proxy)")
    parser.add_argument("--mailbox", action="append", default=[], metavar="ID",
                        help="only this mailbox id (repeat, or comma-separate, for several)")
    parser.add_argument("--types", default="", metavar="TYPE[,TYPE...]",
                        help="only these event types, e.g. MESSAGE_ADDED,LABELS_ADDED")
    parser.add_argument("--from", dest="start", default="now", metavar="earliest|now|CURSOR",
                        help="where to start (default: now); ignored when --checkpoint holds a cursor")
    parser.add_argument("--checkpoint", metavar="FILE",
                        help="load the position from FILE and keep saving it there")
    parser.add_argument("--json", action="store_true", help="print one JSON object per event")
    parser.add_argument("--save-attachments", metavar="DIR",
                        help="save each new message's attachments to DIR/<message id>/<file name>")
    parser.set_defaults(func=cmd_tail)
    return parser


def _newest(*cursors: bytes | None) -> bytes | None:
    """The cursor furthest along (tail ships with the service, so it may read its own cursors)."""
    from mailwatch.api.tokens import decode_cursor

    known = [cursor for cursor in cursors if cursor]
    return max(known, key=decode_cursor) if known else None


def _split(values: list[str] | str) -> list[str]:
    items = values if isinstance(values, list) else [values]
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def _tls(args: argparse.Namespace):
    """False (plaintext), True (system roots) or a TLSConfig from the given files."""
    from mailwatch_client import TLSConfig

    if not (args.ca_cert or args.client_cert or args.client_key or args.server_name):
        return bool(args.tls)
    return TLSConfig.from_files(
        ca_file=args.ca_cert, cert_file=args.client_cert, key_file=args.client_key, server_name=args.server_name,
    )


def format_event(event, *, as_json: bool) -> str:
    from mailwatch_client import EventType, cursor_to_str

    kind = EventType.Name(event.type).removeprefix("EVENT_TYPE_")
    observed = event.observe_time.ToDatetime().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    if as_json:
        return json.dumps({
            "id": event.id,
            "cursor": cursor_to_str(event.cursor),
            "type": kind,
            "mailbox_id": event.mailbox_id,
            "email_address": event.email_address,
            "observe_time": observed,
            "history_id": event.history_id,
            "message_id": event.message_id,
            "thread_id": event.thread_id,
            "label_ids": list(event.label_ids),
            "attributes": dict(event.attributes),
            **({"metadata": _metadata_json(event.metadata)} if event.HasField("metadata") else {}),
        }, separators=(",", ":"))
    parts = [observed, f"{kind:<16}", event.email_address or "(tenant)"]
    if event.message_id:
        parts.append(f"message={event.message_id}")
    if event.thread_id and event.thread_id != event.message_id:
        parts.append(f"thread={event.thread_id}")
    if event.label_ids:
        parts.append(f"labels={','.join(event.label_ids)}")
    if event.history_id:
        parts.append(f"history={event.history_id}")
    parts.extend(f"{key}={value}" for key, value in sorted(event.attributes.items()))
    if event.HasField("metadata"):
        parts.extend(_metadata_text(event.metadata))
    return "  ".join(parts)


# Shown in text mode, in this order, when the event carries them.
_TEXT_HEADERS = ("From", "Subject")


def _metadata_text(metadata) -> list[str]:
    if metadata.missing:
        return ["metadata=missing"]
    headers = {header.name.lower(): header.value for header in metadata.headers}
    shown = [f"{name.lower()}={headers[name.lower()]!r}" for name in _TEXT_HEADERS if name.lower() in headers]
    return [*shown, f"size={metadata.size_estimate}"]


def _metadata_json(metadata) -> dict:
    return {
        "headers": [[header.name, header.value] for header in metadata.headers],
        "snippet": metadata.snippet,
        "size_estimate": metadata.size_estimate,
        "internal_time": metadata.internal_time.ToJsonString() if metadata.HasField("internal_time") else None,
        "missing": metadata.missing,
    }


def _save(client, event, directory: str, err: TextIO, gone: type[Exception]) -> None:
    """Save the event's attachments, saying where on stderr; a message deleted since is noted, not fatal."""
    from mailwatch.tail_attachments import save_attachments

    try:
        for path in save_attachments(client, event, directory):
            print(f"mailwatch tail: saved {path}", file=err, flush=True)
    except gone:
        print(f"mailwatch tail: message {event.message_id} is gone; no attachments saved", file=err, flush=True)
    except OSError as exc:
        print(f"mailwatch tail: could not save the attachments of {event.message_id}: {exc}", file=err, flush=True)


def cmd_tail(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    import logging

    from mailwatch_client import (
        CursorExpiredError,
        EventType,
        FileCheckpointStore,
        MailwatchClient,
        NotFoundError,
        RPCError,
        cursor_from_str,
        cursor_to_str,
    )

    out = out or sys.stdout
    err = err or sys.stderr
    if not args.api_key:
        print("mailwatch tail: an API key is needed (--api-key or $MAILWATCH_API_KEY)", file=err)
        return 2
    if args.start in ("now", "earliest"):
        start: str | bytes = args.start
    else:
        try:
            start = cursor_from_str(args.start)
        except ValueError:
            print(f"mailwatch tail: --from must be earliest, now or a cursor, not {args.start!r}", file=err)
            return 2

    # Reconnect notes from the client library, on stderr.
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("mailwatch tail: %(message)s"))
    client_log = logging.getLogger("mailwatch_client")
    client_log.addHandler(handler)
    client_log.setLevel(logging.WARNING)
    checkpoint = FileCheckpointStore(args.checkpoint) if args.checkpoint else None
    try:
        tls = _tls(args)
    except (OSError, ValueError) as exc:
        print(f"mailwatch tail: TLS: {exc}", file=err)
        return 2
    client = MailwatchClient(args.target, args.api_key, tls=tls)
    stream = None
    printed_cursor: bytes | None = None

    def request_stop(signum, frame):
        # Ctrl-C / SIGTERM end the loop by closing the stream (from another
        # thread: close() takes a lock this thread may hold) instead of raising
        # mid-print, so the last printed event's cursor is always recorded.
        if stream is None:
            raise KeyboardInterrupt
        threading.Thread(target=stream.close, daemon=True).start()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stream = client.stream_changes(
            mailbox_ids=_split(args.mailbox), event_types=_split(args.types), start=start, checkpoint=checkpoint,
        )
        for event in stream:
            print(format_event(event, as_json=args.json), file=out, flush=True)
            if args.save_attachments and event.type in (EventType.Value("EVENT_TYPE_MESSAGE_ADDED"),
                                                        EventType.Value("EVENT_TYPE_MESSAGE_EXISTING")):
                _save(client, event, args.save_attachments, err, NotFoundError)
            printed_cursor = event.cursor
    except KeyboardInterrupt:
        pass
    except ValueError as exc:  # bad --types
        print(f"mailwatch tail: {exc}", file=err)
        return 2
    except CursorExpiredError as exc:
        print(f"mailwatch tail: the cursor has expired (events before it were pruned); resync, then use "
              f"--from earliest or --from now. ({exc.message})", file=err)
        return 1
    except RPCError as exc:
        print(f"mailwatch tail: {exc}", file=err)
        return 1
    finally:
        if stream is not None:
            stream.close()
        client.close()
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)
        client_log.removeHandler(handler)
    cursor = _newest(stream.cursor if stream is not None else None, printed_cursor)
    if cursor:
        print(f"mailwatch tail: stopped; last cursor: {cursor_to_str(cursor)}", file=err, flush=True)
    else:
        print("mailwatch tail: stopped before any position was known", file=err, flush=True)
    return 0
