"""The lock (requirements/dev.txt, requirements/runtime.txt) agrees with the
pyproject.toml files, without the network: every declared requirement (extras
included) is satisfied by a pin, and the pinned names are exactly what the
declared roots reach through the installed distributions' metadata. Adding a
dependency without refreshing the lock fails the first test, dropping one the
second. Refresh: python3 scripts/lock.py (then reinstall, README's test command)."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, distribution

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.fixtures.lock import DEV_LOCK, OURS, REFRESH, ROOT, RUNTIME_LOCK, declared, locked_version, read_lock

# Each lock's roots: our distributions, and whether their optional extras (test tools) count.
LOCKS = {
    "dev": (DEV_LOCK, {"mailwatch": True, "mailwatch-client": True, "mailwatch-devstack": True}),
    "runtime": (RUNTIME_LOCK, {"mailwatch": False, "mailwatch-client": False}),
}


def _applies(requirement: Requirement, extra: str = "") -> bool:
    return requirement.marker is None or requirement.marker.evaluate({"extra": extra})


@pytest.mark.parametrize("lock", LOCKS)
def test_every_declared_requirement_is_satisfied_by_a_pin(lock):
    path, roots = LOCKS[lock]
    pins = read_lock(path)
    problems = []
    for root, extras in roots.items():
        for requirement in declared(root, extras):
            name = canonicalize_name(requirement.name)
            if name in OURS:
                assert name in roots, f"{root} needs {name}, which {path.name} does not take as a root"
            elif not _applies(requirement):
                continue
            elif name not in pins:
                problems.append(f"{root}: {requirement} is not locked")
            elif not requirement.specifier.contains(pins[name].version, prereleases=True):
                problems.append(f"{root}: {requirement} but {path.name} pins {name}=={pins[name].version}")
    assert not problems, f"{path.name} disagrees with pyproject.toml; run: {REFRESH}\n" + "\n".join(problems)


def _reached(roots: dict[str, bool]) -> set[str]:
    """Names the roots' requirements reach, following each installed distribution's
    Requires-Dist (with the extras asked for) and markers evaluated for this machine."""
    todo = [requirement for root, extras in roots.items() for requirement in declared(root, extras)]
    todo = [requirement for requirement in todo if _applies(requirement)]
    expanded: set[tuple[str, str]] = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in OURS:
            continue
        for extra in {"", *requirement.extras}:
            if (name, extra) in expanded:
                continue
            expanded.add((name, extra))
            try:
                requires = distribution(name).requires or []
            except PackageNotFoundError:
                pytest.fail(f"{name} is not installed: install from the lock (README's test command)")
            todo += [dependency for dependency in map(Requirement, requires) if _applies(dependency, extra)]
    return {name for name, _ in expanded}


@pytest.mark.parametrize("lock", LOCKS)
def test_the_pinned_names_are_exactly_what_the_declared_roots_reach(lock):
    path, roots = LOCKS[lock]
    pinned = {name for name, pin in read_lock(path).items() if pin.applies()}
    reached = _reached(roots)
    assert len(reached) > 20
    assert pinned == reached, (
        f"{path.name} disagrees with pyproject.toml (run: {REFRESH}): "
        f"pinned but not required: {sorted(pinned - reached)}; required but not pinned: {sorted(reached - pinned)}"
    )


def test_this_environment_runs_the_locked_versions_and_the_image_the_tested_ones():
    dev = read_lock(DEV_LOCK)
    runtime = read_lock(RUNTIME_LOCK)
    drifted = []
    for name, pin in dev.items():
        if pin.applies():
            try:
                installed = distribution(name).version
            except PackageNotFoundError:
                installed = None
            if installed != pin.version:
                drifted.append(f"{name}: locked {pin.version}, installed {installed}")
    assert not drifted, "install from the lock (README's test command):\n" + "\n".join(drifted)
    differ = {name: (pin.version, dev[name].version) for name, pin in runtime.items() if dev.get(name, pin).version != pin.version}
    assert runtime.keys() <= dev.keys() and not differ, f"runtime.txt must pin what dev.txt pins (run: {REFRESH}): {differ}"


@pytest.mark.parametrize("distribution_name", sorted(OURS))
def test_our_distributions_are_built_with_the_locked_setuptools(distribution_name):
    """`pip install -e` builds each of our distributions in an isolated environment
    from [build-system] requires, which the lock's hashes do not cover: pinning the
    exact release there keeps a fresh machine building with the setuptools the tests
    ran, not whatever was published last."""
    build = tomllib.loads((OURS[distribution_name] / "pyproject.toml").read_text())["build-system"]
    requires = [Requirement(text) for text in build["requires"]]
    pinned = {canonicalize_name(r.name): [s.version for s in r.specifier if s.operator == "=="] for r in requires}
    assert pinned == {"setuptools": [locked_version("setuptools")]}, (
        f"{distribution_name}'s [build-system] requires {build['requires']}: pin setuptools=={locked_version('setuptools')} "
        "(the version requirements/dev.txt locks) and nothing else"
    )


def test_the_lock_tool_is_pinned_by_hash():
    """scripts/lock.py installs uv from requirements/lock-tool.txt with --require-hashes:
    the tool that makes the lock is pinned like what it locks (an exact release and a
    hash per distribution), so refreshing on a fresh machine cannot run another uv."""
    path = ROOT / "requirements" / "lock-tool.txt"
    pins = read_lock(path)
    assert list(pins) == ["uv"], f"{path.name} pins {list(pins)}: only uv"
    hashes = [line for line in path.read_text().splitlines() if line.strip().startswith("--hash=sha256:")]
    assert len(hashes) >= 10, "uv publishes a wheel per platform; compile the file with --universal --generate-hashes"
