/** GetMessage's streamed answer: the message first, then its bytes as a stream. */
import { Readable } from "node:stream";

import type { ClientReadableStream } from "@grpc/grpc-js";

import { toRpcError } from "./errors.js";
import type { GetMessageResponse, Message, PartChunk } from "./gen/mailwatch/v1/mailbox_service.js";

export type MessageFormatName = "metadata" | "full" | "raw";

/**
 * A message read with `getMessage`. The bytes are not buffered: they come off
 * the call as the consumer reads them (a message can be larger than memory
 * wants). Read `raw` or `parts` to the end (or destroy `raw` / leave the
 * `for await` loop) to release the call.
 */
export interface FetchedMessage {
  /** The message, without body bytes (headers, labels, size, and for "full" the MIME tree). */
  message: Message;
  /** Format "raw": the RFC 822 source, a byte stream of `message.rawSize` bytes. */
  raw?: Readable;
  /** Format "full": each part's decoded body as chunks, in payload order. */
  parts?: AsyncIterable<PartChunk>;
}

/** Everything a byte stream still holds, in one Buffer (e.g. a `FetchedMessage.raw`). */
export async function readAll(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) {
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks);
}

/**
 * Waits for the call's first response (the message) and hands the rest out
 * as a stream. Errors before the message reject (so the caller may retry the
 * call); later ones fail the stream with a typed error.
 */
export async function fetchMessage(
  call: ClientReadableStream<GetMessageResponse>,
  format: MessageFormatName,
): Promise<FetchedMessage> {
  const responses = call[Symbol.asyncIterator]();
  let first: IteratorResult<GetMessageResponse>;
  try {
    first = await responses.next();
  } catch (failure) {
    throw toRpcError(failure);
  }
  if (first.done || first.value.message === undefined) {
    call.cancel();
    throw new TypeError("GetMessage answered without a message");
  }
  const message = first.value.message;
  if (format === "metadata") {
    try {
      while (!(await responses.next()).done) {
        // nothing else is sent for metadata; read to the call's end
      }
    } catch (failure) {
      throw toRpcError(failure);
    }
    return { message };
  }

  async function* rest(): AsyncGenerator<GetMessageResponse> {
    let finished = false;
    try {
      for (;;) {
        let next: IteratorResult<GetMessageResponse>;
        try {
          next = await responses.next();
        } catch (failure) {
          throw toRpcError(failure);
        }
        if (next.done) {
          finished = true;
          return;
        }
        yield next.value;
      }
    } finally {
      if (!finished) {
        call.cancel(); // the consumer stopped early
      }
    }
  }

  if (format === "raw") {
    async function* bytes(): AsyncGenerator<Buffer> {
      for await (const response of rest()) {
        if (response.rawChunk !== undefined) {
          yield response.rawChunk;
        }
      }
    }
    return { message, raw: Readable.from(bytes(), { objectMode: false }) };
  }
  async function* parts(): AsyncGenerator<PartChunk> {
    for await (const response of rest()) {
      if (response.partChunk !== undefined) {
        yield response.partChunk;
      }
    }
  }
  return { message, parts: parts() };
}
