import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import {
  cursorFromString,
  cursorToString,
  DEFAULT_RETRY,
  FileCheckpointStore,
  MemoryCheckpointStore,
  retryPolicy,
} from "../src/index.js";
import { allowsAnotherAttempt, backoffMs } from "../src/config.js";

describe("checkpoint stores", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "mailwatch-ts-checkpoint-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("file store: nothing saved, then the last cursor saved, without temporary files left", async () => {
    const store = new FileCheckpointStore(join(dir, "nested", "position"));
    assert.equal(await store.load(), undefined);
    const first = Buffer.from([0, 1, 2, 250, 251, 255]);
    const second = Buffer.from("a later cursor");
    await store.save(first);
    await store.save(second);
    assert.deepEqual(await new FileCheckpointStore(store.path).load(), second);
    assert.deepEqual(await readdir(join(dir, "nested")), ["position"]);
    // The Python client's format: unpadded URL-safe base64 and a newline.
    assert.equal(await readFile(store.path, "ascii"), "YSBsYXRlciBjdXJzb3I\n");
  });

  it("file store: an empty file is no position, a garbled one an error", async () => {
    const path = join(dir, "odd");
    await writeFile(path, "\n");
    assert.equal(await new FileCheckpointStore(path).load(), undefined);
    await writeFile(path, "not a cursor!\n");
    await assert.rejects(new FileCheckpointStore(path).load(), TypeError);
  });

  it("cursor strings round-trip (padding optional, as Python writes none)", () => {
    const cursor = Buffer.from([255, 254, 253, 0]);
    assert.equal(cursorToString(cursor), "__79AA");
    assert.deepEqual(cursorFromString("__79AA=="), cursor);
    assert.deepEqual(cursorFromString(" __79AA\n"), cursor);
  });

  it("memory store keeps what it was given", () => {
    const store = new MemoryCheckpointStore();
    store.save(Buffer.from("x"));
    assert.deepEqual(store.load(), Buffer.from("x"));
  });
});

describe("retry policies", () => {
  it("back off exponentially up to the cap, within the jitter", () => {
    const policy = retryPolicy({ initialBackoffMs: 100, maxBackoffMs: 1000, multiplier: 2, jitter: 0.2 });
    assert.equal(backoffMs(policy, 1, () => 0.5), 100);
    assert.equal(backoffMs(policy, 3, () => 0.5), 400);
    assert.equal(backoffMs(policy, 10, () => 0.5), 1000);
    assert.equal(backoffMs(policy, 1, () => 0), 80);
    assert.equal(backoffMs(policy, 1, () => 1), 120);
  });

  it("count attempts, 0 meaning no limit", () => {
    assert.equal(allowsAnotherAttempt(DEFAULT_RETRY, 5), true);
    assert.equal(allowsAnotherAttempt(DEFAULT_RETRY, 6), false);
    assert.equal(allowsAnotherAttempt(retryPolicy({ maxAttempts: 0 }), 1000), true);
  });

  it("refuse nonsense", () => {
    assert.throws(() => retryPolicy({ multiplier: 0.5 }), RangeError);
    assert.throws(() => retryPolicy({ jitter: 2 }), RangeError);
    assert.throws(() => retryPolicy({ maxAttempts: -1 }), RangeError);
    assert.throws(() => retryPolicy({ initialBackoffMs: -1 }), RangeError);
  });
});
