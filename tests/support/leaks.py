"""Fail the test that leaves a thread or a child process running.

Snapshots are taken per collection node: just before the first fixture of a
node's own scope (session, package, module, class, test) is set up, the threads
and live child processes are recorded. When pytest tears that node down (in its
last test's teardown), whatever is alive then and was not in the snapshot has
leaked, and that test errors. So a module-scoped server may live across its
module's tests but not beyond them, and a test's own client not beyond the test.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass

import psutil
import pytest

# a stopped thread or process may take a moment to finish
GRACE_SECONDS = float(os.environ.get("VITALS_TEST_LEAK_GRACE", "5"))

# Threads libraries start once per process on purpose and never stop: they hold
# no connection of ours and call nothing of ours. Matched by name prefix.
PROCESS_LIFETIME_THREADS: tuple[str, ...] = (
    "GlobalEventLoopThread",  # prefect's process-wide event loops
    "RunSyncEventLoopThread",
    "tqdm_monitor",  # tqdm's process-wide monitor (vitals flows run's progress bar)
    # one loop thread per Prefect queue service class; the harness drains the
    # services (no work left, nothing retried), the idle loop stays for the process
    "APILogWorkerThread",
    "EventsWorkerThread",
)

# Worker threads an event loop grows on demand and ends with the loop: the
# server of a module-scoped fixture starts them while a test runs. They are
# checked when that broader scope ends, not at the end of the test.
LOOP_POOL_THREADS: tuple[str, ...] = ("AnyIO worker thread",)


@dataclass(frozen=True)
class Snapshot:
    threads: frozenset[int]
    children: frozenset[tuple[int, float]]


def _threads(pooled: bool = True) -> dict[int, threading.Thread]:
    skip = PROCESS_LIFETIME_THREADS if pooled else PROCESS_LIFETIME_THREADS + LOOP_POOL_THREADS
    return {
        t.ident: t
        for t in threading.enumerate()
        if t.ident is not None and not t.name.startswith(skip)
    }


def _children() -> dict[tuple[int, float], psutil.Process]:
    alive = {}
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                alive[(p.pid, p.create_time())] = p
        except psutil.NoSuchProcess:
            continue
    return alive


def _snapshot() -> Snapshot:
    return Snapshot(frozenset(_threads()), frozenset(_children()))


def _leaks(before: Snapshot, pooled: bool) -> list[str]:
    deadline = time.monotonic() + GRACE_SECONDS
    while True:
        threads = {i: t for i, t in _threads(pooled).items() if i not in before.threads}
        children = {k: p for k, p in _children().items() if k not in before.children}
        if not threads and not children or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    found = [f"thread {t.name!r} ({type(t).__name__}, daemon={t.daemon})" for t in threads.values()]
    for p in children.values():
        try:
            found.append(f"child process {p.pid}: {' '.join(p.cmdline())[:200]}")
        except psutil.Error:
            found.append(f"child process {p.pid}")
    return found


_snapshots: dict[str, Snapshot] = {}

# Broader scopes first: a node's snapshot is taken just before the first fixture
# of its own scope (or a narrower one) is set up, so resources of broader-scoped
# fixtures that its first test happens to start are not counted against it.
_RANK = {"session": 0, "package": 1, "module": 2, "class": 3, "function": 4}


def _rank(node: pytest.Item | pytest.Collector) -> int:
    if isinstance(node, pytest.Session):
        return 0
    if isinstance(node, pytest.Package | pytest.Dir):
        return 1
    if isinstance(node, pytest.Module):
        return 2
    if isinstance(node, pytest.Class):
        return 3
    return 4


def _take(item: pytest.Item, up_to_rank: int) -> None:
    for node in item.listchain():
        if _rank(node) <= up_to_rank and node.nodeid not in _snapshots:
            _snapshots[node.nodeid] = _snapshot()


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[object], request: pytest.FixtureRequest
) -> Generator[None, object, object]:
    item = getattr(request, "_pyfuncitem", None)
    if item is not None:
        # fixtures of a broader scope than X are all set up before X's: snapshot
        # every node whose scope is X's or broader and has none yet
        _take(item, _RANK.get(fixturedef.scope, 4))
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    _take(item, 4)
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, None, None]:
    result = yield
    staying = {n.nodeid for n in nextitem.listchain()} if nextitem is not None else set()
    ended = [n for n in item.listchain() if n.nodeid not in staying]
    if not ended:
        return result
    outermost = ended[0]  # its snapshot predates every node inside it
    before = _snapshots.get(outermost.nodeid)
    for node in ended:
        _snapshots.pop(node.nodeid, None)
    if before is None:
        return result
    leaked = _leaks(before, pooled=_rank(outermost) < 4)
    if leaked:
        pytest.fail(
            f"left running after {outermost.nodeid or 'the session'} ended: " + "; ".join(leaked),
            pytrace=False,
        )
    return result
