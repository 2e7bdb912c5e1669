#!/usr/bin/env python3
"""A queue worker for webhook-bridge events (pika, RabbitMQ).

- declares its own durable quorum queue and binds only the routing keys it handles;
- takes at most PREFETCH unacknowledged messages at a time;
- processes each event once by its AMQP message_id (the CloudEvent id): the bridge delivers at
  least once, so a provider retry or a spool replay arrives again with the same id;
- acknowledges only after the work is durable;
- a message whose processing keeps failing is returned to the queue, and after DELIVERY_LIMIT
  returns the quorum queue dead-letters it to QUEUE.dead instead of redelivering it forever.

The work here is a stand-in for yours: it appends one JSON line per event to STORE, which is also
the record of the message_ids already processed. Configuration (environment):

  AMQP_URL        amqp://guest:guest@localhost:5672/%2f
  EXCHANGE        webhooks (the bridge's [amqp] exchange; the bridge declares it)
  QUEUE           order-status-worker
  BINDINGS        *.order.status_changed,*.shipment.status_changed
  PREFETCH        20
  DELIVERY_LIMIT  5
  STORE           processed.jsonl
"""

import json
import os
import signal
import sys
import time

import pika
import pika.exceptions

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/%2f")
EXCHANGE = os.environ.get("EXCHANGE", "webhooks")
QUEUE = os.environ.get("QUEUE", "order-status-worker")
BINDINGS = [
    b.strip()
    for b in os.environ.get("BINDINGS", "*.order.status_changed,*.shipment.status_changed").split(",")
    if b.strip()
]
PREFETCH = int(os.environ.get("PREFETCH", "20"))
DELIVERY_LIMIT = int(os.environ.get("DELIVERY_LIMIT", "5"))
STORE = os.environ.get("STORE", "processed.jsonl")


def log(*parts):
    print(*parts, flush=True)


class Store:
    """The work's durable effect, and the set of message_ids already processed."""

    def __init__(self, path):
        self.path = path
        self.done = set()
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        self.done.add(json.loads(line)["message_id"])
        self.file = open(path, "a", encoding="utf-8")

    def record(self, message_id, row):
        self.file.write(json.dumps({"message_id": message_id, **row}) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())
        self.done.add(message_id)


def handle(event):
    """Your business logic. Raising an exception means "try again later"."""
    data = event["data"]
    return {
        "routing_key": event["type"],
        "entity_id": data["entity_id"],
        "status": data["status"],
        "provider_status": data["provider_status"],
        "occurred_at": data["occurred_at"],
    }


def declare(channel):
    # The bridge owns the exchange: only check that it exists.
    channel.exchange_declare(EXCHANGE, passive=True)
    dlx, dead = f"{QUEUE}.dlx", f"{QUEUE}.dead"
    channel.exchange_declare(dlx, exchange_type="fanout", durable=True)
    channel.queue_declare(dead, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(dead, dlx)
    channel.queue_declare(
        QUEUE,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": dlx,
            # Dead-letter without losing the message if the broker fails mid-way.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )
    for key in BINDINGS:
        channel.queue_bind(QUEUE, EXCHANGE, routing_key=key)
    channel.basic_qos(prefetch_count=PREFETCH)


def connect():
    """Connect and declare, retrying while the broker (or the bridge's exchange) is not there."""
    for attempt in range(60):
        try:
            connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
            channel = connection.channel()
            declare(channel)
            return connection, channel
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.ChannelClosedByBroker) as e:
            log(f"not ready ({e!r}); retrying")
            time.sleep(min(1 + attempt, 5))
    sys.exit("broker or exchange not available")


def main():
    store = Store(STORE)
    stopping = False

    def stop(_signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    connection, channel = connect()
    log(f"ready queue={QUEUE} bindings={','.join(BINDINGS)}")
    # inactivity_timeout wakes the loop every second to notice a stop request.
    for method, properties, body in channel.consume(QUEUE, inactivity_timeout=1):
        if stopping:
            break
        if method is None:
            continue
        message_id = properties.message_id
        attempt = 1 + int((properties.headers or {}).get("x-delivery-count", 0))
        if message_id and message_id in store.done:
            log(f"duplicate {message_id}")
            channel.basic_ack(method.delivery_tag)
            continue
        try:
            if not message_id:
                raise ValueError("no message_id")
            row = handle(json.loads(body))
            store.record(message_id, row)
        except Exception as e:  # noqa: BLE001 - any failure is retried, then dead-lettered
            log(f"failed {message_id} attempt {attempt}/{DELIVERY_LIMIT + 1}: {e!r}")
            channel.basic_nack(method.delivery_tag, requeue=True)
            continue
        channel.basic_ack(method.delivery_tag)
        log(f"processed {message_id} {method.routing_key}")
    # Messages prefetched but not processed go back to the queue for the next worker.
    channel.cancel()
    connection.close()
    log("stopped")


if __name__ == "__main__":
    main()
