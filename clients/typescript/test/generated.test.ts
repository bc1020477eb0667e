// The committed generated code (src/gen) is what `npm run generate` makes from
// protos/ today: regenerate into a temporary directory and compare every file.
import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { it } from "node:test";
import { fileURLToPath } from "node:url";

const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

async function files(root: string): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) {
      const path = join(entry.parentPath ?? entry.path, entry.name);
      found.set(relative(root, path), await readFile(path, "utf8"));
    }
  }
  return found;
}

it("the committed TypeScript protobuf code is current (npm run generate)", { timeout: 120_000 }, async () => {
  const { generate } = (await import(join(packageDir, "scripts", "generate.mjs"))) as {
    generate: (out: string) => void;
  };
  const scratch = await mkdtemp(join(tmpdir(), "mailwatch-ts-gen-"));
  try {
    generate(scratch);
    const fresh = await files(scratch);
    const committed = await files(join(packageDir, "src", "gen"));
    assert.deepEqual([...committed.keys()].sort(), [...fresh.keys()].sort(), "generated files differ: npm run generate");
    for (const [path, text] of fresh) {
      assert.ok(committed.get(path) === text, `src/gen/${path} is stale: run npm run generate`);
    }
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
});
