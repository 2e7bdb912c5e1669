// A second load generator, independent of bench/'s Rust client: Node's own http client with
// keep-alive sockets, CONCURRENCY senders each sending its next request when the last was
// answered, for SECONDS. Each request is the WeGoCOD sample with its own `order.reference`,
// signed as WeGoCOD signs (lowercase hex HMAC-SHA256 of the body in `X-Webhook-Signature`).
//
//   node bench/clients/node-load.mjs URL SECRET [CONCURRENCY=64] [SECONDS=20]
//
// Prints one JSON line: requests, statuses, rate, p50/p99/max latency (ms).
import http from "node:http";
import crypto from "node:crypto";
import fs from "node:fs";

const [url, secret, concurrency = "64", seconds = "20"] = process.argv.slice(2);
if (!url || !secret) {
  console.error("usage: node-load.mjs URL SECRET [CONCURRENCY] [SECONDS]");
  process.exit(2);
}
const sample = JSON.parse(
  fs.readFileSync(new URL("../../samples/wegocod/delivered.json", import.meta.url)),
);
const agent = new http.Agent({ keepAlive: true, maxSockets: Number(concurrency) });
const target = new URL(url);
const run = crypto.randomBytes(4).toString("hex");
let seq = 0;
const latencies = [];
const statuses = {};
const until = Date.now() + Number(seconds) * 1000;

function send() {
  sample.order.reference = `NODE-${run}-${seq++}`;
  const body = Buffer.from(JSON.stringify(sample));
  const signature = crypto.createHmac("sha256", secret).update(body).digest("hex");
  const started = process.hrtime.bigint();
  return new Promise((resolve) => {
    const req = http.request(
      {
        agent,
        host: target.hostname,
        port: target.port,
        path: target.pathname,
        method: "POST",
        headers: {
          "content-type": "application/json",
          "content-length": body.length,
          "x-webhook-signature": signature,
          "x-webhook-event": sample.event,
          "x-webhook-timestamp": String(Math.floor(Date.now() / 1000)),
        },
      },
      (res) => {
        res.resume();
        res.on("end", () => {
          latencies.push(Number(process.hrtime.bigint() - started) / 1e6);
          statuses[res.statusCode] = (statuses[res.statusCode] || 0) + 1;
          resolve();
        });
      },
    );
    req.on("error", () => {
      statuses.error = (statuses.error || 0) + 1;
      resolve();
    });
    req.end(body);
  });
}

async function sender() {
  while (Date.now() < until) await send();
}

const started = Date.now();
await Promise.all(Array.from({ length: Number(concurrency) }, sender));
const took = (Date.now() - started) / 1000;
latencies.sort((a, b) => a - b);
const at = (q) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * q))];
console.log(
  JSON.stringify({
    requests: latencies.length,
    statuses,
    per_second: Math.round(latencies.length / took),
    p50_ms: +at(0.5).toFixed(2),
    p99_ms: +at(0.99).toFixed(2),
    max_ms: +latencies[latencies.length - 1].toFixed(2),
  }),
);
agent.destroy();
