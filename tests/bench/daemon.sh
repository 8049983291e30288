#!/usr/bin/env bash
# Daemon benchmark (prints figures; not a timed test). The release `byoc` runs `byoc run`
# against a bare repository over file://, ssh-keygen-signed pushes, and the Kubernetes API
# double (release `kube-double --operator --log`: it stands in for the risingwave-operator
# and logs the arrival time of every write). It prints:
#   1. push-to-applied latency with the webhook: PUSHES (default 30) signed pushes that each
#      resize one cluster (one RisingWave PATCH); p50/p99 from `git push` returning to the
#      PATCH arriving at the double, and the daemon's own per-stage durations (fetch,
#      verify, load+plan, apply, publish) read from its JSON log; target p50 < 1 s;
#   2. the same with polling at the default interval (60 s), POLL_PUSHES (default 3) pushes;
#   3. a no-op reconcile of an environment of 1,000 more clusters (the plan benchmark's
#      shape): the same revision again, and a signed commit outside the environment
#      directory; target < 50 ms;
#   4. the daemon's idle RSS.
# Usage: bash tests/bench/daemon.sh   (PUSHES=30 POLL_PUSHES=3 to change the counts;
# PROFILE=debug measures the debug binaries `cargo test` already built instead of building
# release ones: CI does that, as the release link of `byoc` costs minutes, and a debug
# build that meets a target means the release build does too)
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/byoc/target}"
command -v ssh-keygen >/dev/null || { apt-get update -qq && apt-get install -y -qq openssh-client; }
profile="${PROFILE:-release}"
case "$profile" in
  release) cargo build --release -q -p byoc-reconciler -p kube-double ;;
  debug) cargo build -q --workspace --bins ;;
  *) echo "PROFILE must be release or debug" >&2; exit 2 ;;
esac
exec python3 - "$CARGO_TARGET_DIR/$profile" "${PUSHES:-30}" "${POLL_PUSHES:-3}" "$profile" <<'PY'
import gzip, hashlib, hmac, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request

BIN, PUSHES, POLL_PUSHES, PROFILE = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ROOT = os.getcwd()
WORK = tempfile.mkdtemp(prefix="byoc-bench-daemon-")
REPO = os.path.join(WORK, "repo")
SECRET = b"bench-s3cret"
procs = []


def sh(*args, cwd=REPO):
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def git(*args):
    return sh("git", "-c", "user.name=Bench", "-c", "user.email=bench@example.com", "-c", "gpg.format=ssh",
              "-c", "user.signingkey=" + os.path.join(WORK, "alice"), *args)


def commit(message):
    git("add", "-A")
    git("commit", "-q", "-S", "--allow-empty", "-m", message)
    return git("rev-parse", "HEAD")


def push():
    git("push", "-q", "origin", "main")
    return time.time()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http(port, method, path, body=b"", headers=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body if method == "POST" else None, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


deliveries = iter(range(10**9))


def webhook(port):
    body = b'{"ref":"refs/heads/main"}'
    sig = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    code, _ = http(port, "POST", "/hooks/git", body,
                   {"X-Hub-Signature-256": sig, "X-GitHub-Delivery": f"bench-{next(deliveries)}", "Content-Type": "application/json"})
    assert code == 202, code


def wait(what, done, limit=300):
    start = time.time()
    while True:
        v = done()
        if v:
            return v
        if time.time() - start > limit:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.005)


def status(port):
    code, body = http(port, "GET", "/status")
    return json.loads(body) if code == 200 else {}


def patches_after(t, cluster):
    """Arrival times of PATCHes to the RisingWave `cluster` after t (seconds since the epoch)."""
    out = []
    with open(os.path.join(WORK, "double.log")) as f:
        for line in f:
            micros, method, code, uri = line.split(" ", 4)[:4]
            if method == "PATCH" and re.search(rf"/risingwaves/{cluster}(\?|$)", uri) and int(micros) / 1e6 > t:
                out.append(int(micros) / 1e6)
    return out


def log_events(message):
    out = []
    with open(os.path.join(WORK, "daemon.log")) as f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("fields", {}).get("message") == message:
                out.append(e["fields"])
    return out


def start_daemon(port, extra):
    with open(os.path.join(WORK, "reconciler.yaml"), "w") as f:
        f.write(f"""apiVersion: byoc.risingwave.dev/v1alpha1
kind: Reconciler
metadata: {{name: bench}}
spec:
  repository: {{url: "file://{WORK}/remote.git", branch: main}}
  environment: env
  signingPolicy: policy.yaml
  stateStore: {{dir: state}}
  publishDir: publish
  cacheDir: cache
  listen: "127.0.0.1:{port}"
  kubernetes: {{kubeconfig: kubeconfig}}
{extra}""")
    p = subprocess.Popen([os.path.join(BIN, "byoc"), "--log-format", "json", "run", "--config", "reconciler.yaml"], cwd=WORK,
                         stderr=open(os.path.join(WORK, "daemon.log"), "a"))
    procs.append(p)
    wait("the daemon's first reconcile", lambda: http(port, "GET", "/readyz")[0] == 200, 600)
    return p


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * len(values) + 0.5) - 1))]


def resize(i, replicas):
    path = os.path.join(REPO, "env/clusters/analytics.yaml")
    text = open(path).read()
    open(path, "w").write(re.sub(r"compute: \{replicas: \d+,", f"compute: {{replicas: {replicas},", text))
    return commit(f"resize analytics ({i})")


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


try:
    # Keys, policy, repository, remote.
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice", "-f", os.path.join(WORK, "alice"), cwd=WORK)
    key = " ".join(open(os.path.join(WORK, "alice.pub")).read().split()[:2])
    open(os.path.join(WORK, "allowed_signers"), "w").write(f"alice@example.com {key}\n")
    open(os.path.join(WORK, "policy.yaml"), "w").write(
        "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: SigningPolicy\nmetadata: {name: bench}\nspec:\n  version: 1\n"
        "  allowedSignersFile: allowed_signers\n  groups:\n    - {name: platform, members: [alice@example.com]}\n"
        "  rules:\n    - {paths: [\"**\"], signers: [platform], threshold: 1}\n  forgeMergeKey: {trusted: false}\n")
    open(os.path.join(WORK, "webhook-secret"), "wb").write(SECRET + b"\n")
    os.makedirs(REPO)
    sh("git", "init", "-q", "-b", "main")
    shutil.copytree(os.path.join(ROOT, "examples/aws"), os.path.join(REPO, "env"))
    commit("environment")
    sh("git", "clone", "-q", "--bare", ".", os.path.join(WORK, "remote.git"))
    git("remote", "add", "origin", os.path.join(WORK, "remote.git"))

    # The API double, with the stand-in operator and its write log.
    crd = os.path.join(WORK, "risingwaves.crd.yaml")
    open(crd, "wb").write(gzip.open(os.path.join(ROOT, "tests/fixtures/risingwave-operator/risingwaves.crd.yaml.gz")).read())
    api_port = free_port()
    double = subprocess.Popen([os.path.join(BIN, "kube-double"), "--listen", f"127.0.0.1:{api_port}", "--crd", crd, "--operator",
                               "--log", os.path.join(WORK, "double.log"), "--lifetime", "7200"],
                              stdout=open(os.path.join(WORK, "kubeconfig"), "w"), stderr=subprocess.DEVNULL)
    procs.append(double)
    wait("the double", lambda: os.path.getsize(os.path.join(WORK, "kubeconfig")) > 0 and os.path.exists(os.path.join(WORK, "double.log")), 30)

    # 1. Webhook: push, wake, PATCH.
    port = free_port()
    daemon = start_daemon(port, "  interval: 1h\n  webhook: {secretFile: webhook-secret}\n")
    time.sleep(3)
    idle_rss = rss_kib(daemon.pid)
    latencies, stages = [], {k: [] for k in ["fetch_ms", "verify_ms", "load_ms", "apply_ms", "publish_ms"]}
    for i in range(PUSHES):
        rev = resize(i, 4 + i % 2)
        pushed = push()
        webhook(port)
        arrived = wait(f"push {i}'s PATCH", lambda: patches_after(pushed, "analytics"), 120)[0]
        latencies.append(arrived - pushed)
        label = f"main@sha1:{rev}"
        wait(f"push {i} applied", lambda: status(port).get("lastAppliedRevision") == label, 120)
        event = wait("its log line", lambda: [e for e in log_events("applied and published") if e.get("revision") == label], 10)[0]
        for k in stages:
            stages[k].append(float(event[k]))
    print(f"daemon benchmark ({PROFILE} build): examples/aws (2 clusters), {PUSHES} signed pushes each resizing one cluster, webhook on")
    print(f"  push-to-PATCH latency: p50 {pct(latencies, 50) * 1e3:.0f} ms, p99 {pct(latencies, 99) * 1e3:.0f} ms, "
          f"max {max(latencies) * 1e3:.0f} ms (target p50 < 1000 ms: {'met' if pct(latencies, 50) < 1 else 'NOT met'})")
    print("  per stage, p50 / p99 (ms): " + ", ".join(
        f"{k[:-3].replace('load', 'load+plan')} {pct(v, 50):.1f} / {pct(v, 99):.1f}" for k, v in stages.items()))
    print(f"  idle RSS after the first reconcile: {idle_rss / 1024:.1f} MiB")
    stop(daemon)

    # 2. Polling at the default interval, no webhook.
    if POLL_PUSHES > 0:
        port = free_port()
        daemon = start_daemon(port, "")
        polled = []
        for i in range(POLL_PUSHES):
            resize(PUSHES + i, 20 + i)
            pushed = push()
            arrived = wait(f"polled push {i}'s PATCH", lambda: patches_after(pushed, "analytics"), 200)[0]
            polled.append(arrived - pushed)
        print(f"  polling every 60 s (the default, with up to 10% jitter), {POLL_PUSHES} pushes: latencies "
              + ", ".join(f"{x:.1f} s" for x in polled) + f"; median {statistics.median(polled):.1f} s")
        stop(daemon)

    # 3. 1,000 more clusters and their routes, then no-op reconciles.
    routes = open(os.path.join(REPO, "env/routes.yaml")).read()
    for i in range(1000):
        policy = "Retain" if i % 2 == 0 else "Delete"
        open(os.path.join(REPO, f"env/clusters/c{i:04}.yaml"), "w").write(
            f"apiVersion: byoc.risingwave.dev/v1alpha1\nkind: RisingWaveCluster\nmetadata:\n  name: c{i:04}\nspec:\n"
            f"  image: risingwavelabs/risingwave:v2.1.0\n  components:\n    meta: {{replicas: 1, cpu: \"1\", memory: 4Gi}}\n"
            f"    frontend: {{replicas: 2, cpu: \"2\", memory: 4Gi}}\n    compute: {{replicas: 3, cpu: \"4\", memory: 16Gi}}\n"
            f"    compactor: {{replicas: 1, cpu: \"2\", memory: 4Gi}}\n  stateStore:\n    prefix: c{i:04}\n  deletionPolicy: {policy}\n")
        routes += f"    - {{name: r{i:04}, match: {{sni: c{i:04}.sql.example.com}}, cluster: c{i:04}, allowedCidrs: [10.20.0.0/16]}}\n"
    open(os.path.join(REPO, "env/routes.yaml"), "w").write(routes)
    big = commit("1,000 clusters")
    port = free_port()
    daemon = start_daemon(port, "  interval: 1h\n  webhook: {secretFile: webhook-secret}\n")
    pushed = push()
    webhook(port)
    label = f"main@sha1:{big}"
    wait("1,000 clusters applied", lambda: status(port).get("lastAppliedRevision") == label, 900)
    full = time.time() - pushed
    big_rss = rss_kib(daemon.pid)

    def unchanged():
        return [e for e in log_events("reconcile finished") if e.get("result") == "unchanged"]

    def noop():
        # Only reconciles that found nothing to do count: the 1,000-cluster apply's own
        # "reconcile finished" line may land after its status did.
        before = len(unchanged())
        webhook(port)
        return float(wait("a no-op reconcile", lambda: unchanged()[before:], 60)[0]["took_ms"])
    same = [noop() for _ in range(10)]
    docs = []
    for i in range(5):
        open(os.path.join(REPO, "README.md"), "w").write(f"# notes {i}\n")
        commit(f"docs {i}")
        push()
        docs.append(noop())
    print(f"  1,002 clusters: first apply {full:.1f} s after the push; RSS then {big_rss / 1024:.1f} MiB")
    print(f"  no-op reconcile, same revision (10): median {statistics.median(same):.1f} ms, max {max(same):.1f} ms; "
          f"a signed commit outside env/ (5): median {statistics.median(docs):.1f} ms, max {max(docs):.1f} ms "
          f"(target < 50 ms: {'met' if max(statistics.median(same), statistics.median(docs)) < 50 else 'NOT met'})")
    stop(daemon)
finally:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    shutil.rmtree(WORK, ignore_errors=True)
PY
