"""Generated protobuf/gRPC code (regenerate: python scripts/gen_protos.py). Private."""
