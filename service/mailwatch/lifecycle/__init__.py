"""A mailbox's watch lifecycle, one module per job:

- `registration`: register (batches of addresses) and stop (`Registrations`);
- `shared_watch`: the one Gmail watch that registrations of an address and
  Google project share (taking it over, covering a new registration);
- `schedule`: when a watch is renewed next;
- `messages`: reading the mailbox through its stored credentials (`MailboxMessages`);
- `google_settings`: a tenant's default Google settings.

Each takes what it uses as explicit arguments; the renew worker (`workers.renew`)
uses `shared_watch` and `schedule` too.
"""
