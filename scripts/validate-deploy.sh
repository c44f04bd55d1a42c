#!/usr/bin/env bash
# Offline checks of the deployment files (no Docker engine or cluster needed). Where the README
# documents a command, this runs that command as the README writes it (taken from the README
# itself), so the checks cannot pass while the documented command fails:
# - deploy/docker-compose.yml parses (docker-compose reads it without an engine), every file it
#   and the Grafana/Prometheus provisioning refer to exists, and the image's build context
#   (.dockerignore) leaves out target/, .git, certs/ and the settings;
# - every `kubectl kustomize ...` command of the README builds, and its whole output passes
#   `kubernetes-validate --strict`; the README's `kubectl create secret` commands run with
#   --dry-run=client on placeholder files and their Secrets validate too;
# - the base's pods meet the "restricted" Pod Security Standard, the base starts with the
#   settings it ships (every file they name is mounted from the ConfigMap or a key of a Secret
#   the README creates), the spool bound is at most 3/4 of the spool volume, the shard count
#   equals the replicas, deploy/k8s/web-monitor.toml equals configs/kubernetes.toml
#   (deploy/checks/k8s.py, which is also shown to refuse broken settings);
# - the alert rules name only metrics the services export, pass `promtool check rules` and the
#   unit tests of deploy/prometheus/alerts.test.yml (`promtool test rules`), and the
#   Prometheus Operator component holds the same rules as the compose stack;
# - the settings files pass `checker --check-config` / `sink --check-config`, the README's
#   `--check-config` commands included (run with the workspace's binaries on PATH).
# Not run: `docker compose up`, `docker build`/`push` and `kubectl apply` (they need an engine,
# a registry or a cluster).
# Installs docker-compose, kubectl and promtool (Debian packages) and kubernetes-validate (PyPI)
# when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[deploy] %s\n' "$*"; }
die() { printf '[deploy] error: %s\n' "$*" >&2; exit 1; }

apt_install() {
  local pkg=$1
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
  apt-get install -y -q "$pkg" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$pkg" >/dev/null; }
}

if ! command -v docker-compose >/dev/null 2>&1; then
  log "installing docker-compose (to parse the compose file)"
  apt_install docker-compose || python3 -m pip install -q --user docker-compose \
    || die "install docker-compose (apt-get install docker-compose, or pip install docker-compose)"
fi
if ! command -v kubectl >/dev/null 2>&1; then
  log "installing kubectl"
  apt_install kubectl || die "install kubectl 1.28 or later (apt-get install kubectl, from https://pkgs.k8s.io)"
fi
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  log "installing kubernetes-validate"
  python3 -m pip install -q kubernetes-validate 2>/dev/null || python3 -m pip install -q --user kubernetes-validate \
    || die "pip install kubernetes-validate failed"
  export PATH="$HOME/.local/bin:$PATH"
fi

if ! python3 -c 'import yaml' 2>/dev/null; then
  log "installing PyYAML (for deploy/checks)"
  python3 -m pip install -q pyyaml 2>/dev/null || python3 -m pip install -q --user pyyaml || die "pip install pyyaml failed"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The lines of the README's ```sh blocks that start with $1.
readme_commands() {
  awk '/^ *```sh/{in_sh=1; next} /^ *```/{in_sh=0} in_sh' README.md \
    | sed -e 's/^ *//' -e 's/[[:space:]]*#.*$//' | grep -E "^$1" || true
}

log "docker-compose config"
GRAFANA_ADMIN_PASSWORD=check POSTGRES_PASSWORD=check GRAFANA_DB_PASSWORD=check \
  docker-compose -f deploy/docker-compose.yml config -q

log "files the stack refers to"
for f in deploy/Dockerfile .dockerignore configs/compose.toml deploy/grafana/provisioning/datasources/postgres.yaml \
         deploy/grafana/provisioning/dashboards/web-monitor.yaml deploy/grafana/dashboards/web-monitor.json \
         deploy/postgres/initdb/grafana-reader.sh deploy/prometheus/prometheus.yml deploy/prometheus/alerts.yml \
         configs/kubernetes.toml deploy/k8s/web-monitor.toml migrations; do
  [ -e "$f" ] || die "$f is referenced by the deployment files but missing"
done
python3 -c 'import json,sys; json.load(open("deploy/grafana/dashboards/web-monitor.json"))' \
  || die "the Grafana dashboard is not valid JSON"

log "image build context (.dockerignore)"
python3 deploy/checks/dockerignore.py .dockerignore

log "deploy/k8s/web-monitor.toml is configs/kubernetes.toml"
cmp -s configs/kubernetes.toml deploy/k8s/web-monitor.toml \
  || die "deploy/k8s/web-monitor.toml differs from configs/kubernetes.toml: copy one onto the other"

log "the README's kubectl kustomize commands, validated strictly"
kustomize_cmds="$(readme_commands 'kubectl kustomize ')"
grep -qx 'kubectl kustomize deploy/k8s' <<<"$kustomize_cmds" || die "the README no longer documents kubectl kustomize deploy/k8s"
while IFS= read -r cmd; do
  log "  $cmd"
  out="$work/$(tr -c 'a-z0-9' '_' <<<"$cmd").yaml"
  bash -c "$cmd" >"$out" || die "documented command failed: $cmd"
  kubernetes-validate --strict --quiet "$out" 2>&1 | grep -v "Couldn't find schema for kind \(PrometheusRule\|ServiceMonitor\) with api version monitoring.coreos.com/" || true
  kubernetes-validate --strict --quiet --no-warn "$out" >/dev/null || { kubernetes-validate --strict "$out" || true; die "$cmd: output does not validate"; }
done <<<"$kustomize_cmds"
kubectl kustomize deploy/k8s >"$work/base.yaml"

log "the README's kubectl create secret commands (--dry-run=client, placeholder files)"
secret_cmds="$(readme_commands 'kubectl -n web-monitor create secret ')"
[ -n "$secret_cmds" ] || die "the README no longer documents the Secrets"
mkdir "$work/secrets"
while IFS= read -r cmd; do
  for f in $(grep -o -- '--from-file=[^ ]*' <<<"$cmd" | sed -e 's/^--from-file=//' -e 's/^[^=]*=//'); do
    printf 'placeholder\n' >"$work/secrets/$f"
  done
  (cd "$work/secrets" && bash -c "$cmd --dry-run=client -o yaml") >"$work/secret.yaml" || die "documented command failed: $cmd"
  kubernetes-validate --strict --quiet "$work/secret.yaml"
done <<<"$secret_cmds"

log "Pod Security \"restricted\", settings the base starts with, spool bound, shards"
python3 deploy/checks/k8s.py pod-security "$work/base.yaml"
python3 deploy/checks/k8s.py settings "$work/base.yaml" deploy/k8s/web-monitor.toml README.md
# The checks refuse what they are there to refuse.
sed 's/^spool_max_bytes = .*/spool_max_bytes = "1800MiB"/' deploy/k8s/web-monitor.toml >"$work/too-big.toml"
! python3 deploy/checks/k8s.py settings "$work/base.yaml" "$work/too-big.toml" README.md 2>/dev/null \
  || die "the settings check accepts a spool bound above 3/4 of the volume"
sed 's/^sslrootcert = .*/sslrootcert = "\/etc\/web-monitor\/db\/root.pem"/' deploy/k8s/web-monitor.toml >"$work/no-ca.toml"
! python3 deploy/checks/k8s.py settings "$work/base.yaml" "$work/no-ca.toml" README.md 2>/dev/null \
  || die "the settings check accepts a file no documented Secret provides"
sed 's/seccompProfile: {type: RuntimeDefault}//; /seccompProfile:/,+1d; s/automountServiceAccountToken: false//' "$work/base.yaml" >"$work/loose.yaml"
! python3 deploy/checks/k8s.py pod-security "$work/loose.yaml" 2>/dev/null \
  || die "the Pod Security check accepts pods without seccompProfile"
{ cat "$work/base.yaml"; echo ---; cat "$work/secret.yaml"; } >"$work/with-secret.yaml"
! python3 deploy/checks/k8s.py settings "$work/with-secret.yaml" deploy/k8s/web-monitor.toml README.md 2>/dev/null \
  || die "the settings check accepts a Secret in the base"

log "alert rules"
python3 deploy/checks/k8s.py rules deploy/prometheus/alerts.yml deploy/components/prometheus/prometheusrule.yaml \
  crates/checker/src/metrics.rs crates/sink/src/metrics.rs
if ! command -v promtool >/dev/null 2>&1; then
  log "installing promtool (Debian's prometheus package)"
  apt_install prometheus || die "install promtool (apt-get install prometheus)"
fi
promtool check rules deploy/prometheus/alerts.yml >/dev/null
promtool test rules deploy/prometheus/alerts.test.yml >/dev/null \
  || { promtool test rules deploy/prometheus/alerts.test.yml || true; die "the alert rules fail their unit tests"; }

log "settings: configs/*.toml and the README's --check-config commands"
cargo build -q --locked -p checker -p sink --bin checker --bin sink
PATH="${CARGO_TARGET_DIR:-$PWD/target}/debug:$PATH"
export PATH
checker --check-config --config configs/compose.toml >/dev/null
sink --check-config --config configs/compose.toml >/dev/null
# The Kubernetes settings name files of the Secrets (absolute paths): point them at
# placeholders to check everything else.
for f in kafka-ca.pem kafka.cert kafka.key db-password db-ca.pem; do printf 'placeholder\n' >"$work/$f"; done
WEBMON__KAFKA__TLS__CA_FILE="$work/kafka-ca.pem" WEBMON__KAFKA__TLS__CERT_FILE="$work/kafka.cert" \
WEBMON__KAFKA__TLS__KEY_FILE="$work/kafka.key" WEBMON__DATABASE__PASSWORD_FILE="$work/db-password" \
WEBMON__DATABASE__SSLROOTCERT="$work/db-ca.pem" bash -c '
  checker --check-config --config deploy/k8s/web-monitor.toml >/dev/null
  sink --check-config --config deploy/k8s/web-monitor.toml >/dev/null'
log "the compose health checks, run against the real binaries"
GRAFANA_ADMIN_PASSWORD=check docker-compose -f deploy/docker-compose.yml config >"$work/compose.yaml"
healthz() { # service -> its healthcheck command, for bash -c
  python3 -c 'import sys, yaml
t = yaml.safe_load(open(sys.argv[1]))["services"][sys.argv[2]]["healthcheck"]["test"]
assert t[:3] == ["CMD", "bash", "-c"], t
print(t[3].replace("$$", "$"))' "$work/compose.yaml" "$1"
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
for svc in checker sink; do
  port=$(free_port)
  cmd="$(healthz "$svc")"
  default_port=$(grep -o '/dev/tcp/127.0.0.1/[0-9]*' <<<"$cmd" | grep -o '[0-9]*$')
  cmd="${cmd//\/dev\/tcp\/127.0.0.1\/$default_port//dev/tcp/127.0.0.1/$port}"
  ! bash -c "$cmd" 2>/dev/null || die "$svc health check passes with nothing listening"
  case $svc in
    checker) checker --stdout --config configs/compose.toml --admin-listen "127.0.0.1:$port" >/dev/null 2>"$work/$svc.log" & ;;
    sink) sink --config configs/compose.toml --admin-listen "127.0.0.1:$port" >/dev/null 2>"$work/$svc.log" & ;;
  esac
  pid=$!
  ok=
  for _ in $(seq 50); do
    if bash -c "$cmd" 2>/dev/null; then ok=1; break; fi
    sleep 0.2
  done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  [ -n "$ok" ] || { cat "$work/$svc.log" >&2; die "$svc health check never passed against a running $svc"; }
done

check_cmds="$(readme_commands '(checker|sink) --check-config ')"
[ -n "$check_cmds" ] || die "the README no longer documents --check-config"
while IFS= read -r cmd; do
  log "  $cmd"
  bash -c "$cmd" >/dev/null || die "documented command failed: $cmd"
done <<<"$check_cmds"
log "deployment files are valid"
