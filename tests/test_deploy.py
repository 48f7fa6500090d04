"""Deployment packaging (deploy/): image, Kubernetes manifests, compose file, no committed secret.

Nothing here needs a container engine or a cluster (neither runs on this machine), so every
artefact is checked statically, with real parsers and published schemas where a package has them:

- Kubernetes: the example overlay is built by a small kustomize stand-in below (resources,
  generators, images, namespace, strategic-merge patches of Deployments, JSON 6902 patches: it
  refuses any field it does not implement) and, where `kubectl` is installed, the stand-in's output
  must equal `kubectl kustomize`'s. Core objects are validated against the Kubernetes JSON schemas
  of the `kubernetes-validate` package (strict: unknown fields fail), the prometheus-operator ones
  against tests/schemas/, derived from the operator's CRDs (generate_prometheus_operator.py there),
  with unknown fields forbidden. Then what a schema cannot see: selectors, ports, probes, secret
  keys, flags the commands really have, job labels the alert rules select on.
- The image: deploy/Containerfile is parsed by `dockerfile` (BuildKit's own parser); the health
  check script runs against a real exporter process.
- Compose: the `compose-spec` package (a strict compose-spec parser) after interpolating `.env`
  the way compose does; `promtool check config` on the generated prometheus.yml.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from deploy import render
from exec_watchdog import __version__
from exec_watchdog.alerts.render import profile_settings
from exec_watchdog.cli import build_parser
from exec_watchdog.common import contract
from exec_watchdog.grafana import DASHBOARD_PATH, PROVISIONING_DIR
from exec_watchdog.testbed.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
OVERLAY = KUBERNETES / "overlays" / "example"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
CONTAINERFILE = DEPLOY / "Containerfile"
DOCKERIGNORE = DEPLOY / "Containerfile.dockerignore"
HEALTHCHECK = DEPLOY / "container" / "healthcheck.py"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
RULES_PRODUCTION = ROOT / "alerts" / "generated" / "rules-production.yml"
ALERTMANAGER_PRODUCTION = ROOT / "alerts" / "generated" / "alertmanager-production.yml"

PRODUCTION = profile_settings("production")
# The oldest Kubernetes we claim (PodDisruptionBudget policy/v1, seccompProfile fields) and the newest schemas shipped.
KUBERNETES_VERSIONS = ("1.28", kubernetes_validate.latest_version())
CLUSTER_SCOPED = {"Namespace"}
PROMETHEUS_OPERATOR_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig"),
}


def _tool(name: str) -> str:
    """A Debian-packaged tool; a missing one fails the run (make system-deps installs it)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/bin")
    assert found, f"{name} not found: run `make system-deps`"
    return found


def _load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 reads a bare ``=`` as a string (kustomize writes `matchType: =`); PyYAML's 1.1 does not."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:value"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


# =============================================================================================
# A kustomize stand-in, for what deploy/kubernetes uses. It raises on any field it does not
# implement, so it can never silently build something kubectl would build differently.

_KNOWN_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "secretGenerator",
                 "configMapGenerator", "patches"}
# Strategic-merge keys of the Deployment fields we patch (from the Kubernetes API's patchMergeKey).
_MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
               "volumeMounts": "mountPath", "ports": "containerPort"}
_GENERATED = "__generated_hash__"  # private marker: name gets a content hash when the build ends


class KustomizeError(Exception):
    """The kustomization uses something the stand-in does not implement, or is wrong."""


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    objects = _build(directory)
    renames: dict[tuple[str, str], str] = {}
    for obj in objects:
        if obj.pop(_GENERATED, False):
            digest = hashlib.sha256(json.dumps(obj.get("data", {}), sort_keys=True).encode()).hexdigest()
            old = obj["metadata"]["name"]
            obj["metadata"]["name"] = f"{old}-{digest[:10]}"
            renames[(obj["kind"], old)] = obj["metadata"]["name"]
    for obj in objects:
        for pod in _pod_specs(obj):
            _rename_references(pod, renames)
    return objects


def _build(directory: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _KNOWN_FIELDS
    if unknown:
        raise KustomizeError(f"{directory}: the stand-in does not implement {sorted(unknown)}")
    objects: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = (directory / resource).resolve()
        objects += _build(path) if path.is_dir() else _load_all(path)
    for generator in kustomization.get("configMapGenerator", []):
        _generate(objects, "ConfigMap", generator, directory)
    for generator in kustomization.get("secretGenerator", []):
        _generate(objects, "Secret", generator, directory)
    for patch in kustomization.get("patches", []):
        _patch(objects, patch, directory)
    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kustomization["namespace"]
    for image in kustomization.get("images", []):
        for obj in objects:
            for pod in _pod_specs(obj):
                for container in pod.get("containers", []) + pod.get("initContainers", []):
                    name, _, tag = container["image"].partition(":")
                    if name == image["name"]:
                        container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    return objects


def _generate(objects: list[dict[str, Any]], kind: str, generator: dict[str, Any], directory: Path) -> None:
    unknown = set(generator) - {"name", "literals", "envs", "behavior", "options", "type"}
    options = generator.get("options", {})
    if unknown or set(options) - {"labels", "disableNameSuffixHash"}:
        raise KustomizeError(f"generator {generator['name']}: not implemented: {sorted(unknown)} {sorted(options)}")
    pairs: dict[str, str] = {}
    lines = list(generator.get("literals", []))
    for env_file in generator.get("envs", []):
        lines += [line for line in (directory / env_file).read_text().splitlines()
                  if line.strip() and not line.lstrip().startswith("#")]
    for line in lines:
        key, sep, value = line.partition("=")
        if not sep:
            raise KustomizeError(f"generator {generator['name']}: {line!r} is not KEY=VALUE")
        pairs[key.strip()] = value
    data = {k: base64.b64encode(v.encode()).decode() if kind == "Secret" else v for k, v in pairs.items()}
    if generator.get("behavior", "create") == "merge":
        (existing,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == generator["name"]]
        existing["data"].update(data)
        return
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": kind,
                           "metadata": {"name": generator["name"], "labels": dict(options.get("labels", {}))},
                           "data": data, _GENERATED: not options.get("disableNameSuffixHash", False)}
    if kind == "Secret":
        obj["type"] = generator.get("type", "Opaque")
    objects.append(obj)


def _patch(objects: list[dict[str, Any]], entry: dict[str, Any], directory: Path) -> None:
    document = yaml.safe_load((directory / entry["path"]).read_text() if "path" in entry else entry["patch"])
    target = entry.get("target")
    if isinstance(document, list):  # JSON 6902
        if target is None:
            raise KustomizeError("a JSON 6902 patch needs a target")
        for obj in _selected(objects, target):
            for operation in document:
                _json_patch(obj, operation)
        return
    if document["kind"] != "Deployment":
        raise KustomizeError("the stand-in strategic-merges Deployments only (CRDs merge differently)")
    selector = target or {"kind": document["kind"], "name": document["metadata"]["name"]}
    matched = _selected(objects, selector)
    if not matched:
        raise KustomizeError(f"patch {entry} matches nothing")
    for obj in matched:
        _strategic_merge(obj, document)


def _selected(objects: list[dict[str, Any]], target: dict[str, str]) -> list[dict[str, Any]]:
    if set(target) - {"group", "version", "kind", "name"}:
        raise KustomizeError(f"target {target}: not implemented")

    def matches(obj: dict[str, Any]) -> bool:
        group, _, version = obj["apiVersion"].rpartition("/")
        found = {"group": group, "version": version, "kind": obj["kind"], "name": obj["metadata"]["name"]}
        return all(found[k] == v for k, v in target.items())

    return [obj for obj in objects if matches(obj)]


def _strategic_merge(base: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _strategic_merge(base[key], value)
        elif isinstance(value, list) and key in _MERGE_KEYS and isinstance(base.get(key), list):
            merge_key = _MERGE_KEYS[key]
            for item in value:
                same = [b for b in base[key] if b.get(merge_key) == item.get(merge_key)]
                if same:
                    _strategic_merge(same[0], item)
                else:
                    base[key].append(copy.deepcopy(item))
        else:
            base[key] = copy.deepcopy(value)


def _json_patch(obj: dict[str, Any], operation: dict[str, Any]) -> None:
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]]
    node: Any = obj
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    op = operation["op"]
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        if op == "add":
            node.insert(index, operation["value"])
        elif op == "replace":
            node[index] = operation["value"]
        elif op == "remove":
            del node[index]
        else:
            raise KustomizeError(f"JSON patch op {op!r} not implemented")
    elif op in ("add", "replace"):
        if op == "replace" and last not in node:
            raise KustomizeError(f"replace {operation['path']}: no such field")
        node[last] = operation["value"]
    elif op == "remove":
        del node[last]
    else:
        raise KustomizeError(f"JSON patch op {op!r} not implemented")


def _pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [obj["spec"]["template"]["spec"]]
    return []


def _rename_references(pod: dict[str, Any], renames: dict[tuple[str, str], str]) -> None:
    def rename(ref: dict[str, Any], kind: str, field: str = "name") -> None:
        ref[field] = renames.get((kind, ref[field]), ref[field])

    for container in pod.get("containers", []) + pod.get("initContainers", []):
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                rename(source["configMapRef"], "ConfigMap")
            if "secretRef" in source:
                rename(source["secretRef"], "Secret")
        for env in container.get("env", []):
            ref = env.get("valueFrom", {})
            if "configMapKeyRef" in ref:
                rename(ref["configMapKeyRef"], "ConfigMap")
            if "secretKeyRef" in ref:
                rename(ref["secretKeyRef"], "Secret")
    for volume in pod.get("volumes", []):
        if "configMap" in volume:
            rename(volume["configMap"], "ConfigMap")
        if "secret" in volume:
            rename(volume["secret"], "Secret", "secretName")


@pytest.fixture(scope="module")
def kubernetes_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/kubernetes with the example overlay's secret.env made from its (placeholder) example."""
    copied = tmp_path_factory.mktemp("kubernetes") / "kubernetes"
    shutil.copytree(KUBERNETES, copied, ignore=shutil.ignore_patterns("secret.env"))
    example = copied / "overlays" / "example"
    shutil.copy(example / "secret.env.example", example / "secret.env")
    return copied


@pytest.fixture(scope="module")
def overlay(kubernetes_copy: Path) -> list[dict[str, Any]]:
    return kustomize_build(kubernetes_copy / "overlays" / "example")


def _find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def _workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Deployments and StatefulSets: every object that runs pods."""
    return [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]


WORKLOAD = {"exporter": "StatefulSet", "remediator": "Deployment"}


def _component(objects: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind
             and o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component]
    assert len(found) == 1, f"expected one {kind} of the {component}, found {len(found)}"
    return found[0]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


# ---------------------------------------------------------------------------------------------
# The stand-in itself


def test_stand_in_refuses_kustomization_fields_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(KustomizeError, match="namePrefix"):
        kustomize_build(tmp_path)


def test_stand_in_merges_containers_by_name_and_replaces_their_args() -> None:
    base: dict[str, Any] = {"spec": {"replicas": 2, "template": {"spec": {"containers": [
        {"name": "a", "args": ["x", "y"], "env": [{"name": "E", "value": "1"}]}, {"name": "b"}]}}}}
    patch = {"spec": {"replicas": 3, "template": {"spec": {"containers": [
        {"name": "a", "args": ["z"], "env": [{"name": "F", "value": "2"}]}]}}}}
    _strategic_merge(base, patch)
    assert base["spec"]["replicas"] == 3
    first, second = base["spec"]["template"]["spec"]["containers"]
    assert first == {"name": "a", "args": ["z"], "env": [{"name": "E", "value": "1"}, {"name": "F", "value": "2"}]}
    assert second == {"name": "b"}


def test_stand_in_builds_what_kubectl_kustomize_builds(kubernetes_copy: Path, overlay: list[dict[str, Any]]) -> None:
    """Cross-check against the real kustomize (kubectl's), with hash suffixes normalised."""
    kubectl = shutil.which("kubectl") or shutil.which("kustomize")
    if kubectl is None:
        pytest.skip("neither kubectl nor kustomize is installed: the stand-in's output is not cross-checked")
    command = [kubectl, "kustomize"] if kubectl.endswith("kubectl") else [kubectl, "build"]
    built = subprocess.run([*command, str(kubernetes_copy / "overlays" / "example")], capture_output=True,
                           text=True, timeout=60, check=True).stdout
    hashed = re.compile(r"\b(exec-watchdog-settings)-[a-z0-9]{10}\b")

    def normalised(objects: list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
        text = hashed.sub(r"\1-HASH", json.dumps(objects, sort_keys=True))
        return {(o["kind"], o["metadata"]["name"]): o for o in json.loads(text)}

    ours, theirs = normalised(overlay), normalised([d for d in yaml.load_all(built, _Yaml12Loader) if d])
    assert sorted(ours) == sorted(theirs)
    for key in ours:
        assert ours[key] == theirs[key], f"{key} differs from kubectl kustomize"


# ---------------------------------------------------------------------------------------------
# Schemas


def _strict(schema: Any) -> Any:
    """Forbid properties a schema does not declare (the API server would drop or reject them).

    Also moves Go's inline ``(?i)`` to the front of a pattern, where Python's re accepts it.
    """
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        pattern = schema.get("pattern")
        if isinstance(pattern, str) and "(?i)" in pattern:
            schema["pattern"] = "(?i)" + pattern.replace("(?i)", "")
        for value in schema.values():
            _strict(value)
    elif isinstance(schema, list):
        for value in schema:
            _strict(value)
    return schema


@pytest.fixture(scope="module")
def operator_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """The prometheus-operator kinds' schemas (tests/schemas, derived from the CRDs), made strict."""
    files = {
        ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
        ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
        ("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig"): "alertmanagerconfig-monitoring-v1alpha1.json",
    }
    return {key: _strict(json.loads((SCHEMAS / name).read_text())) for key, name in files.items()}


def _validate(obj: dict[str, Any], operator_schemas: dict[tuple[str, str], dict[str, Any]]) -> None:
    key = (obj["apiVersion"], obj["kind"])
    if key in operator_schemas:
        jsonschema.Draft202012Validator(operator_schemas[key]).validate(obj)
        return
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def test_every_object_of_the_example_overlay_is_valid_for_its_kind(
        overlay: list[dict[str, Any]], operator_schemas: dict[tuple[str, str], dict[str, Any]]) -> None:
    kinds = {(o["apiVersion"], o["kind"]) for o in overlay}
    assert kinds >= PROMETHEUS_OPERATOR_KINDS | {("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"),
                                                 ("v1", "Service"), ("policy/v1", "PodDisruptionBudget"),
                                                 ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Namespace")}
    for obj in overlay:
        try:
            _validate(obj, operator_schemas)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")


@pytest.mark.parametrize(("kind", "path", "value"), [
    ("Deployment", ["spec", "replicas"], "two"),
    ("Deployment", ["spec", "template", "spec", "containers", 0, "readinesProbe"], {}),
    ("ServiceMonitor", ["spec", "endpoints", 0, "scrapeTimeot"], "10s"),
    ("AlertmanagerConfig", ["spec", "receivers", 0, "webhookConfigs", 0, "sendResolve"], True),
    ("AlertmanagerConfig", ["spec", "route", "groupBy"], "alertname"),
    ("PrometheusRule", ["spec", "groups", 0, "rules", 0, "labels", "severity"], 1),
])
def test_schemas_reject_a_typo_or_a_wrong_type(overlay: list[dict[str, Any]], kind: str, path: list[Any],
                                               value: Any,
                                               operator_schemas: dict[tuple[str, str], dict[str, Any]]) -> None:
    obj = copy.deepcopy(_find(overlay, kind)[0])
    node = obj
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        _validate(obj, operator_schemas)


# ---------------------------------------------------------------------------------------------
# What a schema cannot see


def test_every_service_selects_pods_and_targets_a_named_container_port(overlay: list[dict[str, Any]]) -> None:
    deployments = _workloads(overlay)
    for service in _find(overlay, "Service"):
        selector = service["spec"]["selector"]
        pods = [d for d in deployments if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(pods) == 1, f"Service {service['metadata']['name']} selects {len(pods)} workloads"
        port_names = {p["name"] for p in _container(pods[0])["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names


def test_deployment_selectors_match_their_own_pod_labels(overlay: list[dict[str, Any]]) -> None:
    for deployment in _workloads(overlay):
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize(("component", "job"), [("exporter", contract.EXPORTER_JOB),
                                                ("remediator", contract.REMEDIATOR_JOB)])
def test_service_monitors_scrape_with_the_job_name_and_intervals_the_rules_assume(
        overlay: list[dict[str, Any]], component: str, job: str) -> None:
    monitor = _component(overlay, "ServiceMonitor", component)
    service = _component(overlay, "Service", component)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    # The rules select up{job="exec-watchdog-..."}: the job comes from this Service label.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == job
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports
        assert endpoint["path"] == "/metrics"
        assert endpoint["interval"] == PRODUCTION["scrape_interval"]
        assert endpoint["scrapeTimeout"] == PRODUCTION["scrape_timeout"]


def test_the_exporter_shards_match_the_replicas_and_the_remediator_runs_twice_with_a_disruption_budget(
        overlay: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    from exec_watchdog.exporter.settings import settings_from_args

    exporter = _component(overlay, "StatefulSet", "exporter")
    replicas = exporter["spec"]["replicas"]
    assert exporter["spec"]["serviceName"] == _component(overlay, "Service", "exporter")["metadata"]["name"]
    assert _component(overlay, "Service", "exporter")["spec"]["clusterIP"] == "None"
    env = {e["name"]: e for e in _container(exporter)["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # Each pod, its name substituted as Kubernetes does, is a different shard of `replicas`.
    shards = set()
    for ordinal in range(replicas):
        pod_name = f"{exporter['metadata']['name']}-{ordinal}"
        value = env["EXEC_WATCHDOG_SHARD"]["value"].replace("$(POD_NAME)", pod_name)
        args = _parse_command(["exporter", "--agent-secret", "x", "--database-url", "postgresql://db/x"],
                              {"EXEC_WATCHDOG_SHARD": value}, monkeypatch)
        shard = settings_from_args(args).shard
        assert shard is not None and shard.count == replicas
        shards.add(shard.index)
    assert shards == set(range(replicas))
    remediator = _component(overlay, "Deployment", "remediator")
    assert remediator["spec"]["replicas"] >= 2
    (budget,) = _find(overlay, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= \
        remediator["spec"]["template"]["metadata"]["labels"].items()
    assert 1 <= budget["spec"]["minAvailable"] < remediator["spec"]["replicas"]


def test_the_remediator_is_ready_on_readyz_and_alive_on_healthz(overlay: list[dict[str, Any]]) -> None:
    container = _container(_component(overlay, "Deployment", "remediator"))
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    exporter = _container(_component(overlay, "StatefulSet", "exporter"))
    assert exporter["livenessProbe"]["httpGet"]["path"] == "/healthz"


def _container_env(container: dict[str, Any], objects: list[dict[str, Any]]) -> dict[str, str]:
    """The environment a container starts with; secret values become 'secret:<key>'."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        (config_map,) = _find(objects, "ConfigMap", source["configMapRef"]["name"])
        env.update(config_map["data"])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "secretKeyRef" in entry["valueFrom"]:
            env[entry["name"]] = f"secret:{entry['valueFrom']['secretKeyRef']['key']}"
        else:
            env[entry["name"]] = "from-field"
    return env


def _flag_environment_names(command: str) -> set[str]:
    """EXEC_WATCHDOG_* names the command reads, from its --help ('[env NAME]')."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    return set(re.findall(r"\[env\s+(EXEC_WATCHDOG_\w+)\]", out.getvalue()))


def _parse_command(args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Parse args as the container would, with its environment (flags read it when the parser is built)."""
    with monkeypatch.context() as patched:
        for name, value in env.items():
            patched.setenv(name, value)
        return build_parser().parse_args(args)


@pytest.mark.parametrize("component", ["exporter", "remediator"])
def test_containers_set_only_settings_their_command_reads_and_their_args_parse(
        overlay: list[dict[str, Any]], component: str, monkeypatch: pytest.MonkeyPatch) -> None:
    container = _container(_component(overlay, WORKLOAD[component], component))
    assert container["args"][0] == component
    env = _container_env(container, overlay)
    settings = {name for name in env if name.startswith("EXEC_WATCHDOG_")}
    unknown = settings - _flag_environment_names(component)
    assert not unknown, f"{component} does not read {sorted(unknown)}"
    args = _parse_command(container["args"], env, monkeypatch)
    assert args.command == component
    assert args.listen == "0.0.0.0:" + str(container["ports"][0]["containerPort"])


@pytest.mark.parametrize("component", ["exporter", "remediator"])
def test_credentials_come_from_the_secret_as_files_and_connection_urls_as_secret_refs(
        overlay: list[dict[str, Any]], component: str) -> None:
    deployment = _component(overlay, WORKLOAD[component], component)
    container, pod = _container(deployment), deployment["spec"]["template"]["spec"]
    env = _container_env(container, overlay)
    assert env["EXEC_WATCHDOG_DATABASE_URL"] == "secret:database-url"
    assert env["EXEC_WATCHDOG_REDIS_URL"] == "secret:redis-url"
    assert "EXEC_WATCHDOG_AGENT_SECRET" not in env  # the file form: never in the environment
    mounted = {}
    for volume in pod["volumes"]:
        if "secret" in volume:
            (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
            assert mount["readOnly"] is True
            mounted.update({f"{mount['mountPath']}/{item['path']}": item["key"] for item in volume["secret"]["items"]})
    files = {name: path for name, path in env.items() if name.endswith("_FILE")}
    assert files, "no credential is read from a file"
    for name, path in files.items():
        assert path in mounted, f"{name}={path} is not a mounted secret file"
    if component == "remediator":
        assert mounted[env["EXEC_WATCHDOG_BEARER_TOKEN_FILE"]] == render.BEARER_TOKEN_KEY


def test_every_secret_key_the_manifests_use_is_in_the_secret_and_its_example(overlay: list[dict[str, Any]]) -> None:
    (secret,) = _find(overlay, "Secret", render.SECRET_NAME)
    example = OVERLAY / "secret.env.example"
    documented = {line.partition("=")[0] for line in example.read_text().splitlines()
                  if line and not line.startswith("#")}
    assert set(secret["data"]) == documented
    used: set[str] = set()
    for deployment in _workloads(overlay):
        pod = deployment["spec"]["template"]["spec"]
        for entry in _container(deployment).get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == render.SECRET_NAME
                used.add(ref["key"])
        for volume in pod["volumes"]:
            if "secret" in volume:
                assert volume["secret"]["secretName"] == render.SECRET_NAME
                used |= {item["key"] for item in volume["secret"]["items"]}
    (am_config,) = _find(overlay, "AlertmanagerConfig")
    credentials = am_config["spec"]["receivers"][0]["webhookConfigs"][0]["httpConfig"]["authorization"]["credentials"]
    assert credentials["name"] == render.SECRET_NAME
    used.add(credentials["key"])
    assert used <= documented, f"not in {example.name}: {sorted(used - documented)}"


def test_alertmanager_reaches_the_remediator_service_in_the_overlays_namespace(overlay: list[dict[str, Any]]) -> None:
    (am_config,) = _find(overlay, "AlertmanagerConfig")
    service = _component(overlay, "Service", "remediator")
    url = urlsplit(am_config["spec"]["receivers"][0]["webhookConfigs"][0]["url"])
    namespace = service["metadata"]["namespace"]
    assert url.hostname == f"{service['metadata']['name']}.{namespace}.svc"
    assert url.port == service["spec"]["ports"][0]["port"]
    assert url.path == "/api/v1/alerts"
    assert am_config["metadata"]["namespace"] == namespace


def test_pods_meet_the_restricted_pod_security_standard(overlay: list[dict[str, Any]]) -> None:
    (namespace,) = _find(overlay, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for deployment in _workloads(overlay):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
            assert "memory" in container["resources"]["limits"]


def test_the_only_wildcard_binds_are_the_listen_addresses_inside_the_pods(overlay: list[dict[str, Any]]) -> None:
    text = json.dumps(overlay)
    wildcard = [m.start() for m in re.finditer(r"0\.0\.0\.0", text)]
    listens = [c for d in _workloads(overlay) for c in d["spec"]["template"]["spec"]["containers"]]
    assert len(wildcard) == len(listens)
    for container in listens:
        assert {"name": "EXEC_WATCHDOG_LISTEN", "value": f"0.0.0.0:{container['ports'][0]['containerPort']}"} \
            in container["env"]


def test_the_base_deploys_the_image_of_this_version_and_the_overlay_retags_it(overlay: list[dict[str, Any]]) -> None:
    base = kustomize_build_base()
    images = {c["image"] for d in _workloads(base) for c in d["spec"]["template"]["spec"]["containers"]}
    version = __version__ if "+" not in __version__ else tomllib.loads(
        (ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert images == {f"exec-watchdog:{version}"}
    overlaid = {c["image"] for d in _workloads(overlay) for c in d["spec"]["template"]["spec"]["containers"]}
    assert overlaid == {f"registry.example.com/exec-watchdog:{version}"}


def kustomize_build_base() -> list[dict[str, Any]]:
    return kustomize_build(KUBERNETES / "base")


# ---------------------------------------------------------------------------------------------
# Generated objects: one source, no copy drift


def test_committed_generated_files_are_what_deploy_render_generates() -> None:
    for path, text in render.render_files().items():
        assert path.read_text() == text, f"{path} is stale: run `python -m deploy.render`"
    assert render.main(["--check"]) == 0


def test_the_prometheus_rule_holds_exactly_the_rules_in_alerts_generated(overlay: list[dict[str, Any]]) -> None:
    (rule,) = _find(overlay, "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES_PRODUCTION.read_text())["groups"]


def test_the_prometheus_rule_passes_promtool(overlay: list[dict[str, Any]], tmp_path: Path) -> None:
    (rule,) = _find(overlay, "PrometheusRule")
    rule_file = tmp_path / "rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run([_tool("promtool"), "check", "rules", str(rule_file)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _matcher_text(matcher: dict[str, str]) -> str:
    return f'{matcher["name"]}{matcher["matchType"]}"{matcher["value"]}"'


def test_the_alertmanager_config_routes_and_inhibits_like_alerts_generated(overlay: list[dict[str, Any]]) -> None:
    source = yaml.safe_load(ALERTMANAGER_PRODUCTION.read_text())
    (am_config,) = _find(overlay, "AlertmanagerConfig")
    spec = am_config["spec"]
    (route,) = [r for r in source["route"]["routes"] if r["receiver"] == spec["route"]["receiver"]]
    assert [_matcher_text(m) for m in spec["route"]["matchers"]] == route["matchers"]
    assert (spec["route"]["groupBy"], spec["route"]["groupWait"], spec["route"]["groupInterval"],
            spec["route"]["repeatInterval"]) == (route["group_by"], route["group_wait"], route["group_interval"],
                                                 route["repeat_interval"])
    assert [([_matcher_text(m) for m in r["sourceMatch"]], [_matcher_text(m) for m in r["targetMatch"]], r["equal"])
            for r in spec["inhibitRules"]] == \
        [(r["source_matchers"], r["target_matchers"], r["equal"]) for r in source["inhibit_rules"]]
    (receiver,) = [r for r in source["receivers"] if r["name"] == route["receiver"]]
    (webhook,) = receiver["webhook_configs"]
    (ours,) = spec["receivers"][0]["webhookConfigs"]
    assert (ours["sendResolved"], ours["maxAlerts"], ours["httpConfig"]["authorization"]["type"]) == \
        (webhook["send_resolved"], webhook["max_alerts"], webhook["http_config"]["authorization"]["type"])


def test_matchers_that_cannot_be_translated_are_refused() -> None:
    assert render.parse_matcher('alertname=~"A|B"') == {"name": "alertname", "matchType": "=~", "value": "A|B"}
    with pytest.raises(ValueError, match="cannot translate"):
        render.parse_matcher("alertname=A")


def test_the_dashboard_config_map_carries_the_committed_dashboard_for_the_sidecar(
        overlay: list[dict[str, Any]]) -> None:
    (config_map,) = _find(overlay, "ConfigMap", "exec-watchdog-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["data"] == {"exec-watchdog.json": DASHBOARD_PATH.read_text()}


# =============================================================================================
# The image


@pytest.fixture(scope="module")
def instructions() -> list[Any]:
    import dockerfile  # type: ignore[import-not-found]

    return list(dockerfile.parse_file(str(CONTAINERFILE)))


def _stages(instructions: list[Any]) -> list[list[Any]]:
    stages: list[list[Any]] = []
    for instruction in instructions:
        if instruction.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


KNOWN_INSTRUCTIONS = {"FROM", "ARG", "ENV", "WORKDIR", "COPY", "RUN", "LABEL", "USER", "EXPOSE", "HEALTHCHECK",
                      "ENTRYPOINT", "CMD"}


def test_the_containerfile_parses_and_uses_only_known_instructions(instructions: list[Any]) -> None:
    assert instructions, "empty Containerfile"
    assert {i.cmd for i in instructions} <= KNOWN_INSTRUCTIONS


def test_the_image_runs_as_a_numeric_non_root_user_with_exec_watchdog_as_entrypoint(instructions: list[Any]) -> None:
    final = _stages(instructions)[-1]
    (user,) = [i for i in final if i.cmd == "USER"]
    uid, _, gid = user.value[0].partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0)
    (entrypoint,) = [i for i in final if i.cmd == "ENTRYPOINT"]
    assert entrypoint.json and list(entrypoint.value) == ["exec-watchdog"]
    exposed = {int(port) for i in final if i.cmd == "EXPOSE" for port in i.value}
    assert exposed == {9463, 9464}


def test_the_image_health_check_runs_the_copied_script_in_exec_form(instructions: list[Any]) -> None:
    final = _stages(instructions)[-1]
    (check,) = [i for i in final if i.cmd == "HEALTHCHECK"]
    assert check.json and check.value[0] == "CMD"
    script = check.value[-1]
    copies = [i for i in final if i.cmd == "COPY" and i.value[-1] == script]
    assert copies and copies[0].value[0] == str(HEALTHCHECK.relative_to(ROOT))


def test_base_images_are_pinned_to_the_python_the_project_requires(instructions: list[Any]) -> None:
    arguments = dict(i.value[0].split("=", 1) for i in instructions if i.cmd == "ARG" and "=" in i.value[0])
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = requires.removeprefix(">=")
    for stage in _stages(instructions):
        image = stage[0].value[0]
        image = arguments.get(image.strip("${}"), image)
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", f"{image} is not pinned to a tag"
        assert tag.startswith(minimum + "-"), f"{image} is not Python {minimum}"


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or a parent decides."""
    import fnmatch

    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!")
        regex = fnmatch.translate(glob).replace(".*", "[^/]*").replace("[^/]*[^/]*", ".*")
        if glob.startswith("**/"):
            regex = r"(?:.*/)?" + fnmatch.translate(glob[3:]).replace(".*", "[^/]*")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


def _ignore_patterns() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def test_every_copied_source_exists_and_survives_the_ignore_file(instructions: list[Any]) -> None:
    patterns = _ignore_patterns()
    sources = [source for i in instructions if i.cmd == "COPY" and not any(f.startswith("--from") for f in i.flags)
               for source in i.value[:-1]]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the build context"
        assert not _ignored(source, patterns), f"COPY {source}: excluded by {DOCKERIGNORE.name}"


def test_the_ignore_file_keeps_the_venv_databases_caches_and_secrets_out() -> None:
    patterns = _ignore_patterns()
    for path in (".venv/bin/python", "exec-watchdog.db", "exporter/__pycache__/app.cpython-311.pyc",
                 "deploy/compose/.env", "deploy/kubernetes/overlays/example/secret.env", ".git/config",
                 "tests/test_deploy.py"):
        assert _ignored(path, patterns), f"{path} would be sent to the build"
    assert not _ignored("remediator/recoveries.html", patterns)


def test_the_image_copies_every_package_the_project_installs(instructions: list[Any]) -> None:
    packages = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    copied = {source for i in instructions if i.cmd == "COPY" for source in i.value[:-1]}
    assert packages | {"pyproject.toml", "README.md"} <= copied


def test_the_image_installs_from_the_lock_with_the_makefiles_uv(instructions: list[Any]) -> None:
    """The build stage copies uv.lock and installs with `uv sync --locked` (a stale lock fails the build),
    using the uv version the Makefile pins, so the image runs the versions the tests ran."""
    build = _stages(instructions)[0]
    assert "uv.lock" in {source for i in build if i.cmd == "COPY" for source in i.value[:-1]}
    runs = " ".join(" ".join(i.value) for i in build if i.cmd == "RUN")
    assert "uv sync --locked" in runs and "pip install ." not in runs
    arguments = dict(i.value[0].split("=", 1) for i in instructions if i.cmd == "ARG" and "=" in i.value[0])
    makefile = re.search(r"^UV_VERSION\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert makefile is not None, "the Makefile pins no UV_VERSION"
    assert arguments.get("UV_VERSION") == makefile.group(1)


@pytest.mark.parametrize(("environ", "urls"), [
    ({"EXEC_WATCHDOG_LISTEN": "0.0.0.0:9464"}, ["http://127.0.0.1:9464/healthz"]),
    ({"EXEC_WATCHDOG_LISTEN": "[::]:9463"}, ["http://[::1]:9463/healthz"]),
    ({"EXEC_WATCHDOG_LISTEN": "127.0.0.2:1234"}, ["http://127.0.0.2:1234/healthz"]),
    ({}, ["http://127.0.0.1:9464/healthz", "http://127.0.0.1:9463/healthz"]),
    ({"EXEC_WATCHDOG_HEALTH_URL": "http://127.0.0.1:1/x", "EXEC_WATCHDOG_LISTEN": "0.0.0.0:9464"},
     ["http://127.0.0.1:1/x"]),
])
def test_the_health_check_asks_the_port_the_container_listens_on(environ: dict[str, str], urls: list[str]) -> None:
    sys.path.insert(0, str(HEALTHCHECK.parent))
    try:
        import healthcheck  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(HEALTHCHECK.parent))
    assert healthcheck.health_urls(environ) == urls


@pytest.fixture
def exporter_port(tmp_path: Path) -> Iterator[int]:
    """A real exporter process on a free loopback port."""
    port = free_port()
    secret = tmp_path / "agent-secret"
    secret.write_text("test-secret\n")
    database_url = f"sqlite:///{tmp_path / 'trinity.db'}"
    subprocess.run([sys.executable, "-m", "exec_watchdog", "db", "init", "--database-url", database_url],
                   check=True, capture_output=True, timeout=60)
    env = {**os.environ, "EXEC_WATCHDOG_LISTEN": f"127.0.0.1:{port}", "EXEC_WATCHDOG_DATABASE_URL": database_url,
           "EXEC_WATCHDOG_AGENT_SECRET_FILE": str(secret)}
    proc = subprocess.Popen([sys.executable, "-m", "exec_watchdog", "exporter"], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc=proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _run_healthcheck(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXEC_WATCHDOG_")}
    return subprocess.run([sys.executable, str(HEALTHCHECK)], env={**env, **environ}, capture_output=True,
                          text=True, timeout=30)


def test_the_health_check_passes_against_a_running_exporter_and_fails_without_one(exporter_port: int) -> None:
    assert _run_healthcheck({"EXEC_WATCHDOG_LISTEN": f"0.0.0.0:{exporter_port}"}).returncode == 0
    closed = free_port()
    failed = _run_healthcheck({"EXEC_WATCHDOG_LISTEN": f"0.0.0.0:{closed}"})
    assert failed.returncode == 1
    assert f"127.0.0.1:{closed}" in failed.stderr


# =============================================================================================
# Compose

_INTERPOLATION = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<name>\w+)(?:(?P<op>:\?|:-|\?|-)(?P<arg>[^}]*))?\}"
                            r"|(?P<bare>\w+))")


class InterpolationError(Exception):
    pass


def interpolate(text: str, variables: dict[str, str]) -> str:
    """Compose's variable substitution: $$, $NAME, ${NAME}, ${NAME:-default}, ${NAME:?error}."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["name"] or match["bare"]
        value, op = variables.get(name), match["op"]
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise InterpolationError(f"{name}: {match['arg']}")
        if op in (":-", "-") and (value is None or (op == ":-" and value == "")):
            return str(match["arg"])
        return value or ""

    return _INTERPOLATION.sub(substitute, text)


def _env_file(path: Path) -> dict[str, str]:
    pairs = [line.partition("=") for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return {key: value for key, _, value in pairs}


FILLED = {"POSTGRES_PASSWORD": "pw", "AGENT_SECRET": "s", "REMEDIATOR_TOKEN": "t", "GRAFANA_ADMIN_PASSWORD": "g"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    from compose_spec import PyOptions

    variables = {**_env_file(COMPOSE_DIR / ".env.example"), **FILLED}
    project = PyOptions(apply_merge=True).from_yaml(interpolate(COMPOSE_FILE.read_text(), variables))
    project.validate()
    return project.to_dict()


def test_the_compose_file_is_valid_compose_spec(compose: dict[str, Any]) -> None:
    assert {"postgres", "redis", "prometheus", "alertmanager", "grafana", "exporter", "remediator"} <= \
        set(compose["services"])


@pytest.mark.parametrize(("old", "new"), [("read_only: true", "readonly: true"),
                                          ("condition: service_healthy", "condition: healthy"),
                                          ("      - agent-secret\n      - remediator-token", "      - no-such-secret")])
def test_the_compose_validator_rejects_a_typo(old: str, new: str) -> None:
    from compose_spec import PyOptions

    text = COMPOSE_FILE.read_text()
    assert old in text
    variables = {**_env_file(COMPOSE_DIR / ".env.example"), **FILLED}
    with pytest.raises(ValueError):
        PyOptions(apply_merge=True).from_yaml(interpolate(text.replace(old, new, 1), variables)).validate()


def test_compose_refuses_to_start_while_env_example_values_are_empty() -> None:
    text = COMPOSE_FILE.read_text()
    with pytest.raises(InterpolationError, match="POSTGRES_PASSWORD"):
        interpolate(text, _env_file(COMPOSE_DIR / ".env.example"))
    for name in ("POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "AGENT_SECRET"):
        with pytest.raises(InterpolationError, match=name):
            interpolate(text, {**_env_file(COMPOSE_DIR / ".env.example"), **FILLED, name: ""})
    secrets = yaml.safe_load(text)["secrets"]
    assert {s["environment"] for s in secrets.values()} <= set(_env_file(COMPOSE_DIR / ".env.example"))


def test_every_mounted_host_path_exists(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source} does not exist"
        build = service.get("build")
        if build:
            assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).resolve() == CONTAINERFILE


def test_published_ports_bind_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            text = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port['published']}"
            assert text.startswith("127.0.0.1:"), f"{name} publishes {text} beyond loopback"


def _listen_port(service: dict[str, Any]) -> int:
    return int(service["environment"]["EXEC_WATCHDOG_LISTEN"].rpartition(":")[2])


def test_alertmanager_sends_to_the_remediator_with_the_token_the_remediator_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    (source,) = [v.split(":")[0] for v in services["alertmanager"]["volumes"]
                 if v.endswith(":/etc/alertmanager/alertmanager.yml:ro")]
    config = yaml.safe_load((COMPOSE_DIR / source).read_text())
    (webhook,) = [w for r in config["receivers"] if r["name"] == "remediator" for w in r["webhook_configs"]]
    url = urlsplit(webhook["url"])
    assert url.hostname in services and url.port == _listen_port(services[url.hostname])
    token_file = webhook["http_config"]["authorization"]["credentials_file"]
    (secret,) = [s for s in services["alertmanager"]["secrets"] if s["target"] == token_file]
    remediator = services[url.hostname]
    assert remediator["environment"]["EXEC_WATCHDOG_BEARER_TOKEN_FILE"] == f"/run/secrets/{secret['source']}"


def test_prometheus_scrapes_both_services_under_the_job_names_the_rules_use(compose: dict[str, Any],
                                                                            tmp_path: Path) -> None:
    services = compose["services"]
    (mount,) = [v for v in services["prometheus"]["volumes"] if v.endswith(":/etc/prometheus/prometheus.yml:ro")]
    config = yaml.safe_load((COMPOSE_DIR / mount.split(":")[0]).read_text())
    jobs = {job["job_name"]: job["static_configs"][0]["targets"][0] for job in config["scrape_configs"]}
    for job, service in ((contract.EXPORTER_JOB, "exporter"), (contract.REMEDIATOR_JOB, "remediator")):
        assert jobs[job] == f"{service}:{_listen_port(services[service])}"
    (rule_target,) = [v.split(":")[1] for v in services["prometheus"]["volumes"]
                      if v.startswith(f"../../alerts/generated/{RULES_PRODUCTION.name}:")]
    assert any(Path(rule_target).match(pattern) for pattern in config["rule_files"])
    assert f"--rules.alert.resend-delay={PRODUCTION['alert_resend_delay']}" in services["prometheus"]["command"]
    checked = tmp_path / "prometheus.yml"
    checked.write_text((COMPOSE_DIR / "prometheus.yml").read_text())
    result = subprocess.run([_tool("promtool"), "check", "config", "--syntax-only", str(checked)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("service", ["exporter", "remediator", "simulated-platform"])
def test_exec_watchdog_services_run_commands_and_settings_the_cli_accepts(
        compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = compose["services"][service]
    assert spec["user"] == "10001:10001" and spec["read_only"] is True
    env = spec["environment"]
    command = spec["command"][0]
    unknown = {n for n in env if n.startswith("EXEC_WATCHDOG_")} - _flag_environment_names(command)
    assert not unknown, f"{service}: {command} does not read {sorted(unknown)}"
    args = _parse_command(spec["command"], env, monkeypatch)
    assert args.command == command
    for name, path in env.items():
        if name.endswith("_FILE"):
            assert path.removeprefix("/run/secrets/") in spec["secrets"], f"{service}: {path} is no secret of it"


def test_grafana_gets_every_variable_its_provisioning_files_use(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    used = set()
    for path in PROVISIONING_DIR.rglob("*.yml"):
        used |= {a or b for a, b in re.findall(r"\$(?:\{(\w+)\}|(\w+))", path.read_text())}
    assert used <= set(grafana["environment"])
    assert f"../../{PROVISIONING_DIR.relative_to(ROOT)}:/etc/grafana/provisioning:ro" in grafana["volumes"]
    dashboards = grafana["environment"]["EXEC_WATCHDOG_DASHBOARDS_DIR"]
    assert f"../../{DASHBOARD_PATH.parent.relative_to(ROOT)}:{dashboards}:ro" in grafana["volumes"]


# =============================================================================================
# No secret committed

PLACEHOLDER = re.compile(r"^(|change-?me|replace[-_ ]?me.*|<[^>]*>|\$\{\w+.*\}|example.*)$", re.IGNORECASE)
SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|PRIVATE)", re.IGNORECASE)
PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
# scheme://user:password@ with a literal password (an interpolation like ${X} is fine).
URL_PASSWORD = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]*:(?!\$\{)([^@\s/]+)@", re.IGNORECASE)


def secret_findings(name: str, text: str) -> list[str]:
    """What in one file looks like a committed credential."""
    findings = [f"{name}: private key" for _ in PRIVATE_KEY.finditer(text)]
    findings += [f"{name}: password in URL {m.group(0)!r}" for m in URL_PASSWORD.finditer(text)
                 if not PLACEHOLDER.match(m.group(1))]
    if name.endswith((".env", ".env.example")) or Path(name).name == ".env.example":
        for key, value in _pairs(text):
            if SECRET_NAME.search(key) and not PLACEHOLDER.match(value):
                findings.append(f"{name}: {key} has a value")
    if name.endswith((".yaml", ".yml")):
        for document in yaml.safe_load_all(text):
            findings += [f"{name}: {f}" for f in _yaml_findings(document)]
    return findings


def _pairs(text: str) -> list[tuple[str, str]]:
    return [(k.strip(), v.strip()) for k, sep, v in (line.partition("=") for line in text.splitlines())
            if sep and not k.lstrip().startswith("#")]


def _yaml_findings(document: Any) -> list[str]:
    findings: list[str] = []
    if isinstance(document, dict) and document.get("kind") == "Secret":
        for field in ("data", "stringData"):
            for key, value in (document.get(field) or {}).items():
                plain = base64.b64decode(value).decode() if field == "data" else str(value)
                if not PLACEHOLDER.match(plain):
                    findings.append(f"Secret {field}.{key} has a value")

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            # Kubernetes env entries {name, value} and compose environment maps {NAME: value}.
            if isinstance(node.get("name"), str) and "value" in node and SECRET_NAME.search(node["name"]) \
                    and not node["name"].endswith("_FILE") and not PLACEHOLDER.match(str(node["value"])):
                findings.append(f"env {node['name']} has a literal value")
            for key, value in node.items():
                if key == "environment" and isinstance(value, dict):
                    for name, text in value.items():
                        if SECRET_NAME.search(name) and not name.endswith("_FILE") and \
                                not PLACEHOLDER.match(str(text)):
                            findings.append(f"environment {name} has a literal value")
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(document)
    return findings


def _committed_deploy_files() -> list[Path]:
    """deploy/ minus what its .gitignore files keep out of the repository (real secret files)."""
    ignored: set[Path] = set()
    for gitignore in DEPLOY.rglob(".gitignore"):
        for pattern in gitignore.read_text().splitlines():
            if pattern and not pattern.startswith("#"):
                ignored |= set(gitignore.parent.glob(pattern))
    return [p for p in DEPLOY.rglob("*") if p.is_file() and p not in ignored and "__pycache__" not in p.parts]


def test_no_secret_value_is_committed_under_deploy() -> None:
    findings = [f for path in _committed_deploy_files()
                for f in secret_findings(str(path.relative_to(ROOT)), path.read_text(errors="replace"))]
    assert not findings, "\n".join(findings)


@pytest.mark.parametrize(("name", "text"), [
    ("x.yaml", "kind: Secret\napiVersion: v1\nmetadata: {name: s}\nstringData: {token: hunter2}\n"),
    ("x.yaml", "kind: Secret\napiVersion: v1\nmetadata: {name: s}\ndata: {token: aHVudGVyMg==}\n"),
    ("x.yaml", "env:\n  - name: EXEC_WATCHDOG_AGENT_SECRET\n    value: hunter2\n"),
    ("x.yaml", "services: {a: {environment: {POSTGRES_PASSWORD: hunter2}}}\n"),
    ("x.yaml", "url: postgresql+psycopg://trinity:hunter2@db:5432/trinity\n"),
    ("secret.env.example", "bearer-token=0123456789abcdef\n"),
    ("key.txt", "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n"),
])
def test_the_secret_scan_flags_committed_credentials(name: str, text: str) -> None:
    assert secret_findings(name, text)


def test_the_secret_scan_accepts_placeholders_and_interpolations() -> None:
    assert not secret_findings("x.yaml", "url: postgresql+psycopg://u:${POSTGRES_PASSWORD:?x}@db/t\n"
                                         "env:\n  - name: EXEC_WATCHDOG_BEARER_TOKEN_FILE\n    value: /etc/x\n")
    assert not secret_findings(".env.example", "REMEDIATOR_TOKEN=\nAGENT_SECRET=<the agents' secret>\n")


# ---------------------------------------------------------------------------------------------
# Documentation points at what exists


@pytest.mark.parametrize("document", [DEPLOY / "README.md", ROOT / "docs" / "operations.md"])
def test_deployment_docs_name_only_files_that_exist(document: Path) -> None:
    text = document.read_text()
    named = set(re.findall(r"`((?:deploy|alerts|grafana|docs)/[\w./-]+)`", text))
    assert named, f"{document.name} names no file"
    missing = [n for n in named if not (ROOT / n.rstrip("/")).exists()]
    assert not missing, f"{document.name} names missing files: {missing}"



# ---------------------------------------------------------------------------------------------
# Prometheus HA pair (deploy/prometheus-ha)


def test_the_prometheus_ha_config_drops_its_replica_label_from_alerts_and_scrapes_every_shard(
        tmp_path: Path) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus-ha" / "prometheus.yml").read_text())
    (replica_label,) = config["global"]["external_labels"]
    assert config["global"]["external_labels"][replica_label] == "${PROMETHEUS_REPLICA}"
    # Dropped for alerts, and only that label: the two servers' alerts become identical.
    assert config["alerting"]["alert_relabel_configs"] == [{"action": "labeldrop", "regex": replica_label}]
    assert len(config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]) == 2
    for key in ("scrape_interval", "scrape_timeout", "evaluation_interval"):
        assert config["global"][key] == PRODUCTION[key]
    (job,) = config["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "endpoints", "namespaces": {"names": [render.NAMESPACE]}}]
    keep, port, rename = job["relabel_configs"]
    assert keep["action"] == "keep" and re.fullmatch(keep["regex"], str(contract.EXPORTER_JOB)) \
        and re.fullmatch(keep["regex"], str(contract.REMEDIATOR_JOB))
    # Every port the Services name, and the job taken from the Service label the ServiceMonitors use.
    base = kustomize_build_base()
    service_ports = {p["name"] for s in _find(base, "Service") for p in s["spec"]["ports"]}
    assert {n for n in service_ports if re.fullmatch(port["regex"], n)} == service_ports
    assert rename == {"source_labels": [render.JOB_LABEL_META], "target_label": "job"}
    assert render.JOB_LABEL_META.endswith("_exec_watchdog_io_job")
    # Debian's promtool is built without Kubernetes discovery: check the rest of the file with
    # the discovery swapped for static targets.
    job.pop("kubernetes_sd_configs")
    job["static_configs"] = [{"targets": ["exporter-0:9463"]}]
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config))
    result = subprocess.run([_tool("promtool"), "check", "config", "--syntax-only", str(checked)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
