"""docs/configuration.md and the chart's values.yaml comments must be what
scripts/gen_config_docs.py writes from the settings' descriptions now."""

from __future__ import annotations

import re

from mailwatch.config import ENV_SETTINGS
from tests.fixtures.scripts import load_script



def _load_generator():
    return load_script("gen_config_docs")


def test_the_configuration_page_is_current():
    generator = _load_generator()
    assert generator.PAGE.read_text() == generator.render_page(), (
        "docs/configuration.md is out of date; run: .venv/bin/python scripts/gen_config_docs.py"
    )


def test_the_chart_values_comments_are_current():
    generator = _load_generator()
    assert generator.VALUES.read_text() == generator.render_values(generator.VALUES.read_text()), (
        "deploy/helm/mailwatch/values.yaml's setting comments are out of date; "
        "run: .venv/bin/python scripts/gen_config_docs.py"
    )


def test_the_page_lists_every_variable_once_with_its_description():
    generator = _load_generator()
    rows = [line for line in generator.render_page().splitlines() if line.startswith("| `MAILWATCH_")]
    listed = [re.match(r"\| `([A-Z0-9_]+)`", row).group(1) for row in rows]
    assert listed == [setting.env for setting in ENV_SETTINGS]
    for setting, row in zip(ENV_SETTINGS, rows):
        assert setting.description.strip() and setting.description in row


def test_a_changed_description_shows_in_both_files(monkeypatch):
    generator = _load_generator()
    changed = ENV_SETTINGS[0]._replace(description="A description nobody wrote.")
    monkeypatch.setattr(generator, "ENV_SETTINGS", (changed, *ENV_SETTINGS[1:]))
    assert "A description nobody wrote." in generator.render_page()
    values = generator.render_values(generator.VALUES.read_text())
    assert "  # -- A description nobody wrote. Variable: MAILWATCH_DATABASE_URL.\n  databaseUrl:" in values
