/** Retry policies and TLS options. */
import { readFileSync } from "node:fs";

/**
 * Exponential backoff with jitter for retrying UNAVAILABLE.
 *
 * Only idempotent calls are retried (Google AIP-194): every read, plus
 * RegisterMailbox, BatchRegisterMailboxes and StopMailbox, which the API
 * documents as idempotent; SendTestEvent never is. A call's `timeoutMs`
 * bounds all its attempts together. When the server says how long to wait
 * (google.rpc.RetryInfo), the wait is at least that.
 *
 * `maxAttempts` counts the first attempt; 0 means no limit (only the timeout,
 * or closing a stream, stops it). Attempt n waits
 * `min(maxBackoffMs, initialBackoffMs * multiplier ** (n - 1))`, scattered by
 * ±`jitter` (a fraction) so many clients do not retry in lockstep.
 */
export interface RetryPolicy {
  initialBackoffMs: number;
  maxBackoffMs: number;
  multiplier: number;
  jitter: number;
  maxAttempts: number;
}

export const DEFAULT_RETRY: Readonly<RetryPolicy> = Object.freeze({
  initialBackoffMs: 100,
  maxBackoffMs: 5000,
  multiplier: 2,
  jitter: 0.2,
  maxAttempts: 6,
});

/** Never retry. */
export const NO_RETRY: Readonly<RetryPolicy> = Object.freeze({ ...DEFAULT_RETRY, maxAttempts: 1 });

/** How a change stream reconnects: patiently and forever (until it is closed). */
export const DEFAULT_STREAM_RETRY: Readonly<RetryPolicy> = Object.freeze({
  initialBackoffMs: 200,
  maxBackoffMs: 10_000,
  multiplier: 2,
  jitter: 0.2,
  maxAttempts: 0,
});

/** A complete, checked policy from `base` with `changes` applied. */
export function retryPolicy(changes: Partial<RetryPolicy> = {}, base: RetryPolicy = DEFAULT_RETRY): RetryPolicy {
  const policy = { ...base, ...changes };
  if (policy.initialBackoffMs < 0 || policy.maxBackoffMs < 0) {
    throw new RangeError("backoffs must not be negative");
  }
  if (policy.multiplier < 1) {
    throw new RangeError("multiplier must be at least 1");
  }
  if (!(policy.jitter >= 0 && policy.jitter <= 1)) {
    throw new RangeError("jitter must be between 0 and 1");
  }
  if (!Number.isInteger(policy.maxAttempts) || policy.maxAttempts < 0) {
    throw new RangeError("maxAttempts must be 0 (unlimited) or a positive integer");
  }
  return policy;
}

/** Milliseconds to wait after `failures` consecutive failed attempts (>= 1). */
export function backoffMs(policy: RetryPolicy, failures: number, random: () => number = Math.random): number {
  const base = Math.min(policy.maxBackoffMs, policy.initialBackoffMs * policy.multiplier ** Math.max(0, failures - 1));
  const spread = base * policy.jitter;
  return Math.max(0, base + (random() * 2 - 1) * spread);
}

/** Whether another attempt may follow `attempts` attempts made so far. */
export function allowsAnotherAttempt(policy: RetryPolicy, attempts: number): boolean {
  return policy.maxAttempts === 0 || attempts < policy.maxAttempts;
}

/**
 * TLS for the channel. Every field is optional: `{}` (or `tls: true`) trusts
 * the system roots. `clientCert` with `clientKey` (PEM) enable mutual TLS;
 * `serverName` is the name checked against the server's certificate (when
 * connecting by IP address, or through a proxy).
 */
export interface TlsOptions {
  rootCerts?: Buffer;
  clientCert?: Buffer;
  clientKey?: Buffer;
  serverName?: string;
}

/** TLS options from PEM files, read once, now. */
export function tlsFromFiles(files: { caFile?: string; certFile?: string; keyFile?: string; serverName?: string }): TlsOptions {
  const read = (path: string | undefined) => (path ? readFileSync(path) : undefined);
  return {
    rootCerts: read(files.caFile),
    clientCert: read(files.certFile),
    clientKey: read(files.keyFile),
    serverName: files.serverName,
  };
}

/** HTTP/2 keepalive pings, to notice a dead connection while a call is open (off by default). */
export interface KeepaliveOptions {
  intervalMs: number;
  timeoutMs: number;
}
