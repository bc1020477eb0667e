"""Regenerate the Python protobuf/gRPC code from protos/mailwatch/v1/*.proto.

Usage (from the repository root):

    /work/venv/bin/python scripts/gen_protos.py            # writes service/mailwatch/v1/ AND the client's copy
    /work/venv/bin/python scripts/gen_protos.py --out DIR  # writes DIR/mailwatch/v1/ only
    /work/venv/bin/python scripts/gen_protos.py --client-out DIR  # also/only: the client copy into DIR/

Protos are compiled with `-I protos`, so the generated modules import each
other as `from mailwatch.v1 import ...`, which is the installed package.
Generated files (`*_pb2.py`, `*_pb2.pyi`, `*_pb2_grpc.py`) are replaced;
`__init__.py` is kept (created if missing). The output depends on the
grpcio-tools version, so regenerate after upgrading it;
tests/unit/test_protos_current.py fails when the committed code is stale.

The client library (clients/python, import package `mailwatch_client`) must
not import the service package, so it carries its own copy in
`mailwatch_client/_proto/v1/`: the same protoc output with its
`from mailwatch.v1 import` lines (and the module names handed to the protobuf
builder) rewritten to `mailwatch_client._proto.v1`. The serialized file
descriptors are byte-for-byte the same as the service's, which is what lets
both copies live in one process: the default descriptor pool accepts a file
added twice with identical content (and hands both modules the same message
classes), and rejects it if the content differs. Regenerating both copies
with one command keeps them identical; tests/unit/client/test_client_protos_current.py
fails when the client's copy is stale.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from importlib import resources
from pathlib import Path

from google.rpc import status_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = Path("mailwatch") / "v1"
DEFAULT_OUT = ROOT / "service"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
CLIENT_MODULE = "mailwatch_client._proto.v1"
DEFAULT_CLIENT_OUT = ROOT / "clients" / "python" / "src" / "mailwatch_client" / "_proto" / "v1"


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    return sorted((proto_root / PACKAGE).glob("*.proto"))


def generate(out: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Compile every proto into out/mailwatch/v1/ and return the generated files."""
    package_dir = out / PACKAGE
    package_dir.mkdir(parents=True, exist_ok=True)
    # Remove stale output first, so a deleted .proto does not leave its module behind.
    for path in package_dir.iterdir():
        if path.name.endswith(GENERATED_SUFFIXES):
            path.unlink()
    (package_dir / "__init__.py").touch(exist_ok=True)
    run_protoc(proto_root, f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}")
    return sorted(p for p in package_dir.iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def run_protoc(proto_root: Path, *outputs: str) -> None:
    """protoc over every proto with the import paths the contract needs, writing `outputs`
    (e.g. --python_out=DIR, or -oFILE for a descriptor set, which tests/unit/test_protos_lint.py lints)."""
    # The well-known types (google/protobuf/*.proto) ship inside grpc_tools;
    # google/rpc/*.proto (google.rpc.Status) inside googleapis-common-protos.
    well_known = resources.files("grpc_tools") / "_proto"
    googleapis = Path(status_pb2.__file__).resolve().parents[2]
    files = [str(path.relative_to(proto_root)) for path in proto_files(proto_root)]
    args = ["grpc_tools.protoc", f"-I{proto_root}", f"-I{well_known}", f"-I{googleapis}", *outputs, *files]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")


_SERVICE_IMPORT = re.compile(r"^from mailwatch\.v1 import ", re.MULTILINE)
# The module name the protobuf builder gives the message classes (`__module__`).
_BUILDER_MODULE = re.compile(r"(BuildTopDescriptorsAndMessages\(DESCRIPTOR, )'mailwatch\.v1\.")


def rewrite_for_client(source: str) -> str:
    """Service-package generated code -> the client package's copy (imports only)."""
    source = _SERVICE_IMPORT.sub(f"from {CLIENT_MODULE} import ", source)
    return _BUILDER_MODULE.sub(rf"\1'{CLIENT_MODULE}.", source)


def generate_client(out: Path = DEFAULT_CLIENT_OUT, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Compile every proto for the client library into `out` (a package directory).

    Same protoc run as `generate`, then the imports are rewritten (see the
    module docstring). Returns the generated files.
    """
    out.mkdir(parents=True, exist_ok=True)
    for path in out.iterdir():
        if path.name.endswith(GENERATED_SUFFIXES):
            path.unlink()
    init = out / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated protobuf/gRPC code (regenerate: python scripts/gen_protos.py). Private."""\n')
    with tempfile.TemporaryDirectory() as scratch:
        for path in generate(Path(scratch), proto_root):
            (out / path.name).write_text(rewrite_for_client(path.read_text()))
    return sorted(p for p in out.iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="root of the output tree; code goes to OUT/mailwatch/v1/ (default: service/)",
    )
    parser.add_argument(
        "--client-out",
        type=Path,
        default=None,
        help="package directory for the client library's copy "
        "(default: clients/python/src/mailwatch_client/_proto/v1/, written when neither option is given)",
    )
    args = parser.parse_args(argv)
    both = args.out is None and args.client_out is None
    if args.out is not None or both:
        for path in generate((args.out or DEFAULT_OUT).resolve()):
            print(path)
    if args.client_out is not None or both:
        for path in generate_client((args.client_out or DEFAULT_CLIENT_OUT).resolve()):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
