"""History sync: turning Gmail history into change-log events, one mailbox at a time."""
