#!/usr/bin/env bash
# Offline checks of the deployment files (no Docker engine or cluster needed):
# - deploy/docker-compose.yml parses (docker-compose reads it without an engine) and every file
#   it and the Grafana provisioning refer to exists;
# - every Kubernetes manifest of deploy/k8s validates against the Kubernetes schemas
#   (kubernetes-validate --strict), and so does the kustomize build when kubectl is present;
# - the settings files the stack mounts pass `checker --check-config` / `sink --check-config`.
# Installs docker-compose (Debian) and kubernetes-validate (PyPI) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[deploy] %s\n' "$*"; }
die() { printf '[deploy] error: %s\n' "$*" >&2; exit 1; }

if ! command -v docker-compose >/dev/null 2>&1; then
  log "installing docker-compose (to parse the compose file)"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get install -y -q docker-compose >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q docker-compose >/dev/null; }) \
      || die "apt-get install docker-compose failed"
  else
    python3 -m pip install -q --user docker-compose || die "install docker-compose (apt-get install docker-compose, or pip install docker-compose)"
  fi
fi
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  log "installing kubernetes-validate"
  python3 -m pip install -q kubernetes-validate 2>/dev/null || python3 -m pip install -q --user kubernetes-validate \
    || die "pip install kubernetes-validate failed"
fi

log "docker-compose config"
POSTGRES_PASSWORD=check docker-compose -f deploy/docker-compose.yml config -q

log "files the stack refers to"
for f in deploy/Dockerfile configs/compose.toml deploy/grafana/provisioning/datasources/postgres.yaml \
         deploy/grafana/provisioning/dashboards/web-monitor.yaml deploy/grafana/dashboards/web-monitor.json \
         configs/kubernetes.toml migrations; do
  [ -e "$f" ] || die "$f is referenced by the deployment files but missing"
done
python3 -c 'import json,sys; json.load(open("deploy/grafana/dashboards/web-monitor.json"))' \
  || die "the Grafana dashboard is not valid JSON"
for f in $(python3 - <<'PY'
import re
text = open("deploy/k8s/kustomization.yaml").read()
for m in re.findall(r"^\s*-\s+(\S+\.yaml)\s*$", text, re.M):
    print("deploy/k8s/" + m)
for m in re.findall(r"=(\S+)\s*$", text, re.M):
    print("deploy/k8s/" + m)
PY
); do
  [ -e "$f" ] || die "$f is listed in deploy/k8s/kustomization.yaml but missing"
done

log "kubernetes-validate --strict"
manifests=$(ls deploy/k8s/*.yaml | grep -v kustomization.yaml)
# shellcheck disable=SC2086
kubernetes-validate --strict --quiet $manifests
if command -v kubectl >/dev/null 2>&1; then
  built="$(mktemp)"
  kubectl kustomize --load-restrictor LoadRestrictionsNone deploy/k8s >"$built"
  kubernetes-validate --strict --quiet "$built"
  rm -f "$built"
fi

log "settings of the compose stack"
cargo run -q --locked -p checker -- --check-config --config configs/compose.toml
cargo run -q --locked -p sink -- --check-config --config configs/compose.toml
log "deployment files are valid"
