"""The Helm chart as Helm renders it: helm-python-sdk binds Helm v4's own library
(chart loading, values coalescing, values.schema.json, the template engine, lint),
so no helm binary is needed and nothing here re-implements Helm.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "mailwatch"
EXAMPLE_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "mailwatch"
NAMESPACE = "mailwatch"
# The documentation's install example, found by its first line wherever the page lives.
DOCUMENTED_VALUES_MARKER = "# my-values.yaml"
DOCUMENTATION = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

helm.disable_logging()  # the library logs `required`/`fail` hits to stderr; the tests read the exceptions


@dataclass(frozen=True)
class Rendered:
    """One rendering: the manifests by template file, and the objects they hold."""

    manifests: dict[str, str]

    @property
    def objects(self) -> list[dict]:
        return [obj for name in sorted(self.manifests) for obj in self.objects_of(name)]

    def objects_of(self, template: str) -> list[dict]:
        if not template.endswith(".yaml"):
            return []  # NOTES.txt
        return [obj for obj in yaml.safe_load_all(self.manifests[template]) if obj]

    def one(self, kind: str, name: str | None = None) -> dict:
        found = [o for o in self.objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
        assert len(found) == 1, f"expected one {kind} {name or ''}, rendered {len(found)}"
        return found[0]

    def all(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]


def render(values: dict, *, namespace: str = NAMESPACE) -> Rendered:
    """`helm template RELEASE CHART -n NAMESPACE -f values`; raises helm's errors
    (HelmValuesError for values the schema refuses, HelmRenderError for `required`/`fail`)."""
    with helm.Chart.load(CHART) as chart:
        return Rendered(chart.render(values=values, name=RELEASE, namespace=namespace, is_install=True))


def lint(values: dict, *, kube_version: str) -> dict:
    """`helm lint --strict` with the values, for the given Kubernetes version."""
    return helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{kube_version}")


def load_values(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def documented_values() -> dict:
    """The minimal values the documentation tells a new user to install with."""
    for page in DOCUMENTATION:
        for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), re.DOTALL):
            if block.startswith(DOCUMENTED_VALUES_MARKER):
                return yaml.safe_load(block)
    raise AssertionError(f"no ```yaml block starting with {DOCUMENTED_VALUES_MARKER!r} in {[p.name for p in DOCUMENTATION]}")


def value_sets() -> dict[str, dict]:
    """Every values file the chart ships as an example, and the documented minimum."""
    sets = {path.name: load_values(path) for path in EXAMPLE_VALUES}
    sets["documented"] = documented_values()
    return sets


def oldest_kubernetes() -> str:
    """The lowest Kubernetes version Chart.yaml's kubeVersion admits, as MAJOR.MINOR.PATCH."""
    constraint = load_values(CHART / "Chart.yaml")["kubeVersion"]
    match = re.fullmatch(r">=\s*v?(\d+)\.(\d+)(?:\.(\d+))?(?:-0)?", constraint.strip())
    assert match, f"kubeVersion {constraint!r} is not a plain lower bound (>=X.Y.Z-0)"
    major, minor, patch = match.groups()
    return f"{major}.{minor}.{patch or 0}"
