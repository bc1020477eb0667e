"""History sync's parts that need no claim: Gmail history -> change events, backoff,
message metadata, NOTIFICATIONS_MISSED. The sync worker itself is `workers.sync`."""
