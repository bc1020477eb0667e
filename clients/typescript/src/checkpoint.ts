/** Where a change stream remembers its cursor between runs. */
import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/**
 * Persists a stream's cursor. `load` gives undefined when nothing was saved
 * yet. A change stream calls them from the task that iterates it, never
 * concurrently.
 */
export interface CheckpointStore {
  load(): Promise<Buffer | undefined> | Buffer | undefined;
  save(cursor: Buffer): Promise<void> | void;
}

/** A printable, copy-pasteable form of an opaque cursor (logs, files, command lines); the Python client's too. */
export function cursorToString(cursor: Uint8Array): string {
  return Buffer.from(cursor).toString("base64url");
}

/** The cursor `cursorToString` printed. Throws on anything else. */
export function cursorFromString(text: string): Buffer {
  const trimmed = text.trim();
  if (!/^[A-Za-z0-9_-]+={0,2}$/.test(trimmed)) {
    throw new TypeError(`not a mailwatch cursor: ${JSON.stringify(text)}`);
  }
  return Buffer.from(trimmed, "base64url");
}

/** Keeps the cursor in memory (tests; sharing a position between streams). */
export class MemoryCheckpointStore implements CheckpointStore {
  constructor(public cursor?: Buffer) {}

  load(): Buffer | undefined {
    return this.cursor;
  }

  save(cursor: Buffer): void {
    this.cursor = cursor;
  }
}

/**
 * Keeps the cursor in a small text file (the same format as the Python
 * client's FileCheckpointStore), replaced atomically: each save writes a
 * temporary file next to the target, flushes it to disk and renames it over
 * the target, so a crash leaves the old or the new cursor, never a torn one.
 * `fsync: false` skips the flushes (faster; a power loss may then lose the
 * latest saves, not the file).
 */
export class FileCheckpointStore implements CheckpointStore {
  readonly fsync: boolean;

  constructor(
    readonly path: string,
    options: { fsync?: boolean } = {},
  ) {
    this.fsync = options.fsync ?? true;
  }

  async load(): Promise<Buffer | undefined> {
    let text: string;
    try {
      text = await readFile(this.path, "ascii");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") {
        return undefined;
      }
      throw error;
    }
    return text.trim() ? cursorFromString(text) : undefined;
  }

  async save(cursor: Buffer): Promise<void> {
    const directory = dirname(this.path);
    await mkdir(directory, { recursive: true });
    const temporary = join(directory, `.${basename(this.path)}.${randomBytes(6).toString("hex")}.tmp`);
    try {
      const file = await open(temporary, "w");
      try {
        await file.writeFile(`${cursorToString(cursor)}\n`, "ascii");
        if (this.fsync) {
          await file.sync();
        }
      } finally {
        await file.close();
      }
      await rename(temporary, this.path);
    } catch (error) {
      await rm(temporary, { force: true });
      throw error;
    }
    if (this.fsync) {
      await syncDirectory(directory);
    }
  }
}

// Makes the rename itself durable; not possible on every platform (Windows).
async function syncDirectory(directory: string): Promise<void> {
  let handle;
  try {
    handle = await open(directory, "r");
    await handle.sync();
  } catch {
    // best effort
  } finally {
    await handle?.close();
  }
}
