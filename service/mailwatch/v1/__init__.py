"""Generated protobuf/gRPC code for package mailwatch.v1 (regenerate: python scripts/gen_protos.py)."""
