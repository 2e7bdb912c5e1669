// The peer the bridge is compared with: what a team would write by hand for the same job,
// express + amqplib, one connection, one ConfirmChannel, WeGoCOD only. Per request it does the
// bridge's work for a WeGoCOD webhook (docs/contract.md §5), simply: check the HMAC over the raw
// body, parse it, wrap it in a CloudEvent, publish it persistent and mandatory, and answer 200
// only once the broker confirmed. No spool, no dedup, no deadlines, no reconnect: when the broker
// goes, the process exits.
//
//   WEGOCOD_SECRET=... node bench/clients/node-peer.mjs [PORT=8080] [EXCHANGE=webhooks] [AMQP_URL]
//
// PORT, EXCHANGE and AMQP_URL may also come from the environment (PEER_PORT, PEER_EXCHANGE,
// AMQP_URL; the broker defaults to amqp://guest:guest@127.0.0.1:5672); PEER_NODELAY=1 sets
// TCP_NODELAY on the broker connection. It listens only once its exchange (durable topic) is
// declared, so an open port means ready.
import crypto from "node:crypto";
import amqp from "amqplib";
import express from "express";

const port = Number(process.argv[2] ?? process.env.PEER_PORT ?? 8080);
const exchange = process.argv[3] ?? process.env.PEER_EXCHANGE ?? "webhooks";
const amqpUrl = process.argv[4] ?? process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672";
// From the environment, not argv: a secret on the command line is visible in `ps`.
const secret = process.env.WEGOCOD_SECRET;
if (!secret || !Number.isInteger(port)) {
  console.error("usage: WEGOCOD_SECRET=... node-peer.mjs [PORT] [EXCHANGE] [AMQP_URL]");
  process.exit(2);
}

const ENDPOINT = "wegocod-ma";
const SOURCE = `node-peer/wegocod/${ENDPOINT}`;
// WeGoCOD only sends order status changes.
const ROUTING_KEY = "wegocod.order.status_changed";

// amqplib leaves Nagle on (noDelay: false), as a hand-written peer would; the bridge's AMQP client
// (lapin via tcp-stream) turns it off. PEER_NODELAY=1 gives the peer the same socket option.
const connection = await amqp.connect(amqpUrl, { noDelay: process.env.PEER_NODELAY === "1" });
// A peer without reconnect logic must not keep answering 503 forever: die and be restarted.
connection.on("close", () => {
  console.error("node-peer: broker connection closed");
  process.exit(1);
});
const channel = await connection.createConfirmChannel();
await channel.assertExchange(exchange, "topic", { durable: true });

// With `mandatory`, a message no queue takes comes back as basic.return, which RabbitMQ sends
// before that message's ack: remember it so that the ack does not count as delivered.
const returned = new Set();
channel.on("return", (msg) => returned.add(msg.properties.messageId));

// The contract's deterministic id (§5.3): the same WeGoCOD event always gets the same id, so a
// consumer can deduplicate a provider's retry. Random when the body has no order reference.
function eventId(body) {
  const order = body?.order;
  if (typeof order?.reference !== "string") return crypto.randomUUID();
  const key = `${order.reference}:${order.new_status}`;
  const h = crypto.createHash("sha256").update(`wegocod\0${ENDPOINT}\0${key}`).digest("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

// Compares hex strings, not decoded bytes: Buffer.from(x, "hex") silently drops what is not hex.
function signatureOk(body, header) {
  const expected = Buffer.from(crypto.createHmac("sha256", secret).update(body).digest("hex"));
  const given = Buffer.from(header ?? "");
  return given.length === expected.length && crypto.timingSafeEqual(given, expected);
}

const app = express();
// Every content type as raw bytes: the signature is over the bytes as sent.
app.post("/webhooks/wegocod", express.raw({ type: "*/*", limit: "1mb" }), (req, res) => {
  const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
  if (!signatureOk(raw, req.get("x-webhook-signature"))) {
    return res.status(401).json({ error: "unauthorized" });
  }
  let body;
  try {
    body = JSON.parse(raw);
  } catch {
    return res.status(400).json({ error: "body is not valid JSON" });
  }
  const id = eventId(body);
  const now = new Date();
  const event = {
    specversion: "1.0",
    id,
    source: SOURCE,
    type: ROUTING_KEY,
    time: typeof body?.timestamp === "string" ? body.timestamp : now.toISOString(),
    datacontenttype: "application/json",
    data: body,
  };
  const options = {
    persistent: true,
    mandatory: true,
    messageId: id,
    contentType: "application/cloudevents+json",
    type: ROUTING_KEY,
    appId: "node-peer",
    timestamp: Math.floor(now.getTime() / 1000),
    headers: {
      cloudEvents_id: id,
      cloudEvents_type: ROUTING_KEY,
      cloudEvents_source: SOURCE,
      cloudEvents_specversion: "1.0",
    },
  };
  try {
    // The return value (false once the socket's buffer is full) is ignored, as most hand-written
    // publishers do: the confirm callback is what the answer waits for.
    channel.publish(exchange, ROUTING_KEY, Buffer.from(JSON.stringify(event)), options, (err) => {
      const wasReturned = returned.delete(id);
      if (err || wasReturned) res.status(503).json({ error: "temporarily unavailable" });
      else res.json({ accepted: 1 });
    });
  } catch {
    // publish throws when the channel is already closed.
    res.status(503).json({ error: "temporarily unavailable" });
  }
});
// express's default error page is HTML (and shows a stack outside production); answer JSON.
app.use((err, req, res, _next) => {
  const status = err.status ?? 500;
  const error = status === 413 ? "body too large" : status < 500 ? "bad request" : "internal error";
  res.status(status).json({ error });
});

const server = app.listen(port, "127.0.0.1", () => {
  console.error(`node-peer: listening on 127.0.0.1:${port}, exchange ${exchange}`);
});
process.on("SIGTERM", () => {
  server.close();
  // A deliberate close, not a broker failure: no exit(1). Outstanding confirms are waited for.
  connection.removeAllListeners("close");
  channel
    .waitForConfirms()
    .catch(() => {})
    .then(() => connection.close())
    .finally(() => process.exit(0));
});
