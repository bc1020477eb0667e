// Regenerates the TypeScript protobuf/gRPC code from the repository's protos/
// with ts-proto (a protoc plugin) and the protoc that ships in grpcio-tools,
// the same compiler that produces the Python code (scripts/gen_protos.py).
//
//   npm run generate              writes src/gen/
//   node scripts/generate.mjs DIR writes DIR/ (the currency test compares it)
//
// Python: $MAILWATCH_PYTHON, else the repository's .venv (README's install).
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const repoRoot = resolve(packageDir, "..", "..");

/** The ts-proto options every generation uses; changing them changes the committed code. */
export const TS_PROTO_OPTIONS = [
  "outputServices=grpc-js", // @grpc/grpc-js client constructors
  "env=node", // bytes are Buffers
  "esModuleInterop=true",
  "importSuffix=.js", // ES modules under Node's resolution
  "useDate=true", // google.protobuf.Timestamp as Date
];

/** The protos compiled: the API and the google.rpc error details it sends in its statuses. */
export const PROTOS = ["mailwatch/v1/mailbox_service.proto", "google/rpc/error_details.proto"];

export function pythonPath() {
  return process.env.MAILWATCH_PYTHON || join(repoRoot, ".venv", "bin", "python");
}

export function generate(outDir) {
  const python = pythonPath();
  if (!existsSync(python)) {
    throw new Error(`no Python at ${python}: create the repository's .venv (README) or set MAILWATCH_PYTHON`);
  }
  // google/rpc/*.proto ship inside googleapis-common-protos; protoc's well-known
  // types are added by `python -m grpc_tools.protoc` itself.
  const googleapis = execFileSync(python, [
    "-c",
    "import pathlib, google.rpc.status_pb2 as s; print(pathlib.Path(s.__file__).resolve().parents[2])",
  ]).toString().trim();
  const plugin = join(packageDir, "node_modules", ".bin", "protoc-gen-ts_proto");
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  execFileSync(python, [
    "-m", "grpc_tools.protoc",
    `--plugin=protoc-gen-ts_proto=${plugin}`,
    `--ts_proto_out=${outDir}`,
    `--ts_proto_opt=${TS_PROTO_OPTIONS.join(",")}`,
    `-I${join(repoRoot, "protos")}`,
    `-I${googleapis}`,
    ...PROTOS,
  ], { stdio: ["ignore", "inherit", "inherit"] });
  // The header names the protoc that ran; the code does not depend on it (the
  // plugin reads descriptors), so a grpcio-tools upgrade must not make the
  // committed code look stale.
  for (const entry of readdirSync(outDir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile() && entry.name.endsWith(".ts")) {
      const path = join(entry.parentPath ?? entry.path, entry.name);
      writeFileSync(path, readFileSync(path, "utf8").replace(/^\/\/\s+protoc\s+v\S+\n/m, ""));
    }
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const out = resolve(process.argv[2] ?? join(packageDir, "src", "gen"));
  generate(out);
  console.log(`generated into ${out}`);
}
