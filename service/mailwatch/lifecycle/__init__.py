"""A mailbox's watch lifecycle: register, stop (and, with the workers, renew)."""
