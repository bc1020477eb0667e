"""The chart's alert rules, as Prometheus reads them: the PrometheusRule rendered by Helm
(full-values.yaml: the chart's default thresholds, namespace "mailwatch") passes
`promtool check rules`, and `promtool test rules` runs tests/deploy/alerts/, where every
alert has a case that fires it from synthetic series and one that keeps it quiet.

promtool comes with Debian's `prometheus` package (.ci/run installs it).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.chart import CHART, load_values, render

UNIT_TESTS = Path(__file__).parent / "alerts" / "mailwatch_test.yaml"
VALUES = load_values(CHART / "ci" / "full-values.yaml")


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        raise AssertionError("the alert tests need promtool: apt-get install prometheus (.ci/run does)")
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def write_rules(directory: Path, values: dict) -> list[dict]:
    """The rendered rule groups as a Prometheus rule file, beside a copy of the unit tests."""
    groups = render(values).one("PrometheusRule")["spec"]["groups"]
    (directory / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    shutil.copy(UNIT_TESTS, directory / UNIT_TESTS.name)
    return [rule for group in groups for rule in group["rules"]]


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory) -> tuple[Path, list[dict]]:
    directory = tmp_path_factory.mktemp("alerts")
    return directory, write_rules(directory, VALUES)


def test_rules_pass_promtool_check(rules_dir):
    directory, rules = rules_dir
    result = promtool("check", "rules", "rules.yaml", cwd=directory)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case(rules_dir):
    _, rules = rules_dir
    alerts = {rule["alert"] for rule in rules}
    assert "MailwatchNoStreamsOpen" in alerts  # the optional alert is on in these values
    firing, quiet = set(), set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert not alerts - firing, f"alerts no unit test fires: {sorted(alerts - firing)}"
    assert not alerts - quiet, f"alerts no unit test keeps quiet: {sorted(alerts - quiet)}"
    assert not (firing | quiet) - alerts, f"unit tests of alerts the chart lacks: {sorted((firing | quiet) - alerts)}"


def test_alert_unit_tests_pass(rules_dir):
    directory, _ = rules_dir
    result = promtool("test", "rules", UNIT_TESTS.name, cwd=directory)
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_tests_hold_the_chart_to_its_thresholds(tmp_path):
    """The same unit tests fail against rules rendered with another threshold: they test the
    chart's rules, not themselves."""
    values = copy.deepcopy(VALUES)
    values["prometheusRule"] = {**values["prometheusRule"], "syncBacklogSeconds": 3600}
    write_rules(tmp_path, values)
    result = promtool("test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "alertname: MailwatchSyncBacklog" in result.stdout + result.stderr
