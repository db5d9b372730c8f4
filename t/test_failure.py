"""Never the reason a site goes down: whatever happens to Redis, every
request gets a promised answer fast, no child crashes, and limits come back
to Redis on their own.  Faults are injected for real: Redis stopped and
restarted, a listener that never answers, DEBUG SLEEP, CLIENT KILL,
SCRIPT FLUSH, a key of another type, graceful restarts under load."""
import hashlib
import math
import socket
import statistics
import threading
import time

import pytest

import rrl

BOUND = 0.5 * rrl.SLOW   # seconds a request may take, 100 ms timeouts
# under valgrind the module runs ~20x slower: its own timeouts grow too
FAST = (f"RateLimitRedisTimeout connect={100 * rrl.SLOW}ms "
        f"command={100 * rrl.SLOW}ms")
ONE_CHILD = rrl.ONE_CHILD


@pytest.fixture(params=["event", "prefork"])
def mpm(request):
    return request.param


class Stream:
    """Requests one after another from a thread, each on a new connection,
    until stopped: (start, seconds, status or the exception)."""

    def __init__(self, httpd, path="/small.txt", headers=None, pause=0.005):
        self.httpd, self.path, self.headers = httpd, path, headers
        self.pause = pause
        self.done = []
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop_flag.is_set():
            t0 = time.monotonic()
            try:
                status = self.httpd.get(self.path, headers=self.headers).status
            except Exception as e:          # noqa: BLE001 - recorded
                status = repr(e)
            self.done.append((t0, time.monotonic() - t0, status))
            time.sleep(self.pause)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join(10)

    def wait(self, n):
        """until n requests are done"""
        rrl.wait_for(lambda: len(self.done) >= n, 10 * rrl.SLOW,
                     f"{n} requests")

    def statuses(self):
        return {d[2] for d in self.done}

    def slowest(self):
        return max(d[1] for d in self.done)


def wait_for_result(httpd, result, path="/small.txt", timeout=8):
    """Requests until one is decided as result; seconds that took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        httpd.get(path)
        entries = httpd.access_log()
        if entries and entries[-1]["result"] == result:
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"no request decided as {result} in {timeout}s")


def snippet(on_error="local", limit="RateLimit 100000/min name=f",
            extra=""):
    return (f"RateLimitRedis ${{redis_url}}\n{FAST}\n"
            f"RateLimitOnError {on_error}\n{limit}\n{extra}\n")


# ---- Redis stopped, restarted ----

@pytest.mark.slow
@pytest.mark.parametrize("on_error,during,status", [
    ("local", "local-allowed", 200),
    ("allow", "fallback-allowed", 200),
    ("deny", "fallback-denied", 429),
])
def test_failure_01_redis_stopped_mid_load(httpd, redis_server, env, mpm,
                                           on_error, during, status):
    env.expect_log("RRL00013", "RRL00019")
    httpd.start(snippet(on_error), mpm=mpm)
    with Stream(httpd) as s:
        s.wait(10)                   # decided by Redis
        redis_server.stop()
        s.wait(len(s.done) + 30)     # decided while it is down
        n_down = len(s.done)
        redis_server.start(port=redis_server.port)
        s.wait(len(s.done) + 5)
    assert s.statuses() <= {200, status}, s.statuses()
    assert s.slowest() < BOUND, s.slowest()
    results = [e["result"] for e in httpd.access_log(len(s.done))]
    assert "allowed" in results[:5]
    assert during in results
    # back within seconds: a request decided by Redis again
    took = wait_for_result(httpd, "allowed")
    assert took < 7
    assert n_down > 20
    httpd.wait_error_log("RRL00019")         # lost: logged once
    httpd.wait_error_log("RRL00018")         # back: logged once
    lost = [ln for ln in httpd.error_log_lines() if "RRL00019" in ln]
    back = [ln for ln in httpd.error_log_lines() if "RRL00018" in ln]
    assert len(lost) == 1 and len(back) == 1


def test_failure_02_redis_restart_fails_no_request(httpd, redis_server, mpm):
    httpd.start(snippet("deny"), mpm=mpm)
    # keep-alive connections in every child's pool
    assert httpd.hammer(40, "/small.txt", concurrency=8) == [200] * 40
    redis_server.restart()           # same port, scripts gone
    codes = httpd.hammer(40, "/small.txt", concurrency=8)
    assert codes == [200] * 40
    assert {e["result"] for e in httpd.access_log(80)} == {"allowed"}


# ---- a Redis that accepts and never answers; one that sleeps ----

class BlackHole:
    """A TCP listener that accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self):
        self.sock.close()
        for c in self.accepted:
            c.close()


@pytest.fixture
def black_hole():
    b = BlackHole()
    yield b
    b.close()


def test_failure_03_black_hole_redis(httpd, black_hole, env, mpm):
    env.expect_log("RRL00013", "RRL00019", "RRL00023")
    httpd.start(f"RateLimitRedis redis://127.0.0.1:{black_hole.port}\n{FAST}"
                "\nRateLimit 5/min name=bh\n", mpm=mpm)
    times, codes = [], []
    start = time.monotonic()
    for _ in range(200):
        t0 = time.monotonic()
        codes.append(httpd.get("/small.txt").status)
        times.append(time.monotonic() - t0)
    elapsed = time.monotonic() - start
    # the local store decides while Redis says nothing
    assert codes == [200] * 5 + [429] * 195
    assert max(times) < BOUND, max(times)
    log = httpd.access_log(200)
    assert {e["result"] for e in log} == {"local-allowed", "local-denied"}
    # the breaker: a few probes in all, not one wait per request.  Each
    # child that served requests probes after pauses of 0.2, 0.4 ... 5 s:
    # a slow machine, taking longer over the 200 requests, or one where
    # prefork spreads them over more children, sees a few more
    children = len({e["pid"] for e in log})
    per_child = 2 + math.log2(1 + elapsed / 0.2) + elapsed / 5
    assert len(black_hole.accepted) <= children * per_child < 100, \
        (len(black_hole.accepted), children, elapsed)
    print(f"black hole: median {statistics.median(times) * 1000:.2f} ms, "
          f"max {max(times) * 1000:.1f} ms over {len(times)} requests, "
          f"{len(black_hole.accepted)} connections")


@pytest.mark.slow
def test_failure_04_debug_sleep_longer_than_the_timeout(httpd, redis_server,
                                                        env, mpm):
    env.expect_log("RRL00013", "RRL00019")
    httpd.start(snippet("local"), mpm=mpm)
    assert httpd.get("/small.txt").status == 200
    # Redis sleeps ten times the command timeout
    sleeper = threading.Thread(
        target=lambda: redis_server.client(socket_timeout=60).execute_command(
            "DEBUG", "SLEEP", str(rrl.SLOW)))
    with Stream(httpd) as s:
        s.wait(3)
        sleeper.start()
        sleeper.join()
        s.wait(len(s.done) + 3)
    assert s.statuses() == {200}
    assert s.slowest() < BOUND, s.slowest()
    results = {e["result"] for e in httpd.access_log(len(s.done) + 1)}
    assert "local-allowed" in results
    assert wait_for_result(httpd, "allowed") < 7


# ---- connections killed, scripts flushed, a key of another type ----

def test_failure_05_client_kill_fails_no_request(httpd, redis_server, mpm):
    httpd.start(snippet("deny"), mpm=mpm)
    c = redis_server.client()
    assert httpd.hammer(40, "/small.txt", concurrency=8) == [200] * 40
    killed = c.client_kill_filter(_type="normal")
    assert killed >= 1
    assert httpd.hammer(40, "/small.txt", concurrency=8) == [200] * 40
    assert {e["result"] for e in httpd.access_log(80)} == {"allowed"}


def test_failure_06_script_flush_under_load_fails_no_request(
        httpd, redis_server, mpm):
    httpd.start(snippet("deny"), mpm=mpm)
    c = redis_server.client()
    with Stream(httpd, pause=0.001) as s:
        for _ in range(10):
            time.sleep(0.05)
            c.script_flush()
    assert s.statuses() == {200}
    assert {e["result"] for e in httpd.access_log(len(s.done))} == \
        {"allowed"}


def test_failure_07_key_of_another_type(httpd, redis_server, env, mpm):
    env.expect_log("RRL00013")
    httpd.start(snippet("local", "RateLimit 3/min key=%{HTTP:X-K} name=wt"),
                mpm=mpm)
    c = redis_server.client()
    c.hset("rl:wt:bad", "x", "1")
    c.set("rl:wt:garbled", "not a number")
    for key in ("bad", "garbled"):
        rs = [httpd.get("/small.txt", headers={"X-K": key}) for _ in range(4)]
        # logged, then decided by RateLimitOnError: never a 500
        assert [r.status for r in rs] == [200, 200, 200, 429], key
    log = httpd.access_log(8)
    assert {e["result"] for e in log} == {"local-allowed", "local-denied"}
    line = httpd.wait_error_log("RRL00013")
    assert "WRONGTYPE" in line or "unreadable state" in line
    # Redis itself is fine: other keys are decided there, at once
    assert httpd.get("/small.txt", headers={"X-K": "good"}).status == 200
    assert httpd.access_log()[-1]["result"] == "allowed"
    assert c.type("rl:wt:bad") == b"hash"


# ---- SPEC 7a: key values never in the error log or on the status page ----

SECRET = "sk_live_SECRET123"
SECRETS = """
<VirtualHost *:${port}>
    ServerName secrets.test
    RateLimitRedis ${redis_url}
    %s
    RateLimitOnError allow
    LogLevel warn redis_ratelimit:trace3
    RateLimit 3/min key=%%{HTTP:X-Api-Key} name=apikey
    <Location /rl-status>
        SetHandler redis-ratelimit-status
    </Location>
</VirtualHost>
""" % FAST


def test_failure_13_key_values_never_logged_or_shown(httpd, redis_server,
                                                     env):
    """Each error Redis can give the module about a key, the key's value a
    recognisable secret (an API key): a key of another type (WRONGTYPE), a
    value no algorithm wrote, a value of the limit's own algorithm that
    does not parse, Redis out of memory as the script writes.  Every line
    of the error log (up to trace3: from trace4 on httpd's own expression
    evaluator traces key values) and every status format (HTML, ?auto,
    ?json, ?metrics) name the limit, its virtual host and the key's SHA-1
    (what an operator can compute to find it), never the value."""
    env.expect_log("RRL00013")
    httpd.start(SECRETS, mpm="event", mpm_conf=ONE_CHILD)
    c = redis_server.client()
    kinds = {"FOREIGN": lambda k: c.set(k, "hello"),
             "SHAPE": lambda k: c.set(k, "99999999999999999"),
             "TYPE": lambda k: c.hset(k, "x", "1"),
             "OOM": lambda k: c.config_set("maxmemory", "1")}
    shown = []
    try:
        for kind, make in kinds.items():
            value = f"{SECRET}_{kind}"
            key = f"rl:secrets.test:apikey:{value}"
            make(key)
            seen = len(httpd.error_log_lines())
            r = httpd.get("/small.txt", host="secrets.test",
                          headers={"X-Api-Key": value})
            assert r.status == 200                 # RateLimitOnError allow
            assert httpd.access_log()[-1]["result"] == "fallback-allowed"
            line = rrl.wait_for(lambda: next(
                (ln for ln in httpd.error_log_lines()[seen:]
                 if "RRL00013" in ln), None), 2 * rrl.SLOW, "RRL00013")
            assert kind_word(kind) in line, line
            assert SECRET not in line
            assert "RateLimit apikey@secrets.test" in line, line
            if kind != "OOM":     # an error of Redis names no key
                sha = hashlib.sha1(key.encode()).hexdigest()[:12]
                assert f"key SHA-1 {sha}:" in line, line
            for q in ("", "?auto", "?json", "?metrics"):
                page = httpd.get("/rl-status" + q, host="secrets.test")
                assert page.status == 200
                shown.append(page.text)
            assert "apikey@secrets.test" in shown[-3]   # ?auto's LastError
            time.sleep(1.1)      # RRL00013: a line a second per child
    finally:
        c.config_set("maxmemory", "0")
    lines = httpd.error_log_lines()
    assert len([ln for ln in lines if "RRL00013" in ln]) == len(kinds)
    for text in lines + shown:
        assert SECRET not in text, text


def kind_word(kind):
    """What the RRL00013 line of each error kind of test_failure_13 says"""
    return {"TYPE": "WRONGTYPE", "FOREIGN": "unreadable",
            "SHAPE": "unreadable", "OOM": "OOM"}[kind]


# ---- logging ----

@pytest.mark.slow
def test_failure_08_errors_logged_once_a_second(httpd, redis_server, env):
    env.expect_log("RRL00013", "RRL00019")
    httpd.start(snippet("allow", "RateLimit 10/min key=%{HTTP:X-K} name=lg")
                + "LogLevel warn redis_ratelimit:info\n", mpm="event",
                mpm_conf=ONE_CHILD)
    redis_server.client().hset("rl:lg:bad", "x", "1")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.5:
        assert httpd.get("/small.txt", headers={"X-K": "bad"}).status == 200
    lines = [ln for ln in httpd.error_log_lines() if "RRL00013" in ln]
    assert 2 <= len(lines) <= 4, lines
    assert "more such errors" not in lines[0]
    assert any(" more such errors in this child since the last line" in ln
               for ln in lines[1:]), lines


# ---- graceful restart and stop ----

@pytest.mark.slow
@pytest.mark.skipif(rrl.CHECKER != "", reason="graceful restarts need "
                    "httpd's parent process; httpd -X has none")
def test_failure_09_graceful_restart_under_load(httpd, redis_server, mpm):
    conf = snippet("deny", "RateLimit 100000/d name=g")
    httpd.start(conf, mpm=mpm)
    c = redis_server.client()
    with Stream(httpd, pause=0.002) as s:
        s.wait(50)
        httpd.reload(conf)
        s.wait(len(s.done) + 50)
        httpd.reload(conf)
        s.wait(len(s.done) + 50)
    assert s.statuses() == {200}, s.statuses()
    assert len(s.done) > 50
    # the old generation's connections are closed; limits carried on
    children = len(rrl.child_pids(httpd.pid))
    rrl.wait_for(lambda: c.info("clients")["connected_clients"] - 1
                 <= children * 16, 10, "old children's connections to close")
    before = int(httpd.get("/small.txt").headers["X-RateLimit-Remaining"])
    assert before < 100000 - len(s.done) + 5
    httpd.stop()
    # stopped: every connection closed
    rrl.wait_for(lambda: c.info("clients")["connected_clients"] == 1, 10,
                 "every connection to close")


def test_failure_10_local_instances_divide_the_limit(httpd, redis_server,
                                                     env):
    env.expect_log("RRL00013", "RRL00019")
    httpd.start(f"RateLimitRedis ${{redis_url}}\n{FAST}\n"
                "RateLimitOnError local instances=4\n"
                "RateLimit 20/min name=div\n")
    redis_server.stop()
    rs = [httpd.get("/small.txt") for _ in range(7)]
    assert [r.status for r in rs] == [200] * 5 + [429] * 2
    assert rs[0].headers["X-RateLimit-Limit"] == "5"
    assert {e["result"] for e in httpd.access_log(7)} == \
        {"local-allowed", "local-denied"}


def test_failure_11_deny_cache_holds_while_redis_is_down(httpd, redis_server,
                                                        env):
    env.expect_log("RRL00013", "RRL00019")
    httpd.start(snippet("allow", "RateLimit 2/min name=dc"), mpm="event",
                mpm_conf=ONE_CHILD)
    assert httpd.hammer(3, "/small.txt", concurrency=1) == [200, 200, 429]
    redis_server.kill()
    # a decision already made stands, for a second at most; other clients
    # fail open
    assert httpd.get("/small.txt").status == 429
    r = httpd.get("/small.txt", source="127.0.0.2")
    assert r.status == 200
    assert httpd.access_log()[-1]["result"] == "fallback-allowed"
    time.sleep(1.1)
    assert httpd.get("/small.txt").status == 200
    assert httpd.access_log()[-1]["result"] == "fallback-allowed"


def test_failure_12_recovery_time_and_latency_while_down(httpd, redis_server,
                                                         env):
    """Figures for the closing note: requests while Redis is down (breaker
    open) and how soon Redis decides again once it is back."""
    env.expect_log("RRL00013", "RRL00019")
    httpd.start(snippet("local"))
    assert httpd.get("/small.txt").status == 200
    redis_server.stop()
    times = []
    for _ in range(300):
        t0 = time.monotonic()
        assert httpd.get("/small.txt").status == 200
        times.append(time.monotonic() - t0)
    redis_server.start(port=redis_server.port)
    took = wait_for_result(httpd, "allowed")
    print(f"Redis down: median {statistics.median(times) * 1000:.2f} ms, "
          f"max {max(times) * 1000:.1f} ms over {len(times)} requests; "
          f"Redis decided again {took:.2f} s after it returned")
    assert max(times) < BOUND
    assert took < 7


# ---- a Redis that does not answer at startup ----

def startup_warnings(httpd):
    return [ln for ln in httpd.error_log_lines() if "RRL00023" in ln]


def test_failure_13_unreachable_at_startup_one_warning(httpd, black_hole,
                                                       env):
    """One warning from the parent once the configuration is read, the
    password masked; httpd starts at once and RateLimitOnError decides"""
    env.expect_log("RRL00013", "RRL00019", "RRL00023")
    dead = rrl.free_port()
    conf = f"""
RateLimitRedis redis://:s3cret@127.0.0.1:{dead}/2
{FAST}
RateLimitOnError deny
RateLimit 5/min name=boot
<VirtualHost *:${{port}}>
    ServerName same.test
    RateLimitRedis redis://:s3cret@127.0.0.1:{dead}/2
</VirtualHost>
<VirtualHost *:${{port}}>
    ServerName other.test
    RateLimitRedis redis://127.0.0.1:{black_hole.port}
    RateLimitOnError allow
</VirtualHost>
"""
    t0 = time.monotonic()
    httpd.start(conf)
    took = time.monotonic() - t0
    warned = startup_warnings(httpd)
    # one per distinct URL: the refused one (twice configured) and the
    # black hole, whose PING the command timeout ends
    assert len(warned) == 2, warned
    refused = next(ln for ln in warned if f":{dead}" in ln)
    assert "[redis_ratelimit:warn]" in refused
    assert f"redis://:****@127.0.0.1:{dead}/2 does not answer at startup" \
        in refused, refused
    assert "Connection refused" in refused
    assert "RateLimitOnError decides" in refused
    assert "s3cret" not in "\n".join(httpd.error_log_lines())
    hole = next(ln for ln in warned if f":{black_hole.port}" in ln)
    assert "PING" in hole, hole
    assert took < 10 * rrl.SLOW, took
    # the server runs, and RateLimitOnError answers
    r = httpd.get("/small.txt", host="same.test")
    assert r.status == 429
    assert httpd.access_log(1)[-1]["result"] == "fallback-denied"
    assert httpd.get("/small.txt", host="other.test").status == 200
    assert httpd.access_log(2)[-1]["result"] == "fallback-allowed"
    # a graceful restart reads the configuration again: one more each
    if not rrl.CHECKER:            # httpd -X under valgrind has none
        httpd.reload(conf)
        assert len(startup_warnings(httpd)) == 4


def test_failure_14_wrong_password_at_startup(httpd, redis_factory, env):
    env.expect_log("RRL00013", "RRL00019", "RRL00023")
    r = redis_factory(password="right")
    httpd.start(f"RateLimitRedis redis://:wrong@127.0.0.1:{r.port}\n{FAST}\n"
                "RateLimit 5/min name=pw\n")
    warned = startup_warnings(httpd)
    assert len(warned) == 1, warned
    assert f"redis://:****@127.0.0.1:{r.port} does not answer at startup " \
        "(AUTH: WRONGPASS" in warned[0], warned[0]
    assert "wrong" not in "\n".join(httpd.error_log_lines()).replace(
        "WRONGPASS", "")
    assert httpd.get("/small.txt").status == 200
    assert httpd.access_log(1)[-1]["result"] == "local-allowed"


def test_failure_15_no_warning_when_redis_answers(httpd, redis_server):
    httpd.start(snippet("local", "RateLimit 5/min name=ok"))
    assert not startup_warnings(httpd)
    assert httpd.get("/small.txt").status == 200
    assert httpd.access_log(1)[-1]["result"] == "allowed"
