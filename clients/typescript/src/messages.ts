/** GetMessage's and GetAttachment's streamed answers: the message (or size) first, then the bytes as a stream. */
import { Readable } from "node:stream";

import type { ClientReadableStream } from "@grpc/grpc-js";

import { toRpcError } from "./errors.js";
import type {
  GetAttachmentResponse,
  GetMessageResponse,
  Message,
  PartChunk,
} from "./gen/mailwatch/v1/mailbox_service.js";

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
 * The call's first response, and the rest as an iterator. Errors before the
 * first response reject (so the caller may retry the call); later ones fail
 * the iteration with a typed error. Leaving the iteration early cancels the call.
 */
async function firstThenRest<R>(
  call: ClientReadableStream<R>,
): Promise<{ first: R | undefined; rest: () => AsyncGenerator<R> }> {
  const responses = call[Symbol.asyncIterator]();
  let first: IteratorResult<R>;
  try {
    first = await responses.next();
  } catch (failure) {
    throw toRpcError(failure);
  }
  async function* rest(): AsyncGenerator<R> {
    let finished = false;
    try {
      for (;;) {
        let next: IteratorResult<R>;
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
  return { first: first.done ? undefined : first.value, rest };
}

/**
 * Waits for the call's first response (the message) and hands the rest out
 * as a stream (see `firstThenRest`).
 */
export async function fetchMessage(
  call: ClientReadableStream<GetMessageResponse>,
  format: MessageFormatName,
): Promise<FetchedMessage> {
  const { first, rest } = await firstThenRest(call);
  if (first?.message === undefined) {
    call.cancel();
    throw new TypeError("GetMessage answered without a message");
  }
  const message = first.message;
  if (format === "metadata") {
    for await (const _ of rest()) {
      // nothing else is sent for metadata; read to the call's end
    }
    return { message };
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

/**
 * An attachment read with `getAttachment`: its size, and its bytes as a stream
 * that comes off the call as it is read (`readAll(data)` for one Buffer).
 */
export interface FetchedAttachment {
  /** The attachment's size in bytes. */
  size: number;
  /** The attachment's bytes. */
  data: Readable;
}

/** Waits for the call's first response (the size) and hands the bytes out as a stream. */
export async function fetchAttachment(call: ClientReadableStream<GetAttachmentResponse>): Promise<FetchedAttachment> {
  const { first, rest } = await firstThenRest(call);
  if (first?.size === undefined) {
    call.cancel();
    throw new TypeError("GetAttachment answered without a size");
  }
  async function* bytes(): AsyncGenerator<Buffer> {
    for await (const response of rest()) {
      if (response.data !== undefined) {
        yield response.data;
      }
    }
  }
  return { size: Number(first.size), data: Readable.from(bytes(), { objectMode: false }) };
}
