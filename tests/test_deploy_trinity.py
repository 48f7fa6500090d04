"""deploy/trinity/compose.yaml, checked offline against the facts of Trinity's own compose files.

No container engine runs here, so nothing is started: the file is interpolated the way compose does
(Trinity's .env first, ours second), parsed by the strict compose-spec parser, and every name it
takes from Trinity (external networks, the Redis container and its ACL user, the agents' host names
and port, the data directory and its owner, the .env variables) is looked up in
tests/fixtures/trinity/compose-facts.yml, written by hand from Trinity's repository at the commits
it names. Each check is a function returning its problems, so a test can show that it fails on a
file that breaks the rule.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from exec_watchdog.common import contract
from tests.test_deploy import (
    InterpolationError,
    _env_file,
    _flag_environment_names,
    _parse_command,
    interpolate,
)

ROOT = Path(__file__).resolve().parent.parent
TRINITY_DIR = ROOT / "deploy" / "trinity"
COMPOSE_FILE = TRINITY_DIR / "compose.yaml"
ENV_EXAMPLE = TRINITY_DIR / ".env.example"
FACTS_FILE = Path(__file__).resolve().parent / "fixtures" / "trinity" / "compose-facts.yml"
FACTS: dict[str, Any] = yaml.safe_load(FACTS_FILE.read_text())
PROD = FACTS["prod"]

# What Trinity's .env holds (names from the facts; values made up), then what ours adds.
TRINITY_ENV = {"AGENT_AUTH_SECRET": "a" * 64, "REDIS_PASSWORD": "r1", "REDIS_BACKEND_PASSWORD": "r2"}
OURS = {"TRINITY_DATA_PATH": "/srv/trinity/trinity-data", "REMEDIATOR_TOKEN": "t", "GRAFANA_ADMIN_PASSWORD": "g"}
WATCHDOG_SERVICES = ("exporter", "remediator")


def variables(**overrides: str) -> dict[str, str]:
    """Trinity's .env, then ours (the later file wins, as with two --env-file options)."""
    return {**TRINITY_ENV, **_env_file(ENV_EXAMPLE), **OURS, **overrides}


def load(text: str | None = None, **overrides: str) -> dict[str, Any]:
    from compose_spec import PyOptions

    source = COMPOSE_FILE.read_text() if text is None else text
    project = PyOptions(apply_merge=True).from_yaml(interpolate(source, variables(**overrides)))
    project.validate()
    result: dict[str, Any] = project.to_dict()
    return result


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load()


# ---------------------------------------------------------------------------------------------
# The facts file

def test_the_facts_name_the_trinity_files_and_commits_they_were_read_at() -> None:
    assert set(FACTS["sources"]) >= {"docker-compose.prod.yml", "docker-compose.hosted.yml", "docker-compose.yml"}
    assert all(re.fullmatch(r"[0-9a-f]{40}", commit) for commit in FACTS["sources"].values())
    # Trinity #589: Redis only on the platform network, agents only on the agent network.
    assert PROD["services"]["redis"]["networks"] == ["trinity-platform"]
    assert FACTS["agents"]["network"] in PROD["networks"].values()


# ---------------------------------------------------------------------------------------------
# Checks: each returns what is wrong with a parsed compose file


def _network_names(compose: dict[str, Any]) -> dict[str, str]:
    """Compose key -> the network's real name, for the external networks."""
    return {key: net["name"] for key, net in compose["networks"].items() if net.get("external")}


def network_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    external = _network_names(compose)
    trinity_networks = set(PROD["networks"].values())
    for key, name in external.items():
        if name not in trinity_networks:
            problems.append(f"external network {key} is {name!r}, which Trinity's compose does not create")
    platform = PROD["networks"]["trinity-platform"]
    agent_network = FACTS["agents"]["network"]
    for service in WATCHDOG_SERVICES:
        joined = {external.get(key) for key in compose["services"][service]["networks"]}
        for needed, why in ((platform, "Redis"), (agent_network, "the agents")):
            if needed not in joined:
                problems.append(f"{service} is not on {needed}, where {why} are")
    for service, spec in compose["services"].items():
        if service not in WATCHDOG_SERVICES and {external.get(k) for k in spec.get("networks", {})} & trinity_networks:
            problems.append(f"{service} joins a Trinity network, which only the exporter and remediator need")
    return problems


def _container_network(container_name: str) -> set[str]:
    (service,) = [s for s in PROD["services"].values() if s["container_name"] == container_name]
    return {PROD["networks"][key] for key in service["networks"]}


def redis_problems(compose: dict[str, Any], env: dict[str, str]) -> list[str]:
    problems = []
    redis = PROD["services"]["redis"]
    for service in WATCHDOG_SERVICES:
        url = urlsplit(compose["services"][service]["environment"]["EXEC_WATCHDOG_REDIS_URL"])
        if url.hostname != redis["container_name"] or (url.port or 6379) != int(redis["expose"][0]):
            problems.append(f"{service}: Redis at {url.hostname}:{url.port}, Trinity's is "
                            f"{redis['container_name']}:{redis['expose'][0]}")
        elif not _container_network(url.hostname) & set(_network_names(compose).values()):
            problems.append(f"{service}: {url.hostname} is on no network of ours")
        if url.username not in redis["acl_users"] or url.username == "default":
            problems.append(f"{service}: Redis user {url.username!r} is not Trinity's runtime ACL user")
        if unquote(url.password or "") != env["REDIS_BACKEND_PASSWORD"]:
            problems.append(f"{service}: the Redis password is not Trinity's REDIS_BACKEND_PASSWORD")
    return problems


def agent_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    agents = FACTS["agents"]
    host = agents["container_name"].replace("{name}", "{agent}")
    for service in WATCHDOG_SERVICES:
        template = compose["services"][service]["environment"]["EXEC_WATCHDOG_AGENT_URL_TEMPLATE"]
        url = urlsplit(template.replace("{agent}", "AGENT"))
        if (url.hostname, url.port) != (host.replace("{agent}", "AGENT").lower(), agents["port"]):
            problems.append(f"{service}: agents at {template}, Trinity's are http://{host}:{agents['port']}")
    return problems


def database_problems(compose: dict[str, Any], env: dict[str, str]) -> list[str]:
    problems = []
    data_file = Path(PROD["database"]["sqlite_path"]).name
    for service in WATCHDOG_SERVICES:
        spec = compose["services"][service]
        mounts = [v for v in spec["volumes"] if v.split(":")[0] == env["TRINITY_DATA_PATH"]]
        if len(mounts) != 1:
            problems.append(f"{service} does not mount Trinity's data directory (TRINITY_DATA_PATH) once")
            continue
        _, target, *mode = mounts[0].split(":")
        url = spec["environment"]["EXEC_WATCHDOG_DATABASE_URL"]
        path = urlsplit(url.replace("sqlite:///file:", "sqlite:///", 1)).path
        if path.replace("//", "/") != f"{target}/{data_file}":
            problems.append(f"{service}: database {url} is not {target}/{data_file}")
        if service == "exporter" and (mode != ["ro"] or "mode=ro" not in url):
            problems.append("the exporter must read Trinity's database read-only (ro mount and mode=ro)")
        if spec["user"] != PROD["data_owner"]:
            problems.append(f"{service} runs as {spec['user']}, Trinity's data belongs to {PROD['data_owner']}")
    return problems


def _published(ports: list[Any]) -> list[tuple[str, int]]:
    found = []
    for port in ports:
        if isinstance(port, str):
            parts = port.split(":")
            host_ip, published = (parts[0], parts[1]) if len(parts) == 3 else ("", parts[0])
        else:
            host_ip, published = port.get("host_ip", ""), port["published"]
        found.append((host_ip, int(str(published))))
    return found


def _trinity_host_ports() -> set[int]:
    used = set()
    for layout in (FACTS["prod"], FACTS["dev"]):
        for service in layout["services"].values():
            for port in service.get("ports", []):
                used.add(int(interpolate(port, {}).split(":")[0]))
    return used


def port_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    taken = _trinity_host_ports()
    for name, service in compose["services"].items():
        for host_ip, port in _published(service.get("ports", [])):
            if host_ip != "127.0.0.1":
                problems.append(f"{name} publishes {port} beyond loopback")
            if port in taken:
                problems.append(f"{name} publishes {port}, which a Trinity service publishes too")
    return problems


def listen_problems(compose: dict[str, Any]) -> list[str]:
    """The exporter and remediator listen only on our own network: agents share the agent network."""
    problems = []
    subnets = [ipaddress.ip_network(c["subnet"]) for c in compose["networks"]["watchdog"]["ipam"]["config"]]
    for service in WATCHDOG_SERVICES:
        spec = compose["services"][service]
        host = spec["environment"]["EXEC_WATCHDOG_LISTEN"].rpartition(":")[0]
        address = (spec["networks"].get("watchdog") or {}).get("ipv4_address")
        if host != address or not any(ipaddress.ip_address(host) in net for net in subnets):
            problems.append(f"{service} listens on {host}, not on its own address on the watchdog network")
    return problems


def secret_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    ours = set(_env_file(ENV_EXAMPLE))
    trinity = set(PROD["env_file_variables"])
    for name, secret in compose["secrets"].items():
        if secret["environment"] not in ours | trinity:
            problems.append(f"secret {name} comes from {secret['environment']}, in neither .env")
    agent_secret = compose["secrets"]["agent-secret"]["environment"]
    if agent_secret not in PROD["services"]["backend"]["environment"]:
        problems.append(f"the agents' secret comes from {agent_secret}, not the backend's AGENT_AUTH_SECRET")
    return problems


def all_problems(compose: dict[str, Any], env: dict[str, str]) -> list[str]:
    return (network_problems(compose) + redis_problems(compose, env) + agent_problems(compose)
            + database_problems(compose, env) + port_problems(compose) + listen_problems(compose)
            + secret_problems(compose))


def test_the_compose_file_is_valid_and_joins_trinity_as_its_compose_files_say(compose: dict[str, Any]) -> None:
    assert {"exporter", "remediator", "prometheus", "alertmanager", "grafana"} == set(compose["services"])
    assert all_problems(compose, variables()) == []


def _mutated(change: Any) -> dict[str, Any]:
    broken = copy.deepcopy(load())
    change(broken)
    return broken


@pytest.mark.parametrize(("what", "change"), [
    ("a network Trinity does not make",
     lambda c: c["networks"]["trinity-agent"].update(name="trinity-network")),
    ("the exporter off the platform network", lambda c: c["services"]["exporter"]["networks"].pop("trinity-platform")),
    ("Grafana on Trinity's network", lambda c: c["services"]["grafana"].update(networks=["watchdog", "trinity-agent"])),
    ("Redis by its service alias on a wrong port", lambda c: c["services"]["remediator"]["environment"].update(
        EXEC_WATCHDOG_REDIS_URL="redis://backend:r2@trinity-redis:6380/0")),
    ("Redis as the admin user", lambda c: c["services"]["exporter"]["environment"].update(
        EXEC_WATCHDOG_REDIS_URL="redis://default:r2@trinity-redis:6379/0")),
    ("agents on another port", lambda c: c["services"]["exporter"]["environment"].update(
        EXEC_WATCHDOG_AGENT_URL_TEMPLATE="http://agent-{agent}:8080")),
    ("a writable exporter", lambda c: c["services"]["exporter"].update(
        volumes=["/srv/trinity/trinity-data:/trinity-data"])),
    ("a database outside the mount", lambda c: c["services"]["remediator"]["environment"].update(
        EXEC_WATCHDOG_DATABASE_URL="sqlite:////tmp/trinity.db")),
    ("another user than Trinity's data owner", lambda c: c["services"]["remediator"].update(user="10001:10001")),
    ("Grafana on Trinity's dev frontend port", lambda c: c["services"]["grafana"].update(
        ports=[{"host_ip": "127.0.0.1", "published": "3000", "target": 3000}])),
    ("a wildcard listen", lambda c: c["services"]["exporter"]["environment"].update(
        EXEC_WATCHDOG_LISTEN="0.0.0.0:9463")),
    ("the agent secret from a variable of nobody's", lambda c: c["secrets"]["agent-secret"].update(
        environment="AGENT_SECRET")),
])
def test_the_checks_find_a_compose_file_that_breaks_a_fact(what: str, change: Any) -> None:
    assert all_problems(_mutated(change), variables()), what


# ---------------------------------------------------------------------------------------------
# Starting it


def test_compose_refuses_to_start_without_trinity_env_or_our_values() -> None:
    text = COMPOSE_FILE.read_text()
    for name in ("REDIS_BACKEND_PASSWORD", "TRINITY_DATA_PATH", "GRAFANA_ADMIN_PASSWORD"):
        with pytest.raises(InterpolationError, match=name):
            interpolate(text, variables(**{name: ""}))
    # Our .env.example alone (Trinity's .env forgotten) names the missing Redis password.
    with pytest.raises(InterpolationError, match="REDIS_BACKEND_PASSWORD"):
        interpolate(text, {**_env_file(ENV_EXAMPLE), **OURS})


def test_every_mounted_host_path_exists_and_the_image_is_the_projects(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("."):
                assert (TRINITY_DIR / source).exists(), f"{name}: {source} does not exist"
        if "build" in service:
            assert (TRINITY_DIR / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == \
                ROOT / "deploy" / "Containerfile"


def test_prometheus_and_alertmanager_reach_the_services_of_this_file(compose: dict[str, Any]) -> None:
    services = compose["services"]
    (mount,) = [v for v in services["prometheus"]["volumes"] if v.endswith(":/etc/prometheus/prometheus.yml:ro")]
    config = yaml.safe_load((TRINITY_DIR / mount.split(":")[0]).read_text())
    jobs = {job["job_name"]: job["static_configs"][0]["targets"][0] for job in config["scrape_configs"]}
    for job, service in ((contract.EXPORTER_JOB, "exporter"), (contract.REMEDIATOR_JOB, "remediator")):
        port = services[service]["environment"]["EXEC_WATCHDOG_LISTEN"].rpartition(":")[2]
        assert jobs[job] == f"{service}:{port}"
        assert "watchdog" in services[service]["networks"] and "watchdog" in services["prometheus"]["networks"]
    (source,) = [v.split(":")[0] for v in services["alertmanager"]["volumes"]
                 if v.endswith(":/etc/alertmanager/alertmanager.yml:ro")]
    am = yaml.safe_load((TRINITY_DIR / source).read_text())
    (webhook,) = [w for r in am["receivers"] if r["name"] == "remediator" for w in r["webhook_configs"]]
    url = urlsplit(webhook["url"])
    assert url.hostname == "remediator" and str(url.port) == \
        services["remediator"]["environment"]["EXEC_WATCHDOG_LISTEN"].rpartition(":")[2]
    token_file = webhook["http_config"]["authorization"]["credentials_file"]
    (secret,) = [s for s in services["alertmanager"]["secrets"] if s["target"] == token_file]
    token = services["remediator"]["environment"]["EXEC_WATCHDOG_BEARER_TOKEN_FILE"]
    assert token == f"/run/secrets/{secret['source']}"


@pytest.mark.parametrize("service", WATCHDOG_SERVICES)
def test_exec_watchdog_services_set_only_settings_their_command_reads(
        compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = compose["services"][service]
    env = dict(spec["environment"])
    command = spec["command"][0]
    known = _flag_environment_names(command)
    if "EXEC_WATCHDOG_SHADOW" in env and "EXEC_WATCHDOG_SHADOW" not in known:
        env.pop("EXEC_WATCHDOG_SHADOW")  # checked by the next test once the flag exists
    assert set(n for n in env if n.startswith("EXEC_WATCHDOG_")) <= known
    args = _parse_command(spec["command"], env, monkeypatch)
    assert args.command == command
    for name, path in env.items():
        if name.endswith("_FILE"):
            assert path.removeprefix("/run/secrets/") in spec["secrets"], f"{service}: {path} is no secret of it"


@pytest.mark.parametrize(("value", "shadow"), [(None, True), ("true", True), ("false", False)])
def test_the_remediator_starts_in_shadow_unless_told_otherwise(
        value: str | None, shadow: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if "EXEC_WATCHDOG_SHADOW" not in _flag_environment_names("remediator"):
        pytest.skip("the remediator's --shadow (EXEC_WATCHDOG_SHADOW) arrives with the shadow branch of issue 23")
    overrides = {} if value is None else {"EXEC_WATCHDOG_SHADOW": value}
    env = {k: v for k, v in variables(**overrides).items() if value is not None or k != "EXEC_WATCHDOG_SHADOW"}
    spec = copy.deepcopy(yaml.safe_load(interpolate(COMPOSE_FILE.read_text(), env))["services"]["remediator"])
    args = _parse_command(spec["command"], {"EXEC_WATCHDOG_SHADOW": spec["environment"]["EXEC_WATCHDOG_SHADOW"]},
                          monkeypatch)
    assert args.shadow is shadow


def test_the_shadow_default_interpolates_to_true_when_env_leaves_it_out() -> None:
    env = {k: v for k, v in variables().items() if k != "EXEC_WATCHDOG_SHADOW"}
    remediator = yaml.safe_load(interpolate(COMPOSE_FILE.read_text(), env))["services"]["remediator"]
    assert remediator["environment"]["EXEC_WATCHDOG_SHADOW"] == "true"
    assert _env_file(ENV_EXAMPLE)["EXEC_WATCHDOG_SHADOW"] == "true"
