#!/usr/bin/env python3
"""The bridge against a hand-written peer (node-peer.mjs: express + amqplib, one ConfirmChannel),
both under the same client (node-load.mjs), alternating on the same machine.

    python3 bench/clients/peer.py BRIDGE_BIN [--rounds 3] [--seconds 20] [--concurrency 64]

Each round runs the bridge, then the peer, each on its own exchange with its own quorum queue
bound to it, measured as compare.py measures a bridge (its round_ and measure are reused): the
client's rate and latency, the server's CPU µs per request from /proc and its VmHWM, and every
2xx counted in the queue. Prints a row per run and the medians per server; exit 1 when a queue
holds fewer messages than 2xx answers. Ports 18680-18682; exchanges and queues are named
`peer-<pid>-…` and deleted after each run, failed or not. Needs `npm install` in bench/clients,
node and pika.
"""
import argparse, os, signal, socket, statistics, subprocess, sys, tempfile, time

import pika

from compare import HERE, SECRET, measure, round_

BRIDGE_PORT, BRIDGE_ADMIN_PORT, PEER_PORT = 18680, 18681, 18682
COLUMNS = (("per_second", "req/s", "{:,.0f}"), ("p50_ms", "p50 ms", "{:.2f}"),
           ("p99_ms", "p99 ms", "{:.2f}"), ("max_ms", "max ms", "{:.2f}"),
           ("cpu_us_per_request", "CPU µs/req", "{:.1f}"), ("vm_hwm_mib", "VmHWM MiB", "{:.1f}"))


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def delete_topology(queue, exchange):
    # A connection of its own, so that cleaning up works whatever state the round failed in.
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")) as conn:
        for delete, name in (("queue_delete", queue), ("exchange_delete", exchange)):
            try:
                getattr(conn.channel(), delete)(name)
            except pika.exceptions.AMQPError:
                pass


def peer_round(tag, args):
    exchange = f"peer-{os.getpid()}-{tag}"
    queue = f"{exchange}.q"
    # Otherwise a leftover process on the port would answer, and be measured, instead.
    if port_open(PEER_PORT):
        raise SystemExit(f"port {PEER_PORT} is already in use")
    with tempfile.TemporaryFile("w+") as log:
        peer = subprocess.Popen(["node", os.path.join(HERE, "node-peer.mjs"), str(PEER_PORT), exchange],
                                env=dict(os.environ, WEGOCOD_SECRET=SECRET), stdout=log, stderr=log)
        try:
            # The peer listens only once its exchange is declared: an open port means ready.
            deadline = time.time() + 15
            while not port_open(PEER_PORT):
                if peer.poll() is not None or time.time() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"node-peer did not start:\n{log.read()}")
                time.sleep(0.1)
            with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")) as conn:
                ch = conn.channel()
                ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
                ch.queue_bind(queue, exchange, "#")
                return measure(peer.pid, PEER_PORT, ch, queue, args)
        finally:
            peer.send_signal(signal.SIGTERM)
            try:
                peer.wait(timeout=10)
            except subprocess.TimeoutExpired:
                peer.kill()
                peer.wait()
            delete_topology(queue, exchange)


def bridge_round(tag, args):
    if port_open(BRIDGE_PORT) or port_open(BRIDGE_ADMIN_PORT):
        raise SystemExit(f"port {BRIDGE_PORT} or {BRIDGE_ADMIN_PORT} is already in use")
    # compare.round_ starts, measures and stops the bridge and deletes its topology itself.
    result = round_(args.bridge, tag, args, prefix="peer", port=BRIDGE_PORT, admin_port=BRIDGE_ADMIN_PORT)
    result["cpu_us_per_request"] = result.pop("bridge_cpu_us_per_request")
    return result


def row(label, server, result):
    cells = [fmt.format(result[key]) for key, _, fmt in COLUMNS]
    other = {s: n for s, n in result.get("statuses", {}).items() if s != "200"}
    tail = f"{result['ok']}/{result['in_queue']}" if "ok" in result else ""
    if other:
        tail += f"  other answers: {other}"
    print(f"{label:<7}{server:<8}" + "".join(f"{c:>12}" for c in cells) + f"  {tail}", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("bridge")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=64)
    args = p.parse_args()
    print(f"c={args.concurrency}, {args.seconds} s per run, {args.rounds} round(s), bridge {args.bridge}")
    print(f"{'round':<7}{'server':<8}" + "".join(f"{h:>12}" for _, h, _ in COLUMNS) + "  2xx/in queue")
    results = {"bridge": [], "peer": []}
    failed = False
    for r in range(args.rounds):
        for server, run in (("bridge", bridge_round), ("peer", peer_round)):
            res = run(f"{server}{r}", args)
            results[server].append(res)
            row(str(r + 1), server, res)
            if res["in_queue"] != res["ok"]:
                print(f"{server}: the queue holds {res['in_queue']} messages for {res['ok']} 2xx answers",
                      file=sys.stderr)
                failed = True
    medians = {server: {key: statistics.median(res[key] for res in runs) for key, _, _ in COLUMNS}
               for server, runs in results.items()}
    for server, med in medians.items():
        row("median", server, med)
    b, n = medians["bridge"], medians["peer"]
    print(f"peer/bridge: req/s {n['per_second'] / b['per_second']:.2f}, p99 {n['p99_ms'] / b['p99_ms']:.2f}, "
          f"CPU µs/req {n['cpu_us_per_request'] / b['cpu_us_per_request']:.2f}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
