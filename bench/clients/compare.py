#!/usr/bin/env python3
"""Two bridge binaries under the same second client (node-load.mjs), alternating rounds.

    python3 bench/clients/compare.py BIN_A BIN_B [--rounds 2] [--seconds 20] [--concurrency 64]
        [--amqp-url URL --broker-port PORT] [--amqp-extra TOML] [--amqp-extra-a TOML] [--amqp-extra-b TOML]

Each round starts one binary on its own exchange (the local broker, 127.0.0.1:5672), binds a
quorum queue to it, runs the Node client against its WeGoCOD endpoint, and reads the bridge's
CPU time from /proc before and after: CPU µs per request is the bridge's own cost, whoever sends.
Every 2xx must be in the queue (checked), then the queue and exchange are deleted and the bridge
stopped by its pid. Needs node and pika (examples/consumers/python/requirements.txt).

`--amqp-url` points both bridges elsewhere (e.g. an `amqps://` listener of scripts/cluster), with
`--broker-port` the plain AMQP port pika checks the queue on (the same node); `--amqp-extra`
adds `[amqp]` lines to both configs (TLS files), `--amqp-extra-a`/`-b` to one (e.g.
`publish_client = "lapin"`), so one binary can be compared with itself under two settings.
"""
import argparse, json, os, signal, subprocess, sys, tempfile, time, urllib.request

import pika

HERE = os.path.dirname(os.path.abspath(__file__))
SECRET = "bench-node-wegocod-secret"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def vm_hwm_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(pid, port, ch, queue, args):
    """node-load.mjs against the server `pid` listening on `port`: the client's JSON line plus the
    server's CPU µs per request and VmHWM, the 2xx count, and what `queue` holds (given up to 10 s
    to catch up). Shared with peer.py, which measures a Node peer the same way."""
    before = cpu_seconds(pid)
    out = subprocess.run(
        ["node", os.path.join(HERE, "node-load.mjs"),
         f"http://127.0.0.1:{port}/webhooks/wegocod", SECRET,
         str(args.concurrency), str(args.seconds)],
        check=True, capture_output=True, text=True).stdout
    cpu = cpu_seconds(pid) - before
    result = json.loads(out)
    ok = sum(n for s, n in result["statuses"].items() if s.startswith("2"))
    deadline = time.time() + 10
    while True:
        in_queue = ch.queue_declare(queue, passive=True).method.message_count
        if in_queue >= ok or time.time() > deadline:
            break
        time.sleep(0.2)
    result.update(cpu_us_per_request=round(cpu * 1e6 / max(1, result["requests"]), 1),
                  vm_hwm_mib=round(vm_hwm_mib(pid), 1), in_queue=in_queue, ok=ok)
    return result


def round_(binary, tag, args, prefix="cmp", port=18580, admin_port=18590, extra=""):
    exchange = f"{prefix}-{os.getpid()}-{tag}"
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "bridge.toml")
        with open(config, "w") as f:
            f.write(f"""listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
[amqp]
urls = ["{getattr(args, "amqp_url", None) or "amqp://guest:guest@127.0.0.1:5672/%2f"}"]
exchange = "{exchange}"
{getattr(args, "amqp_extra", "")}
{extra}
[spool]
dir = "{tmp}/spool"
[[endpoint]]
name = "wegocod-ma"
provider = "wegocod"
path = "/webhooks/wegocod"
secret = "{SECRET}"
""")
        log = open(os.path.join(tmp, "log"), "w")
        bridge = subprocess.Popen([binary, "serve", "--config", config], stdout=log, stderr=log)
        conn = None
        try:
            for _ in range(100):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    time.sleep(0.1)
            conn = pika.BlockingConnection(
                pika.ConnectionParameters("127.0.0.1", getattr(args, "broker_port", 5672)))
            # Ready may mean "the spool accepts" before the bridge has declared its exchange.
            for _ in range(100):
                ch = conn.channel()
                try:
                    ch.exchange_declare(exchange, passive=True)
                    break
                except pika.exceptions.ChannelClosedByBroker:
                    time.sleep(0.1)
            queue = f"{exchange}.q"
            ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
            ch.queue_bind(queue, exchange, "wegocod.#")
            result = measure(bridge.pid, port, ch, queue, args)
            # Under its earlier name, which the runs in docs/BENCHMARKS.md were read with.
            result["bridge_cpu_us_per_request"] = result.pop("cpu_us_per_request")
            result["binary"] = binary
            return result
        finally:
            # Also after a failure: the test queue and the bridge's own topology (its exchange,
            # and the alternate exchange and queue both named `<exchange>.unrouted`).
            if conn is not None and conn.is_open:
                for delete, name in (("queue_delete", f"{exchange}.q"),
                                     ("queue_delete", f"{exchange}.unrouted"),
                                     ("exchange_delete", exchange),
                                     ("exchange_delete", f"{exchange}.unrouted")):
                    try:
                        getattr(conn.channel(), delete)(name)
                    except pika.exceptions.AMQPError:
                        pass
                conn.close()
            bridge.send_signal(signal.SIGTERM)
            bridge.wait(timeout=30)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--amqp-url")
    p.add_argument("--broker-port", type=int, default=5672)
    p.add_argument("--amqp-extra", default="")
    p.add_argument("--amqp-extra-a", default="")
    p.add_argument("--amqp-extra-b", default="")
    args = p.parse_args()
    failed = False
    for r in range(args.rounds):
        for tag, binary, extra in (("a", args.a, args.amqp_extra_a), ("b", args.b, args.amqp_extra_b)):
            res = round_(binary, f"{tag}{r}", args, extra=extra)
            res["amqp_extra"] = extra
            print(json.dumps(res), flush=True)
            if res["in_queue"] != res["ok"]:
                print(f"queue holds {res['in_queue']} messages for {res['ok']} 2xx answers", file=sys.stderr)
                failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
