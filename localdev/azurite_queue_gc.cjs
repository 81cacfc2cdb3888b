// Preloaded into Azurite (NODE_OPTIONS=--require) by localdev/azurite.py when a queue
// garbage-collection interval is asked for; the benchmarks use it.
//
// Why: Azurite's queue GC wakes every 60 s and lists every stored message page by page with
// an unindexed LokiJS query, so one pass costs O(messages^2) and blocks the whole emulator
// (measured: 3.7 s at 70,000 messages, about 15 s at 130,000, 35 s at 185,000). A run that
// takes longer meets more and costlier passes, which would make a throughput comparison
// between two runs of different length measure Azurite, not them. Real queues have no such
// pause. The GC only reclaims deleted messages' memory, so a longer interval changes nothing
// else. Azurite has no flag for it; its constructor reads this constant when it is called,
// so setting it before the server starts is enough.
"use strict";
const fs = require("fs");
const path = require("path");

const ms = Number(process.env.ROWSMITH_AZURITE_QUEUE_GC_MS);
if (!Number.isFinite(ms) || ms <= 0) {
  throw new Error(`ROWSMITH_AZURITE_QUEUE_GC_MS must be a positive number of ms, not ${process.env.ROWSMITH_AZURITE_QUEUE_GC_MS}`);
}
// process.argv[1] is Azurite's launcher (node_modules/.bin/azurite, a link to dist/src/azurite.js).
const main = fs.realpathSync(process.argv[1]);
const constantsPath = path.join(path.dirname(main), "queue", "utils", "constants.js");
const constants = require(constantsPath); // throws if an Azurite upgrade moved it: fail loudly, never silently
if (typeof constants.DEFAULT_GC_INTERVAL_MS !== "number") {
  throw new Error(`${constantsPath} has no DEFAULT_GC_INTERVAL_MS: update localdev/azurite_queue_gc.cjs`);
}
constants.DEFAULT_GC_INTERVAL_MS = ms;
console.log(`rowsmith: Azurite queue GC interval set to ${ms} ms`);
