"""The image tests run last, their image built meanwhile (tests/deploy/podman.py BackgroundBuild).

In a pytest-xdist run (the default, pyproject's addopts) the controller starts the build
(tests/deploy/xdist_build.py) and a worker runs the image tests; in a single-process run
(`-n 0`) this process does both.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy import podman as pm
from tests.deploy.xdist_build import WORKER_INPUT

BUILD = pytest.StashKey[pm.BackgroundBuild]()


@pytest.hookimpl(trylast=True)  # after -k / -m deselection: only for image tests that will run
def pytest_collection_modifyitems(session, config, items):
    image_tests = [item for item in items if item.path.name == pm.IMAGE_TESTS]
    if not image_tests:
        return
    items[:] = [item for item in items if item.path.name != pm.IMAGE_TESTS] + image_tests
    if hasattr(config, "workerinput"):  # an xdist worker: the controller builds
        return
    # Without the tools the image fixture says what is missing.
    if not config.option.collectonly and pm.tools_present():
        config.stash[BUILD] = pm.BackgroundBuild(pm.run_tag())


def pytest_unconfigure(config):
    build = config.stash.get(BUILD, None)
    if build is not None:
        pm.end_build(build)


@pytest.fixture(scope="module")
def image(request):
    pm.require_tools()
    try:
        workerinput = getattr(request.config, "workerinput", None)
        if workerinput is not None:
            yield pm.shared_result(Path(workerinput[WORKER_INPUT]), timeout=pm.BUILD_TIMEOUT + 900)
        else:
            yield request.config.stash[BUILD].result()
    finally:
        # Old build layers go after a day, so repeated runs do not fill the disk.
        pm.podman("image", "prune", "-f", "--filter", "until=24h", check=False)
