"""Reading GetAttachment's responses: chunk by chunk (get_attachment_stream) or whole (get_attachment),
both checked against the announced size."""

import pytest

from mailwatch_client import _common as common
from mailwatch_client._proto.v1 import mailbox_service_pb2 as pb

REQUEST = pb.GetAttachmentRequest(mailbox_id="m", message_id="1", attachment_id="a")


def test_chunks_are_handed_over_one_by_one_and_the_size_is_checked():
    reader = common.AttachmentChunks(REQUEST)
    pieces = [reader.add(r) for r in (pb.GetAttachmentResponse(size=5), pb.GetAttachmentResponse(data=b"abc"),
                                      pb.GetAttachmentResponse(data=b"de"))]
    assert pieces == [b"", b"abc", b"de"]
    reader.result()
    assert not hasattr(reader, "_data"), "the chunk reader keeps no copy"


@pytest.mark.parametrize("responses", [
    [pb.GetAttachmentResponse(size=5), pb.GetAttachmentResponse(data=b"abc")],
    [pb.GetAttachmentResponse(size=2), pb.GetAttachmentResponse(data=b"abc")],
    [pb.GetAttachmentResponse(data=b"abc")],
])
def test_a_short_long_or_unannounced_answer_is_refused(responses):
    for reader in (common.AttachmentChunks(REQUEST), common.AttachmentAssembler(REQUEST)):
        for response in responses:
            reader.add(response)
        with pytest.raises(ValueError, match="announced"):
            reader.result()


def test_the_assembler_returns_the_whole():
    reader = common.AttachmentAssembler(REQUEST)
    for response in (pb.GetAttachmentResponse(size=3), pb.GetAttachmentResponse(data=b"ab"),
                     pb.GetAttachmentResponse(data=b"c")):
        reader.add(response)
    assert reader.result() == b"abc"
