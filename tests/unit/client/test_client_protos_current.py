"""The client's copy of the generated code is current, and coexists with the service's.

Current means what scripts/gen_protos.py makes with the locked grpcio-tools;
on a machine with another release installed, version stamps alone do not
fail the comparison (how: tests/fixtures/generated_code.py, and the service
copy's test, tests/unit/test_protos_current.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.fixtures.generated_code import explain, stale_files
from tests.fixtures.scripts import load_script

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "clients" / "python" / "src" / "mailwatch_client" / "_proto" / "v1"


def _load_generator():
    return load_script("gen_protos", "gen_protos_for_client")


def test_client_generated_code_is_current(tmp_path):
    gen_protos = _load_generator()
    fresh = {path.name: path.read_bytes() for path in gen_protos.generate_client(tmp_path / "v1")}
    committed = {
        path.name: path.read_bytes() for path in COMMITTED.iterdir() if path.name.endswith(gen_protos.GENERATED_SUFFIXES)
    }
    assert fresh, "no proto files found"
    problems = stale_files(fresh, committed)
    assert not any(problems.values()), explain(problems)


def test_client_code_does_not_import_the_service_package():
    for path in COMMITTED.parent.parent.rglob("*.py*"):
        text = path.read_text()
        assert "from mailwatch." not in text and "import mailwatch\n" not in text, path


_BOTH = """
import sys
order = sys.argv[1]
if order == "service-first":
    from mailwatch.v1 import resources_pb2 as service, mailbox_service_pb2 as service_mailboxes
    from mailwatch_client._proto.v1 import resources_pb2 as client, mailbox_service_pb2 as client_mailboxes
else:
    from mailwatch_client._proto.v1 import resources_pb2 as client, mailbox_service_pb2 as client_mailboxes
    from mailwatch.v1 import resources_pb2 as service, mailbox_service_pb2 as service_mailboxes
import mailwatch_client
assert "mailwatch.v1" in sys.modules
# One descriptor pool, one set of classes: messages pass freely between the two.
assert client.ChangeEvent is service.ChangeEvent
assert client_mailboxes.StreamChangesRequest is service_mailboxes.StreamChangesRequest
event = client.ChangeEvent(id="x", type=client.EVENT_TYPE_MESSAGE_ADDED)
assert service.ChangeEvent.FromString(event.SerializeToString()) == event
print("ok")
"""


def test_service_and_client_stubs_load_in_one_process_in_either_order():
    for order in ("service-first", "client-first"):
        result = subprocess.run([sys.executable, "-c", _BOTH, order], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stdout.strip() == "ok", (order, result.stderr)


def test_client_package_alone_does_not_import_the_service():
    code = "import sys, mailwatch_client; assert not any(m == 'mailwatch' or m.startswith('mailwatch.') for m in sys.modules), sorted(m for m in sys.modules if m.startswith('mailwatch'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
