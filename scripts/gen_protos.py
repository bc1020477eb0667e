"""Regenerate the Python protobuf/gRPC code from protos/mailwatch/v1/*.proto.

Usage (from the repository root):

    /work/venv/bin/python scripts/gen_protos.py            # writes service/mailwatch/v1/
    /work/venv/bin/python scripts/gen_protos.py --out DIR  # writes DIR/mailwatch/v1/

Protos are compiled with `-I protos`, so the generated modules import each
other as `from mailwatch.v1 import ...`, which is the installed package.
Generated files (`*_pb2.py`, `*_pb2.pyi`, `*_pb2_grpc.py`) are replaced;
`__init__.py` is kept (created if missing). The output depends on the
grpcio-tools version, so regenerate after upgrading it;
tests/unit/test_protos_current.py fails when the committed code is stale.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = Path("mailwatch") / "v1"
DEFAULT_OUT = ROOT / "service"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


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

    # The well-known types (google/protobuf/*.proto) ship inside grpc_tools.
    well_known = resources.files("grpc_tools") / "_proto"
    files = [str(path.relative_to(proto_root)) for path in proto_files(proto_root)]
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    return sorted(p for p in package_dir.iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="root of the output tree; code goes to OUT/mailwatch/v1/ (default: service/)",
    )
    args = parser.parse_args(argv)
    for path in generate(args.out.resolve()):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
