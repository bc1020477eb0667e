"""Request validation, one module per service (`mailboxes`, `admin`) over the
shared field checks and violation collector (`fields`).

Each `validate_*` function collects every problem of a request and raises one
`InvalidArgument` listing them all as field violations (field paths as in
AIP-193 BadRequest: `service_account.json_key`, `label_ids[2]`), or returns
plain values the servicer hands on.
"""
