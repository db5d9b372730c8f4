"""RateLimitConcurrency (SPEC 4b): at most N requests of a key in flight,
across every instance that shares the store, through real httpds, a real
Redis and a backend behind mod_proxy that holds its responses until the
test lets them go (rrl.HeldBackend)."""
import concurrent.futures
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

import rrl
from test_http2 import H2


@pytest.fixture
def backend():
    b = rrl.HeldBackend()
    yield b
    b.close()


@pytest.fixture(params=["redis", "local"])
def store(request):
    if request.param == "redis":
        r = request.getfixturevalue("redis_server")
        r.flush()
        return f"RateLimitRedis {r.url()}\n"
    return ""


def site(backend, limits: str, extra: str = "") -> str:
    """/slow/ proxied to the held backend under limits; the status page"""
    return rrl.PROXY_MODULES + rrl.STATUS_LOCATION + extra + f"""
<Location "/slow/">
    ProxyPass "http://127.0.0.1:{backend.port}/hold/" timeout=60
{limits}
</Location>
<Location "/trickle/">
    ProxyPass "http://127.0.0.1:{backend.port}/hold/" timeout=60
{limits}
</Location>
"""


POOL = concurrent.futures.ThreadPoolExecutor(max_workers=64)


def fire(httpd, path, n=1, headers=None):
    """n requests at once, each on its own connection: their futures"""
    return [POOL.submit(httpd.get, path, headers=headers, timeout=60)
            for _ in range(n)]


def settled(futures, timeout=10):
    """the responses of the futures that are done within timeout, waiting
    for none of the others"""
    deadline = time.monotonic() + timeout * rrl.SLOW
    done = []
    for f in futures:
        try:
            done.append(f.result(max(0, deadline - time.monotonic())))
        except concurrent.futures.TimeoutError:
            pass
    return done


def wait_done(futures, count, timeout=10):
    """until count of the futures are done: their responses"""
    deadline = time.monotonic() + timeout * rrl.SLOW
    while time.monotonic() < deadline:
        done = [f.result() for f in futures if f.done()]
        if len(done) >= count:
            return done
        time.sleep(rrl.POLL)
    raise AssertionError(f"{sum(f.done() for f in futures)} of "
                         f"{len(futures)} done, not {count}")


def logged(httpd, uri, n) -> list:
    """the access log's n entries of requests to uri (waiting for them)"""
    def entries():
        e = [e for e in httpd.access_log() if e["uri"] == uri]
        return e if len(e) >= n else None
    return rrl.wait_for(entries, 5 * rrl.SLOW, f"{n} requests to {uri} "
                        "logged")


def status_json(httpd) -> dict:
    return json.loads(httpd.get("/rl-status?json").body)


def limit_row(httpd, name) -> dict:
    for row in status_json(httpd)["limits"]:
        if row["name"] == name:
            return row
    raise AssertionError(f"no limit {name} on the status page")


def assert_denied_for_concurrency(resp, name):
    assert resp.status == 429, resp
    assert resp.headers.get("Retry-After") == "1", resp.headers
    # a concurrency limit has no rate headers
    assert "X-RateLimit-Limit" not in resp.headers, resp.headers
    assert "RateLimit-Policy" not in resp.headers, resp.headers


def test_concurrency_01_n_of_m_across_two_instances(httpd_factory,
                                                     redis_server, backend):
    """Two instances on one Redis, N=3: of 8 requests at once exactly 3
    reach the backend, the other 5 are denied at once (while the 3 are
    still held), with Retry-After: 1 and RATELIMIT_RESULT=denied naming
    the limit; slots come back when the responses end"""
    redis_server.flush()
    conf = f"RateLimitRedis {redis_server.url()}\n" + site(
        backend, "    RateLimitConcurrency 3 name=slow key=%{HTTP:X-Key}")
    a, b = httpd_factory("a"), httpd_factory("b")
    a.start(conf, mods=rrl.modules_dir())
    b.start(conf, mods=rrl.modules_dir())
    h = {"X-Key": "k1"}
    futures = fire(a, "/slow/x", 4, h) + fire(b, "/slow/x", 4, h)
    denied = wait_done(futures, 5)
    backend.wait_held(3)
    time.sleep(0.3 * rrl.SLOW)        # nothing more gets through
    assert backend.held() == 3 and backend.peak == 3
    assert len(denied) == 5
    for r in denied:
        assert_denied_for_concurrency(r, "slow")
    # another key has its own slots
    other = fire(a, "/slow/y", 1, {"X-Key": "k2"})
    backend.wait_held(4)
    backend.release()
    served = [f.result(30) for f in futures + other]
    assert sorted(r.status for r in served) == [200] * 4 + [429] * 5
    log = a.access_log(5) + b.access_log(4)
    assert sum(e["result"] == "denied" and e["name"] == "slow"
               for e in log) == 5, log
    assert sum(e["result"] == "allowed" for e in log) == 4, log
    # every slot came back: 3 more at once, no more
    backend.wait_none()
    released(a, "slow")
    released(b, "slow")
    backend.hold_again()
    futures = fire(a, "/slow/x", 2, h) + fire(b, "/slow/x", 2, h)
    denied = wait_done(futures, 1)
    backend.wait_held(3)
    backend.release()
    assert sorted(f.result(30).status for f in futures) == [200] * 3 + [429]
    # released in Redis too: the key is gone once nothing is held
    c = redis_server.client()
    rrl.wait_for(lambda: not c.keys("rl:slow:*"), 5 * rrl.SLOW,
                 "the slots' set to empty")
    c.close()


def released(httpd, name):
    """until the status page counts no request in flight for limit name: a
    slot is released at the log phase, after the client has its response,
    and counted until the store has it back"""
    rrl.wait_for(lambda: limit_row(httpd, name)["in_flight"] == 0,
                 5 * rrl.SLOW, f"{name}'s slots to be released")


def in_flight(httpd) -> int:
    """requests the status page counts in flight, over every concurrency
    limit"""
    return sum(r.get("in_flight", 0) for r in status_json(httpd)["limits"])


def slot_free(httpd, path="/slowq/poll", headers=None) -> bool:
    """one request through the limit to the backend's quick path: does it
    get a slot?  When it did, until its slot is back (released at its log
    phase, after its response), so that it takes none from what follows"""
    before = in_flight(httpd)
    r = httpd.get(path, headers=headers)
    assert r.status in (200, 429), r
    if r.status == 200:
        rrl.wait_for(lambda: in_flight(httpd) <= before, 5 * rrl.SLOW,
                     "the slot of a request to be released")
    return r.status == 200


def quick(backend, limits: str) -> str:
    """/slowq/: the same limit, in front of the backend's quick path"""
    return f"""
<Location "/slowq/">
    ProxyPass "http://127.0.0.1:{backend.port}/quick/" timeout=60
{limits}
</Location>
"""


def test_concurrency_02_client_gone_mid_response(httpd, store, backend):
    """A client that disconnects mid-response frees its slot when httpd
    notices (its next write fails), long before the response would end"""
    limits = "    RateLimitConcurrency 1 name=one"
    httpd.start(store + site(backend, limits) + quick(backend, limits),
                mods=rrl.modules_dir())
    s = socket.create_connection(("127.0.0.1", httpd.port), timeout=10)
    s.sendall(b"GET /trickle/x?trickle=0.1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
    head = b""
    while b"first" not in head:
        head += s.recv(4096)
    assert b" 200 " in head.split(b"\r\n")[0], head
    backend.wait_held(1)
    assert not slot_free(httpd)           # the slot is taken
    s.close()                             # gone, the response unfinished
    backend.wait_none()                   # httpd noticed, and let go
    rrl.wait_for(lambda: slot_free(httpd), 5 * rrl.SLOW,
                 "the slot of the client gone to be released")
    released(httpd, "one")


def kill_children(httpd):
    """SIGKILL every child of httpd: a crash mid-request (the parent
    makes new ones)"""
    kids = rrl.child_pids(httpd.pid)
    assert kids
    for pid in kids:
        os.kill(pid, signal.SIGKILL)
    rrl.wait_for(lambda: not (kids & rrl.child_pids(httpd.pid)),
                 10 * rrl.SLOW, "the killed children to go")


def test_concurrency_03_lease_frees_a_killed_childs_slot(httpd, store,
                                                         backend):
    """A child killed with SIGKILL mid-request never releases its slot:
    the lease frees it (lease=2s: after 2 s in Redis, 2 to 3 s in the
    local store), and the status page stops counting it"""
    limits = "    RateLimitConcurrency 1 name=crash lease=2s"
    httpd.start(store + site(backend, limits) + quick(backend, limits),
                mods=rrl.modules_dir())
    held = fire(httpd, "/slow/x")
    backend.wait_held(1)
    assert limit_row(httpd, "crash")["in_flight"] == 1
    killed_at = time.monotonic()
    kill_children(httpd)
    with pytest.raises(Exception):
        held[0].result(10)                # its connection went with it
    backend.release()
    # still taken: nothing released it
    rrl.wait_for(lambda: httpd.running() and rrl.can_connect(
        "127.0.0.1", httpd.port), 10, "new children")
    assert not slot_free(httpd)
    rrl.wait_for(lambda: slot_free(httpd), 10 * rrl.SLOW,
                 "the lease to free the killed child's slot")
    freed = time.monotonic() - killed_at
    assert freed >= 1.5, freed            # not at once: by the lease
    rrl.wait_for(lambda: limit_row(httpd, "crash")["in_flight"] == 0,
                 5 * rrl.SLOW, "the status page to stop counting it")
    row = limit_row(httpd, "crash")
    assert row["peak"] >= 1 and row["lease_seconds"] == 2, row


def need_h2load():
    h2load = shutil.which("h2load")
    if not h2load:
        pytest.skip("no h2load (nghttp2-client)")
    return h2load


def test_concurrency_04_http2_streams(httpd, store, backend):
    """HTTP/2: each stream is a request of its own and takes a slot; of 6
    streams at once on one connection (h2load: one client, 6 streams), 2
    are served at once and 4 denied at once"""
    h2load = need_h2load()
    limits = "    RateLimitConcurrency 2 name=h2"
    httpd.start(H2 + store + site(backend, limits), mods=rrl.modules_dir())
    run = POOL.submit(subprocess.run, [
        h2load, "-n", "6", "-c", "1", "-m", "6",
        f"http://127.0.0.1:{httpd.port}/slow/x"], capture_output=True,
        text=True, timeout=60 * rrl.SLOW)
    backend.wait_held(2)
    rrl.wait_for(lambda: limit_row(httpd, "h2")["denied"] >= 4,
                 10 * rrl.SLOW, "4 streams denied while 2 are held")
    assert backend.held() == 2 and backend.peak == 2
    backend.release()
    out = run.result().stdout
    assert re.search(r"requests: 6 total, 6 started, 6 done,",
                     out), out
    assert re.search(r"status codes: 2 2xx, 0 3xx, 4 4xx, 0 5xx", out), out
    log = logged(httpd, "/slow/x", 6)
    assert len(log) == 6 and len({e["remote"] for e in log}) == 1, log
    rrl.wait_for(lambda: limit_row(httpd, "h2")["in_flight"] == 0,
                 5 * rrl.SLOW, "the streams' slots to be released")


def test_concurrency_05_with_a_rate_all_or_nothing(httpd, store, backend):
    """RateLimit and RateLimitConcurrency decided at once: a request the
    concurrency limit denies spends no rate, one the rate denies takes no
    slot"""
    limits = ("    RateLimit 3/min name=rate\n"
              "    RateLimitConcurrency 1 name=conc")
    httpd.start(store + site(backend, limits) + quick(backend, limits),
                mods=rrl.modules_dir())
    held = fire(httpd, "/slow/a")                     # rate 2 left
    backend.wait_held(1)
    for _ in range(3):                                # concurrency denies
        r = httpd.get("/slowq/b")
        assert_denied_for_concurrency(r, "conc")
    log = httpd.access_log(3)             # the held one is not logged yet
    assert [e["name"] for e in log] == ["conc"] * 3, log
    backend.release()
    assert held[0].result(30).status == 200
    released(httpd, "conc")
    r = httpd.get("/slowq/c")                         # no rate was spent
    assert r.status == 200 and r.headers["X-RateLimit-Remaining"] == "1", r
    released(httpd, "conc")
    r = httpd.get("/slowq/d")
    assert r.status == 200 and r.headers["X-RateLimit-Remaining"] == "0", r
    released(httpd, "conc")
    r = httpd.get("/slowq/e")                         # the rate denies
    assert r.status == 429 and r.headers["X-RateLimit-Limit"] == "3", r
    assert int(r.headers["Retry-After"]) > 1, r.headers
    log = logged(httpd, "/slowq/e", 1)
    assert [e["name"] for e in log] == ["rate"], log
    # ... and took no slot: one request may still be in flight
    backend.hold_again()
    row = limit_row(httpd, "conc")
    assert row["in_flight"] == 0, row
    assert row["allowed"] == 3 and row["denied"] == 3, row


@pytest.mark.parametrize("mpm", ["event", "prefork"])
def test_concurrency_06_local_store_across_children(httpd, backend, mpm):
    """Without Redis the children of one server share the local store's
    count: 2 of 6 at once, under event and prefork; the status page shows
    them in flight, their peak, and the denials (HTML, ?auto, ?json,
    ?metrics)"""
    limits = "    RateLimitConcurrency 2 name=local key=%{HTTP:X-Key}"
    httpd.start(site(backend, limits), mpm=mpm, mods=rrl.modules_dir())
    futures = fire(httpd, "/slow/x", 6, {"X-Key": "same"})
    denied = wait_done(futures, 4)
    backend.wait_held(2)
    assert all(r.status == 429 for r in denied), denied
    row = limit_row(httpd, "local")
    assert (row["in_flight"], row["peak"], row["denied"]) == (2, 2, 4), row
    assert row["algorithm"] == "concurrency" and row["count"] == 2, row
    auto = httpd.get("/rl-status?auto").text
    assert "Limit[local] InFlight: 2\n" in auto, auto
    assert "Limit[local] Peak: 2\n" in auto, auto
    metrics = httpd.get("/rl-status?metrics").text
    assert re.search(r'^redis_ratelimit_limit_in_flight\{limit="local",'
                     r'vhost=""\} 2$', metrics, re.M), metrics
    html = httpd.get("/rl-status").text
    assert "2 at once, lease 60s" in html, html
    backend.release()
    for f in futures:
        assert f.result(30).status in (200, 429)
    pids = {e["pid"] for e in logged(httpd, "/slow/x", 6)}
    if mpm == "prefork":
        assert len(pids) > 1, pids      # several children shared the count
    rrl.wait_for(lambda: limit_row(httpd, "local")["in_flight"] == 0,
                 5 * rrl.SLOW, "in flight back to 0")
    assert limit_row(httpd, "local")["peak"] == 2


def test_concurrency_07_redis_restarted_under_load(httpd, redis_server,
                                                   backend, env):
    """Redis restarted (its data lost) while slots are held and requests
    keep coming: the counts start again from nothing on the new Redis
    (documented; while Redis is lost the local store decides), the
    releases of slots it never had change nothing, and once everything
    has ended every slot is back: exactly N again, never more (a count
    gone negative) nor fewer (one stuck)"""
    redis_server.flush()
    limits = "    RateLimitConcurrency 2 name=restart"
    # one child: one circuit breaker (while it is open, that child's local
    # store decides, with its own count)
    httpd.start(f"RateLimitRedis {redis_server.url()}\n"
                + site(backend, limits) + quick(backend, limits),
                mpm_conf=rrl.one_child(16), mods=rrl.modules_dir())
    first = fire(httpd, "/slow/a", 2)
    backend.wait_held(2)
    assert not slot_free(httpd)
    load = POOL.submit(httpd.hammer, 200, "/slowq/load", 4)
    env.expect_log("RRL00019", "RRL00013")   # lost for a moment
    redis_server.restart()
    # the new Redis knows nothing of the two held: two more get in (one
    # at a time: the load takes slots too, and while Redis is lost the
    # local store decides)
    second = []
    deadline = time.monotonic() + 20 * rrl.SLOW
    while len(second) < 2 and time.monotonic() < deadline:
        n = backend.held()
        f = fire(httpd, "/slow/b")[0]
        rrl.wait_for(lambda: f.done() or backend.held() > n, 10 * rrl.SLOW,
                     "a request to be denied or held")
        if f.done():
            assert f.result().status == 429, f.result()
            time.sleep(0.05)
        else:
            second.append(f)
    assert len(second) == 2 and backend.held() == 4, backend.held()
    statuses = load.result(60)
    assert set(statuses) <= {200, 429}, statuses
    backend.release()
    for f in first + second:
        assert f.result(30).status == 200
    backend.wait_none()
    released(httpd, "restart")
    c = redis_server.client()
    assert not c.keys("rl:restart:*")
    c.close()
    # the child is back on Redis (its breaker closed): Redis decides again
    probes = iter(range(1000))

    def on_redis():
        uri = f"/slowq/probe{next(probes)}"
        slot_free(httpd, uri)
        return logged(httpd, uri, 1)[0]["result"] == "allowed"
    rrl.wait_for(on_redis, 10 * rrl.SLOW, "Redis to decide again")
    backend.hold_again()
    futures = fire(httpd, "/slow/c", 5)
    backend.wait_held(2)
    denied = wait_done(futures, 3)
    time.sleep(0.3 * rrl.SLOW)
    assert backend.held() == 2 and len(denied) == 3, (backend.held(), denied)
    backend.release()
    assert sorted(f.result(30).status for f in futures) == [200] * 2 + [429] * 3


def test_concurrency_08_configuration(httpd):
    """apachectl -t: what RateLimitConcurrency accepts, with file, line
    and what is accepted; default names and leases"""
    for line, words in [
            ("RateLimitConcurrency", ["expected N"]),
            ("RateLimitConcurrency 0", ["'0' is not accepted",
                                        "from 1 to 1000000"]),
            ("RateLimitConcurrency ten", ["'ten' is not accepted"]),
            ("RateLimitConcurrency 1000001", ["from 1 to 1000000"]),
            ("RateLimitConcurrency 5 lease=0", ["lease=0 is not accepted"]),
            ("RateLimitConcurrency 5 lease=500ms",
             ["lease=500ms is not accepted", "at least 1s"]),
            ("RateLimitConcurrency 5 lease=2d", ["up to 86400s"]),
            ("RateLimitConcurrency 5 burst=3",
             ["unknown option 'burst'",
              "accepted: key, name, phase, ipv6-prefix, lease"]),
            ("RateLimitConcurrency 5 lease=5s lease=6s",
             ["option lease= is given twice"]),
            ("RateLimitConcurrency 5 name=a/b",
             ["RateLimitConcurrency: name=a/b is not accepted"]),
            ("RateLimitConcurrency 5 key=%{REMOTE_USER} phase=access",
             ["phase=access is never known"]),
            ("RateLimit 5/s lease=5s",
             ["unknown option 'lease'", "count"]),
            ("RateLimit 5/s algorithm=concurrency",
             ["algorithm=concurrency is not known"])]:
        rrl.assert_config_error(httpd, line, words)
    # one name, one limit: a rate and a concurrency limit cannot share it
    rc, out = httpd.configtest("""
<Location "/a">
    RateLimit 5/s name=shared
</Location>
<Location "/b">
    RateLimitConcurrency 5 name=shared
</Location>
""")
    assert rc != 0 and "RateLimitConcurrency 5 name=shared differs" in out, out
    rc, out = httpd.configtest("""
<Location "/a">
    RateLimitConcurrency 5 name=x
    RateLimit 5/s name=x
</Location>
""")
    assert rc != 0 and "name=x is already used" in out, out
    # the default lease: Apache's Timeout, at least 60 s
    httpd.start(rrl.STATUS_LOCATION + """
<Location "/a">
    RateLimit 5/s
    RateLimitConcurrency 5
</Location>
<VirtualHost 127.0.0.1:${port}>
    ServerName slowvhost
    Timeout 300
    RateLimitConcurrency 3
</VirtualHost>
""")
    rows = {(r["name"], r["vhost"]): r for r in status_json(httpd)["limits"]}
    assert rows[("location-a-concurrency-1", "")]["lease_seconds"] == 60
    assert ("location-a-1", "") in rows            # the rate keeps its name
    assert rows[("vhost-concurrency-1", "slowvhost")]["lease_seconds"] == 300


def test_concurrency_09_lease_renewed_while_the_response_goes_on(
        httpd, store, backend):
    """lease=1s, a response that keeps sending for 2.5 s: its lease is
    renewed as it goes, so its slot is held to its end; a response that
    goes quiet for longer than its lease loses its slot to the next
    request"""
    limits = "    RateLimitConcurrency 1 name=long lease=1s"
    httpd.start(store + site(backend, limits) + quick(backend, limits),
                mods=rrl.modules_dir())
    long = fire(httpd, "/trickle/x?trickle=0.1")
    backend.wait_held(1)
    start = time.monotonic()
    while time.monotonic() - start < 2.5:
        assert not slot_free(httpd), time.monotonic() - start
        time.sleep(0.2)
    backend.release()
    assert long[0].result(30).status == 200
    released(httpd, "long")
    assert slot_free(httpd)
    # quiet: nothing goes out, nothing renews; the lease runs out
    backend.hold_again()
    quiet = fire(httpd, "/slow/y")
    backend.wait_held(1)
    assert not slot_free(httpd)
    rrl.wait_for(lambda: slot_free(httpd), 5 * rrl.SLOW,
                 "the quiet response's lease to run out")
    backend.release()
    assert quiet[0].result(30).status == 200
    released(httpd, "long")


def test_concurrency_10_on_error_local(httpd, redis_factory, backend, env):
    """While Redis cannot decide, RateLimitOnError local counts slots in
    the local store (RATELIMIT_RESULT=local-denied), and releases them
    there"""
    r = redis_factory()
    limits = "    RateLimitConcurrency 1 name=fallback"
    httpd.start(f"RateLimitRedis {r.url()}\nRateLimitRedisTimeout "
                "connect=200ms command=200ms\n"
                + site(backend, limits) + quick(backend, limits),
                mods=rrl.modules_dir())
    r.kill()
    env.expect_log("RRL000")
    held = fire(httpd, "/slow/a")
    backend.wait_held(1)
    d = httpd.get("/slowq/b")
    assert_denied_for_concurrency(d, "fallback")
    log = logged(httpd, "/slowq/b", 1)
    assert [e["result"] for e in log] == ["local-denied"], log
    backend.release()
    assert held[0].result(30).status == 200
    released(httpd, "fallback")
    assert httpd.get("/slowq/c").status == 200


def test_concurrency_11_dry_run_exempt_and_off(httpd, backend):
    """dry-run lets every request through, telling which it would deny;
    exempt clients and RateLimit off take no slot"""
    limits = "    RateLimitConcurrency 1 name=dry"
    httpd.start(rrl.PROXY_MODULES + rrl.STATUS_LOCATION + f"""
RateLimitExempt 127.0.0.2
<Location "/slow/">
    ProxyPass "http://127.0.0.1:{backend.port}/hold/" timeout=60
{limits}
</Location>
<Location "/slow/off/">
    RateLimit off
</Location>
<Location "/dry/">
    ProxyPass "http://127.0.0.1:{backend.port}/hold/" timeout=60
    RateLimitMode dry-run
{limits}
</Location>
""", mods=rrl.modules_dir())
    futures = fire(httpd, "/dry/a", 3)
    backend.wait_held(3)
    row = limit_row(httpd, "dry")
    assert row["in_flight"] == 1 and row["dry_run_denied"] == 2, row
    backend.release()
    assert [f.result(30).status for f in futures] == [200] * 3
    results = sorted(e["result"] for e in logged(httpd, "/dry/a", 3))
    assert results == ["allowed", "dry-run-denied", "dry-run-denied"]
    released(httpd, "dry")
    backend.hold_again()
    held = fire(httpd, "/slow/a")
    backend.wait_held(1)
    off = fire(httpd, "/slow/off/b")              # no limit here
    exempt = [POOL.submit(httpd.get, "/slow/c", source="127.0.0.2",
                          timeout=60)]
    backend.wait_held(3)
    assert limit_row(httpd, "dry")["in_flight"] == 1
    backend.release()
    assert [f.result(30).status for f in held + off + exempt] == [200] * 3


def test_concurrency_12_cluster(cluster_factory, httpd, backend):
    """Redis Cluster: the slots' set is a key like the others, hash-tagged
    by its value; a request's rate and concurrency limits of one value go
    to one node in one call"""
    cl = cluster_factory()
    limits = ("    RateLimit 100/min name=crate key=%{HTTP:X-Key}\n"
              "    RateLimitConcurrency 1 name=cconc key=%{HTTP:X-Key}")
    httpd.start(f"RateLimitRedis {cl.url()}\n" + site(backend, limits)
                + quick(backend, limits), mods=rrl.modules_dir())
    keys = [f"tenant{i}" for i in range(6)]
    held = [POOL.submit(httpd.get, "/slow/x", headers={"X-Key": k},
                        timeout=60) for k in keys]
    backend.wait_held(len(keys))
    for k in keys:
        r = httpd.get("/slowq/y", headers={"X-Key": k})
        assert_denied_for_concurrency(r, "cconc")
    found = cl.all_keys()
    sets = {k: n for n, ks in found.items() for k in ks
            if k.startswith("rl:cconc:")}
    assert len(sets) == len(keys), found
    for k, node in sets.items():
        assert cl.node_for_key(k) is node, (k, node)
        tag = re.search(r"\{(.*)\}", k).group(1)
        rate = [x for x in found[node] if x.startswith("rl:crate:")
                and "{" + tag + "}" in x]
        assert rate, (k, found[node])             # beside its rate's key
    backend.release()
    assert [f.result(30).status for f in held] == [200] * len(keys)
    released(httpd, "cconc")
    rrl.wait_for(lambda: not any(k.startswith("rl:cconc:")
                                 for ks in cl.all_keys().values()
                                 for k in ks), 5 * rrl.SLOW,
                 "every slot's set to go")


def test_concurrency_13_a_name_that_changed_kind(httpd, redis_server,
                                                 backend, env):
    """A key that holds another kind's value (a rate renamed to a
    concurrency limit, or back) starts afresh, as a changed algorithm=
    does; a key of any other type is an error that names the limit, never
    the key, and RateLimitOnError decides"""
    redis_server.flush()
    c = redis_server.client()
    c.set("rl:was-rate:127.0.0.1", "12345", px=60000)
    c.zadd("rl:was-slots:127.0.0.1", {"other": 9e15})
    c.pexpire("rl:was-slots:127.0.0.1", 60000)
    c.hset("rl:hashed:127.0.0.1", "f", "v")
    c.pexpire("rl:hashed:127.0.0.1", 60000)
    httpd.start(f"RateLimitRedis {redis_server.url()}\n" + rrl.PROXY_MODULES
                + f"""
<Location "/a/">
    ProxyPass "http://127.0.0.1:{backend.port}/quick/"
    RateLimitConcurrency 1 name=was-rate
</Location>
<Location "/b/">
    ProxyPass "http://127.0.0.1:{backend.port}/quick/"
    RateLimit 2/min name=was-slots
</Location>
<Location "/c/">
    ProxyPass "http://127.0.0.1:{backend.port}/quick/"
    RateLimitConcurrency 1 name=hashed
    RateLimitOnError allow
</Location>
""", mods=rrl.modules_dir())
    assert httpd.get("/a/x").status == 200
    rrl.wait_for(lambda: c.type("rl:was-rate:127.0.0.1") in (b"none",),
                 5 * rrl.SLOW, "the slot's set to go once released")
    r = httpd.get("/b/x")
    assert r.status == 200 and r.headers["X-RateLimit-Remaining"] == "1", r
    assert c.type("rl:was-slots:127.0.0.1") == b"string"
    env.expect_log("RRL00013")
    assert httpd.get("/c/x").status == 200        # allowed: Redis failed
    line = httpd.wait_error_log("not a sorted set")
    assert "RateLimitConcurrency hashed" in line, line
    assert "rl:hashed" not in line, line
    c.close()


FAULTS_MODULE = os.environ.get("RRL_FAULTS_MODULE")


@pytest.mark.skipif(not FAULTS_MODULE, reason="needs the module built with "
                    "-DRRL_FAULTS (make check gives RRL_FAULTS_MODULE)")
def test_concurrency_14_a_failed_release_is_tried_again(httpd_factory,
                                                         store, backend):
    """A release that fails is tried once more before it is left to the
    lease: with the first attempt of every release failing (RRL_FAULTS=
    fail-release, the module's fault build), each request's slot is still
    back at once, and the next request gets it, long before lease=60s"""
    h = httpd_factory("faults")
    h.module = FAULTS_MODULE
    h.env["RRL_FAULTS"] = "fail-release"
    limits = "    RateLimitConcurrency 1 name=again lease=60s"
    h.start(store + site(backend, limits) + quick(backend, limits),
            mods=rrl.modules_dir())
    for _ in range(4):
        assert slot_free(h), "the slot stayed taken: released only by lease"
    held = fire(h, "/slow/x")
    backend.wait_held(1)
    assert not slot_free(h)               # taken while the response goes on
    backend.release()
    assert held[0].result(10 * rrl.SLOW).status == 200
    rrl.wait_for(lambda: slot_free(h), 5 * rrl.SLOW,
                 "the slot of the finished response to be released")
    released(h, "again")
