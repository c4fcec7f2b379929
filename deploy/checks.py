"""Checks of the deployment files that go beyond their JSON schemas (run by deploy/check.sh).

    checks.py schemas OUT VERSION...   lay out kubernetes-validate's JSON schemas for kubeconform
    checks.py compose PROJECT.json     the resolved compose project (from composecheck -json)
    checks.py manifests FILE...        manifests rendered by `helm template`
    checks.py static                   Dockerfile vs .dockerignore, chart config links, dashboard
    checks.py extract KIND FILE OUT    the objects of one kind in FILE, as a JSON array in OUT

Each check says what it found wrong and exits 1; silence and exit 0 mean every check passed.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.settings import Settings  # noqa: E402 - after the path insert, for running from anywhere

CHART = ROOT / "deploy" / "helm" / "mention-router"
DASHBOARD = CHART / "dashboards" / "mention-router.json"
STAGES = ("ingest", "classifier", "router")
APP_SERVICES = ("api", *STAGES)

problems: list[str] = []


def problem(message: str) -> None:
    problems.append(message)


# --- Kubernetes schemas -----------------------------------------------------------------------------


def cmd_schemas(out: Path, versions: list[str]) -> None:
    """kubernetes-validate ships, per Kubernetes version, one JSON schema per kind whose references
    point at `/api/_definitions.json` relative to an `$id` on kubernetes.io. kubeconform resolves
    references against the file's own location, so the `$id` goes and the references become relative
    to the directory: `<out>/v<version>-standalone-strict/<kind>-<group>-<version>.json`."""
    import kubernetes_validate

    source_root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    for version in versions:
        source = source_root / f"v{version}-local-strict"
        if not source.is_dir():
            known = sorted(p.name for p in source_root.iterdir())
            raise SystemExit(f"kubernetes-validate has no schemas for {version} (it has: {', '.join(known)})")
        target = out / f"v{version}-standalone-strict"
        target.mkdir(parents=True, exist_ok=True)
        for path in source.glob("*.json"):
            document = json.loads(path.read_text())
            document.pop("$id", None)
            text = json.dumps(document).replace('"/api/_definitions.json#', '"_definitions.json#')
            (target / path.name).write_text(text)


# --- compose ------------------------------------------------------------------------------------------


def _settings_from_env(env: dict[str, str], where: str) -> Settings | None:
    """The services' own settings class, fed the environment a deployment gives them."""
    values = {k: v for k, v in env.items() if k.startswith("MR_")}
    unknown = {k for k in values if k.removeprefix("MR_").lower() not in Settings.model_fields}
    if unknown:
        problem(f"{where}: environment variables no setting reads: {', '.join(sorted(unknown))}")
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith("MR_")]:
            del os.environ[key]
        os.environ.update(values)
        return Settings()
    except Exception as exc:  # noqa: BLE001 - any validation error is reported as a finding
        problem(f"{where}: the services would refuse this configuration: {exc}")
        return None
    finally:
        os.environ.clear()
        os.environ.update(saved)


def cmd_compose(project_file: Path) -> None:
    project = json.loads(project_file.read_text())
    services: dict[str, Any] = project["services"]
    for name in ("kafka", "postgres", "migrate", "topics", *APP_SERVICES):
        if name not in services:
            problem(f"compose: no service {name!r}")
    for name in ("migrate", "topics", *APP_SERVICES):
        service = services.get(name, {})
        settings = _settings_from_env(service.get("environment") or {}, f"compose service {name}")
        if settings is not None and name == "topics":
            for topic in settings.all_topics():
                _, retention = settings.topic_spec(topic)
                if retention is None:
                    problem(f"compose: the topic job leaves the retention of {topic} to the broker")
        command = service.get("command") or []
        expected = {"migrate": ["migrate"], "topics": ["topics", "create"]}.get(name, [name])
        if command != expected:
            problem(f"compose service {name}: command {command}, expected {expected}")
    for name in APP_SERVICES:
        service = services.get(name, {})
        health = service.get("healthcheck") or {}
        if not health.get("test") or health.get("disable"):
            problem(f"compose service {name}: no healthcheck")
        depends = service.get("depends_on") or {}
        conditions = {d: v.get("condition") for d, v in depends.items()}
        if name != "classifier" and conditions.get("migrate") != "service_completed_successfully":
            problem(f"compose service {name}: does not wait for the migration to complete")
        if conditions.get("topics") != "service_completed_successfully":
            problem(f"compose service {name}: does not wait for the topic job to complete")
    for job in ("migrate", "topics"):
        if (services.get(job, {}).get("restart") or "no") != "no":
            problem(f"compose service {job}: a one-shot job must not restart")
    published = [p for p in services.get("api", {}).get("ports") or [] if p.get("target") == 8000]
    if not published or str(published[0].get("published")) != "8000":
        problem("compose: the API is not published on port 8000")
    for name in ("prometheus", "grafana"):
        if "observability" not in (services.get(name, {}).get("profiles") or []):
            problem(f"compose service {name}: not in the observability profile")
    _check_prometheus_config(ROOT / "deploy" / "compose" / "prometheus" / "prometheus.yml")
    _check_compose_security(services)


def _compose_files(service: dict[str, Any]) -> set[str]:
    """The directories and files a compose service mounts: volumes, and secrets under /run/secrets."""
    paths = {v["target"] for v in service.get("volumes") or []}
    for secret in service.get("secrets") or []:
        target = secret.get("target") or secret["source"]
        paths.add(target if target.startswith("/") else f"/run/secrets/{target}")
    return paths


def _check_compose_security(services: dict[str, Any]) -> None:
    """With SASL (compose.secure.yaml): each service its own user, its password a secret, the CA on a
    volume; the topic job as the admin; the kafka-access job sets exactly the services' users and
    grants them their ACLs before they start."""
    logins: dict[str, Settings] = {}
    for name in ("topics", "kafka-access", *APP_SERVICES):
        service = services.get(name)
        if service is None:
            continue
        settings = _settings_from_env(service.get("environment") or {}, f"compose service {name}")
        if settings is None or settings.kafka_security_protocol.value == "PLAINTEXT":
            continue
        logins[name] = settings
        files = _compose_files(service)
        for setting, path in (
            ("MR_KAFKA_SASL_PASSWORD_FILE", settings.kafka_sasl_password_file),
            ("MR_KAFKA_SSL_CAFILE", settings.kafka_ssl_cafile),
        ):
            if path is None or not (str(path) in files or str(path.parent) in files):
                problem(f"compose service {name}: {setting} {path} is neither a secret nor on a volume")
    if not logins:
        return
    users = {n: logins[n].kafka_sasl_username if n in logins else None for n in APP_SERVICES}
    if None in users.values() or len(set(users.values())) != len(users):
        problem(f"compose: with SASL every service needs a Kafka user of its own, got {users}")
    if "topics" not in logins:
        problem("compose: the topic job does not log in to the secured broker")
    access = logins.get("kafka-access")
    if access is None:
        problem("compose: a secured broker without the kafka-access job (users and ACLs)")
        return
    if access.kafka_service_users != users:
        problem(
            f"compose: kafka-access grants ACLs to {access.kafka_service_users}, the services are {users}"
        )
    files = _compose_files(services["kafka-access"])
    missing = [u for u in users.values() if f"/run/secrets/kafka-users/{u}" not in files]
    if missing:
        problem(f"compose: kafka-access has no password for {missing}")
    for name in APP_SERVICES:
        condition = (services[name].get("depends_on") or {}).get("kafka-access", {}).get("condition")
        if condition != "service_completed_successfully":
            problem(f"compose service {name}: does not wait for the kafka-access job")


def _check_prometheus_config(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    ports: dict[str, int] = {}
    for job in config.get("scrape_configs", []):
        for sd in job.get("dns_sd_configs", []):
            for name in sd.get("names", []):
                ports[name] = int(sd.get("port", 0))
    # Every service on its metrics port: the API's own port serves no metrics.
    want = dict.fromkeys(APP_SERVICES, 9100)
    if any(ports.get(name) != port for name, port in want.items()):
        problem(f"prometheus.yml: scrapes {ports}, expected at least {want}")


# --- rendered manifests -----------------------------------------------------------------------------


def _documents(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    for path in paths:
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield document


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def cmd_manifests(paths: list[Path]) -> None:
    for path in paths:
        _check_release(path, list(_documents([path])))


def _check_release(path: Path, documents: list[dict[str, Any]]) -> None:
    where = path.name
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in documents:
        by_kind.setdefault(d["kind"], []).append(d)
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    services = by_kind.get("Service", [])
    components = {
        d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        for d in deployments.values()
    }
    if components != set(APP_SERVICES):
        problem(
            f"{where}: Deployments for {sorted(c or '?' for c in components)}, "
            f"expected {sorted(APP_SERVICES)}"
        )
    config_maps = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]
        if not _matches(deployment["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"]):
            problem(f"{where}: Deployment {name}: its selector does not select its own pods")
        spec = pod["spec"]
        (container,) = spec["containers"]
        component = pod["metadata"]["labels"]["app.kubernetes.io/component"]
        if container.get("args") != [component]:
            problem(f"{where}: Deployment {name}: args {container.get('args')}, expected [{component!r}]")
        port_names = {p["name"] for p in container.get("ports", [])}
        for probe, path_ in (
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
            ("startupProbe", "/healthz"),
        ):
            http = (container.get(probe) or {}).get("httpGet") or {}
            if http.get("path") != path_ or http.get("port") not in port_names:
                problem(f"{where}: Deployment {name}: {probe} is not GET {path_} on a declared port")
        env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
        secret_refs = [e for e in container.get("env", []) if "valueFrom" in e]
        # The database URL comes from a Secret; any syntactically valid URL stands in for it here.
        for ref in secret_refs:
            env[ref["name"]] = (
                "postgresql+asyncpg://user:secret@db:5432/app" if ref["name"] == "MR_DATABASE_URL" else "x"
            )
        settings = _settings_from_env(env, f"{where}: Deployment {name}")
        if settings is not None:
            mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
            for file in (settings.taxonomy_file, settings.routing_file):
                if not str(file).startswith(mounts.get("config", "/nowhere") + "/"):
                    problem(f"{where}: Deployment {name}: {file} is not on the mounted ConfigMap")
        for volume in spec.get("volumes", []):
            cm = (volume.get("configMap") or {}).get("name")
            if cm and cm not in config_maps:
                problem(f"{where}: Deployment {name}: mounts ConfigMap {cm}, which the chart does not render")
        selected = [s for s in services if _matches(s["spec"]["selector"], pod["metadata"]["labels"])]
        if not selected:
            problem(f"{where}: Deployment {name}: no Service selects its pods")
        for service in selected:
            for port in service["spec"]["ports"]:
                if port.get("targetPort") not in port_names:
                    problem(
                        f"{where}: Service {service['metadata']['name']}: "
                        f"targetPort {port.get('targetPort')} is not a port of {name}"
                    )
    for config_map in config_maps.values():
        for key, text in (config_map.get("data") or {}).items():
            if key.endswith(".yaml") and not yaml.safe_load(text):
                problem(f"{where}: ConfigMap {config_map['metadata']['name']}: {key} is empty or not YAML")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        selector = pdb["spec"]["selector"]["matchLabels"]
        if not any(
            _matches(selector, d["spec"]["template"]["metadata"]["labels"]) for d in deployments.values()
        ):
            problem(f"{where}: PodDisruptionBudget {pdb['metadata']['name']} selects no pods")
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        target = hpa["spec"]["scaleTargetRef"]["name"]
        if target not in deployments:
            problem(
                f"{where}: HorizontalPodAutoscaler {hpa['metadata']['name']} targets {target}, not rendered"
            )
        elif "replicas" in deployments[target]["spec"]:
            problem(f"{where}: Deployment {target} sets replicas although an HPA scales it")
    hooks = {j["metadata"]["name"]: j["metadata"].get("annotations", {}) for j in by_kind.get("Job", [])}
    for suffix in ("-migrate", "-topics"):
        job = next((a for n, a in hooks.items() if n.endswith(suffix)), None)
        if (
            job is None
            or "pre-install" not in job.get("helm.sh/hook", "")
            or "pre-upgrade" not in job.get("helm.sh/hook", "")
        ):
            problem(f"{where}: no pre-install/pre-upgrade hook Job *{suffix}")
    for monitor in by_kind.get("ServiceMonitor", []):
        # Its schema is checked by crdcheck; here, that it scrapes every component on its metrics port,
        # and nothing on another port (the API's http port serves no metrics).
        spec = monitor["spec"]
        selected = [s for s in services if _matches(spec["selector"]["matchLabels"], s["metadata"]["labels"])]
        for endpoint in spec.get("endpoints", []):
            if endpoint.get("port") != "metrics" or endpoint.get("path") != "/metrics":
                problem(f"{where}: ServiceMonitor endpoint {endpoint} is not /metrics on the metrics port")
        scraped = {
            s["metadata"]["labels"].get("app.kubernetes.io/component")
            for s in selected
            if any(p.get("name") == "metrics" for p in s["spec"]["ports"])
        }
        if scraped != set(APP_SERVICES):
            problem(f"{where}: ServiceMonitor scrapes {sorted(c or '?' for c in scraped)}, expected all")
    _check_metrics_stay_inside(where, by_kind, services)
    _check_kafka_security(where, deployments, by_kind.get("Job", []))


def _container_settings(container: dict[str, Any], where: str) -> Settings | None:
    """A container's environment read by Settings (a Secret's value stands in as a placeholder)."""
    env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
    for ref in [e for e in container.get("env", []) if "valueFrom" in e]:
        env[ref["name"]] = (
            "postgresql+asyncpg://user:secret@db:5432/app" if ref["name"] == "MR_DATABASE_URL" else "x"
        )
    return _settings_from_env(env, where)


def _secret_mounts(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """mount path -> volume, for the container's volumes that come from Secrets."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    out = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        if "secret" in volume or "projected" in volume:
            out[mount["mountPath"]] = volume
    return out


def _check_kafka_login(
    where: str, pod: dict[str, Any], container: dict[str, Any], settings: Settings
) -> None:
    """With SASL: a user, and its password and the CA as files of mounted Secrets."""
    if settings.kafka_security_protocol.value == "PLAINTEXT":
        return
    if not settings.kafka_sasl_username:
        problem(f"{where}: SASL without MR_KAFKA_SASL_USERNAME")
    mounts = _secret_mounts(pod, container)
    for setting, path in (
        ("MR_KAFKA_SASL_PASSWORD_FILE", settings.kafka_sasl_password_file),
        ("MR_KAFKA_SSL_CAFILE", settings.kafka_ssl_cafile),
    ):
        if path is None:
            if setting == "MR_KAFKA_SASL_PASSWORD_FILE" and settings.kafka_sasl_password is None:
                problem(f"{where}: SASL without a password (MR_KAFKA_SASL_PASSWORD_FILE)")
            continue
        if str(path.parent) not in mounts:
            problem(f"{where}: {setting} {path} is not on a mounted Secret")


def _check_kafka_security(where: str, deployments: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
    """Every Job's containers read by Settings; with SASL every service logs in as its own user with its
    password and CA from Secrets, the topic Job too, and the access Job grants the ACLs to exactly the
    users the Deployments log in as (the model of shared/kafkaacl.py, one source of truth)."""
    logins: dict[str, Settings] = {}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        settings = _container_settings(container, f"{where}: Deployment {name}")
        if settings is not None:
            _check_kafka_login(f"{where}: Deployment {name}", pod["spec"], container, settings)
            logins[pod["metadata"]["labels"]["app.kubernetes.io/component"]] = settings
    protocols = {s.kafka_security_protocol.value for s in logins.values()}
    if len(protocols) > 1:
        problem(f"{where}: the services speak different Kafka security protocols: {sorted(protocols)}")
    secured = protocols != {"PLAINTEXT"}
    users = [s.kafka_sasl_username for s in logins.values()]
    if secured and len(set(users)) != len(users):
        problem(f"{where}: services share a Kafka user ({users}): each needs its own principal")
    for job in jobs:
        name = job["metadata"]["name"]
        pod = job["spec"]["template"]["spec"]
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            what = f"{where}: Job {name} container {container['name']}"
            settings = _container_settings(container, what)
            if settings is None:
                continue
            _check_kafka_login(what, pod, container, settings)
            if name.endswith("-topics") and secured and settings.kafka_security_protocol.value == "PLAINTEXT":
                problem(f"{what}: the topic Job does not log in to the secured cluster")
            if container.get("args") == ["kafka", "acls", "--apply"]:
                wanted = {c: s.kafka_sasl_username for c, s in logins.items()}
                if settings.kafka_service_users != wanted:
                    problem(
                        f"{what}: grants ACLs to {settings.kafka_service_users}, "
                        f"the services log in as {wanted}"
                    )
            if container.get("args", [])[:3] == ["kafka", "users", "apply"]:
                mounted = _secret_mounts(pod, container).get(container["args"][3], {})
                paths = {
                    i["path"]
                    for src in mounted.get("projected", {}).get("sources", [])
                    for i in src["secret"]["items"]
                }
                if paths != set(users):
                    problem(
                        f"{what}: sets the passwords of {sorted(paths)}, "
                        f"the services log in as {sorted(users)}"
                    )
    if secured and not any(j["metadata"]["name"].endswith("-topics") for j in jobs):
        problem(f"{where}: a secured cluster without the topic Job (the services do not create topics)")


def _check_metrics_stay_inside(
    where: str, by_kind: dict[str, list[dict[str, Any]]], services: list[Any]
) -> None:
    """The metrics port is in no Service an ingress leads to or that is exposed outside the cluster, and
    every component's pods declare it."""
    for service in services:
        ports = {p.get("name") for p in service["spec"]["ports"]}
        if "metrics" in ports and (len(ports) > 1 or service["spec"].get("type", "ClusterIP") != "ClusterIP"):
            problem(f"{where}: Service {service['metadata']['name']} mixes the metrics port with others")
    by_name = {s["metadata"]["name"]: s for s in services}
    for ingress in by_kind.get("Ingress", []):
        for rule in ingress["spec"].get("rules", []):
            for path in (rule.get("http") or {}).get("paths", []):
                backend = path["backend"]["service"]
                target = by_name.get(backend["name"])
                if target is None:
                    problem(f"{where}: Ingress {ingress['metadata']['name']}: no Service {backend['name']}")
                elif backend["port"].get("name") == "metrics" or any(
                    p.get("name") == "metrics" for p in target["spec"]["ports"]
                ):
                    problem(f"{where}: Ingress {ingress['metadata']['name']} leads to a metrics port")
    for deployment in by_kind.get("Deployment", []):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        if "metrics" not in {p["name"] for p in container.get("ports", [])}:
            problem(f"{where}: Deployment {deployment['metadata']['name']} declares no metrics port")


# --- static files -----------------------------------------------------------------------------------


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore semantics, for the simple patterns this repository uses."""
    ignored = False
    parts = path.strip("/").split("/")
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.removeprefix("!").strip("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if fnmatch.fnmatchcase(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatchcase(parts[i - 1], pattern.removeprefix("**/"))
            ):
                ignored = not negate
                break
    return ignored


def cmd_static() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, flags=re.M):
        sources = line.split()[:-1]
        for source in sources:
            if not (ROOT / source).exists():
                problem(f"Dockerfile: COPY {source}: no such file in the repository")
            elif _ignored(source, patterns):
                problem(f"Dockerfile: COPY {source}: excluded from the build context by .dockerignore")
    for name in ("taxonomy.yaml", "routing.yaml"):
        link = CHART / "files" / name
        if not link.is_symlink() or link.resolve() != (ROOT / "config" / name).resolve():
            problem(f"{link.relative_to(ROOT)} must be a link to config/{name} (one source for both)")
    known = set(re.findall(r'"((?:mr|process)_[a-z_]+)"', (ROOT / "shared" / "metrics.py").read_text()))
    known |= set(re.findall(r'"(mr_[a-z_]+)"', (ROOT / "services" / "api" / "metrics.py").read_text()))
    known |= {"process_resident_memory_bytes", "process_cpu_seconds_total"}
    dashboard = json.loads(DASHBOARD.read_text())
    used: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            used |= set(re.findall(r"\b((?:mr|process)_[a-z_]+?)(?:_bucket|_sum|_count)?\b", target["expr"]))
    for name in sorted(used - known):
        problem(f"{DASHBOARD.relative_to(ROOT)}: queries {name}, which no service exports")
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("throughput", "lag", "queue", "sla", "dead-letter"):
        if topic not in titles:
            problem(f"{DASHBOARD.relative_to(ROOT)}: no panel about {topic}")


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "schemas":
        cmd_schemas(Path(args[0]), args[1:])
    elif command == "compose":
        cmd_compose(Path(args[0]))
    elif command == "manifests":
        cmd_manifests([Path(a) for a in args])
    elif command == "static":
        cmd_static()
    elif command == "extract":
        kind, source, target = args
        objects = [d for d in _documents([Path(source)]) if d.get("kind") == kind]
        Path(target).write_text(json.dumps(objects))
    else:
        raise SystemExit(__doc__)
    for message in problems:
        sys.stderr.write(f"FAIL {message}\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
