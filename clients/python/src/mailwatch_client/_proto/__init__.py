"""Generated code, private to the client (see scripts/gen_protos.py)."""
