// Every MailboxService RPC has a client method: a new RPC in the proto (after
// `npm run generate`) fails here until the client covers it.
import assert from "node:assert/strict";
import { it } from "node:test";

import { MailwatchClient } from "../src/index.js";
import { MailboxServiceService } from "../src/gen/mailwatch/v1/mailbox_service.js";

// RPCs whose client method has another name than the RPC's.
const RENAMED: Record<string, string> = { batchRegisterMailboxes: "registerMailboxes" };

it("has a method for every MailboxService RPC", () => {
  const methods = Object.getOwnPropertyNames(MailwatchClient.prototype);
  const missing = Object.keys(MailboxServiceService).filter((rpc) => !methods.includes(RENAMED[rpc] ?? rpc));
  assert.deepEqual(missing, []);
  assert.ok(Object.keys(MailboxServiceService).length >= 9);
});
