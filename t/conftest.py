"""Fixtures: a real httpd (and redis-server where asked) per test session.

httpd           the session's Httpd; a test calls httpd.start(snippet)
httpd_factory   httpd_factory(name="extra") -> a further Httpd, stopped at test end
redis_server    the session's Redis, running and flushed for this test
redis_factory   redis_factory(*args, **kw) -> a further Redis (started), stopped at test end
env             the error-log check every test gets; env.expect_log(regex)
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

import rrl


class Env:
    """Holds a test to STYLE.md section 10: after the test, any error-log line
    of any Httpd at [warn] or worse fails it, unless expected; a crash always."""

    def __init__(self):
        self.expected: list[str] = []
        self.checked: dict[int, int] = {}   # id(httpd) -> lines already checked

    def expect_log(self, *patterns: str):
        """Allow [warn]-or-worse lines matching any of these regexes (e.g. "RRL00042")."""
        self.expected.extend(patterns)

    def check(self):
        problems = []
        for h in rrl.Httpd.instances:
            lines = h.error_log_lines()
            done = self.checked.get(id(h), 0)
            self.checked[id(h)] = len(lines)
            bad = rrl.check_error_log(lines[done:], self.expected)
            bad += h.killed
            h.killed.clear()
            if bad:
                problems.append(
                    f"{h.name} ({h.error_log}): {len(bad)} unexpected line(s):\n"
                    + "\n".join(bad)
                    + f"\n--- last 50 lines of {h.error_log} ---\n"
                    + rrl.tail(h.error_log, 50))
        if problems:
            pytest.fail("error log check failed\n" + "\n\n".join(problems), pytrace=False)


# ---- session ----

@pytest.fixture(scope="session")
def base_dir():
    """One directory for every server of this run, readable by www-data.
    Removed when the run passes; kept (and named) otherwise. RRL_TMPDIR
    chooses where it is made."""
    d = Path(tempfile.mkdtemp(prefix="rrl-test-", dir=os.environ.get("RRL_TMPDIR")))
    d.chmod(0o755)
    yield d
    if os.environ.get("RRL_KEEP") or _failed:
        print(f"\nrrl: server roots kept in {d}")
    else:
        shutil.rmtree(d, ignore_errors=True)


_failed = False   # any test failed: keep base_dir for a look


@atexit.register
def _stop_everything():
    # last resort (KeyboardInterrupt, internal errors): no server outlives pytest
    for h in rrl.Httpd.instances:
        h.stop()
    for r in rrl.Redis.instances:
        r.stop()


@pytest.fixture(scope="session")
def _httpd_session(base_dir):
    h = rrl.Httpd(base_dir, "httpd")
    yield h
    h.stop()
    bad = rrl.check_error_log(h.error_log_lines(), ()) + h.killed
    crashes = [l for l in bad if rrl.FATAL_RE.search(l)] + h.killed
    if crashes:
        pytest.fail("httpd at session end:\n" + "\n".join(crashes), pytrace=False)


@pytest.fixture(scope="session")
def _redis_session(base_dir):
    r = rrl.Redis(base_dir, name="redis")
    yield r
    r.stop()


# ---- per test ----

@pytest.fixture(autouse=True)
def env(request):
    for h in rrl.Httpd.instances:
        h.mark()
    e = Env()
    request.node._rrl_env = e
    yield e
    if rrl.CHECKER:
        # memcheck reports when its process ends: end it with the test
        for h in rrl.Httpd.instances:
            h.stop()
    # lines written after the call (servers stopped in teardown); a failed
    # call has shown its error log already
    if not getattr(request.node, "_rrl_call_failed", False):
        e.check()


@pytest.hookimpl(trylast=True)
def pytest_runtest_call(item):
    # runs after the test body passed: a bad error log fails the test itself
    e = getattr(item, "_rrl_env", None)
    if e is not None:
        e.check()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    global _failed
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        _failed = True
    if report.when == "call" and report.failed:
        item._rrl_call_failed = True
        for h in rrl.Httpd.instances:
            lines = h.error_log_lines()
            if lines:
                report.sections.append((f"{h.name} error_log (this test)",
                                        "\n".join(lines[-50:])))


@pytest.fixture
def httpd(_httpd_session, request):
    """The session's Httpd. start() always gives a fresh process; ensure()
    reuses one already running the same config. ${redis_url} is filled in
    when the test also uses redis_server."""
    h = _httpd_session
    h.vars = {}
    if "redis_server" in request.fixturenames:
        h.vars["redis_url"] = request.getfixturevalue("redis_server").url()
    return h


@pytest.fixture
def httpd_factory(base_dir, request):
    made = []

    def make(name: str = "extra") -> rrl.Httpd:
        h = rrl.Httpd(base_dir, name)
        if "redis_server" in request.fixturenames:
            h.vars["redis_url"] = request.getfixturevalue("redis_server").url()
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()


@pytest.fixture
def redis_server(_redis_session):
    """The session's Redis: started if a test stopped it, flushed."""
    r = _redis_session
    if not r.running():
        try:
            r.start(r.port)
        except rrl.PortInUse:   # a test stopped it and the port went elsewhere
            r.start()
    r.flush()
    return r


@pytest.fixture
def redis_factory(base_dir):
    made = []

    def make(*args: str, **kw) -> rrl.Redis:
        r = rrl.Redis(base_dir, *args, **kw)
        made.append(r)
        return r.start()

    yield make
    for r in made:
        r.stop()
