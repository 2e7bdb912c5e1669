#!/usr/bin/env python3
"""The house rules scripts/check-deploy applies to the rendered manifests, the alert rules and
the runbooks. Every check is a function from parsed objects to a list of problems, so that
`self-test` can run it on known-bad fixtures (scripts/testdata/check-deploy/) and show that it
fails on them.

    deploy_policy.py house-rules WORKDIR   # WORKDIR holds the renders check-deploy made
    deploy_policy.py self-test             # every check fails on its bad fixture
"""
import json
import os
import re
import sys
import tomllib

import yaml

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
EXAMPLE = "deploy/kubernetes/example"
STATEFULSET = "deploy/kubernetes/variants/statefulset"
LEGACY = "deploy/kubernetes/variants/legacy-sidecar"
RMQ_CLUSTER = "deploy/kubernetes/variants/rabbitmq-cluster"
RMQ_CLUSTER_CONFIG = "deploy/kubernetes/variants/rabbitmq-cluster/app/webhook-bridge.toml"
COMPONENT_ONLY = "component-only"  # rendered by check-deploy: a bare worker + the components
CONFIG = "deploy/kubernetes/example/config/webhook-bridge.toml"
RULES = "deploy/monitoring/rules.yaml"
RUNBOOKS = "docs/runbooks.md"
DASHBOARD = "deploy/monitoring/grafana-dashboard.json"
FIXTURES = "scripts/testdata/check-deploy"
# The job label the PodMonitor sets and the presence alerts select on.
JOB = "webhook-bridge"
AMQP_PORTS = {5672, 5671}
# Idle process plus a full dedup window; each request in flight adds up to 2 x max_body.
BASE_MEMORY = 40 << 20
DNS_PORT = 53


# ---- helpers ------------------------------------------------------------------------------------

def size_bytes(q):
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(q))
    mult = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
            "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    return int(m.group(1)) * mult[m.group(2)]


def toml_size(s):
    m = re.fullmatch(r"\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*", str(s))
    mult = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30,
            "KB": 10**3, "MB": 10**6, "GB": 10**9}
    return int(m.group(1)) * mult[m.group(2)]


def seconds(s):
    m = re.fullmatch(r"(\d+)(ms|s|m)", s)
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


def port_of(container, name_or_number):
    for p in container.get("ports", []):
        if name_or_number in (p.get("name"), p.get("containerPort")):
            return p["containerPort"]
    return None


def by_kind(docs):
    out = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def workloads(docs):
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")]


def pod_template(wl):
    return wl["spec"]["template"]


def selects(selector, labels):
    """A Service's map selector or a LabelSelector's matchLabels (matchExpressions unsupported:
    none of ours use them)."""
    match = selector.get("matchLabels", selector) if isinstance(selector, dict) else {}
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def load_yaml_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def github_slug(heading):
    """The anchor GitHub gives a Markdown heading."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def headings(markdown):
    return [m.group(1) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", markdown, re.M)]


# ---- checks ---------------------------------------------------------------------------------------

def check_named_init_ports(docs):
    """A Service's named targetPort, or a NetworkPolicy's named port, must not name a port of an
    init container (a native sidecar): before Kubernetes 1.33 the EndpointSlice controller does
    not resolve those (the Service gets no endpoints), and some network plugins do not either.
    Ports of ordinary containers may be named."""
    problems = []
    pods = [(pod_template(w)["metadata"].get("labels", {}), pod_template(w)["spec"], w)
            for w in workloads(docs)]

    def init_port(spec, name):
        for c in spec.get("initContainers", []):
            for p in c.get("ports", []):
                if p.get("name") == name:
                    return c["name"]
        return None

    for svc in [d for d in docs if d["kind"] == "Service"]:
        for p in svc["spec"].get("ports", []):
            target = p.get("targetPort")
            if not isinstance(target, str):
                continue
            for labels, spec, wl in pods:
                if selects(svc["spec"].get("selector", {}), labels):
                    owner = init_port(spec, target)
                    if owner:
                        problems.append(
                            f"Service {svc['metadata']['name']}: targetPort '{target}' names a port of "
                            f"init container {owner} in {wl['kind']} {wl['metadata']['name']}; use "
                            f"the number (not resolved for init containers before Kubernetes 1.33)")
    for np in [d for d in docs if d["kind"] == "NetworkPolicy"]:
        rules = np["spec"].get("ingress", []) + np["spec"].get("egress", [])
        for rule in rules:
            for p in rule.get("ports", []):
                if isinstance(p.get("port"), str):
                    for labels, spec, wl in pods:
                        if selects(np["spec"].get("podSelector", {}), labels) and init_port(spec, p["port"]):
                            problems.append(
                                f"NetworkPolicy {np['metadata']['name']}: port '{p['port']}' names a "
                                f"port of an init container in {wl['kind']} {wl['metadata']['name']}; "
                                f"use the number")
    return problems


def check_one_pdb(docs, labels):
    """Exactly one PodDisruptionBudget selects the pod: none leaves drains unprotected, two make
    the eviction API refuse every eviction of the pod."""
    pdbs = [p["metadata"]["name"] for p in docs
            if p["kind"] == "PodDisruptionBudget" and selects(p["spec"]["selector"], labels)]
    if len(pdbs) == 1:
        return []
    if not pdbs:
        return ["no PodDisruptionBudget selects the pod"]
    return [f"{len(pdbs)} PodDisruptionBudgets select the pod ({', '.join(pdbs)}): the eviction "
            f"API refuses to evict a pod with more than one"]


def check_network_policy(docs, labels, webhook_port, admin_port):
    """Webhook port only from one set of peers (the ingress controller), admin port only from
    another (Prometheus), nothing else in; out only to AMQP and DNS; every port numeric, every
    rule with explicit peers and ports."""
    problems = []
    nps = [n for n in docs if n["kind"] == "NetworkPolicy"
           and selects(n["spec"].get("podSelector", {}), labels)]
    if not nps:
        return ["no NetworkPolicy selects the pod"]
    for np in nps:
        name = np["metadata"]["name"]
        spec = np["spec"]
        if set(spec.get("policyTypes", [])) != {"Ingress", "Egress"}:
            problems.append(f"NetworkPolicy {name}: policyTypes must be Ingress and Egress")
        peers_for = {}
        for i, rule in enumerate(spec.get("ingress", [])):
            if not rule.get("from") or not rule.get("ports"):
                problems.append(f"NetworkPolicy {name}: ingress rule {i} must name its peers and ports")
                continue
            for peer in rule["from"]:
                if not peer.get("podSelector") or "ipBlock" in peer:
                    problems.append(f"NetworkPolicy {name}: ingress rule {i} peers must be selected pods")
            for p in rule["ports"]:
                port = p.get("port")
                if not isinstance(port, int):
                    problems.append(f"NetworkPolicy {name}: ingress port {port!r} must be a number")
                elif port not in (webhook_port, admin_port) or p.get("protocol", "TCP") != "TCP":
                    problems.append(f"NetworkPolicy {name}: ingress port {port} is neither the webhook nor the admin port")
                else:
                    peers_for.setdefault(port, []).append(json.dumps(rule["from"], sort_keys=True))
        for port in (webhook_port, admin_port):
            if port not in peers_for:
                problems.append(f"NetworkPolicy {name}: nothing may reach port {port}")
        if webhook_port in peers_for and admin_port in peers_for and \
                set(peers_for[webhook_port]) & set(peers_for[admin_port]):
            problems.append(f"NetworkPolicy {name}: the same peers reach the webhook and the admin port")
        for i, rule in enumerate(spec.get("egress", [])):
            if not rule.get("to") or not rule.get("ports"):
                problems.append(f"NetworkPolicy {name}: egress rule {i} must name its peers and ports")
                continue
            for p in rule["ports"]:
                port, proto = p.get("port"), p.get("protocol", "TCP")
                if not isinstance(port, int):
                    problems.append(f"NetworkPolicy {name}: egress port {port!r} must be a number")
                elif not ((port in AMQP_PORTS and proto == "TCP") or
                          (port == DNS_PORT and proto in ("UDP", "TCP"))):
                    problems.append(f"NetworkPolicy {name}: egress to {proto}/{port} is neither AMQP nor DNS")
        egress_ports = {(p.get("port"), p.get("protocol", "TCP"))
                        for r in spec.get("egress", []) for p in r.get("ports", [])}
        for need in [(5672, "TCP"), (DNS_PORT, "UDP"), (DNS_PORT, "TCP")]:
            if need not in egress_ports:
                problems.append(f"NetworkPolicy {name}: no egress to {need[1]}/{need[0]}")
    return problems


def check_runbooks(rules_src, runbooks_md):
    """Every alert has a summary, a description and a runbook_url whose anchor is the alert's
    own section of docs/runbooks.md; every alert-named section there belongs to an alert."""
    problems = []
    anchors = {github_slug(h): h for h in headings(runbooks_md)}
    alerts = [r for g in rules_src["groups"] for r in g["rules"] if "alert" in r]
    names = set()
    for rule in alerts:
        name = rule["alert"]
        names.add(name)
        ann = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not str(ann.get(key, "")).strip():
                problems.append(f"alert {name}: no {key} annotation")
        url = ann.get("runbook_url")
        if not url:
            continue
        m = re.fullmatch(r"https://\S+/docs/runbooks\.md#([\w-]+)", url)
        if not m:
            problems.append(f"alert {name}: runbook_url {url} does not point into docs/runbooks.md")
        elif m.group(1) not in anchors:
            problems.append(f"alert {name}: runbook_url anchor #{m.group(1)} is no section of docs/runbooks.md")
        elif m.group(1) != github_slug(name):
            problems.append(f"alert {name}: runbook_url points at #{m.group(1)}, not at its own section #{github_slug(name)}")
    for h in headings(runbooks_md):
        if re.fullmatch(r"WebhookBridge\w+", h) and h not in names:
            problems.append(f"docs/runbooks.md section {h} is for no alert in rules.yaml")
    return problems


def check_variant(variant, docs, cfg, rules_src, dashboard, work):
    """The rendered example overlays: one workload with the bridge as a sidecar, secure, probed on
    numeric ports, with its spool, config, secrets, Service, NetworkPolicy, PDB and monitoring."""
    problems = []
    where = lambda m: problems.append(f"{variant}: {m}")
    webhook_port = int(cfg["listen"].rsplit(":", 1)[1])
    admin_port = int(cfg["admin_listen"].rsplit(":", 1)[1])
    ack = seconds(cfg["ack_deadline"])
    spool_max = toml_size(cfg["spool"]["max_bytes"])
    spool_on = cfg["spool"].get("enabled", True)
    shutdown_drain = seconds(cfg["spool"].get("shutdown_drain", "5s")) if spool_on else 0
    env_refs = set()

    def collect(v):
        if isinstance(v, str) and v.startswith("env:"):
            env_refs.add(v[4:])
        elif isinstance(v, list):
            for x in v:
                collect(x)
        elif isinstance(v, dict):
            for x in v.values():
                collect(x)
    collect(cfg)

    kinds = by_kind(docs)
    wls = kinds.get("Deployment", []) + kinds.get("StatefulSet", [])
    if len(wls) != 1:
        where(f"expected one Deployment or StatefulSet, found {len(wls)}")
        return problems
    wl = wls[0]
    pod = wl["spec"]["template"]["spec"]
    labels = wl["spec"]["template"]["metadata"]["labels"]
    sidecars = [c for c in pod.get("initContainers", []) if c["name"] == "webhook-bridge"]
    plain = [c for c in pod.get("containers", []) if c["name"] == "webhook-bridge"]
    if variant == LEGACY:
        if not plain or sidecars:
            where("the bridge must be an ordinary container here")
    elif not sidecars or sidecars[0].get("restartPolicy") != "Always":
        where("the bridge must be a native sidecar (initContainer, restartPolicy: Always)")
    bridge = (sidecars or plain or [None])[0]
    if bridge is None:
        return problems
    # Security.
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True or psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        where("pod securityContext needs runAsNonRoot: true and seccompProfile RuntimeDefault")
    if pod.get("automountServiceAccountToken") is not False:
        where("the pod must not mount a service-account token")
    for c in pod.get("initContainers", []) + pod["containers"]:
        sc = c.get("securityContext", {})
        for k, v in {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True}.items():
            if sc.get(k) is not v:
                where(f"container {c['name']}: securityContext.{k} must be {v}")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            where(f"container {c['name']}: capabilities must drop ALL")
        res = c.get("resources", {})
        if not res.get("requests") or not res.get("limits", {}).get("memory"):
            where(f"container {c['name']}: needs resource requests and a memory limit")
    problems += [f"{variant}: {p}" for p in check_bridge_container(bridge, webhook_port, admin_port)]
    # Image by digest.
    if not re.search(r"@sha256:[0-9a-f]{64}$", bridge.get("image", "")):
        where(f"bridge image {bridge.get('image')} is not referenced by digest")
    # Config and spool.
    mounts = {m["name"]: m for m in bridge.get("volumeMounts", [])}
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    spool_mount = [m for m in mounts.values() if m["mountPath"] == cfg["spool"]["dir"]]
    if not spool_mount:
        where(f"no volume mounted at spool.dir {cfg['spool']['dir']}")
    else:
        name = spool_mount[0]["name"]
        claims = {t["metadata"]["name"]: t for t in wl["spec"].get("volumeClaimTemplates", [])}
        if name in vols and "emptyDir" in vols[name]:
            limit = vols[name]["emptyDir"].get("sizeLimit")
            if not limit or size_bytes(limit) <= spool_max:
                where(f"spool emptyDir needs a sizeLimit above spool.max_bytes ({spool_max})")
            if vols[name]["emptyDir"].get("medium") == "Memory":
                where("spool emptyDir must not be tmpfs (medium: Memory)")
        elif name in claims and name not in vols:
            if size_bytes(claims[name]["spec"]["resources"]["requests"]["storage"]) <= spool_max:
                where("spool PVC must be larger than spool.max_bytes")
        else:
            where("spool volume must be an emptyDir with sizeLimit or a volumeClaimTemplate (not both)")
    config_mount = [m for m in mounts.values() if m["mountPath"] == "/etc/webhook-bridge"]
    if not config_mount or not config_mount[0].get("readOnly"):
        where("config must be mounted read-only at /etc/webhook-bridge")
    else:
        cm_name = vols.get(config_mount[0]["name"], {}).get("configMap", {}).get("name")
        cms = {c["metadata"]["name"]: c for c in kinds.get("ConfigMap", [])}
        if cm_name not in cms or "webhook-bridge.toml" not in cms[cm_name].get("data", {}):
            where(f"the config volume's ConfigMap {cm_name} is not rendered with webhook-bridge.toml")
        elif tomllib.loads(cms[cm_name]["data"]["webhook-bridge.toml"]) != cfg:
            where(f"ConfigMap {cm_name} does not carry {CONFIG}")
    # The memory limit covers the requests in flight (docs/deploy.md, "Resources and sizing").
    limit = bridge.get("resources", {}).get("limits", {}).get("memory")
    in_flight = cfg.get("limits", {}).get("max_in_flight", 512)
    max_body = toml_size(cfg.get("max_body", "1MiB"))
    need_mem = BASE_MEMORY + in_flight * 2 * max_body
    if not limit or size_bytes(limit) < need_mem:
        where(f"bridge memory limit {limit} < 40 MiB + max_in_flight {in_flight} x 2 x max_body"
              f" {max_body} = {need_mem >> 20} MiB")
    # The grace period covers the bridge's shutdown (ARCHITECTURE.md, "Shutdown").
    sleep = bridge.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    need = sleep + ack + shutdown_drain + 1 + 6
    if grace < need:
        where(f"terminationGracePeriodSeconds {grace} < preStop {sleep}s + ack_deadline {ack}s"
              f" + spool.shutdown_drain {shutdown_drain}s + 1s + 6s = {need}s (ARCHITECTURE.md, Shutdown)")
    # Secrets: every env: reference of the TOML is in the Secret the bridge loads.
    secrets = {s["metadata"]["name"]: s for s in kinds.get("Secret", [])}
    provided = set()
    for ef in bridge.get("envFrom", []):
        ref = ef.get("secretRef", {}).get("name")
        if ref in secrets:
            provided |= set(secrets[ref].get("stringData", {})) | set(secrets[ref].get("data", {}))
    provided |= {e["name"] for e in bridge.get("env", [])}
    missing = env_refs - provided
    if missing:
        where(f"env: references without a value in the Secret/env: {sorted(missing)}")
    for s in secrets.values():
        for k, v in s.get("stringData", {}).items():
            if "example" not in v and "fake" not in v:
                where(f"Secret {s['metadata']['name']}.{k} does not look like an obviously fake value")
    # Service: only the webhook port, by number.
    services = [s for s in kinds.get("Service", []) if selects(s["spec"].get("selector", {}), labels)]
    if not services:
        where("no Service selects the pod")
    for svc in services:
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            if target != webhook_port:
                where(f"Service {svc['metadata']['name']} port {p['port']} targets {target!r}; only the"
                      f" webhook port {webhook_port}, by number, may be exposed")
    problems += [f"{variant}: {p}" for p in check_named_init_ports(docs)]
    problems += [f"{variant}: {p}" for p in check_one_pdb(docs, labels)]
    problems += [f"{variant}: {p}" for p in check_network_policy(docs, labels, webhook_port, admin_port)]
    # PodMonitor: selects the pod, scrapes the admin port, sets the job the alerts expect.
    pms = kinds.get("PodMonitor", [])
    if len(pms) != 1:
        where(f"expected one PodMonitor, found {len(pms)}")
    for pm in pms:
        if not selects(pm["spec"]["selector"], labels):
            where("PodMonitor does not select the pod")
        for ep in pm["spec"]["podMetricsEndpoints"]:
            if port_of(bridge, ep.get("port")) != admin_port or ep.get("path", "/metrics") != "/metrics":
                where("PodMonitor must scrape /metrics on the bridge's admin port")
            if not any(r.get("targetLabel") == "job" and r.get("replacement") == JOB
                       for r in ep.get("relabelings", [])):
                where(f"PodMonitor must set job=\"{JOB}\" (the presence alerts select on it)")
    # PrometheusRule embeds rules.yaml; both monitoring objects carry the release label.
    prs = kinds.get("PrometheusRule", [])
    if len(prs) != 1 or prs[0]["spec"] != {"groups": rules_src["groups"]}:
        where("PrometheusRule spec differs from deploy/monitoring/rules.yaml: run scripts/check-deploy --write")
    for obj in pms + prs:
        if not obj["metadata"].get("labels", {}).get("release"):
            where(f"{obj['kind']} has no `release` label (kube-prometheus-stack would ignore it)")
    if work:
        for pr in prs:
            with open(os.path.join(work, "rendered-rules.yaml"), "w") as f:
                yaml.safe_dump(pr["spec"], f)
    # Dashboard ConfigMap carries the dashboard file.
    dcms = [c for c in kinds.get("ConfigMap", []) if "grafana-dashboard.json" in c.get("data", {})]
    if len(dcms) != 1 or json.loads(dcms[0]["data"]["grafana-dashboard.json"]) != dashboard:
        where("dashboard ConfigMap does not carry deploy/monitoring/grafana-dashboard.json")
    return problems


def check_bridge_container(bridge, webhook_port, admin_port):
    """What the component itself guarantees for the bridge container, whatever the pod."""
    problems = []
    sc = bridge.get("securityContext", {})
    if sc.get("runAsNonRoot") is not True or not isinstance(sc.get("runAsUser"), int) or sc.get("runAsUser") == 0:
        problems.append("bridge securityContext needs runAsNonRoot and a numeric non-root runAsUser of its own")
    if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append("bridge securityContext needs seccompProfile RuntimeDefault of its own")
    if port_of(bridge, "webhook") != webhook_port or port_of(bridge, "bridge-admin") != admin_port:
        problems.append(f"bridge ports must be webhook={webhook_port} and bridge-admin={admin_port} (as in the TOML)")
    for probe, path in [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
        get = bridge.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") != admin_port:
            problems.append(f"bridge {probe} must GET {path} on port {admin_port}, by number")
    return problems


def check_component_only(docs, webhook_port, admin_port):
    """The component applied to a bare worker: it adds the sidecar, the Service and monitoring,
    and never a Secret, a PodDisruptionBudget or the user's config."""
    problems = []
    kinds = by_kind(docs)
    for kind in ("Secret", "PodDisruptionBudget"):
        for d in kinds.get(kind, []):
            problems.append(f"the component renders a {kind} ({d['metadata']['name']})")
    for c in kinds.get("ConfigMap", []):
        if "webhook-bridge.toml" in c.get("data", {}):
            problems.append(f"the component renders the user's config ({c['metadata']['name']})")
    wls = kinds.get("Deployment", [])
    bridge = [c for w in wls for c in pod_template(w)["spec"].get("initContainers", [])
              if c["name"] == "webhook-bridge"]
    if len(bridge) != 1:
        return problems + ["the component did not add exactly one webhook-bridge init container"]
    problems += check_bridge_container(bridge[0], webhook_port, admin_port)
    problems += check_named_init_ports(docs)
    for k in ("Service", "PodMonitor", "PrometheusRule"):
        if len(kinds.get(k, [])) != 1:
            problems.append(f"the component should render one {k}")
    return problems


# ---- the RabbitMQ cluster variant --------------------------------------------------------------

RMQ_API = "rabbitmq.com/v1beta1"
TOPOLOGY_KINDS = ("Exchange", "Queue", "Binding", "User", "Permission")
ALLOWED_NAMESPACES = "rabbitmq.com/topology-allowed-namespaces"


def topic_pattern_problem(pattern):
    """Why `pattern` is no valid topic binding key (words separated by dots, `*` and `#` only as
    whole words); None when it is."""
    if not isinstance(pattern, str) or not pattern:
        return "empty routing key"
    for word in pattern.split("."):
        if word == "":
            return f"routing key {pattern!r} has an empty word"
        if word not in ("*", "#") and ("*" in word or "#" in word):
            return f"routing key {pattern!r}: `*` and `#` must be whole words"
        if word not in ("*", "#") and not re.fullmatch(r"[a-z0-9_-]+", word):
            return f"routing key {pattern!r}: word {word!r} is not a routing-key word ([a-z0-9_-])"
    return None


def expand_env(value, env):
    """Kubernetes' $(NAME) expansion of an env value with the env vars defined before it."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def check_rabbitmq_cluster(docs, cfg):
    """The variant wired to a RabbitmqCluster: an odd number (>= 3) of nodes; the bridge's URLs
    list each node once by its per-pod DNS name, with numeric AMQP ports; the topology objects
    reference the cluster (and may: allowed namespaces), with their required fields; the worker's
    queue is a durable quorum queue; every binding comes from the bridge's exchange into a queue
    declared here, with a valid topic pattern; an Exchange object for the bridge's exchange
    declares exactly what the bridge declares; the bridge's credentials come from a Secret that a
    User imports, whose Permission covers what the bridge declares and publishes."""
    problems = []
    p = problems.append
    kinds = by_kind(docs)
    clusters = [d for d in kinds.get("RabbitmqCluster", []) if d.get("apiVersion") == RMQ_API]
    if len(clusters) != 1:
        return [f"expected one RabbitmqCluster ({RMQ_API}), found {len(clusters)}"]
    cluster = clusters[0]
    cname = cluster["metadata"]["name"]
    cns = cluster["metadata"].get("namespace")
    replicas = cluster.get("spec", {}).get("replicas", 1)
    if not isinstance(replicas, int) or replicas < 3 or replicas % 2 == 0:
        p(f"RabbitmqCluster {cname}: replicas {replicas!r} must be odd and at least 3 (a quorum "
          f"queue needs a majority; an even count tolerates no more failures than one less)")
        replicas = replicas if isinstance(replicas, int) and replicas > 0 else 0
    allowed = [n.strip() for n in
               cluster["metadata"].get("annotations", {}).get(ALLOWED_NAMESPACES, "").split(",")
               if n.strip()]
    amqp = cfg.get("amqp", {})
    exchange = amqp.get("exchange", "webhooks")
    unrouted = f"{exchange}.unrouted"

    # Every topology object: the cluster reference and the fields the operator requires.
    topo = [d for k in TOPOLOGY_KINDS for d in kinds.get(k, [])]
    for d in topo:
        name = f"{d['kind']} {d['metadata']['name']}"
        if d.get("apiVersion") != RMQ_API:
            p(f"{name}: apiVersion must be {RMQ_API}")
        spec = d.get("spec", {})
        ref = spec.get("rabbitmqClusterReference", {})
        ns = d["metadata"].get("namespace")
        if ref.get("name") != cname or ref.get("namespace", ns) != cns:
            p(f"{name}: rabbitmqClusterReference {ref} is not the RabbitmqCluster {cns}/{cname}")
        elif ns != cns and ns not in allowed and "*" not in allowed:
            p(f"{name}: namespace {ns} is not in the cluster's {ALLOWED_NAMESPACES} {allowed}")
        required = {"Queue": ["name"], "Exchange": ["name", "type"],
                    "Binding": ["source", "destination", "destinationType", "routingKey"],
                    "Permission": ["vhost", "permissions"], "User": []}[d["kind"]]
        for field in required:
            if spec.get(field) in (None, ""):
                p(f"{name}: spec.{field} is required")
        if d["kind"] == "Permission":
            if not spec.get("user") and not spec.get("userReference", {}).get("name"):
                p(f"{name}: spec.user or spec.userReference is required")
            for k in ("configure", "write", "read"):
                if not isinstance(spec.get("permissions", {}).get(k), str):
                    p(f"{name}: spec.permissions.{k} must be a regular expression")

    # Queues: durable quorum queues.
    queues = {}
    for q in kinds.get("Queue", []):
        spec = q.get("spec", {})
        queues[(spec.get("vhost", "/"), spec.get("name"))] = q
        if spec.get("type") != "quorum":
            p(f"Queue {q['metadata']['name']}: type {spec.get('type')!r} must be quorum (a classic "
              f"queue lives on one node: while it is down the broker routes nothing to it)")
        if spec.get("durable") is not True or spec.get("autoDelete") is True:
            p(f"Queue {q['metadata']['name']}: must be durable and not auto-deleted")
    if not queues:
        p("no Queue: the worker's queue must be declared as a quorum Queue")

    # Bindings: from the bridge's exchange into a queue declared here, valid patterns.
    bindings = kinds.get("Binding", [])
    if not bindings:
        p("no Binding: the worker's queue receives nothing from the bridge's exchange")
    for b in bindings:
        spec = b.get("spec", {})
        name = f"Binding {b['metadata']['name']}"
        if spec.get("source") != exchange:
            p(f"{name}: source {spec.get('source')!r} is not the bridge's exchange {exchange!r}")
        if spec.get("destinationType") != "queue" or \
                (spec.get("vhost", "/"), spec.get("destination")) not in queues:
            p(f"{name}: destination {spec.get('destination')!r} is not a Queue declared here")
        problem = topic_pattern_problem(spec.get("routingKey"))
        if problem:
            p(f"{name}: {problem}")

    # An Exchange object for the bridge's exchange must declare what the bridge declares, or
    # the bridge's own declaration on connect is refused (PRECONDITION_FAILED).
    for x in kinds.get("Exchange", []):
        spec = x.get("spec", {})
        if spec.get("name") != exchange:
            continue
        want = {"type": "topic", "durable": True, "autoDelete": False,
                "arguments": {"alternate-exchange": unrouted}}
        got = {k: spec.get(k, False if k == "autoDelete" else None) for k in want}
        if got != want:
            p(f"Exchange {x['metadata']['name']}: {got} differs from what the bridge declares {want}")

    # The bridge's URLs: one per node, by per-pod DNS name, numeric AMQP port.
    bridges = [c for w in workloads(docs) for c in
               pod_template(w)["spec"].get("initContainers", []) + pod_template(w)["spec"]["containers"]
               if c["name"] == "webhook-bridge"]
    if len(bridges) != 1:
        return problems + [f"expected one webhook-bridge container, found {len(bridges)}"]
    env, secret_of = {}, {}
    for e in bridges[0].get("env", []):
        if "value" in e:
            env[e["name"]] = expand_env(str(e["value"]), env)
        else:
            ref = e.get("valueFrom", {}).get("secretKeyRef", {})
            secret_of[e["name"]] = ref.get("name")
    urls = amqp.get("urls", [])
    urls = [urls] if isinstance(urls, str) else urls
    expected = {f"{cname}-server-{i}.{cname}-nodes.{cns}.svc" for i in range(replicas)}
    hosts, vhosts, used_secrets = [], set(), set()
    for u in urls:
        if not u.startswith("env:") or u[4:] not in env:
            p(f"[amqp] url {u!r} is not an env var the bridge container defines by value")
            continue
        raw = bridges[0]["env"]
        value = next(e["value"] for e in raw if e["name"] == u[4:])
        used_secrets |= {secret_of.get(v) for v in re.findall(r"\$\((\w+)\)", str(value))}
        m = re.fullmatch(r"(amqps?)://([^:@/]+):([^@/]+)@([^:/]+)(?::([^/]*))?/(.*)", env[u[4:]])
        if not m:
            p(f"{u[4:]}: {env[u[4:]]!r} is no amqp://user:password@host:port/vhost URL")
            continue
        scheme, _, _, host, port, vhost = m.groups()
        if not (port or "").isdigit() or int(port) != {"amqp": 5672, "amqps": 5671}[scheme]:
            p(f"{u[4:]}: port {port!r} must be the number {'5672' if scheme == 'amqp' else '5671'}")
        hosts.append(host.removesuffix(".cluster.local"))
        vhosts.add(vhost.replace("%2f", "/").replace("%2F", "/") or "/")
    for h in sorted(set(hosts)):
        if hosts.count(h) > 1:
            p(f"[amqp] urls list {h} {hosts.count(h)} times")
    missing, extra = expected - set(hosts), set(hosts) - expected
    if missing:
        p(f"[amqp] urls miss node(s) {sorted(missing)} of the {replicas} replicas: a replica "
          f"could not reconnect while the nodes it lists are down")
    if extra:
        p(f"[amqp] urls name {sorted(extra)}, not a node of RabbitmqCluster {cname}")

    # Credentials: a User imports the Secret the URLs are built from; its Permission covers
    # what the bridge does.
    users = {u["metadata"]["name"]: u for u in kinds.get("User", [])}
    bridge_users = [n for n, u in users.items()
                    if u.get("spec", {}).get("importCredentialsSecret", {}).get("name") in used_secrets]
    if used_secrets - {None} and not bridge_users:
        p(f"the bridge's URLs use Secret(s) {sorted(used_secrets - {None})} that no User imports")
    if None in used_secrets or not used_secrets:
        p("the bridge's URLs must take their credentials from a Secret (secretKeyRef env vars)")
    needs = {"configure": [exchange, unrouted], "write": [exchange, unrouted, "amq.default"],
             "read": [exchange, unrouted]}
    for user in bridge_users:
        perms = [q for q in kinds.get("Permission", [])
                 if q.get("spec", {}).get("userReference", {}).get("name") == user]
        if not perms:
            p(f"User {user} (the bridge's) has no Permission")
        for perm in perms:
            spec = perm["spec"]
            if vhosts and spec.get("vhost") not in vhosts:
                p(f"Permission {perm['metadata']['name']}: vhost {spec.get('vhost')!r} is not the "
                  f"URLs' {sorted(vhosts)}")
            for k, names in needs.items():
                rx = spec.get("permissions", {}).get(k, "")
                for n in names:
                    if not isinstance(rx, str) or not re.search(rx, n):
                        p(f"Permission {perm['metadata']['name']}: {k} {rx!r} does not allow "
                          f"{n!r}, which the bridge needs")
    return problems


def check_config_drift(example_cfg, variant_cfg, section):
    """A variant's TOML is the example's apart from one section."""
    a = {k: v for k, v in example_cfg.items() if k != section}
    b = {k: v for k, v in variant_cfg.items() if k != section}
    return [] if a == b else [f"{RMQ_CLUSTER_CONFIG} differs from {CONFIG} outside [{section}]"]


def check_statefulset_drift(example_docs, sts_docs):
    """The StatefulSet example's pod is the Deployment example's, apart from where the spool lives
    (emptyDir there, claim template here, with the fsGroup components/spool-pvc sets)."""
    base = [d for d in example_docs if d["kind"] == "Deployment"]
    sts = [d for d in sts_docs if d["kind"] == "StatefulSet"]
    if not base or not sts:
        return ["StatefulSet or Deployment example missing"]
    a = json.loads(json.dumps(base[0]["spec"]["template"]))
    b = json.loads(json.dumps(sts[0]["spec"]["template"]))
    a["spec"]["volumes"] = [v for v in a["spec"]["volumes"] if "emptyDir" not in v]
    b["spec"].get("securityContext", {}).pop("fsGroup", None)
    if a != b:
        return [f"{STATEFULSET}/statefulset.yaml's pod template drifted from {EXAMPLE}/worker.yaml"]
    return []


def dashboard_exprs(dashboard):
    exprs = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                exprs.append(t["expr"])
            walk(p.get("panels", []))
    walk(dashboard["panels"])
    for v in dashboard["templating"]["list"]:
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        m = re.fullmatch(r"label_values\((.*),\s*\w+\)", q or "")
        if m:
            exprs.append(m.group(1))

    def fill(e):
        e = e.replace("$__rate_interval", "5m").replace("$__interval", "1m")
        return re.sub(r"\$\{?\w+\}?", ".*", e)
    return [fill(e) for e in exprs]


# ---- entry points ---------------------------------------------------------------------------------

def house_rules(work):
    os.chdir(REPO)
    cfg = tomllib.load(open(CONFIG, "rb"))
    rules_src = yaml.safe_load(open(RULES))
    dashboard = json.load(open(DASHBOARD))
    webhook_port = int(cfg["listen"].rsplit(":", 1)[1])
    admin_port = int(cfg["admin_listen"].rsplit(":", 1)[1])
    load = lambda d: load_yaml_docs(os.path.join(work, d.replace("/", "_") + ".yaml"))
    problems = []
    rendered = {}
    for variant in (EXAMPLE, STATEFULSET, LEGACY):
        rendered[variant] = load(variant)
        problems += check_variant(variant, rendered[variant], cfg, rules_src, dashboard, work)
    problems += check_statefulset_drift(rendered[EXAMPLE], rendered[STATEFULSET])
    rmq_cfg = tomllib.load(open(RMQ_CLUSTER_CONFIG, "rb"))
    rendered[RMQ_CLUSTER] = load(RMQ_CLUSTER)
    rmq_app = [d for d in rendered[RMQ_CLUSTER] if not d["apiVersion"].startswith("rabbitmq.com/")]
    problems += check_variant(RMQ_CLUSTER, rmq_app, rmq_cfg, rules_src, dashboard, None)
    problems += [f"{RMQ_CLUSTER}: {p}" for p in check_rabbitmq_cluster(rendered[RMQ_CLUSTER], rmq_cfg)]
    problems += check_config_drift(cfg, rmq_cfg, "amqp")
    problems += [f"component alone: {p}" for p in
                 check_component_only(load(COMPONENT_ONLY), webhook_port, admin_port)]
    problems += check_runbooks(rules_src, open(RUNBOOKS).read())
    exprs = dashboard_exprs(dashboard)
    if len(exprs) < 10:
        problems.append(f"dashboard has only {len(exprs)} queries")
    with open(os.path.join(work, "dashboard-exprs.yaml"), "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(exprs)]}]}, f)
    for p in problems:
        print("  " + p)
    return 1 if problems else 0


def self_test():
    """Each check against a fixture it must reject (naming the fault) and one it must accept."""
    os.chdir(REPO)
    fx = lambda name: os.path.join(FIXTURES, name)
    failures = []

    def expect(what, problems, count, needle):
        got = [p for p in problems if needle in p]
        ok = len(problems) == count and len(got) == count
        print(f"  {'ok  ' if ok else 'FAIL'} {what}: {len(problems)} problem(s)")
        for p in problems:
            print(f"         {p}")
        if not ok:
            failures.append(what)

    docs = load_yaml_docs(fx("named-init-port.yaml"))
    expect("named targetPort / NetworkPolicy port of an init container is rejected",
           check_named_init_ports(docs), 2, "init container")
    docs = load_yaml_docs(fx("named-container-port.yaml"))
    expect("named targetPort of an ordinary container is accepted",
           check_named_init_ports(docs), 0, "")
    docs = load_yaml_docs(fx("two-pdbs.yaml"))
    labels = pod_template(workloads(docs)[0])["metadata"]["labels"]
    expect("a second PodDisruptionBudget is rejected", check_one_pdb(docs, labels), 1,
           "PodDisruptionBudgets select the pod")
    docs = load_yaml_docs(fx("open-network-policy.yaml"))
    expect("a NetworkPolicy letting anything in, by port name, and out anywhere is rejected",
           check_network_policy(docs, {"webhook-bridge/sidecar": "true"}, 8080, 9090), 6,
           "NetworkPolicy")
    docs = load_yaml_docs(fx("rabbitmq-cluster-bad.yaml"))
    bad_cfg = {"amqp": {"exchange": "webhooks",
                        "urls": ["env:AMQP_URL_NODE_0", "env:AMQP_URL_NODE_1"]}}
    expect("a RabbitmqCluster variant with an even node count, a classic queue, a binding from "
           "another exchange with a bad pattern, URLs missing a node or with a named port, and "
           "permissions short of what the bridge does is rejected",
           check_rabbitmq_cluster(docs, bad_cfg), 8, "")
    rules = yaml.safe_load(open(fx("rules-runbooks.yaml")))
    md = open(fx("runbooks.md")).read()
    expect("alerts without annotations or with a dangling runbook_url are rejected",
           check_runbooks(rules, md), 5, "")
    real = check_runbooks(yaml.safe_load(open(RULES)), open(RUNBOOKS).read())
    expect("the real rules.yaml and docs/runbooks.md pass", real, 0, "")
    if failures:
        print(f"deploy_policy self-test: {len(failures)} failed")
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "house-rules":
        sys.exit(house_rules(os.path.abspath(sys.argv[2])))
    if len(sys.argv) == 2 and sys.argv[1] == "self-test":
        sys.exit(self_test())
    print(__doc__, file=sys.stderr)
    sys.exit(2)
