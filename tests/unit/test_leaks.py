"""The leak check itself (tests/support/leaks.py): a test that leaves a thread or
a child process running errors; a module-scoped resource may live until its
module ends, and no longer."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytest_plugins = ["pytester"]

PLUGIN = "-p", "tests.support.leaks"


@pytest.fixture(autouse=True)
def _plugin_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("VITALS_TEST_LEAK_GRACE", "0.5")


def _run(pytester: pytest.Pytester, source: str) -> pytest.RunResult:
    pytester.makepyfile(source)
    return pytester.runpytest_subprocess(*PLUGIN, "-q", "-p", "no:cacheprovider")


def test_a_thread_left_running_fails_its_test(pytester: pytest.Pytester) -> None:
    result = _run(
        pytester,
        """
import threading
stop = threading.Event()

def test_leaks_a_thread():
    threading.Thread(target=stop.wait, name="leaky", daemon=True).start()

def test_next():
    stop.set()
""",
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*left running after*test_leaks_a_thread*'leaky'*"])


def test_a_child_process_left_running_fails_its_test(pytester: pytest.Pytester) -> None:
    result = _run(
        pytester,
        """
import subprocess, sys
procs = []

def test_leaks_a_process():
    procs.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))

def test_cleanup():
    procs[0].kill(); procs[0].wait()
""",
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*left running after*test_leaks_a_process*child process*"])


def test_module_scoped_resources_live_until_the_module_ends(pytester: pytest.Pytester) -> None:
    result = _run(
        pytester,
        """
import threading
import pytest

@pytest.fixture(scope="module")
def server():
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name="module-server", daemon=True)
    t.start()
    yield
    stop.set(); t.join()

def test_one(server): pass
def test_two(server): pass
""",
    )
    result.assert_outcomes(passed=2)


def test_a_module_scoped_resource_never_stopped_fails_at_module_end(
    pytester: pytest.Pytester,
) -> None:
    result = _run(
        pytester,
        """
import threading
import pytest
stop = threading.Event()

@pytest.fixture(scope="module")
def server():
    threading.Thread(target=stop.wait, name="forgotten", daemon=True).start()
    yield

def test_one(server): pass
def test_two(server): pass
""",
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_two*"])
    result.stdout.fnmatch_lines(["*left running after*ended*'forgotten'*"])
