"""The Helm chart, checked without a helm binary (none can be installed here; the
hosted-CI workflow .github/workflows/chart.yml runs helm lint, kubeconform and kind).

What these tests hold the chart to: its values obey its own schema; every
setting the service reads (`mailwatch.config.ENV_SETTINGS`, so a new setting fails
here until the chart carries it) has a value and reaches the container's
environment; every `.Values` path a template uses exists; every metric an
alert or the dashboard names is exported by a running `mailwatch serve`.
"""

from __future__ import annotations

import copy
import json
import re
import urllib.request
from pathlib import Path

import jsonschema
import pytest
import yaml

from mailwatch.config import ENV_SETTINGS, Settings
from mailwatch.secrets import generate_key
from tests.fixtures.processes import ServiceProcess
from tests.integration.client.conftest import free_port

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "mailwatch"
TEMPLATES = CHART / "templates"
EXAMPLE_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))

# Settings that live in the Secret, and the key of `secrets` each comes from.
SECRET_SETTINGS = {"database_url": "databaseUrl", "secret_keys": "secretKeys", "operator_token": "operatorToken"}


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def merged(defaults: dict, override: dict) -> dict:
    """Helm's merge of a user values file over values.yaml (maps merge, everything else replaces)."""
    result = copy.deepcopy(defaults)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def snakecase(camel: str) -> str:
    """Sprig's `snakecase` for the lower camelCase keys this chart uses."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", camel).lower()


def to_env_value(value) -> str:
    """What configmap.yaml renders: lists comma-joined, booleans lower case, numbers as Go prints them."""
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@pytest.fixture(scope="module")
def values() -> dict:
    return load_yaml(CHART / "values.yaml")


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads((CHART / "values.schema.json").read_text())


def test_chart_has_example_values_files():
    assert {path.name for path in EXAMPLE_VALUES} >= {"minimal-values.yaml", "full-values.yaml"}


@pytest.mark.parametrize("path", [CHART / "values.yaml", *EXAMPLE_VALUES], ids=lambda p: p.name)
def test_values_files_follow_the_schema(path, values, schema):
    jsonschema.Draft7Validator.check_schema(schema)
    document = merged(values, load_yaml(path))
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(document), key=str)
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)


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
)
def test_schema_refuses_bad_values(override, values, schema):
    assert list(jsonschema.Draft7Validator(schema).iter_errors(merged(values, override)))


def test_every_setting_has_a_value_in_the_chart(values):
    configmap = (TEMPLATES / "configmap.yaml").read_text()
    config_keys = {snakecase(key): key for key in values["config"]}
    missing, derived = [], []
    for setting in ENV_SETTINGS:
        # The chart's config keys are the variables in camelCase: syncLeaseSeconds is MAILWATCH_SYNC_LEASE_SECONDS.
        if setting.key in SECRET_SETTINGS:
            assert SECRET_SETTINGS[setting.key] in values["secrets"]
        elif re.search(rf"^\s*{setting.env}:", configmap, re.MULTILINE):
            derived.append(setting.key)  # set by the chart itself (listen addresses, TLS files)
        elif setting.key not in config_keys:
            camel = re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), setting.key)
            missing.append(f"{camel} ({setting.env})")
        else:
            assert values["config"][config_keys[setting.key]] is not None, f"config.{config_keys[setting.key]} is null"
    assert not missing, (
        "settings the service reads but the chart does not set; add each under `config:` in "
        f"deploy/helm/mailwatch/values.yaml with a comment, and to values.schema.json: {', '.join(missing)}"
    )
    assert {"listen", "http_listen", "tls_cert_file"} <= set(derived)
    known = {setting.key for setting in ENV_SETTINGS}
    stale = [key for key, name in ((k, snakecase(k)) for k in values["config"]) if name not in known]
    assert not stale, f"values.yaml config keys that are no setting of the service: {stale}"


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


def test_settings_reach_the_container_environment(values):
    """The ConfigMap renders every config key as MAILWATCH_<SNAKE>, the Deployment
    loads it and the Secret's keys; the result is a valid Settings."""
    configmap = (TEMPLATES / "configmap.yaml").read_text()
    assert "range $key, $value := .Values.config" in configmap
    assert "MAILWATCH_{{ $key | snakecase | upper }}" in configmap
    deployment = (TEMPLATES / "deployment.yaml").read_text()
    assert re.search(r"configMapRef:\s*\n\s*name: \{\{ include \"mailwatch.fullname\" \. \}\}", deployment)
    assert 'include "mailwatch.secretEnv"' in deployment
    helpers = (TEMPLATES / "_helpers.tpl").read_text()
    secret_env = helpers[helpers.index('define "mailwatch.secretEnv"'):]
    for name in SECRET_SETTINGS:
        assert f"- name: MAILWATCH_{name.upper()}" in secret_env

    # The environment the minimal install produces is accepted by the service as it stands.
    example = merged(values, load_yaml(CHART / "ci" / "minimal-values.yaml"))
    env = {f"MAILWATCH_{snakecase(key).upper()}": to_env_value(value) for key, value in example["config"].items()}
    env |= {f"MAILWATCH_{name.upper()}": example["secrets"][key] for name, key in SECRET_SETTINGS.items()}
    env |= {"MAILWATCH_LISTEN": "0.0.0.0:50051", "MAILWATCH_HTTP_LISTEN": "0.0.0.0:8080",
            "MAILWATCH_TLS_CERT_FILE": "", "MAILWATCH_TLS_KEY_FILE": "", "MAILWATCH_TLS_CLIENT_CA_FILE": ""}
    settings = Settings.from_env(env)
    assert settings.pubsub.subscriptions == tuple(example["config"]["pubsubSubscriptions"])
    assert settings.grace_seconds == example["config"]["graceSeconds"]
    assert settings.sync.enabled is True


def _values_paths(text: str) -> set[str]:
    return set(re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", text))


def test_every_values_path_in_the_templates_exists(values):
    used = {path for template in TEMPLATES.iterdir() for path in _values_paths(template.read_text())}
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


def test_one_resource_per_template_and_chart_name_prefixed_helpers():
    for template in TEMPLATES.glob("*.yaml"):
        text = template.read_text()
        assert len(re.findall(r"^kind:", text, re.MULTILINE)) == 1, template.name
        assert "namespace:" in text, f"{template.name} names no namespace"
    helpers = (TEMPLATES / "_helpers.tpl").read_text()
    assert all(name.startswith("mailwatch.") for name in re.findall(r'define "([^"]+)"', helpers))


def test_template_blocks_are_balanced():
    """Every if/with/range/define is closed by its own end (what helm would refuse first)."""
    action = re.compile(r"\{\{-?\s*(/\*.*?\*/|[^}]*?)\s*-?\}\}", re.DOTALL)
    for template in TEMPLATES.iterdir():
        depth = 0
        for match in action.finditer(template.read_text()):
            word = (match.group(1).split() or [""])[0]
            if word in ("if", "with", "range", "define", "block"):
                depth += 1
            elif word == "end":
                depth -= 1
                assert depth >= 0, f"{template.name}: an end closes nothing at offset {match.start()}"
        assert depth == 0, f"{template.name}: {depth} blocks left open"


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
    rule_exprs = re.findall(r"^\s*expr: (.*)$", (TEMPLATES / "prometheusrule.yaml").read_text(), re.MULTILINE)
    rules = _named_metrics("\n".join(rule_exprs))
    panels = json.loads((CHART / "dashboards" / "mailwatch.json").read_text())["panels"]
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
