"""Fixtures: a real httpd (and redis-server where asked) per test session.

httpd           the session's Httpd; a test calls httpd.start(snippet)
httpd_factory   httpd_factory(name="extra") -> a further Httpd, stopped at test end
redis_server    the session's Redis, running and flushed for this test
redis_factory   redis_factory(*args, **kw) -> a further Redis (started), stopped at test end
sentinel_factory  sentinel_factory(**kw) -> a started deploy.SentinelSet, stopped at test end
cluster_factory   cluster_factory(**kw) -> a started deploy.Cluster, stopped at test end
tls_files       rrl.TlsFiles: a CA and certificates for TLS tests (session)
env             the error-log check every test gets; env.expect_log(regex)
                and, where a process was built with sanitizers, any report fails
                (but httpd's own leaks: counted, listed in t/tmp/httpd-leaks.txt)
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

import deploy
import rrl


class Env:
    """Holds a test to STYLE.md section 10: after the test, any error-log line
    of any Httpd at [warn] or worse fails it, unless expected; a crash always;
    so does any ASan or UBSan report and any leak not shown to be httpd's
    (make check-asan; rrl.SanitizerReports.split_leaks)."""

    def __init__(self, sanitizer: rrl.SanitizerReports):
        self.sanitizer = sanitizer
        self.expected: list[str] = []
        self.checked: dict[int, int] = {}   # id(httpd) -> lines already checked

    def expect_log(self, *patterns: str):
        """Allow [warn]-or-worse lines matching any of these regexes (e.g. "RRL00042")."""
        self.expected.extend(patterns)

    def check(self, logs: bool = True):
        """logs=False: the sanitizer reports only."""
        problems = []
        for h in rrl.Httpd.instances if logs else ():
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
        reports = self.sanitizer.new()
        heads = (["error log check failed"] if problems else []) + \
                (["sanitizer report"] if reports else [])
        if heads:
            pytest.fail("; ".join(heads) + "\n" + "\n\n".join(problems + reports),
                        pytrace=False)


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


# make check-asan: the leaks of httpd that failed nothing (SanitizerReports),
# the first of each stack; base_dir goes when the run passes, this stays
HTTPD_LEAKS = rrl.REPO / "t" / "tmp" / "httpd-leaks.txt"
_httpd_leaks_line = ""


@pytest.fixture(scope="session")
def _sanitizer(base_dir):
    global _httpd_leaks_line
    s = rrl.SanitizerReports(base_dir / "sanitizer")
    yield s
    # processes that ended after the last test's check
    reports = s.new()
    if rrl.SANITIZED:
        _httpd_leaks_line = s.write_httpd_leaks(HTTPD_LEAKS)
    if reports:
        pytest.fail("sanitizer reports at session end:\n" + "\n\n".join(reports),
                    pytrace=False)


def pytest_terminal_summary(terminalreporter):
    if _httpd_leaks_line:
        terminalreporter.write_line(_httpd_leaks_line)


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
def env(request, _sanitizer):
    for h in rrl.Httpd.instances:
        h.mark()
    e = Env(_sanitizer)
    request.node._rrl_env = e
    yield e
    if rrl.CHECKER or rrl.SANITIZED:
        # memcheck and LeakSanitizer report when a process ends: end it
        # with the test
        for h in rrl.Httpd.instances:
            h.stop()
    # lines written after the call (servers stopped in teardown); a failed
    # call has shown its error log already, not what sanitizers reported
    e.check(logs=not getattr(request.node, "_rrl_call_failed", False))


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


@pytest.fixture(scope="session")
def tls_files(base_dir):
    """Certificates for TLS tests (rrl.TlsFiles), made once."""
    return rrl.TlsFiles(base_dir / "tls")


@pytest.fixture
def sentinel_factory(base_dir):
    """A master, a replica and three sentinels (t/deploy.py), fresh per
    call: tests fail them over."""
    made = []

    def make(**kw) -> deploy.SentinelSet:
        d = deploy.SentinelSet(base_dir, **kw)
        made.append(d)
        return d.start()

    yield make
    for d in made:
        d.stop()


@pytest.fixture
def cluster_factory(base_dir):
    """Three cluster masters (t/deploy.py), fresh per call: tests move slots."""
    made = []

    def make(**kw) -> deploy.Cluster:
        c = deploy.Cluster(base_dir, **kw)
        made.append(c)
        return c.start()

    yield make
    for c in made:
        c.stop()
