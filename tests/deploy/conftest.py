"""The image tests run last, their image built meanwhile (tests/deploy/podman.py BackgroundBuild)."""

from __future__ import annotations

import shutil
import uuid

import pytest

from tests.deploy import podman as pm

IMAGE_TESTS = "test_image.py"
BUILD = pytest.StashKey[pm.BackgroundBuild]()


@pytest.hookimpl(trylast=True)  # after -k / -m deselection: only for image tests that will run
def pytest_collection_modifyitems(session, config, items):
    image_tests = [item for item in items if item.path.name == IMAGE_TESTS]
    if not image_tests:
        return
    items[:] = [item for item in items if item.path.name != IMAGE_TESTS] + image_tests
    # Without the tools the image fixture says what is missing.
    if not config.option.collectonly and all(shutil.which(tool) for tool in pm.REQUIRED_TOOLS):
        # A tag of this run's own, so concurrent runs on one machine never swap images.
        config.stash[BUILD] = pm.BackgroundBuild(f"localhost/mailwatch:test-{uuid.uuid4().hex[:8]}")


def pytest_unconfigure(config):
    build = config.stash.get(BUILD, None)
    if build is not None:
        build.stop()
        # This run's tag goes (built or not); the cached build layers stay.
        pm.podman("rmi", build.tag, check=False)


@pytest.fixture(scope="module")
def image(request):
    pm.require_tools()
    try:
        yield request.config.stash[BUILD].result()
    finally:
        # Old build layers go after a day, so repeated runs do not fill the disk.
        pm.podman("image", "prune", "-f", "--filter", "until=24h", check=False)
