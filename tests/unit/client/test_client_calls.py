"""Both client twins are built from one table of calls (`mailwatch_client._calls.CALLS`)."""

from __future__ import annotations

import inspect

from mailwatch_client import AsyncMailwatchClient, MailwatchClient
from mailwatch_client._calls import CALLS
from mailwatch_client._proto.v1 import admin_service_pb2_grpc, mailbox_service_pb2_grpc


def _rpcs(servicer) -> set[str]:
    return {name for name, _ in inspect.getmembers(servicer, inspect.isfunction)}


def test_every_call_names_an_rpc_of_its_service_once():
    rpcs = {
        "mailboxes": _rpcs(mailbox_service_pb2_grpc.MailboxServiceServicer),
        "admin": _rpcs(admin_service_pb2_grpc.AdminServiceServicer),
    }
    declared = [(call.service, call.rpc) for call in CALLS]
    assert len(declared) == len(set(declared))
    assert all(rpc in rpcs[service] for service, rpc in declared)
    assert len({call.name for call in CALLS}) == len(CALLS)


def test_each_call_is_the_same_method_on_both_twins():
    for call in CALLS:
        names = [call.name] + ([f"iter_{call.pages}"] if call.pages else []) + (
            [f"{call.name}_stream"] if call.chunks else [])
        for name in names:
            sync, aio = getattr(MailwatchClient, name), getattr(AsyncMailwatchClient, name)
            sync_signature, async_signature = inspect.signature(sync), inspect.signature(aio)
            assert sync_signature.parameters == async_signature.parameters, name
            assert list(sync_signature.parameters)[-3:] == ["timeout", "metadata", "retry"], name
            assert sync.__doc__ and sync.__doc__ == aio.__doc__, name
        assert not inspect.iscoroutinefunction(getattr(MailwatchClient, call.name))
        assert inspect.iscoroutinefunction(getattr(AsyncMailwatchClient, call.name))
        if call.pages:
            assert inspect.isgeneratorfunction(getattr(MailwatchClient, f"iter_{call.pages}"))
            assert inspect.isasyncgenfunction(getattr(AsyncMailwatchClient, f"iter_{call.pages}"))
        if call.chunks:
            assert inspect.isgeneratorfunction(getattr(MailwatchClient, f"{call.name}_stream"))
            assert inspect.isasyncgenfunction(getattr(AsyncMailwatchClient, f"{call.name}_stream"))


def test_a_method_refuses_arguments_its_call_does_not_take():
    client = MailwatchClient("127.0.0.1:1", "key")
    try:
        try:
            client.get_mailbox("mb-1", page_size=3)
        except TypeError as exc:
            assert "page_size" in str(exc)
        else:
            raise AssertionError("an unknown argument was accepted")
    finally:
        client.close()
