// Decoding grpc-status-details-bin into typed errors, with statuses encoded by
// the generated google.rpc types exactly as a server sends them.
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Metadata } from "@grpc/grpc-js";

import {
  CursorExpiredError,
  FailedPreconditionError,
  GrpcStatus,
  InvalidArgumentError,
  InvalidCursorError,
  RateLimitedError,
  RpcError,
  toRpcError,
  UnavailableError,
} from "../src/index.js";
import { BadRequest, ErrorInfo, RequestInfo, RetryInfo } from "../src/gen/google/rpc/error_details.js";
import { Status } from "../src/gen/google/rpc/status.js";
import { retriedAfter } from "../src/errors.js";

function any(typeName: string, value: Uint8Array) {
  return { typeUrl: `type.googleapis.com/${typeName}`, value: Buffer.from(value) };
}

function failure(code: GrpcStatus, message: string, details: ReturnType<typeof any>[], statusCode = code) {
  const metadata = new Metadata();
  metadata.set("grpc-status-details-bin", Buffer.from(Status.encode({ code: statusCode, message, details }).finish()));
  return { code, details: message, metadata };
}

const info = (reason: string, metadata: Record<string, string> = {}) =>
  any("google.rpc.ErrorInfo", ErrorInfo.encode({ reason, domain: "mailwatch.dev", metadata }).finish());

describe("typed errors", () => {
  it("carries the reason, field violations and request id of INVALID_ARGUMENT", () => {
    const error = toRpcError(
      failure(GrpcStatus.INVALID_ARGUMENT, "page_size must not be negative", [
        info("INVALID_ARGUMENT"),
        any(
          "google.rpc.BadRequest",
          BadRequest.encode({ fieldViolations: [{ field: "page_size", description: "negative" }] } as BadRequest).finish(),
        ),
        any("google.rpc.RequestInfo", RequestInfo.encode({ requestId: "req-1", servingData: "" }).finish()),
      ]),
    );
    assert.ok(error instanceof InvalidArgumentError && error instanceof RpcError);
    assert.equal(error.code, GrpcStatus.INVALID_ARGUMENT);
    assert.equal(error.reason, "INVALID_ARGUMENT");
    assert.equal(error.domain, "mailwatch.dev");
    assert.deepEqual(error.fieldViolations, [{ field: "page_size", description: "negative" }]);
    assert.equal(error.requestId, "req-1");
    assert.equal(error.statusMessage, "page_size must not be negative");
    assert.match(error.message, /^INVALID_ARGUMENT: page_size/);
  });

  it("refines by reason: CURSOR_EXPIRED with the earliest cursor, INVALID_CURSOR", () => {
    const expired = toRpcError(
      failure(GrpcStatus.FAILED_PRECONDITION, "cursor expired", [info("CURSOR_EXPIRED", { earliest_cursor: "AbC-9" })]),
    );
    assert.ok(expired instanceof CursorExpiredError && expired instanceof FailedPreconditionError);
    assert.deepEqual((expired as CursorExpiredError).earliestCursor, Buffer.from("AbC-9", "ascii"));
    const other = toRpcError(failure(GrpcStatus.FAILED_PRECONDITION, "no", [info("GMAIL_AUTH_FAILED")]));
    assert.equal(other.constructor, FailedPreconditionError);
    const invalid = toRpcError(failure(GrpcStatus.INVALID_ARGUMENT, "bad", [info("INVALID_CURSOR")]));
    assert.ok(invalid instanceof InvalidCursorError);
  });

  it("reads RetryInfo as milliseconds", () => {
    const error = toRpcError(
      failure(GrpcStatus.RESOURCE_EXHAUSTED, "slow down", [
        info("GMAIL_RATE_LIMITED"),
        any("google.rpc.RetryInfo", RetryInfo.encode({ retryDelay: { seconds: 7, nanos: 250_000_000 } }).finish()),
      ]),
    );
    assert.ok(error instanceof RateLimitedError);
    assert.equal(error.retryDelay, 7250);
  });

  it("retries UNAVAILABLE, and RESOURCE_EXHAUSTED only when RetryInfo says when", () => {
    const limited = toRpcError(
      failure(GrpcStatus.RESOURCE_EXHAUSTED, "slow down", [
        info("RPC_RATE_LIMITED"),
        any("google.rpc.RetryInfo", RetryInfo.encode({ retryDelay: { seconds: 0, nanos: 400_000_000 } }).finish()),
      ]),
    );
    const noHint = toRpcError(failure(GrpcStatus.RESOURCE_EXHAUSTED, "slow down", [info("RPC_RATE_LIMITED")]));
    const gone = toRpcError({ code: GrpcStatus.UNAVAILABLE, details: "connection refused", metadata: new Metadata() });
    const bad = toRpcError(failure(GrpcStatus.INVALID_ARGUMENT, "bad", [info("INVALID_ARGUMENT")]));
    assert.deepEqual([limited, noHint, gone, bad].map(retriedAfter), [true, false, true, false]);
    assert.equal(limited.retryDelay, 400);
  });

  it("ignores details whose status code is not the call's, and calls without details", () => {
    const mismatched = toRpcError(failure(GrpcStatus.UNAVAILABLE, "gone", [info("CURSOR_EXPIRED")], GrpcStatus.NOT_FOUND));
    assert.ok(mismatched instanceof UnavailableError);
    assert.equal(mismatched.reason, undefined);
    const bare = toRpcError({ code: GrpcStatus.UNAVAILABLE, details: "connection refused", metadata: new Metadata() });
    assert.ok(bare instanceof UnavailableError);
    assert.deepEqual([bare.reason, bare.retryDelay, bare.fieldViolations], [undefined, undefined, []]);
  });

  it("lets anything that is not a call's failure through unchanged", () => {
    const bug = new TypeError("a bug");
    assert.throws(() => toRpcError(bug), (thrown) => thrown === bug);
  });
});
