"""The image's background build in a pytest-xdist run (tests/conftest.py loads this plugin).

The controller runs no test, but it lives from the first test to the last: it starts the
build (podman.SharedBuild) as soon as a worker's collection shows image tests that will run,
and hands the outcome to the workers through a directory named in their `workerinput`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.deploy import podman as pm

WORKER_INPUT = "mailwatch_image_build"
DIRECTORY = pytest.StashKey[Path]()
BUILD = pytest.StashKey[pm.SharedBuild]()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    config = node.config
    if DIRECTORY not in config.stash:
        config.stash[DIRECTORY] = Path(tempfile.mkdtemp(prefix="mailwatch-image-build-"))
    node.workerinput[WORKER_INPUT] = str(config.stash[DIRECTORY])


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    # `ids` is what the worker will run (after -k / -m deselection); every worker collects the same.
    config = node.config
    if BUILD in config.stash or config.option.collectonly:
        return
    if not any(nodeid.split("::", 1)[0].endswith(f"/{pm.IMAGE_TESTS}") for nodeid in ids):
        return
    # Without the tools the image fixture says what is missing.
    if pm.tools_present():
        config.stash[BUILD] = pm.SharedBuild(pm.run_tag(), config.stash[DIRECTORY])


def pytest_unconfigure(config):
    build = config.stash.get(BUILD, None)
    if build is not None:
        pm.end_build(build)
    directory = config.stash.get(DIRECTORY, None)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
