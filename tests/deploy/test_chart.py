"""The Helm chart, rendered and linted by Helm's own engine (tests/deploy/chart.py: helm-python-sdk,
Helm v4's library, no helm binary) with every example values file and the documented minimum.

What these tests hold the chart to: Helm renders and lints it cleanly; every rendered object is
valid, strictly (no unknown field), against the API schemas of the oldest Kubernetes the chart
admits (Chart.yaml kubeVersion) and of the newest kubernetes-validate knows; values the schema
refuses fail the render; every setting the service reads (`mailwatch.config.ENV_SETTINGS`, so a
new setting fails here until the chart carries it) reaches the container's environment as
Kubernetes would assemble it from the rendered ConfigMap, Secret and Deployment, and the result
is a valid Settings; every metric an alert or the dashboard names is exported by a running
`mailwatch serve`. The alert rules themselves: tests/deploy/test_alerts.py (promtool).
"""

from __future__ import annotations

import base64
import copy
import json
import re
import urllib.request

import helm_python as helm
import kubernetes_validate
import pytest
from kubernetes_validate.utils import all_versions

from mailwatch.config import ENV_SETTINGS, Settings
from mailwatch.secrets import generate_key
from tests.deploy.chart import CHART, NAMESPACE, Rendered, lint, load_values, oldest_kubernetes, render, value_sets
from tests.fixtures.processes import ServiceProcess
from mailwatch_devstack.ports import free_port

VALUE_SETS = value_sets()
OLDEST = oldest_kubernetes()
NEWEST = kubernetes_validate.latest_version()
# Prometheus Operator resources: no Kubernetes schema; checked by what reads them instead.
CUSTOM_RESOURCES = {
    ("monitoring.coreos.com/v1", "PrometheusRule"),  # promtool check rules + unit tests: test_alerts.py
    ("monitoring.coreos.com/v1", "ServiceMonitor"),  # test_service_monitor_scrapes_the_metrics_port
}
SERVICE_MONITOR_SPEC_FIELDS = {"selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels", "podTargetLabels"}
SERVICE_MONITOR_ENDPOINT_FIELDS = {
    "port", "path", "interval", "scrapeTimeout", "scheme", "tlsConfig", "honorLabels", "relabelings", "metricRelabelings",
}
# A Secret the user made (existingSecret in full-values.yaml), as the cluster would hold it.
EXISTING_SECRET_DATA = {"database-url": "postgresql://mailwatch@postgres.db.svc/mailwatch", "secret-keys": generate_key()}


@pytest.fixture(scope="module", params=sorted(VALUE_SETS), ids=str)
def example(request) -> tuple[dict, Rendered]:
    values = VALUE_SETS[request.param]
    return values, render(values)


def test_chart_has_example_values_files():
    assert {"minimal-values.yaml", "full-values.yaml", "documented"} <= set(VALUE_SETS)


def test_oldest_supported_kubernetes_has_schemas():
    """The chart claims Kubernetes >= 1.27, where gRPC container probes (the pods' readiness
    and liveness probes) became GA; everything else it uses is older (PodDisruptionBudget
    policy/v1 1.21, HorizontalPodAutoscaler autoscaling/v2 1.23). The validator must know it."""
    assert OLDEST == "1.27.0"
    assert OLDEST.rsplit(".", 1)[0] in {v.rsplit(".", 1)[0] for v in all_versions()}


def test_every_rendered_object_is_valid_for_the_oldest_and_newest_kubernetes(example):
    values, rendered = example
    checked = set()
    for obj in rendered.objects:
        kind = (obj["apiVersion"], obj["kind"])
        if kind in CUSTOM_RESOURCES:
            continue
        for version in (OLDEST, NEWEST):
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(map(str, error.path))
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} is invalid for Kubernetes {version}: {path}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                pytest.fail(f"{error.message}: a Kubernetes API the chart must not use, or a custom resource to check otherwise")
        checked.add(obj["kind"])
    assert {"Deployment", "ConfigMap", "Service", "ServiceAccount", "Job", "PodDisruptionBudget"} <= checked


def test_validation_is_strict_and_knows_the_version(example):
    """What the check above would catch: an unknown field, and a field newer than the oldest
    supported release (pod-level resources, Kubernetes 1.32)."""
    deployment = copy.deepcopy(example[1].one("Deployment"))
    kubernetes_validate.validate(deployment, OLDEST, strict=True)
    misspelled = copy.deepcopy(deployment)
    misspelled["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelled, OLDEST, strict=True)
    newer = copy.deepcopy(deployment)
    newer["spec"]["template"]["spec"]["resources"] = {"limits": {"memory": "1Gi"}}
    kubernetes_validate.validate(newer, "1.34.0", strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(newer, OLDEST, strict=True)


@pytest.mark.parametrize("kube_version", [OLDEST, NEWEST])
@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_is_clean(name, kube_version):
    """Lint for both ends of the supported range (lint flags APIs deprecated in the given release)."""
    report = lint(VALUE_SETS[name], kube_version=kube_version)
    findings = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors; infos are advice
    assert not findings and not report["errors"], json.dumps(report, indent=2)
    assert report["total_charts_linted"] == 1


def test_one_object_per_template_each_in_the_release_namespace(example):
    _, rendered = example
    for template in rendered.manifests:
        assert len(rendered.objects_of(template)) <= 1, template
    assert all(obj["metadata"]["namespace"] == NAMESPACE for obj in rendered.objects)
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    assert all(name.startswith("mailwatch.") for name in re.findall(r'define "([^"]+)"', helpers))


def test_defaults_alone_are_refused_with_what_is_missing():
    with pytest.raises(helm.HelmRenderError, match="is required"):
        render({})
    minimal = VALUE_SETS["minimal-values.yaml"]
    with pytest.raises(helm.HelmRenderError, match="config.pubsubTopic is required"):
        render({"secrets": minimal["secrets"]})
    with pytest.raises(helm.HelmRenderError, match="secrets.databaseUrl is required"):
        render({"config": minimal["config"]})


@pytest.mark.parametrize(
    "override",
    [
        {"config": {"logFormat": "xml"}},
        {"config": {"syncConcurency": 4}},  # a typo is refused, not silently ignored
        {"config": {"pubsubTopic": "gmail"}},
        {"config": {"pubsubSubscriptions": "projects/p/subscriptions/s"}},
        {"replicaCount": "two"},
        {"tls": {"mountPath": "relative"}},
    ],
    ids=lambda o: json.dumps(o),
)
def test_schema_refuses_bad_values(override):
    values = copy.deepcopy(VALUE_SETS["minimal-values.yaml"])
    for key, value in override.items():
        values[key] = {**values.get(key, {}), **value} if isinstance(value, dict) else value
    with pytest.raises(helm.HelmValuesError, match="values don't meet the specifications of the schema"):
        render(values)


def _secret_data(rendered: Rendered, name: str) -> dict[str, str]:
    secrets = [s for s in rendered.all("Secret") if s["metadata"]["name"] == name]
    if not secrets:
        return EXISTING_SECRET_DATA  # not the chart's: the user's existingSecret
    (secret,) = secrets
    data = {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}
    return data | secret.get("stringData", {})


def container_environment(rendered: Rendered, container: dict) -> dict[str, str]:
    """The environment Kubernetes gives the container: envFrom ConfigMaps, then env entries
    with literal values or Secret keys (an optional key the Secret lacks is left out)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= rendered.one("ConfigMap", source["configMapRef"]["name"])["data"]
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
            continue
        reference = variable["valueFrom"]["secretKeyRef"]
        data = _secret_data(rendered, reference["name"])
        if reference["key"] in data:
            env[variable["name"]] = data[reference["key"]]
        else:
            assert reference.get("optional"), f"{variable['name']}: Secret {reference['name']} has no key {reference['key']}"
    return env


def _container(workload: dict) -> dict:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def test_settings_reach_the_container_environment(example):
    """Every setting the service reads is in the server container's environment, nothing
    else MAILWATCH_* is, and the service accepts the result with the values' meaning."""
    values, rendered = example
    env = container_environment(rendered, _container(rendered.one("Deployment")))
    operator_token_optional = bool(values.get("existingSecret"))
    expected = {s.env for s in ENV_SETTINGS if not (operator_token_optional and s.key == "operator_token")}
    missing = sorted(expected - env.keys())
    assert not missing, (
        "settings the service reads but the chart does not set; add each under `config:` in "
        f"deploy/helm/mailwatch/values.yaml with a comment, and to values.schema.json: {missing}"
    )
    unknown = sorted(name for name in env.keys() - expected if name.startswith("MAILWATCH_"))
    assert not unknown, f"the chart sets variables the service does not read: {unknown}"

    settings = Settings.from_env(env)
    config = values["config"]
    assert settings.pubsub.topic == config["pubsubTopic"]
    assert settings.pubsub.subscriptions == tuple(config.get("pubsubSubscriptions", ()))
    assert settings.sync.concurrency == config.get("syncConcurrency", 16)
    assert settings.listen == "0.0.0.0:50051" and settings.http.listen == "0.0.0.0:8080"
    if values.get("existingSecret"):
        assert settings.database_url == EXISTING_SECRET_DATA["database-url"]
    else:
        assert settings.database_url == values["secrets"]["databaseUrl"]
        assert settings.secret_keys == (values["secrets"]["secretKeys"],)
    tls = values.get("tls", {})
    assert bool(settings.tls.cert_file) == bool(tls.get("enabled"))
    assert bool(settings.tls.client_ca_file) == bool(tls.get("clientAuth"))


def test_migration_job_reaches_the_same_database_with_the_same_keys(example):
    """Migration 0017 re-seals stored credentials: the Job needs the keys the server decrypts with."""
    values, rendered = example
    server = container_environment(rendered, _container(rendered.one("Deployment")))
    migration = container_environment(rendered, _container(rendered.one("Job")))
    assert migration["MAILWATCH_DATABASE_URL"] == server["MAILWATCH_DATABASE_URL"]
    assert migration["MAILWATCH_SECRET_KEYS"] == server["MAILWATCH_SECRET_KEYS"]
    assert _container(rendered.one("Job"))["args"] == ["migrate"]


def test_every_config_value_is_documented_by_a_comment():
    lines = (CHART / "values.yaml").read_text().splitlines()
    start = lines.index("config:")
    undocumented = []
    for number in range(start + 1, len(lines)):
        line = lines[number]
        if line and not line.startswith(" "):
            break  # the end of the config block
        match = re.match(r"^  ([A-Za-z0-9]+):", line)
        if match and not lines[number - 1].strip().startswith("#"):
            undocumented.append(match.group(1))
    assert not undocumented, f"config keys without a comment above them: {undocumented}"


def test_every_values_path_in_the_templates_exists():
    """A template reading a value absent from values.yaml renders it as empty; Helm's strict lint
    catches only a missing parent (nil pointer), not a missing leaf, so the paths are compared here."""
    values = load_values(CHART / "values.yaml")
    used = {
        path
        for template in (CHART / "templates").iterdir()
        for path in re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", template.read_text())
    }
    assert len(used) > 50  # the scan finds the chart's paths at all
    missing = []
    for path in sorted(used):
        node = values
        for part in path.strip(".").split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(path)
                break
            node = node[part]
    assert not missing, f".Values paths used in templates but absent from values.yaml: {missing}"


def test_a_configuration_change_rolls_the_pods():
    values = VALUE_SETS["minimal-values.yaml"]
    before = render(values).one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    changed = copy.deepcopy(values)
    changed["config"]["logLevel"] = "DEBUG"
    after = render(changed).one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert after["checksum/config"] != before["checksum/config"]
    assert after["checksum/secret"] == before["checksum/secret"]
    changed["secrets"]["operatorToken"] = "another-token-entirely"
    assert render(changed).one("Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/secret"] != before["checksum/secret"]


def test_service_monitor_scrapes_the_metrics_port():
    rendered = render(VALUE_SETS["full-values.yaml"])
    monitor, service, deployment = rendered.one("ServiceMonitor"), rendered.one("Service"), rendered.one("Deployment")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    container_ports = {p["name"]: p["containerPort"] for p in _container(deployment)["ports"]}
    assert port["targetPort"] in container_ports and endpoint["path"] == "/metrics"
    env = container_environment(rendered, _container(deployment))
    assert env["MAILWATCH_HTTP_LISTEN"].endswith(f":{container_ports[port['targetPort']]}")
    # No Kubernetes schema covers this custom resource: its fields are held to the Prometheus
    # Operator's names the chart may use, so a misspelt one fails here rather than being ignored.
    assert set(monitor["spec"]) <= SERVICE_MONITOR_SPEC_FIELDS
    assert set(endpoint) <= SERVICE_MONITOR_ENDPOINT_FIELDS


def _named_metrics(text: str) -> set[str]:
    return set(re.findall(r"\bmailwatch_[a-z0-9_]+", text))


def _exported_metrics(exposition: str) -> set[str]:
    names = set()
    for line in exposition.splitlines():
        match = re.match(r"# TYPE (\S+) (\S+)", line)
        if match:
            name, kind = match.groups()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


@pytest.mark.e2e
def test_alerts_and_dashboard_name_only_metrics_the_service_exports(database_url):
    rendered = render(VALUE_SETS["full-values.yaml"])
    rule = rendered.one("PrometheusRule")
    rules = _named_metrics("\n".join(r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]))
    dashboard_json = rendered.one("ConfigMap", "mailwatch-dashboard")["data"]["mailwatch.json"]
    panels = json.loads(dashboard_json)["panels"]
    dashboard = _named_metrics("\n".join(target["expr"] for panel in panels for target in panel["targets"]))
    assert len(rules) >= 8 and len(dashboard) >= 10  # the scan finds them at all

    http_port = free_port()
    service = ServiceProcess({
        "MAILWATCH_DATABASE_URL": database_url,
        "MAILWATCH_SECRET_KEYS": generate_key(),
        "MAILWATCH_PUBSUB_TOPIC": "projects/p/topics/t",
        "MAILWATCH_LISTEN": "127.0.0.1:0",
        "MAILWATCH_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "MAILWATCH_LOG_FORMAT": "text",
    }).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=30) as response:
            exported = _exported_metrics(response.read().decode())
    finally:
        service.terminate()
        service.kill()
    assert not rules - exported, f"alerts name metrics the service does not export: {sorted(rules - exported)}"
    assert not dashboard - exported, f"the dashboard names metrics the service does not export: {sorted(dashboard - exported)}"


ROLES = [{"role": "api", "replicas": 2}, {"role": "ingest", "replicas": 1}, {"role": "sync", "replicas": 3}]
WORKERS = ("sync", "renew", "poll", "prune", "ingest")


def test_roles_make_one_valid_deployment_per_role_each_running_its_workers_behind_the_service():
    values = {**copy.deepcopy(VALUE_SETS["minimal-values.yaml"]), "roles": ROLES}
    rendered = render(values)
    deployments = {d["metadata"]["name"]: d for d in rendered.all("Deployment")}
    assert sorted(deployments) == ["mailwatch-api", "mailwatch-ingest", "mailwatch-sync"]
    service_selector = rendered.one("Service")["spec"]["selector"]
    running = {}
    for spec in ROLES:
        deployment = deployments[f"mailwatch-{spec['role']}"]
        for version in (OLDEST, NEWEST):
            kubernetes_validate.validate(deployment, version, strict=True)
        assert deployment["spec"]["replicas"] == spec["replicas"]
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert service_selector.items() <= pod_labels.items()  # every role serves the API
        others = [d for d in deployments.values() if d is not deployment]
        assert not any(deployment["spec"]["selector"]["matchLabels"].items()
                       <= d["spec"]["template"]["metadata"]["labels"].items() for d in others)
        settings = Settings.from_env(container_environment(rendered, _container(deployment)))
        assert settings.role == spec["role"]
        running[spec["role"]] = {name for name in WORKERS if getattr(settings, name).enabled}
    assert running == {"api": set(), "ingest": {"ingest"}, "sync": {"sync", "renew", "poll", "prune"}}
    report = lint(values, kube_version=OLDEST)
    assert not [m for m in report["messages"] if m["severity"] >= 2] and not report["errors"], report


def test_roles_refuse_autoscaling_and_unknown_roles():
    minimal = VALUE_SETS["minimal-values.yaml"]
    with pytest.raises(helm.HelmRenderError, match="with roles, set each role's replicas"):
        render({**copy.deepcopy(minimal), "roles": ROLES, "autoscaling": {"enabled": True}})
    with pytest.raises(helm.HelmValuesError, match="/roles/0/role"):
        render({**copy.deepcopy(minimal), "roles": [{"role": "worker", "replicas": 1}]})
    single = render(copy.deepcopy(minimal)).one("Deployment")  # no roles: one Deployment running config.role
    assert single["metadata"]["name"] == "mailwatch"
    assert "MAILWATCH_ROLE" not in {e["name"] for e in _container(single).get("env", [])}
