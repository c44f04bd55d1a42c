#!/usr/bin/env python3
"""Offline checks of the Kubernetes manifests that schema validation cannot make.

Run by scripts/validate-deploy.sh over the output of `kubectl kustomize deploy/k8s`:

  pod-security BUILT   every pod template meets the Pod Security Standard "restricted"
                       (https://kubernetes.io/docs/concepts/security/pod-security-standards/):
                       no host namespaces, ports or hostPath volumes, only the volume types the
                       profile allows, not privileged, allowPrivilegeEscalation false,
                       capabilities drop ALL (adding only NET_BIND_SERVICE), runAsNonRoot true
                       and no runAsUser 0, seccompProfile RuntimeDefault or Localhost, no
                       unsafe sysctls, default procMount, no custom SELinux user/role, no
                       unconfined AppArmor; and, beyond the profile,
                       automountServiceAccountToken false and a read-only root filesystem.
  settings BUILT TOML README
                       the base starts with the settings it ships: every file the settings
                       name is mounted into each container that reads them, from the ConfigMap
                       or from a Secret key the README's `kubectl create secret` commands
                       create; the spool bound (checker.spool_max_bytes, or an env override)
                       is at most 3/4 of the spool volume claim; WEBMON_SHARD's N equals the
                       StatefulSet's replicas; the settings path the containers read is in the
                       mounted ConfigMap directory (not a subPath).
  rules RULE_FILE PROMETHEUS_RULE METRICS_RS...
                       the alert rules name only metrics the services export, and the
                       PrometheusRule of the kustomize component holds the same groups as the
                       compose stack's rule file.

Exits 1 with one line per problem.
"""
import re
import sys
import tomllib

import yaml

SPOOL_SHARE = 0.75  # spool_max_bytes at most this share of the volume: segments, filesystem
DEFAULT_SPOOL_MAX = 1 << 30  # checker.spool_max_bytes default (README, `checker` table)
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                   "persistentVolumeClaim", "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}

problems = []


def problem(where, what):
    problems.append(f"{where}: {what}")


def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def pod_specs(objects):
    for o in objects:
        kind, name = o.get("kind"), o.get("metadata", {}).get("name")
        spec = o.get("spec", {})
        if kind == "Pod":
            yield f"{kind}/{name}", o, spec
        elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            yield f"{kind}/{name}", o, spec["template"]["spec"]
        elif kind == "CronJob":
            yield f"{kind}/{name}", o, spec["jobTemplate"]["spec"]["template"]["spec"]


def containers(spec):
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(key, []) or []:
            yield c


def size(text):
    """Bytes of a Kubernetes quantity (2Gi) or a settings size (1GiB, 500MB, 1000)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGTE]i?)?B?\s*", str(text))
    if not m:
        raise ValueError(f"not a size: {text!r}")
    units = {None: 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "E": 10**18,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Ei": 2**60}
    return int(float(m.group(1)) * units[m.group(2)])


def check_pod_security(objects):
    found = False
    for where, _, spec in pod_specs(objects):
        found = True
        psc = spec.get("securityContext", {}) or {}
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(key):
                problem(where, f"{key} is not allowed")
        if spec.get("automountServiceAccountToken") is not False:
            problem(where, "automountServiceAccountToken must be false")
        for v in spec.get("volumes", []) or []:
            kinds = set(v) - {"name"}
            if not kinds <= ALLOWED_VOLUMES:
                problem(where, f"volume {v['name']}: {sorted(kinds - ALLOWED_VOLUMES)} not allowed")
        for s in psc.get("sysctls", []) or []:
            if s.get("name") not in SAFE_SYSCTLS:
                problem(where, f"sysctl {s.get('name')} not allowed")
        pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
        if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
            problem(where, f"pod seccompProfile {pod_seccomp} not allowed")
        for c in containers(spec):
            cw = f"{where} container {c['name']}"
            sc = c.get("securityContext", {}) or {}
            if sc.get("privileged"):
                problem(cw, "privileged")
            if sc.get("allowPrivilegeEscalation") is not False:
                problem(cw, "allowPrivilegeEscalation must be false")
            caps = sc.get("capabilities", {}) or {}
            if "ALL" not in (caps.get("drop") or []):
                problem(cw, "capabilities must drop ALL")
            if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
                problem(cw, f"capabilities add {caps.get('add')} not allowed")
            if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
                problem(cw, "runAsNonRoot must be true")
            if sc.get("runAsUser", psc.get("runAsUser")) == 0:
                problem(cw, "runAsUser 0 not allowed")
            seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
            if seccomp not in ("RuntimeDefault", "Localhost"):
                problem(cw, "seccompProfile must be RuntimeDefault or Localhost")
            if sc.get("procMount") not in (None, "Default"):
                problem(cw, "procMount must be Default")
            se = sc.get("seLinuxOptions") or psc.get("seLinuxOptions") or {}
            if se.get("user") or se.get("role"):
                problem(cw, "seLinuxOptions user/role not allowed")
            if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
                problem(cw, "appArmorProfile Unconfined not allowed")
            for p in c.get("ports", []) or []:
                if p.get("hostPort"):
                    problem(cw, "hostPort not allowed")
            if sc.get("readOnlyRootFilesystem") is not True:
                problem(cw, "readOnlyRootFilesystem must be true")
    if not found:
        problem("build", "no pod templates found")


def documented_secrets(readme):
    """Secret name -> keys, from the README's `kubectl ... create secret generic` commands."""
    text = open(readme).read().replace("\\\n", " ")
    secrets = {}
    for line in text.splitlines():
        m = re.search(r"kubectl .*create secret generic (\S+)(.*)", line)
        if not m:
            continue
        keys = secrets.setdefault(m.group(1), set())
        for spec in re.findall(r"--from-file=(\S+)", m.group(2)):
            keys.add(spec.split("=", 1)[0] if "=" in spec else spec.rsplit("/", 1)[-1])
    return secrets


def files_named(settings):
    out = []
    kafka = settings.get("kafka", {})
    tls = kafka.get("tls", {}) if isinstance(kafka.get("tls"), dict) else {}
    for k in ("ca_file", "cert_file", "key_file"):
        if k in tls:
            out.append(("both", f"kafka.tls.{k}", tls[k]))
    sasl = kafka.get("sasl", {}) or {}
    if "password_file" in sasl:
        out.append(("both", "kafka.sasl.password_file", sasl["password_file"]))
    db = settings.get("database", {}) or {}
    for k in ("password_file", "sslrootcert"):
        if k in db:
            out.append(("sink", f"database.{k}", db[k]))
    return out


def env_of(container):
    return {e["name"]: e for e in container.get("env", []) or []}


def check_settings(objects, toml_path, readme):
    settings = tomllib.load(open(toml_path, "rb"))
    secrets = documented_secrets(readme)
    configmaps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    for o in objects:
        if o["kind"] == "Secret":
            problem(f"Secret/{o['metadata']['name']}", "Secrets stay out of the base: applying it "
                    "would overwrite the real ones (create them as the README says)")
    for where, obj, spec in pod_specs(objects):
        volumes = {v["name"]: v for v in spec.get("volumes", []) or []}
        for c in containers(spec):
            cw = f"{where} container {c['name']}"
            cmd = c.get("command", []) + c.get("args", [])
            role = cmd[0] if cmd else ""
            if "--config" not in cmd:
                continue
            config_path = cmd[cmd.index("--config") + 1]
            mounts = c.get("volumeMounts", []) or []

            def source_of(path):
                for m in mounts:
                    root = m["mountPath"].rstrip("/") + "/"
                    if path.startswith(root):
                        return m, path[len(root):]
                return None, None

            m, rel = source_of(config_path)
            if m is None or m.get("subPath"):
                problem(cw, f"{config_path} must be in a mounted ConfigMap directory (no subPath)")
            else:
                cm = volumes[m["name"]].get("configMap", {}).get("name")
                if rel not in (configmaps.get(cm, {}).get("data") or {}):
                    problem(cw, f"{config_path}: ConfigMap {cm} has no key {rel}")
            for who, key, path in files_named(settings):
                if who != "both" and who != role:
                    continue
                m, rel = source_of(path)
                if m is None:
                    problem(cw, f"{key} = {path} is not mounted")
                    continue
                secret = volumes[m["name"]].get("secret", {}).get("secretName")
                if secret is None:
                    problem(cw, f"{key} = {path} is not from a Secret")
                elif rel not in secrets.get(secret, set()):
                    problem(cw, f"{key} = {path}: the README's commands do not create key "
                                f"{rel!r} of Secret {secret} (they create {sorted(secrets.get(secret, []))})")
        if obj["kind"] == "StatefulSet":
            check_spool_and_shard(where, obj, spec, settings)
    if not any(o["kind"] == "StatefulSet" for o in objects):
        problem("build", "no checker StatefulSet")


def check_spool_and_shard(where, obj, spec, settings):
    claims = {t["metadata"]["name"]: t for t in obj["spec"].get("volumeClaimTemplates", [])}
    for c in containers(spec):
        env = env_of(c)
        spool_dir = settings.get("checker", {}).get("spool_dir")
        if "WEBMON__CHECKER__SPOOL_DIR" in env:
            spool_dir = env["WEBMON__CHECKER__SPOOL_DIR"].get("value")
        mount = next((m for m in c.get("volumeMounts", []) or []
                      if spool_dir and spool_dir.rstrip("/") == m["mountPath"].rstrip("/")), None)
        if mount is None:
            problem(where, f"checker.spool_dir {spool_dir} is not a mounted volume")
            continue
        claim = claims.get(mount["name"])
        if claim is None:
            problem(where, f"the spool volume {mount['name']} is not a volumeClaimTemplate")
            continue
        volume = size(claim["spec"]["resources"]["requests"]["storage"])
        bound = settings.get("checker", {}).get("spool_max_bytes", DEFAULT_SPOOL_MAX)
        if "WEBMON__CHECKER__SPOOL_MAX_BYTES" in env:
            bound = env["WEBMON__CHECKER__SPOOL_MAX_BYTES"].get("value")
        if size(bound) > volume * SPOOL_SHARE:
            problem(where, f"checker.spool_max_bytes {bound} is above {int(SPOOL_SHARE * 100)}% "
                           f"of the spool volume ({claim['spec']['resources']['requests']['storage']}): "
                           "lower it or grow the volume")
        shard = env.get("WEBMON_SHARD", {}).get("value", "")
        m = re.fullmatch(r"\$\(POD_INDEX\)/(\d+)", shard)
        if not m:
            problem(where, f"WEBMON_SHARD must be $(POD_INDEX)/N, found {shard!r}")
        elif int(m.group(1)) != obj["spec"].get("replicas", 1):
            problem(where, f"WEBMON_SHARD {shard}: N must equal replicas ({obj['spec'].get('replicas', 1)})")


def metric_names(sources):
    names = set()
    for src in sources:
        text = open(src).read()
        prefix = re.search(r'sub_registry_with_prefix\("(\w+)"\)', text).group(1)
        block = text[text.index("sub_registry_with_prefix"):]
        for name in re.findall(r'register\(\s*"(\w+)"', block):
            base = f"{prefix}_{name}"
            names |= {base, f"{base}_total", f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    return names


def check_rules(rule_file, prometheus_rule, sources):
    known = metric_names(sources)
    groups = yaml.safe_load(open(rule_file))["groups"]
    crd = docs(prometheus_rule)
    rules = [d for d in crd if d.get("kind") == "PrometheusRule"]
    if len(rules) != 1:
        problem(prometheus_rule, "expected one PrometheusRule")
    elif rules[0]["spec"]["groups"] != groups:
        problem(prometheus_rule, f"its groups differ from {rule_file}: keep the two the same")
    alerts = [r for g in groups for r in g["rules"]]
    if not alerts:
        problem(rule_file, "no rules")
    for r in alerts:
        for name in re.findall(r"\b(webmon_\w+)", r["expr"]):
            if name not in known:
                problem(rule_file, f"alert {r.get('alert')}: no metric {name}")
        for key in ("alert", "expr", "labels", "annotations"):
            if key not in r:
                problem(rule_file, f"rule {r.get('alert')}: missing {key}")


def main(argv):
    if len(argv) >= 2 and argv[0] == "pod-security":
        check_pod_security(docs(argv[1]))
    elif len(argv) == 4 and argv[0] == "settings":
        check_settings(docs(argv[1]), argv[2], argv[3])
    elif len(argv) >= 4 and argv[0] == "rules":
        check_rules(argv[1], argv[2], argv[3:])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
