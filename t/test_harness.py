"""The harness itself: no RateLimit directive needed, only a module that loads."""

import re

import pytest

import rrl


def test_harness_01_serves_ipv4(httpd, env):
    env.expect_log("AH01630")   # client denied by server configuration (.htpasswd)
    httpd.start()
    r = httpd.get("/index.html")
    assert (r.status, r.body) == (200, b"index\n")
    r = httpd.get("/small.txt")
    assert r.status == 200 and r.body == b"small\n"
    assert r.headers["content-type"].startswith("text/plain")
    assert httpd.get("/dir/").body == b"dir index\n"
    assert httpd.get("/.htpasswd").status == 403
    assert httpd.get("/nonexistent").status == 404


def test_harness_02_serves_ipv6(httpd):
    if not rrl.ipv6_usable():
        pytest.skip("::1 is not usable here")
    httpd.start()
    r = httpd.get("/index.html", ipv6=True)
    assert (r.status, r.body) == (200, b"index\n")
    assert httpd.access_log(1)[-1]["remote"] == "::1"


def test_harness_03_access_log(httpd):
    httpd.start()
    httpd.get("/small.txt?a=%22b%22", headers={"User-Agent": 'x"y'})
    httpd.get("/index.html", auth=("alice", "secret"), source="127.0.0.2")
    log = httpd.access_log(2)
    assert len(log) == 2   # the readiness probe (a bare connect) logs nothing
    first, second = log
    assert first["status"] == 200 and first["method"] == "GET"
    assert first["uri"] == "/small.txt" and first["query"] == '?a=%22b%22'
    assert first["remote"] == "127.0.0.1" and second["remote"] == "127.0.0.2"
    for key in ("result", "name", "limit", "remaining", "user"):
        assert first[key] == "-", key
    assert isinstance(first["t"], float) and first["pid"] > 0
    # a later call returns the same window (the mark is per test)
    assert httpd.access_log() == log


def test_harness_04_basic_auth(httpd, env):
    env.expect_log("AH01617")   # alice: Password Mismatch
    httpd.start("""
<Location "/private">
    AuthType Basic
    AuthName "test"
    AuthUserFile "${docroot}/.htpasswd"
    Require valid-user
</Location>
Alias "/private" "${docroot}/dir"
""")
    assert httpd.get("/private/").status == 401
    assert httpd.get("/private/", auth=("alice", "wrong")).status == 401
    assert httpd.get("/private/", auth=("bob", "hunter2")).status == 200
    assert [e["user"] for e in httpd.access_log(3)] == ["-", "alice", "bob"]


def test_harness_05_configtest_syntax_error(httpd):
    rc, out = httpd.configtest("\n\nNoSuchDirective on\n")
    assert rc != 0
    assert "NoSuchDirective" in out
    m = re.search(r"line (\d+) of (\S+):", out)
    assert m and m.group(2).endswith("configtest.conf"), out
    assert httpd.conf_dir.joinpath("configtest.conf").read_text().splitlines()[
        int(m.group(1)) - 1] == "NoSuchDirective on"
    rc, out = httpd.configtest("")
    assert rc == 0, out


def test_harness_06_error_log_checker():
    lines = [
        "[Sun Nov 23 11:00:00.000 2025] [mpm_event:notice] [pid 1:tid 2] AH00489: resuming normal operations",
        "[Sun Nov 23 11:00:00.000 2025] [core:warn] [pid 1] AH00098: pid file overwritten",
        "[Sun Nov 23 11:00:00.000 2025] [redis_ratelimit:error] [pid 1:tid 3] RRL00042: EVALSHA failed",
        "[Sun Nov 23 11:00:00.000 2025] [:error] [pid 1] something",
        "[Sun Nov 23 11:00:00.000 2025] [redis_ratelimit:debug] [pid 1] RRL00007: fine",
        "[Sun Nov 23 11:00:00.000 2025] [core:notice] [pid 1] AH00052: child pid 7 exit signal Segmentation fault (11)",
    ]
    assert rrl.check_error_log(lines) == lines[1:4] + lines[5:]
    assert rrl.check_error_log(lines, ["RRL00042", "AH00098", r"\[:error\]"]) == [lines[5]]
    assert rrl.check_error_log(lines, ["AH00052", "."]) == [lines[5]]   # crashes always fail


def test_harness_07_error_log_check_fails_test(httpd, env):
    httpd.start(mpm="prefork")
    httpd.reload("LogLevel core:debug\n")
    assert httpd.get("/index.html").status == 200
    # the server itself logged nothing bad...
    env.check()
    # ...but a [warn] line from it would fail the test, unless expected
    with httpd.error_log.open("a") as f:
        f.write("[Sun Nov 23 11:00:00.000 2025] [core:warn] [pid 1] AH01234: injected\n")
    with pytest.raises(pytest.fail.Exception, match="AH01234: injected"):
        env.check()
    with httpd.error_log.open("a") as f:
        f.write("[Sun Nov 23 11:00:00.000 2025] [core:warn] [pid 1] AH01235: expected\n")
    env.expect_log("AH01235")
    env.check()


def test_harness_08_hammer_and_raw(httpd):
    httpd.start(mpm="worker")
    statuses = httpd.hammer(50, paths=["/index.html", "/small.txt", "/nope"], concurrency=5)
    assert statuses.count(200) == 34 and statuses.count(404) == 16
    log = httpd.access_log(50)
    assert len(log) == 50 and len({e["pid"] for e in log}) >= 1
    reply = httpd.raw(b"GET /small.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"\r\n\r\nsmall\n")


def test_harness_09_start_is_fresh_ensure_reuses(httpd):
    first = httpd.start("# one").pid
    assert httpd.ensure("# one").pid == first
    assert httpd.start("# one").pid != first
    assert httpd.ensure("# two").running()


def test_harness_10_factory(httpd, httpd_factory):
    httpd.start()
    other = httpd_factory("second").start()
    assert other.port != httpd.port and other.root != httpd.root
    assert other.get("/small.txt").status == 200
    assert httpd.access_log() == [] and len(other.access_log(1)) == 1


def test_harness_11_redis(redis_server):
    c = redis_server.client()
    assert c.ping()
    assert c.dbsize() == 0
    c.set("k", "v")
    port = redis_server.port
    redis_server.restart()
    assert redis_server.port == port
    assert redis_server.client().ping()
    assert redis_server.client().get("k") is None   # no persistence
    assert redis_server.url() == f"redis://127.0.0.1:{port}"


def test_harness_12_redis_flushed_per_test(redis_server):
    c = redis_server.client()
    assert c.dbsize() == 0
    c.set("left", "over")


def test_harness_13_redis_auth_and_unixsocket(redis_factory):
    import redis
    r = redis_factory(password="x", unixsocket=True)
    assert r.client().ping()
    with pytest.raises(redis.AuthenticationError):
        r.client(password=None).ping()
    assert redis.Redis(unix_socket_path=r.unixsocket, password="x").ping()
    assert r.url(db=2) == f"redis://:x@127.0.0.1:{r.port}/2"


def test_harness_14_redis_url_in_snippet(httpd, redis_server):
    httpd.start('Header always set X-Redis "${redis_url}"')
    assert httpd.get("/").headers["X-Redis"] == redis_server.url()
