"""The requests of a child share its connection to Redis through a
pipeline: those that arrive while a round trip is under way leave together
in the next one.  Redis is held still with CLIENT PAUSE so that requests
queue for certain; then the decisions must be exact, in a handful of
writes, on one connection, those queued for a node (a Cluster slot) in one
EVALSHA of the script's batch form, and every fault must end every queued
request quickly and as RateLimitOnError says."""
import os
import re
import threading
import time

import pytest

import deploy
import rrl

ONE_CHILD = rrl.one_child(48)
STATUS = rrl.STATUS_LOCATION


def conf(limit, on_error="allow", command="5s"):
    return (f"RateLimitRedis ${{redis_url}}\n"
            f"RateLimitRedisTimeout connect=1s command={command}\n"
            f"RateLimitOnError {on_error}\n{limit}\n{STATUS}")


counters = rrl.counters


cmdstats = rrl.cmdstats

# the module built with -DRRL_FAULTS (make check's faults/, check-asan's
# asan/): fault injection that the environment switches on
FAULTS_MODULE = os.environ.get("RRL_FAULTS_MODULE")


class Burst:
    """n requests at once, each on its own connection, in the background;
    the statuses and the time each took."""

    def __init__(self, httpd, n, path="/small.txt", timeout=30,
                 headers=None):
        self.results = [None] * n
        self.timeout = timeout
        self.headers = headers or (lambda i: None)
        self.go = threading.Barrier(n)
        self.threads = [threading.Thread(target=self._one,
                                         args=(httpd, path, i), daemon=True)
                        for i in range(n)]

    def _one(self, httpd, path, i):
        self.go.wait()
        t0 = time.monotonic()
        r = httpd.get(path, headers=self.headers(i), timeout=self.timeout)
        self.results[i] = (r.status, time.monotonic() - t0)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        for t in self.threads:
            t.join(self.timeout + 30)

    def statuses(self):
        return sorted(r[0] for r in self.results)

    def slowest(self):
        return max(r[1] for r in self.results)


def paused(redis_server, ms):
    """Redis holds every client's commands for ms (CLIENT PAUSE ALL)."""
    c = redis_server.client()
    c.execute_command("CLIENT", "PAUSE", str(ms), "ALL")
    c.close()


def test_pipeline_01_queued_requests_share_round_trips(httpd, redis_server):
    httpd.start(conf("RateLimit 20/h name=pipe"), mpm_conf=ONE_CHILD)
    c = redis_server.client()
    assert httpd.get("/rl-status?health").status == 200   # connected
    before, stats0 = counters(httpd), cmdstats(c)
    paused(redis_server, 1500)
    with Burst(httpd, 32) as b:
        pass
    after, stats1 = counters(httpd), cmdstats(c)
    # exact: 20 of 32, decided by Redis after the pause, none failed
    assert b.statuses() == [200] * 20 + [429] * 12
    assert after["redis_errors"] == before["redis_errors"]
    loads = stats1.get("script|load", 0) - stats0.get("script|load", 0)
    assert loads <= 1                  # the script, the first time
    evalshas = stats1.get("evalsha", 0) - stats0.get("evalsha", 0)
    sent = after["redis_round_trips"] - before["redis_round_trips"]
    writes = after["redis_writes"] - before["redis_writes"]
    # the decisions queued for the node went as one EVALSHA per round
    # trip (a batch), not one each: at most one per request, at least one
    # per write, and each command sent counted
    assert writes <= evalshas <= 32 + loads, (writes, evalshas)
    assert sent == evalshas + loads
    assert after["redis_decisions"] - before["redis_decisions"] == 32
    # the first went alone; the rest queued behind it and left together
    assert 2 <= writes <= 6 + 2 * loads, writes
    # on the one connection the child had
    assert after["redis_connections"] == before["redis_connections"]
    assert c.pttl("rl:pipe:127.0.0.1") > 0


def test_pipeline_02_script_flush_meets_a_queue(httpd, redis_server):
    httpd.start(conf("RateLimit 100/h name=flush"), mpm_conf=ONE_CHILD)
    c = redis_server.client()
    assert httpd.get("/small.txt").status == 200
    c.script_flush()
    before = cmdstats(c)
    paused(redis_server, 1000)
    with Burst(httpd, 16) as b:
        pass
    after = cmdstats(c)
    assert b.statuses() == [200] * 16
    assert after.get("script|load", 0) - before.get("script|load", 0) == 1
    assert httpd.get("/small.txt").headers["X-RateLimit-Remaining"] == "82"
    assert {e["result"] for e in httpd.access_log(18)} == {"allowed"}


def test_pipeline_03_redis_killed_under_a_queue(httpd, redis_server, env):
    env.expect_log("RRL00013", "RRL00019")
    httpd.start(conf("RateLimit 100/min name=kill", on_error="allow"),
                mpm_conf=ONE_CHILD)
    assert httpd.get("/small.txt").status == 200
    paused(redis_server, 5000)
    with Burst(httpd, 16) as b:
        time.sleep(1)                  # all sent and queued
        t0 = time.monotonic()
        redis_server.kill()
    done = time.monotonic() - t0
    # every queued request ended at once, as RateLimitOnError allow says,
    # not after the 5 s command timeout or the pause
    assert b.statuses() == [200] * 16
    assert done < 2.5, done
    assert {e["result"] for e in httpd.access_log(17)[1:]} \
        == {"fallback-allowed"}


def test_pipeline_04_a_timeout_ends_the_whole_queue(httpd, redis_server, env):
    env.expect_log("RRL00013", "RRL00019")
    httpd.start(conf("RateLimit 100/min name=slow", on_error="local",
                     command="300ms"), mpm_conf=ONE_CHILD)
    assert httpd.get("/small.txt").status == 200
    paused(redis_server, 4000)
    with Burst(httpd, 16) as b:
        pass
    # the first round trip timed out; those queued behind it did not wait
    # a timeout each, nor for Redis: the local store decided them
    assert b.statuses() == [200] * 16
    assert b.slowest() < 2.0 * rrl.SLOW, b.slowest()
    results = [e["result"] for e in httpd.access_log(17)[1:]]
    assert set(results) == {"local-allowed"}, results
    time.sleep(4)                      # the pause ends; Redis decides again

    def by_redis():
        httpd.get("/small.txt")
        return httpd.access_log()[-1]["result"] == "allowed"
    rrl.wait_for(by_redis, 10, "a request decided by Redis again")


def test_pipeline_05_prefork_is_one_call_at_a_time(httpd, redis_server):
    httpd.start(conf("RateLimit 100/min name=pf"), mpm="prefork")
    before = counters(httpd)
    assert httpd.hammer(15, "/small.txt", concurrency=4) == [200] * 15
    after = counters(httpd)
    sent = after["redis_round_trips"] - before["redis_round_trips"]
    writes = after["redis_writes"] - before["redis_writes"]
    # one thread per child: nothing queues, a write per command
    assert sent == writes == 15


def test_pipeline_06_calls_answered_apart_in_one_round_trip(httpd,
                                                            redis_server):
    """A round trip that carries a PING (?health) with EVALSHAs that meet
    NOSCRIPT: the PING is answered, the others go again after SCRIPT LOAD;
    every request gets its answer."""
    httpd.start(conf("RateLimit 100/h name=mixed"), mpm_conf=ONE_CHILD)
    c = redis_server.client()
    assert httpd.get("/small.txt").status == 200
    c.script_flush()
    paused(redis_server, 1500)
    out = {}

    def get(name, path):
        r = httpd.get(path, timeout=10)
        out[name] = r.status

    first = threading.Thread(target=get, args=("first", "/rl-status?health"))
    first.start()                      # leads, alone: PING, held by the pause
    # then, queued in this order: an EVALSHA, a PING, five EVALSHAs
    queue = [("r0", "/small.txt"), ("health", "/rl-status?health")] + \
        [(f"r{i}", "/small.txt") for i in range(1, 6)]
    threads = []
    for name, path in queue:
        time.sleep(0.15)
        threads.append(threading.Thread(target=get, args=(name, path)))
        threads[-1].start()
    for t in [first] + threads:
        t.join(20)
    assert out == {"first": 200, "health": 200,
                   **{f"r{i}": 200 for i in range(6)}}
    assert httpd.get("/small.txt").headers["X-RateLimit-Remaining"] == "92"
    # and the threads are in order after it: many requests, all answered
    assert httpd.hammer(60, "/small.txt", concurrency=16, timeout=10) \
        == [200] * 60


@pytest.mark.skipif(not FAULTS_MODULE, reason="needs the module built with "
                    "-DRRL_FAULTS (make check gives RRL_FAULTS_MODULE)")
def test_pipeline_07_a_lost_wakeup_ends_at_the_backstop(httpd_factory,
                                                         redis_server, env):
    """Should the pipeline ever lose a wake-up (a bug), a waiting request
    still ends, within a round trip and a margin of its joining, with the
    answer Redis gave it.  Here every wake-up is lost (RRL_FAULTS=
    lose-wakeups): without the backstop the queued requests would wait for
    ever; with it, each finds its call done (or its turn to lead) when its
    wait runs out, and the decisions stay exact."""
    env.expect_log("RRL00021")
    h = httpd_factory("faults")
    h.module = FAULTS_MODULE
    h.env["RRL_FAULTS"] = "lose-wakeups"
    # the bound: 2 x (connect 1 s + 2 x command 300 ms) = 3.2 s, and a
    # command timeout more for a wake-up on its way
    ms = 300 * rrl.SLOW
    h.start(conf("RateLimit 12/h name=lost", command=f"{ms}ms"),
            mpm_conf=ONE_CHILD)
    assert h.get("/small.txt").status == 200   # alone: no wake-up needed
    paused(redis_server, ms * 2 // 3)
    # ends after about two bounds and two command timeouts, 8 s (under
    # valgrind 64 s): the clients wait for it
    with Burst(h, 16, timeout=30 * rrl.SLOW) as b:
        pass
    assert None not in b.results, "a request never ended"
    assert b.statuses() == [200] * 11 + [429] * 5
    assert b.slowest() < 20 * rrl.SLOW, b.slowest()
    assert {e["result"] for e in h.access_log(17)} == {"allowed", "denied"}
    assert any("RRL00021" in line for line in h.error_log_lines())


# ---- batches: the decisions queued for a node go as one EVALSHA ----

def evalshas(stats0, stats1):
    return stats1.get("evalsha", 0) - stats0.get("evalsha", 0)


def queue_in_order(httpd, first, queue, gap=0.1):
    """first sent alone (it leads, held by a pause), then the requests of
    queue one by one, gap apart, so that they queue in that order: each
    (name, path, headers); {name: status}"""
    out = {}

    def get(name, path, headers=None):
        out[name] = httpd.get(path, headers=headers, timeout=20).status
    threads = [threading.Thread(target=get, args=first)]
    threads[0].start()
    for q in queue:
        time.sleep(gap)
        threads.append(threading.Thread(target=get, args=q))
        threads[-1].start()
    for t in threads:
        t.join(30)
    return out


def test_pipeline_08_a_bad_key_in_a_batch_fails_alone(httpd, redis_server,
                                                      env):
    """A batch whose sixth request's key is of another type: that request
    alone takes the Redis error path (logged, RateLimitOnError allow), the
    others in the batch are decided exactly, in arrival order."""
    env.expect_log("RRL00013")
    httpd.start(conf("RateLimit 8/h key=%{HTTP:X-Key} name=bk"),
                mpm_conf=ONE_CHILD)
    c = redis_server.client()
    assert httpd.get("/small.txt", headers={"X-Key": "warm"}).status == 200
    c.hset("rl:bk:bad", "x", "1")
    stats0 = cmdstats(c)
    paused(redis_server, 2000)
    good = {"X-Key": "good"}
    queue = [(f"r{i}", f"/small.txt?r{i}", good) for i in range(5)] + \
        [("bad", "/small.txt?bad", {"X-Key": "bad"})] + \
        [(f"r{i}", f"/small.txt?r{i}", good) for i in range(5, 10)]
    out = queue_in_order(httpd, ("first", "/small.txt?first", good), queue)
    stats1 = cmdstats(c)
    # 8 of the 11 on "good", in order; "bad" allowed by RateLimitOnError
    assert out == {"first": 200, "bad": 200,
                   **{f"r{i}": 200 if i < 7 else 429 for i in range(10)}}
    results = {e["query"]: e["result"] for e in httpd.access_log(13)}
    assert results["?bad"] == "fallback-allowed"
    assert [results[f"?r{i}"] for i in range(10)] == \
        ["allowed"] * 7 + ["denied"] * 3
    # the leader alone, then the queue of 11 in one EVALSHA (or a few, on
    # a slow machine)
    assert 2 <= evalshas(stats0, stats1) <= 4, evalshas(stats0, stats1)
    assert c.hgetall("rl:bk:bad") == {b"x": b"1"}        # nothing written
    assert 0 < c.pttl("rl:bk:good") <= 3600 * 1000
    log = "\n".join(httpd.error_log_lines())
    assert "EVALSHA: RateLimit bk, key SHA-1 " in log
    assert "not a string (WRONGTYPE)" in log
    assert "rl:bk:bad" not in log                   # never the key
    assert log.count("RRL00013") == 1


def test_pipeline_09_a_batch_across_a_script_flush(httpd, redis_server):
    """A batch that meets NOSCRIPT (the script flushed behind the
    module's back): one SCRIPT LOAD, the batch sent again once, never a
    second spend: two limits per request, counts exact."""
    httpd.start(conf("RateLimit 20/h name=fl1\nRateLimit 30/h name=fl2"),
                mpm_conf=ONE_CHILD)
    c = redis_server.client()
    assert httpd.get("/small.txt").status == 200
    c.script_flush()
    stats0 = cmdstats(c)
    paused(redis_server, 1500)
    out = {}

    def health():
        out["health"] = httpd.get("/rl-status?health", timeout=10).status
    first = threading.Thread(target=health)
    first.start()                      # leads, alone: PING, held
    time.sleep(0.3)
    with Burst(httpd, 24) as b:        # queued behind it: one batch
        pass
    first.join(10)
    stats1 = cmdstats(c)
    assert out["health"] == 200
    assert b.statuses() == [200] * 19 + [429] * 5
    assert stats1.get("script|load", 0) - stats0.get("script|load", 0) == 1
    # the batch, NOSCRIPT; then again after SCRIPT LOAD, in one write
    assert 2 <= evalshas(stats0, stats1) <= 6, evalshas(stats0, stats1)
    # fl2 spent once per allowed request: 30 - 20 left, never less
    assert httpd.get("/small.txt").status == 429
    assert c.get("rl:fl2:127.0.0.1") is not None
    results = [e["result"] for e in httpd.access_log(26)[-25:]]
    assert results.count("allowed") == 19 and "fallback-allowed" not in \
        results


def test_pipeline_10_a_queue_of_32_in_few_evalshas(httpd, redis_server):
    """32 requests queued under CLIENT PAUSE, each with a rate whose plan
    is in Redis (plans=redis), another rate and a concurrency limit: the
    takes go in a few batches, the releases (decisions too) go as each
    request ends, at most one call each, every count is exact, every key
    expires and every slot is given back."""
    httpd.start(conf("RateLimit 20/h name=q1 plans=redis\n"
                     "RateLimit 1000/h name=q2\n"
                     "RateLimitConcurrency 100 name=qc"), mpm_conf=ONE_CHILD)
    c = redis_server.client()
    c.set("rl:plan/q1:127.0.0.1", "10/h")
    assert httpd.get("/rl-status?health").status == 200
    stats0 = cmdstats(c)
    paused(redis_server, 1500)
    with Burst(httpd, 32) as b:
        pass
    assert b.statuses() == [200] * 10 + [429] * 22
    rrl.wait_for(lambda: c.zcard("rl:qc:127.0.0.1") == 0, 5,
                 "every slot given back")
    stats1 = cmdstats(c)
    # 32 takes, held by the pause, go in batches (one call each would be
    # 32); the 10 releases of those allowed (a denial holds none) come as
    # each request ends: on a quick machine they share calls, on a loaded
    # one (CI, under ASan) each may go alone, so they count one call each
    n = evalshas(stats0, stats1)
    loads = stats1.get("script|load", 0) - stats0.get("script|load", 0)
    assert n <= 32 // 4 + 10 + loads, n     # 5 or 6 here, 12 once in CI
    # 33: the health check too (access_log(32) could return before the
    # last of the 32 was logged, under valgrind)
    assert [e["result"] for e in httpd.access_log(33)].count("allowed") == 10
    for key in ("rl:q1:127.0.0.1", "rl:q2:127.0.0.1"):
        assert 0 < c.pttl(key) <= 3600 * 1000, key
    assert c.pttl("rl:plan/q1:127.0.0.1") == -1        # read, never written
    assert httpd.get("/small.txt").headers["X-RateLimit-Limit"] == "10"


def test_pipeline_11_cluster_slots_mixed_in_one_queue(httpd, cluster_factory):
    """A queue for one Cluster node holds requests whose keys fall into
    different slots: each slot's go as a batch of their own (a Cluster
    refuses keys of two slots in one call), and every count is exact."""
    cl = cluster_factory()
    httpd.vars["redis_url"] = cl.url()
    httpd.start(conf("RateLimit 5/h key=%{HTTP:X-Key} name=cs"),
                mpm_conf=ONE_CHILD)
    # three values on one node (three slots), one on each of the others
    node0 = cl.node_for_key("rl:cs:{v0}")
    same = [v for v in (f"v{i}" for i in range(2000))
            if cl.node_for_key(f"rl:cs:{{{v}}}").port == node0.port][:3]
    others = [next(v for v in (f"w{i}" for i in range(2000))
                   if cl.node_for_key(f"rl:cs:{{{v}}}").port == n.port)
              for n in cl.nodes if n.port != node0.port]
    values = same + others
    assert len({deploy.keyslot(f"rl:cs:{{{v}}}") for v in values}) == 5
    for v in values:                   # each node's script, connection
        assert httpd.get("/small.txt", headers={"X-Key": v}).status == 200
    before = sum(n.client().info("commandstats").get("cmdstat_evalsha", {})
                 .get("calls", 0) for n in cl.nodes)
    for n in cl.nodes:
        cc = n.client()
        cc.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        cc.close()
    with Burst(httpd, 40, headers=lambda i: {"X-Key": values[i % 5]}) as b:
        pass
    after = sum(n.client().info("commandstats").get("cmdstat_evalsha", {})
                .get("calls", 0) for n in cl.nodes)
    by_value = {v: sorted(r[0] for i, r in enumerate(b.results)
                          if values[i % 5] == v) for v in values}
    # 4 left of 5 on each, 8 asked each
    assert by_value == {v: [200] * 4 + [429] * 4 for v in values}
    # a leader alone per node, then a batch per slot (8 here), not 40
    assert after - before <= 15, after - before
    log = "\n".join(httpd.error_log_lines())
    assert "RRL00013" not in log and "CROSSSLOT" not in log


def name(i):
    """a limit's name of 64 characters"""
    return f"cap{i}-".ljust(64, "n")


def test_pipeline_12_batches_are_capped_by_size(httpd, redis_server):
    """Requests of eight limits with long keys (names of 64 characters),
    about 1.2 KB of EVALSHA each: 32 queued do not fit one batch (16 KB),
    nor the room of a round trip's batches (32 KB), so they leave as
    several batches and some alone, in one write still; every count
    exact."""
    value = "v" * 60
    limits = "\n".join(f"RateLimit {20 + i}/h key=%{{HTTP:X-Key}} "
                       f"name={name(i)}" for i in range(8))
    httpd.start(conf(limits), mpm_conf=ONE_CHILD)
    c = redis_server.client()
    assert httpd.get("/small.txt", headers={"X-Key": value}).status == 200
    stats0, before = cmdstats(c), counters(httpd)
    paused(redis_server, 1500)
    with Burst(httpd, 32, headers=lambda i: {"X-Key": value}) as b:
        pass
    stats1, after = cmdstats(c), counters(httpd)
    assert b.statuses() == [200] * 19 + [429] * 13     # cap0: 20/h
    n = evalshas(stats0, stats1)
    assert 4 <= n < 32, n
    assert after["redis_decisions"] - before["redis_decisions"] == 32
    assert after["redis_errors"] == before["redis_errors"]
    for i in range(8):
        assert 0 < c.pttl(f"rl:{name(i)}:{value}") <= 3600 * 1000
    assert httpd.get("/small.txt", headers={"X-Key": value}).status == 429


def private_dirty_kb(httpd):
    """The largest private, written memory of httpd's children (kB): what
    each child holds of its own, not shared with the parent"""
    sizes = []
    for pid in rrl.child_pids(httpd.pid):
        text = open(f"/proc/{pid}/smaps_rollup").read()
        sizes.append(sum(int(kb) for kb in re.findall(
            r"^Private_Dirty:\s+(\d+) kB", text, re.M)))
    return max(sizes)


def test_pipeline_13_prefork_keeps_no_room_for_batches(httpd, redis_server):
    """A prefork child runs one request at a time, so its calls never form
    a batch: it keeps no room for them.  64 virtual hosts, each with a Redis
    of its own settings (a backend each), cost a child little more than 64
    sharing one; the room for batches (about 77 KB a node) once came to
    some 3 MB a child for them, in each of MaxRequestWorkers children."""
    if rrl.CHECKER:
        pytest.skip("httpd -X under a checker has no children to measure")
    sizes = {}
    for how in ("shared", "own"):
        vhosts = "\n".join(f"""
<VirtualHost *:${{port}}>
    ServerName v{i}.test
    RateLimitRedisTimeout connect=1s \
        command={f"{1000 + i}ms" if how == "own" else "1s"}
    RateLimit 1000/min name=per-host
</VirtualHost>""" for i in range(64))
        httpd.start("RateLimitRedis ${redis_url}\n" + vhosts, mpm="prefork")
        assert httpd.hammer(8, "/small.txt", concurrency=4) == [200] * 8
        assert httpd.get("/small.txt", host="v63.test").status == 200
        sizes[how] = private_dirty_kb(httpd)
        httpd.stop()
    more = sizes["own"] - sizes["shared"]
    assert more < 64 * 16, f"{more} kB more for 64 backends ({sizes})"
