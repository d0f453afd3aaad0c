"""deploy/kubernetes: every overlay renders, validates and agrees with the components (issue 12).

Each overlay (and the base) is rendered with kubectl's kustomize and every resource is
validated against the Kubernetes schemas of ``KUBE_VERSION`` (``kubernetes-validate``, its
schemas ship in the wheel, no network).  Then the manifests are checked against the code:
every environment variable a container gets is one its component reads (the settings classes,
built with that environment), every Service port reaches a port its container listens on
(from the command's flags and settings), every URL in the environment points to a Service and
port, probes ask for routes the apps have, and the workers' autoscaler is set as
docs/deployment.md says.  Kinds the schemas do not know must be listed among the cluster
prerequisites of docs/deployment.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from dranspose_fast.cli import build_parser
from dranspose_fast.controller.ensemble import ControllerSettings
from dranspose_fast.debug_worker import DebugWorkerSettings
from dranspose_fast.helpers.utils import import_class
from dranspose_fast.ingester import Ingester
from dranspose_fast.ingesters import ingester_class, settings_class
from dranspose_fast.runtime import curve
from dranspose_fast.runtime.settings import (
    CliSettings,
    IngesterSettings,
    ReducerSettings,
    WorkerSettings,
)

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
DOCS = ROOT / "docs" / "deployment.md"
#: The cluster version the manifests are written for and validated against (docs/deployment.md).
KUBE_VERSION = "1.32.0"
OVERLAYS = ["base", "overlays/small", "overlays/large"]
IMAGE = "dranspose-fast"
#: The workers' autoscaling metric (a gauge 0..1 each worker exports; issue 12, item 4).
DUTY_CYCLE = "dranspose_worker_duty_cycle"
#: Environment variables that point outside the cluster (the detectors).
EXTERNAL_URLS = {"UPSTREAM_URL", "UPSTREAM_URLS"}
#: The HTTP app each command serves (``http_ingester`` serves its ``-c``).
APPS = {"controller": "dranspose_fast.controller:app", "reducer": "dranspose_fast.reducer:app",
        "debugworker": "dranspose_fast.debug_worker:app"}


def _kustomize_major(kubectl: str) -> int:
    done = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True,
                          text=True, check=False)
    try:
        version = str(json.loads(done.stdout).get("kustomizeVersion", ""))
        return int(version.lstrip("v").split(".")[0])
    except (ValueError, json.JSONDecodeError):
        return 0


@pytest.fixture(scope="module")
def kubectl() -> str:
    """kubectl with kustomize v5 or later (scripts/test.sh provides one; ``KUBECTL`` names it)."""
    found = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if found and _kustomize_major(found) >= 5:
        return found
    why = f"no kubectl with kustomize >= v5 ({found or 'kubectl not on PATH'})"
    if os.environ.get("CI") == "true":
        pytest.fail(why + ": scripts/test.sh installs one")
    pytest.skip(why + ": run scripts/test.sh, or set KUBECTL")


def render(kubectl: str, overlay: str) -> list[dict[str, Any]]:
    done = subprocess.run([kubectl, "kustomize", str(DEPLOY / overlay)], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest, kubectl: str) -> list[dict[str, Any]]:
    return render(kubectl, str(request.param))


def of_kind(resources: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == kind}


def prerequisites_text() -> str:
    """The "Cluster prerequisites" section of docs/deployment.md."""
    text = DOCS.read_text()
    match = re.search(r"^## Cluster prerequisites\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, "docs/deployment.md has no '## Cluster prerequisites' section"
    return match.group(1)


# === what the components read and where they listen ===


def env_names(cls: type[BaseSettings]) -> set[str]:
    """The environment variables a pydantic-settings class reads (upper case)."""
    prefix = str(cls.model_config.get("env_prefix") or "")
    names: set[str] = set()
    for name, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {c.upper() for c in alias.choices if isinstance(c, str)}
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add((prefix + name).upper())
    return names


def _app_ingester_settings(app: str) -> type[IngesterSettings]:
    module = import_module(app.split(":")[0])
    found = {settings_class(v) for v in vars(module).values()
             if isinstance(v, type) and issubclass(v, Ingester) and v.__module__ == module.__name__}
    assert len(found) == 1, f"{app}: expected one ingester class in its module, got {found}"
    return found.pop()


@dataclass
class Component:
    """A dranspose container: its command's parsed flags and what it reads."""

    command: str
    args: Any
    settings: type[BaseSettings]

    @classmethod
    def of(cls, container: dict[str, Any]) -> Component:
        assert "command" not in container, "the image's entrypoint runs: set args only"
        args = build_parser().parse_args([str(a) for a in container["args"]])
        settings: type[BaseSettings]
        if args.command == "ingester":
            settings = settings_class(ingester_class(args.ingesterclass))
        elif args.command == "http_ingester":
            settings = _app_ingester_settings(args.ingesterapp)
        else:
            by_command: dict[str, type[BaseSettings]] = {
                "controller": ControllerSettings, "reducer": ReducerSettings,
                "worker": WorkerSettings, "debugworker": DebugWorkerSettings}
            settings = by_command[args.command]
        return cls(args.command, args, settings)

    def reads(self) -> set[str]:
        return env_names(self.settings) | env_names(CliSettings)

    def build_settings(self) -> BaseSettings:
        """The settings as the command builds them (from the current environment)."""
        if issubclass(self.settings, IngesterSettings):
            overrides: dict[str, Any] = {"ingester_streams": [self.args.name]}
            if getattr(self.args, "url", None):
                overrides["ingester_url"] = self.args.url
            return self.settings(**overrides)
        if self.command in ("worker", "debugworker") and self.args.name:
            return self.settings(worker_name=self.args.name)
        return self.settings()

    def listens(self, settings: BaseSettings) -> set[int]:
        """The TCP ports this command binds with these settings."""
        ports: set[int] = set()
        if self.command in ("controller", "reducer", "debugworker", "http_ingester"):
            ports.add(int(self.args.port))
        if isinstance(settings, ReducerSettings):
            assert settings.reducer_url.port is not None
            ports.add(settings.reducer_url.port)
        if isinstance(settings, IngesterSettings):
            assert settings.ingester_url.port is not None
            ports.add(settings.ingester_url.port)
        return ports


#: A variable reference Kubernetes expands in env values and args.
REF = r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)"
PLACEHOLDERS = {"secretKeyRef": "0123456789abcdef", "fieldRef": "worker-7d9f8c-x2x9z"}


def container_env(container: dict[str, Any],
                  configmaps: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The environment Kubernetes gives ``container``: envFrom first, then env in order with
    ``$(NAME)`` expanded from what is defined before it (secrets and pod fields as
    placeholders).  Asserts that every reference is defined and every ConfigMap exists."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in configmaps, f"envFrom names ConfigMap {name}, which is not rendered"
        env.update({k: str(v) for k, v in configmaps[name]["data"].items()})
    for var in container.get("env", []):
        if "value" in var:
            for ref in re.findall(REF, var["value"]):
                assert ref in env, f"{var['name']}: $({ref}) is not defined before it"
            env[var["name"]] = re.sub(REF, lambda m: env[m.group(1)], var["value"])
        else:
            (kind,) = var["valueFrom"].keys()
            if kind == "configMapKeyRef":
                ref = var["valueFrom"][kind]
                env[var["name"]] = str(configmaps[ref["name"]]["data"][ref["key"]])
            else:
                env[var["name"]] = PLACEHOLDERS[kind]
    return env


def referenced(container: dict[str, Any]) -> set[str]:
    """Variables other env values use as ``$(NAME)`` (Kubernetes reads those)."""
    values = [v.get("value", "") for v in container.get("env", [])]
    return {m for v in values for m in re.findall(REF, v)}


def dranspose_containers(resources: list[dict[str, Any]]
                         ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(Deployment, container) for every container running the dranspose-fast image."""
    return [(d, c) for d in of_kind(resources, "Deployment").values()
            for c in d["spec"]["template"]["spec"]["containers"]
            if c["image"].split("/")[-1].split(":")[0] == IMAGE]


def quantity(text: str) -> int:
    """A Kubernetes memory quantity in bytes (``512Mi``, ``2Gi``, ``1G``, ``1000``)."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
             "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    match = re.fullmatch(r"(\d+)([A-Za-z]*)", str(text))
    assert match, text
    return int(match.group(1)) * (units[match.group(2)] if match.group(2) else 1)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No variable any component reads is inherited from the test's own environment."""
    for cls in (ControllerSettings, ReducerSettings, WorkerSettings, DebugWorkerSettings,
                CliSettings):
        for name in env_names(cls):
            monkeypatch.delenv(name, raising=False)
    for name in ("INGESTER_STREAMS", "INGESTER_NAME", "INGESTER_URL", "UPSTREAM_URL",
                 "UPSTREAM_URLS", "UPSTREAM_BUFFER_BYTES", "UPSTREAM_FRAME_BYTES", "DUMP_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(ROOT)  # class paths import from the working directory, as in the image
    return monkeypatch


# === the tests ===


def test_kustomize_renders_every_overlay(rendered: list[dict[str, Any]]) -> None:
    keys = [(r["kind"], r["metadata"]["name"]) for r in rendered]
    assert len(keys) == len(set(keys)), "duplicate resources"
    deployments = of_kind(rendered, "Deployment")
    for name in ("redis", "controller", "reducer", "worker", "debug-worker"):
        assert name in deployments
    assert of_kind(rendered, "HorizontalPodAutoscaler").keys() == {"worker"}


def test_every_resource_validates_against_the_schemas(rendered: list[dict[str, Any]]) -> None:
    unknown = []
    for resource in rendered:
        try:
            kubernetes_validate.validate(resource, KUBE_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unknown.append(resource["kind"])
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{resource['kind']}/{resource['metadata']['name']}: "
                        f"{str(exc).splitlines()[0]}")
    text = prerequisites_text()
    assert all(kind in text for kind in unknown), \
        f"kinds without a schema must be documented as cluster prerequisites: {unknown}"


def test_every_env_var_is_read_and_every_setting_is_valid(
    rendered: list[dict[str, Any]], clean_env: pytest.MonkeyPatch
) -> None:
    configmaps = of_kind(rendered, "ConfigMap")
    for deployment, container in dranspose_containers(rendered):
        where = f"{deployment['metadata']['name']}/{container['name']}"
        component = Component.of(container)
        env = container_env(container, configmaps)
        stray = set(env) - component.reads() - referenced(container)
        assert not stray, f"{where}: {component.command} does not read {sorted(stray)}"
        for name, value in env.items():
            clean_env.setenv(name, value)
        try:
            settings = component.build_settings()
            CliSettings()
        finally:
            for name in env:
                clean_env.delenv(name)
        for attr in ("worker_class", "reducer_class"):
            path = getattr(settings, attr, None)
            if path:
                import_class(path)  # the class the component will load exists


def test_services_reach_ports_the_containers_listen_on(
    rendered: list[dict[str, Any]], clean_env: pytest.MonkeyPatch
) -> None:
    configmaps = of_kind(rendered, "ConfigMap")
    deployments = of_kind(rendered, "Deployment")
    for service in of_kind(rendered, "Service").values():
        selector = service["spec"]["selector"]
        pods = [d for d in deployments.values() if selector.items()
                <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(pods) == 1, f"Service {service['metadata']['name']} selects {len(pods)}"
        containers = pods[0]["spec"]["template"]["spec"]["containers"]
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            matches = [(c, p) for c in containers for p in c.get("ports", [])
                       if target in (p.get("name"), p["containerPort"])]
            assert len(matches) == 1, f"{service['metadata']['name']}:{port['port']}"
            container, container_port = matches[0]
            env = container_env(container, configmaps)
            if container["image"].split(":")[0].endswith(IMAGE):
                component = Component.of(container)
                for name, value in env.items():
                    clean_env.setenv(name, value)
                listening = component.listens(component.build_settings())
                for name in env:
                    clean_env.delenv(name)
            else:  # redis: its --port
                args = container.get("args", [])
                listening = {int(args[args.index("--port") + 1]) if "--port" in args else 6379}
            assert container_port["containerPort"] in listening, \
                f"{service['metadata']['name']}: port {target} is not one the container binds"


def test_every_url_in_the_environment_points_to_a_service(
    rendered: list[dict[str, Any]]
) -> None:
    configmaps = of_kind(rendered, "ConfigMap")
    services = of_kind(rendered, "Service")
    deployments = of_kind(rendered, "Deployment")
    for deployment, container in dranspose_containers(rendered):
        for name, value in container_env(container, configmaps).items():
            if "://" not in value or name in EXTERNAL_URLS:
                continue
            url = urlsplit(value)
            assert url.hostname in services, f"{name}={value}: no Service {url.hostname}"
            service = services[url.hostname]
            assert url.port in [p["port"] for p in service["spec"]["ports"]], f"{name}={value}"
            if name in ("INGESTER_URL", "REDUCER_URL"):  # its own address, told to the workers
                labels = deployment["spec"]["template"]["metadata"]["labels"]
                assert service["spec"]["selector"].items() <= labels.items(), f"{name}={value}"
        assert "REDIS_URL" in container_env(container, configmaps)
    # components and Redis agree on the password: one Secret key
    redis_env = deployments["redis"]["spec"]["template"]["spec"]["containers"][0]["env"]
    (redis_ref,) = [v["valueFrom"]["secretKeyRef"] for v in redis_env
                    if v["name"] == "REDIS_PASSWORD"]
    for _, container in dranspose_containers(rendered):
        refs = [v["valueFrom"]["secretKeyRef"] for v in container["env"]
                if "secretKeyRef" in v.get("valueFrom", {})]
        assert refs == [redis_ref]


def test_external_urls_are_well_formed(rendered: list[dict[str, Any]]) -> None:
    configmaps = of_kind(rendered, "ConfigMap")
    for _, container in dranspose_containers(rendered):
        value = container_env(container, configmaps).get("UPSTREAM_URL")
        if value is not None:
            url = urlsplit(value)
            assert url.scheme == "tcp" and url.hostname and url.port, value


def test_ingresses_and_probes_reach_what_exists(rendered: list[dict[str, Any]]) -> None:
    services = of_kind(rendered, "Service")
    for ingress in of_kind(rendered, "Ingress").values():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                ports = services[backend["name"]]["spec"]["ports"]
                assert backend["port"]["name"] in [p["name"] for p in ports]
    for _, container in dranspose_containers(rendered):
        component = Component.of(container)
        probe = container.get("readinessProbe", {}).get("httpGet")
        if component.command in APPS or component.command == "http_ingester":
            # an HTTP server must be reachable from other pods: all interfaces
            assert component.args.host == "0.0.0.0", container["args"]
            assert probe, f"{component.command} has no HTTP readiness probe"
        if probe:
            app_path = APPS.get(component.command) or component.args.ingesterapp
            module, attr = app_path.split(":")
            routes = {getattr(r, "path", None) for r in getattr(import_module(module), attr).routes}
            assert probe["path"] in routes, f"{component.command}: no route {probe['path']}"
            names = [p.get("name") for p in container["ports"]]
            assert probe["port"] in names


def test_singletons_are_replaced_not_rolled_and_workers_autoscale(
    rendered: list[dict[str, Any]]
) -> None:
    deployments = of_kind(rendered, "Deployment")
    for name, deployment in deployments.items():
        if name == "worker":
            continue
        # two controllers, reducers or ingesters of one stream must never run at once
        assert deployment["spec"]["replicas"] == 1, name
        assert deployment["spec"]["strategy"]["type"] == "Recreate", name
    hpa = of_kind(rendered, "HorizontalPodAutoscaler")["worker"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": "worker"}
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == DUTY_CYCLE
    target = metric["pods"]["target"]
    assert target["type"] == "AverageValue"
    assert 0 < quantity(target["averageValue"].removesuffix("m")) < 1000  # a fraction of 1
    # scale down between scans only (docs/deployment.md)
    assert hpa["behavior"]["scaleDown"]["selectPolicy"] == "Disabled"
    assert deployments["worker"]["spec"]["replicas"] == hpa["minReplicas"] <= hpa["maxReplicas"]


def test_one_ingester_per_stream(rendered: list[dict[str, Any]]) -> None:
    streams = []
    for deployment, container in dranspose_containers(rendered):
        component = Component.of(container)
        if component.command in ("ingester", "http_ingester"):
            streams.append(component.args.name)
            assert deployment["metadata"]["name"] == f"ingester-{component.args.name}"
    assert len(streams) == len(set(streams)) >= 2


def test_pods_run_as_the_images_user(rendered: list[dict[str, Any]]) -> None:
    uid = int(re.findall(r"useradd .*--uid (\d+)", (ROOT / "Dockerfile").read_text())[0])
    for deployment in of_kind(rendered, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
    for deployment, _ in dranspose_containers(rendered):
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid


def test_memory_limits_hold_what_a_process_keeps(rendered: list[dict[str, Any]]) -> None:
    configmaps = of_kind(rendered, "ConfigMap")
    for deployment, container in dranspose_containers(rendered):
        env = container_env(container, configmaps)
        keeps = int(env.get("DFAST_HEAP_KEEP_BYTES", 1 << 30))  # DistributedSettings' default
        if Component.of(container).command == "ingester":
            keeps += int(env.get("UPSTREAM_BUFFER_BYTES", 256 << 20))  # UpstreamSettings'
        limit = quantity(container["resources"]["limits"]["memory"])
        assert limit > keeps, f"{deployment['metadata']['name']}: {limit} <= {keeps}"


def test_secrets_not_rendered_are_documented_prerequisites(
    rendered: list[dict[str, Any]]
) -> None:
    secrets = of_kind(rendered, "Secret")
    text = prerequisites_text()
    for deployment in of_kind(rendered, "Deployment").values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] not in secrets:
                    assert f"`{ref['name']}`" in text and f"`{ref['key']}`" in text, ref


def test_secret_volumes_are_documented_prerequisites(rendered: list[dict[str, Any]]) -> None:
    secrets = of_kind(rendered, "Secret")
    text = prerequisites_text()
    for deployment in of_kind(rendered, "Deployment").values():
        for volume in deployment["spec"]["template"]["spec"].get("volumes", []):
            secret = volume.get("secret")
            if secret and secret["secretName"] not in secrets:
                assert f"`{secret['secretName']}`" in text, secret
                for item in secret.get("items", []):
                    assert f"`{item['key']}`" in text, item


#: What each data command needs of CURVE: a server's keys (and allow-list) or a client's.
CURVE_ROLES = {"ingester": "server", "http_ingester": "server", "reducer": "server",
               "worker": "client", "debugworker": "client"}


def test_data_components_mount_the_curve_keys_of_their_role(
        rendered: list[dict[str, Any]], tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """Lay the Secret ``dranspose-curve`` out as each pod mounts it, from keys the ``keys``
    command writes, and load them as the component will: servers and clients must agree."""
    keys = curve.write_keys(tmp_path / "secret")
    servers, clients = set(), set()
    configmaps = of_kind(rendered, "ConfigMap")
    for deployment, container in dranspose_containers(rendered):
        command = Component.of(container).command
        role = CURVE_ROLES.get(command)
        if role is None:
            continue
        where = deployment["metadata"]["name"]
        folder = Path(container_env(container, configmaps).get("DFAST_CURVE_DIR", "unset"))
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        assert str(folder) in mounts, f"{where}: DFAST_CURVE_DIR={folder} is not mounted"
        volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"]
                      if v["name"] == mounts[str(folder)])
        assert volume["secret"]["secretName"] == "dranspose-curve"
        pod = tmp_path / where
        for item in volume["secret"]["items"]:
            (pod / item["path"]).parent.mkdir(parents=True, exist_ok=True)
            (pod / item["path"]).write_bytes((keys / item["key"]).read_bytes())
        settings = curve.CurveSettings(dfast_curve_dir=pod)
        if role == "server":
            server = curve.server_keys(settings)
            assert server is not None and not (pod / "client.key_secret").exists(), where
            servers.add((server.public, server.allowed))
        else:
            client = curve.client_keys(settings)
            assert client is not None and not (pod / "server.key_secret").exists(), where
            clients.add((client.server, client.public))
    assert len(servers) == 1 and len(clients) == 1
    (public, allowed), (server_public, client_public) = servers.pop(), clients.pop()
    assert public == server_public and client_public in allowed


def test_overlays_scale_differently(kubectl: str) -> None:
    small, large = (of_kind(render(kubectl, o), "HorizontalPodAutoscaler")["worker"]["spec"]
                    for o in ("overlays/small", "overlays/large"))
    assert small["maxReplicas"] <= large["minReplicas"]


def test_docs_name_the_version_the_metric_and_the_overlays() -> None:
    text = DOCS.read_text()
    assert KUBE_VERSION.rsplit(".", 1)[0] in text
    assert DUTY_CYCLE in prerequisites_text()
    for overlay in OVERLAYS[1:]:
        assert f"deploy/kubernetes/{overlay}" in text
