"""plans= (SPEC 4a): per-key limits kept in Redis or in a file, changed
without a restart: a real redis-server (a real Cluster too) and real httpd
instances, several children each."""
import hashlib
import json
import os
import re
import threading
import time

import pytest

import rrl
from deploy import keyslot

KEY = "X-Api-Key"


def api(key):
    return {KEY: key}


def statuses(rs):
    return [r.status for r in rs]


def gets(httpd, n, key, path="/small.txt", **kw):
    return [httpd.get(path, headers=api(key), **kw) for _ in range(n)]


def redis_plans(limit="RateLimit 3/h key=%{HTTP:X-Api-Key} name=api "
                      "plans=redis", extra=""):
    return (f"RateLimitRedis ${{redis_url}}\n{extra}\n{limit}\n"
            + rrl.STATUS_LOCATION)


def limit_row(httpd, name="api"):
    """The limit's row of the status page (?json)"""
    page = json.loads(httpd.get("/rl-status?json").body)
    return next(l for l in page["limits"] if l["name"] == name)


# ---- plans=redis: read in the same EVALSHA ----

def test_plans_01_redis_plan_sets_the_numbers(httpd, redis_server):
    """A key's plan decides instead of the directive's RATE, in the one
    EVALSHA of the request; the headers, legacy and IETF, and
    RATELIMIT_LIMIT show the plan's numbers; a key without a plan keeps
    the directive's."""
    c = redis_server.client()
    c.set("rl:plan/api:sk_pro", "5/h burst=2")
    httpd.start(redis_plans(extra="RateLimitHeaders both"))
    before = rrl.cmdstats(c)
    rs = gets(httpd, 3, "sk_pro")
    assert statuses(rs) == [200, 200, 429]
    assert rs[0].headers["X-RateLimit-Limit"] == "5"
    assert rs[0].headers["X-RateLimit-Remaining"] == "1"
    assert rs[0].headers["RateLimit-Policy"] == '"api";q=5;w=3600'
    assert rs[0].headers["RateLimit"] == '"api";r=1;t=720'
    assert rs[2].headers["X-RateLimit-Limit"] == "5"
    assert int(rs[2].headers["Retry-After"]) == 720
    free = gets(httpd, 4, "sk_free")
    assert statuses(free) == [200] * 3 + [429]
    assert free[0].headers["X-RateLimit-Limit"] == "3"
    log = httpd.access_log(7)
    assert [e["limit"] for e in log] == ["5"] * 3 + ["3"] * 4
    assert [e["result"] for e in log] == \
        ["allowed"] * 2 + ["denied"] + ["allowed"] * 3 + ["denied"]
    # one command per request, the plan read inside it
    after = rrl.cmdstats(c)
    evalsha = after.get("evalsha", 0) - before.get("evalsha", 0)
    assert evalsha - (after.get("script|load", 0)
                      - before.get("script|load", 0)) == 7
    assert c.get("rl:plan/api:sk_pro") == b"5/h burst=2"
    assert c.pttl("rl:plan/api:sk_pro") == -1
    row = limit_row(httpd)
    assert row["plans"] == "redis"
    assert row["plan_decisions"] == 3
    assert row["plan_errors"] == 0


class Traffic:
    """Requests for one key from threads on fresh connections (so that
    every child of every instance gets some), until stopped; what each
    request saw is in the access logs, with the child that served it."""

    def __init__(self, servers, key, threads=4):
        self.servers, self.key = servers, key
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(h,),
                                          daemon=True)
                         for h in servers for _ in range(threads)]
        self.errors = []

    def _run(self, h):
        while not self._stop.is_set():
            try:
                h.get("/small.txt", headers=api(self.key), timeout=10)
            except OSError as e:
                self.errors.append(e)

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(30)


def seen_between(h, start, end):
    """Access-log entries of requests h began in [start, end)"""
    return [e for e in h.access_log(timeout=0.5) if start <= e["t"] < end]


@pytest.mark.slow
@pytest.mark.skipif(rrl.CHECKER != "", reason="every child: httpd -X has "
                    "none")
def test_plans_02_changes_seen_by_every_child_of_two_instances(
        httpd, httpd_factory, redis_server):
    """Raised, lowered, set to off and removed under traffic: within a
    second every child of both instances decides by the new plan, deny
    cache included (a denied key raised is let through)."""
    c = redis_server.client()
    snippet = redis_plans()
    servers = [httpd.start(snippet), httpd_factory("peer").start(snippet)]
    children = {h: rrl.child_pids(h.pid) for h in servers}
    assert all(len(p) >= 2 for p in children.values()), children
    key = "rl:plan/api:sk_changing"
    # what requests that begin a second after each change must all see:
    # (status, X-RateLimit-Limit as logged, limit name as logged).  Raised:
    # out of the deny cache, at once at the new rate, though the key spent
    # its hour (gcra owes no more than the new burst)
    steps = [("1000000/min", 200, "1000000", "api"),
             ("2/h", 429, "2", "api"),              # lowered
             ("off", 200, "-", "-"),                # off: no limit applies
             (None, 429, "3", "api")]               # removed: the directive
    with Traffic(servers, "sk_changing") as t:
        time.sleep(1)                  # 3/h spent: denied, cached
        for plan, status, limit, name in steps:
            changed = time.time()
            if plan is None:
                c.delete(key)
            else:
                c.set(key, plan)
            time.sleep(2.5)
            for h in servers:
                seen = seen_between(h, changed + 1.2, changed + 2.5)
                assert seen, (plan, h)
                wrong = [e for e in seen if (e["status"], e["limit"],
                                             e["name"]) != (status, limit,
                                                            name)]
                assert not wrong, (plan, wrong[:3])
                assert {e["pid"] for e in seen} >= children[h], plan
    assert not t.errors
    assert c.get(key) is None


@pytest.mark.slow
@pytest.mark.parametrize("alg", ["gcra", "token-bucket", "fixed-window",
                                 "sliding-window"])
def test_plans_03_exactly_the_plan_across_instances(httpd, httpd_factory,
                                                    redis_server, alg):
    """32 requests at once, 16 on each of two instances: exactly the plan's
    number is allowed, whatever the algorithm; every key the module wrote
    expires, the plan key is left as it was."""
    if alg in ("fixed-window", "sliding-window"):
        left = 3600 - time.time() % 3600
        if left < 30:
            time.sleep(left + 0.1)
    c = redis_server.client()
    c.set("rl:plan/api:sk_partner", "40/h")
    snippet = redis_plans(f"RateLimit 5/h key=%{{HTTP:X-Api-Key}} name=api "
                          f"algorithm={alg} plans=redis")
    servers = [httpd.start(snippet), httpd_factory("peer").start(snippet)]
    codes = rrl.hammer_together(servers, 60, concurrency=16,
                                headers=api("sk_partner"))
    all_codes = codes[servers[0]] + codes[servers[1]]
    assert all_codes.count(200) == 40, [codes[h].count(200) for h in servers]
    assert all_codes.count(429) == 80
    for k in c.keys("*"):
        if k.startswith(b"rl:plan/"):
            assert c.pttl(k) == -1 and c.get(k) == b"40/h"
        else:
            assert 0 < c.pttl(k) <= 2 * 3600 * 1000, k


def test_plans_04_a_bad_plan_is_logged_and_the_directive_applies(
        httpd, httpd_factory, redis_server, env):
    """A plan that does not parse: the directive's RATE decides; one line
    a minute per limit (all children together) names the limit and its
    virtual host, never the value or the key; the status page counts it."""
    env.expect_log("RRL00060")
    c = redis_server.client()
    c.set("rl:plan/api:sk_live_secret", "100/x")
    snippet = redis_plans(extra="RateLimitDenyCache off")   # all read it
    servers = [httpd.start(snippet), httpd_factory("peer").start(snippet)]
    for h in servers:
        rs = [h.get("/small.txt", headers=api("sk_live_secret"))
              for _ in range(3)]
        assert rs[0].headers["X-RateLimit-Limit"] == "3"
    assert statuses(gets(httpd, 2, "sk_live_secret")) == [429, 429]
    for h in servers:
        lines = [ln for ln in h.error_log_lines() if "RRL00060" in ln]
        assert len(lines) == 1, lines
        assert "RateLimit api:" in lines[0]
        assert "sk_live_secret" not in lines[0] and "100/x" not in lines[0]
        plan_id = hashlib.sha1(b"rl:plan/api:sk_live_secret").hexdigest()
        assert plan_id[:12] in lines[0]
        assert "[redis_ratelimit:error]" in lines[0]
    row = limit_row(httpd)
    assert row["plan_errors"] == 5 and row["plan_decisions"] == 0
    assert limit_row(servers[1])["plan_errors"] == 3
    # fixed: the plan decides at once (what the key spent carries on)
    c.set("rl:plan/api:sk_live_secret", "10/h burst=20")
    r = httpd.get("/small.txt", headers=api("sk_live_secret"))
    assert r.status == 200 and r.headers["X-RateLimit-Limit"] == "10"
    assert r.headers["X-RateLimit-Remaining"] == "9"


def test_plans_05_status_page_counts_plans(httpd, redis_server):
    """Per limit: its plans, the decisions a plan made, plan errors; in
    HTML, ?auto, ?json and ?metrics."""
    c = redis_server.client()
    c.set("rl:plan/api:a", "9/h")
    c.set("rl:plan/api:b", "off")
    c.set("rl:plan/api:x", "nonsense")
    httpd.start(redis_plans(extra="LogLevel crit"))
    for k in ("a", "a", "b", "x", "none"):
        httpd.get("/small.txt", headers=api(k))
    httpd.access_log(5)       # counted at log time, after each response
    auto = dict(ln.split(": ", 1)
                for ln in httpd.get("/rl-status?auto").text.splitlines())
    assert auto["Limit[api] Plans"] == "redis"
    assert auto["Limit[api] PlanDecisions"] == "3"      # a, a, b (off)
    assert auto["Limit[api] PlanErrors"] == "1"
    assert auto["Limit[api] Allowed"] == "4"            # b: not limited
    metrics = httpd.get("/rl-status?metrics").text
    assert 'redis_ratelimit_limit_plan_decisions_total{limit="api",' \
           'vhost=""} 3' in metrics
    assert 'redis_ratelimit_limit_plan_errors_total{limit="api",' \
           'vhost=""} 1' in metrics
    html = httpd.get("/rl-status").text
    assert "<th>Decided by a plan</th>" in html and "<td>redis</td>" in html
    # a request whose only limit is off counts as no request limited
    assert auto["Checked"] == "4"


# ---- plans=FILE: one table in shared memory, read again when it changes ----

def plans_file(httpd, text, name="plans.txt"):
    path = httpd.root / name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    os.replace(tmp, path)        # as an operator should: whole or not at all
    return path


def file_plans(path, limit="RateLimit 3/h key=%{HTTP:X-Api-Key} name=api",
               extra=""):
    return f"{extra}\n{limit} plans={path}\n" + rrl.STATUS_LOCATION


def wait_limit(httpd, key, want, timeout=3, path="/small.txt"):
    """The X-RateLimit-Limit a key's requests show, once it is want"""
    return rrl.wait_for(
        lambda: httpd.get(path, headers=api(key))
        .headers.get("X-RateLimit-Limit") == want, timeout,
        f"{key}'s plan to become {want}")


def wait_log(httpd, pattern, timeout=3):
    """A line of the error log, waited for with requests (a child looks at
    the file when a request needs it)"""
    def seen():
        httpd.get("/small.txt", headers=api("sk_probe"))
        return next((ln for ln in httpd.error_log_lines()
                     if re.search(pattern, ln)), None)
    return rrl.wait_for(seen, timeout, pattern)


def test_plans_06_file_in_the_local_store(httpd, env):
    """A plans file for the local store: its plans and off apply; an edit
    is obeyed within a second or so, by every child; a bad edit is logged
    with its line and the old plans stay; a fixed file is read again."""
    env.expect_log("RRL00062")
    path = plans_file(httpd, "# plans of the API\n"
                             "sk_pro 5/h burst=2   # pro\n"
                             "\n"
                             "sk_vip off\n")
    httpd.start(file_plans(path))
    pro = gets(httpd, 3, "sk_pro")
    assert statuses(pro) == [200, 200, 429]
    assert pro[0].headers["X-RateLimit-Limit"] == "5"
    assert pro[0].headers["X-RateLimit-Remaining"] == "1"
    vip = gets(httpd, 10, "sk_vip")
    assert statuses(vip) == [200] * 10
    assert not any("X-RateLimit-Limit" in r.headers for r in vip)
    assert statuses(gets(httpd, 4, "sk_free")) == [200] * 3 + [429]
    # an edit: sk_free raised, sk_vip given a plan
    plans_file(httpd, "sk_pro 5/h burst=2\nsk_vip 1/h\nsk_free 50/h\n")
    wait_limit(httpd, "sk_free", "50")
    assert httpd.get("/small.txt", headers=api("sk_vip")) \
        .headers["X-RateLimit-Limit"] == "1"
    line = wait_log(httpd, "RRL00063")
    assert "3 plans in force" in line and str(path) in line
    # a bad edit is refused whole, its line named; the old plans stay
    plans_file(httpd, "sk_pro 6/h\nsk_free 100/x\nsk_vip off\n")
    bad = wait_log(httpd, "RRL00062")
    assert f"{path}:2:" in bad and "'100/x' is not a rate" in bad
    assert "sk_free" not in bad and "sk_pro" not in bad
    time.sleep(1.1)
    assert httpd.get("/small.txt", headers=api("sk_pro")) \
        .headers["X-RateLimit-Limit"] == "5"
    assert [ln for ln in httpd.error_log_lines()
            if "RRL00062" in ln] == [bad]          # once per version
    assert limit_row(httpd)["plan_errors"] == 1
    plans_file(httpd, "sk_pro 6/h\nsk_free 100/h\n")
    wait_limit(httpd, "sk_pro", "6")
    assert limit_row(httpd)["plans"] == f"{path} (2 plans, room for 1024)"


def test_plans_07_file_for_redis_on_two_instances(httpd, httpd_factory,
                                                  redis_server):
    """The same file on two instances that share Redis: the script gets the
    plan's numbers, exactly its number is allowed in all; still one
    command per request."""
    c = redis_server.client()
    servers = [httpd, httpd_factory("peer")]
    for h in servers:
        path = plans_file(h, "sk_shared 20/h\n")
        h.start("RateLimitRedis ${redis_url}\n" + file_plans(path))
    before = rrl.cmdstats(c)
    results = rrl.hammer_together(servers, 20, headers=api("sk_shared"))
    codes = results[servers[0]] + results[servers[1]]
    assert codes.count(200) == 20 and codes.count(429) == 20
    after = rrl.cmdstats(c)
    loads = after.get("script|load", 0) - before.get("script|load", 0)
    assert after["evalsha"] - before.get("evalsha", 0) <= 40 + loads
    assert c.keys("rl:plan/*") == []
    assert 0 < c.pttl("rl:api:sk_shared") <= 3600 * 1000


@pytest.mark.slow
def test_plans_08_a_file_of_100000_lines(httpd, httpd_factory, env):
    """100,000 plans: read at startup, every one found at the same cost,
    read again after an edit by one child into the table all share."""
    lines = [f"sk_{i:06d} {i % 997 + 4}/h" for i in range(100000)]
    path = plans_file(httpd, "\n".join(lines) + "\n")
    httpd.start(file_plans(path, extra="LogLevel warn redis_ratelimit:debug"),
                mpm_conf=rrl.MPM_CONF["event"])
    for i in (0, 1, 50000, 99999):
        r = httpd.get("/small.txt", headers=api(f"sk_{i:06d}"))
        assert r.headers["X-RateLimit-Limit"] == str(i % 997 + 4), i
    assert httpd.get("/small.txt", headers=api("sk_none")) \
        .headers["X-RateLimit-Limit"] == "3"
    assert "100000 plans, room for 200000" in \
        httpd.wait_error_log("RRL00068")
    lines[99999] = "sk_099999 7777/h"
    edited = time.monotonic()
    plans_file(httpd, "\n".join(lines) + "\n")
    wait_limit(httpd, "sk_099999", "7777", timeout=10)
    took = time.monotonic() - edited
    assert "100000 plans in force" in wait_log(httpd, "RRL00063")
    slowest = max(e["us"] for e in httpd.access_log()) / 1000
    print(f"100,000 plans read again and obeyed {took:.2f} s after the "
          f"edit; the request that read them took {slowest:.0f} ms")
    # one table for all: the children hold no copy of their own
    assert took < 10


def test_plans_09_config_errors(httpd):
    """apachectl -t: a bad plans file stops it, with the file and line
    (and the RateLimit that uses it); so does a missing file, a plan that
    does not fit the limit, and two limits of one name whose plans differ."""
    good = plans_file(httpd, "a 10/h\n", "good.txt")
    cases = [
        (plans_file(httpd, "a 10/h\nb 5/x\n", "bad.txt"),
         "RateLimit 3/h key=%{HTTP:X-Api-Key} name=api",
         [":2: '5/x' is not a rate"]),
        (httpd.root / "missing.txt",
         "RateLimit 3/h key=%{HTTP:X-Api-Key} name=api",
         ["missing.txt: cannot be read"]),
        (plans_file(httpd, "# fine\na 10/h\nb 10/h burst=2\n", "burst.txt"),
         "RateLimit 3/h algorithm=fixed-window key=%{HTTP:X-Api-Key} "
         "name=api", [":3: burst= has no meaning for algorithm=fixed-window",
                      "for RateLimit name=api"]),
        (plans_file(httpd, "a 10/h\na 20/h\n", "twice.txt"),
         "RateLimit 3/h key=%{HTTP:X-Api-Key} name=api",
         [":2: its value is given on line 1 already"]),
        (plans_file(httpd, "a\n", "lonely.txt"),
         "RateLimit 3/h key=%{HTTP:X-Api-Key} name=api",
         [":1: a value without a plan"]),
        (plans_file(httpd, "a 10/h cost=2\n", "cost.txt"),
         "RateLimit 3/h key=%{HTTP:X-Api-Key} name=api",
         [":1: 'cost=2' is not accepted after the rate"]),
    ]
    for path, limit, words in cases:
        rc, out = httpd.configtest(f"{limit} plans={path}")
        assert rc != 0, out
        assert "RRL00061" in out and str(path) in out, out
        for w in words:
            assert w in out, out
        assert "name=api at" in out, out
    rc, out = httpd.configtest(
        f"<Location /a>\nRateLimit 3/h name=x plans={good}\n</Location>\n"
        "<Location /b>\nRateLimit 3/h name=x plans=redis\n</Location>\n")
    assert rc != 0 and "RRL00009" in out, out
    rrl.assert_config_error(httpd, "RateLimit 3/h plans=",
                            ["is not an option"])
    rc, out = httpd.configtest(f"RateLimit 3/h plans={good}")
    assert rc == 0, out


def test_plans_10_redis_down_local_uses_the_last_plan_seen(httpd,
                                                           redis_server,
                                                           env):
    """While Redis fails and RateLimitOnError local decides, a child
    decides each key by the last plan Redis gave it (off included), a key
    it never saw by the directive's RATE."""
    env.expect_log("RRL00013", "RRL00019")
    c = redis_server.client()
    c.set("rl:plan/api:sk_pro", "7/h")
    c.set("rl:plan/api:sk_vip", "off")
    c.set("rl:plan/api:sk_gone", "9/h")
    httpd.start(redis_plans(extra="RateLimitOnError local\n"
                                  "RateLimitRedisTimeout connect=50ms "
                                  "command=50ms"),
                mpm_conf=rrl.ONE_CHILD)
    for k in ("sk_pro", "sk_vip", "sk_gone"):
        assert httpd.get("/small.txt", headers=api(k)).status == 200
    c.delete("rl:plan/api:sk_gone")        # seen without a plan since
    assert httpd.get("/small.txt", headers=api("sk_gone")) \
        .headers["X-RateLimit-Limit"] == "3"
    redis_server.stop()
    pro = gets(httpd, 8, "sk_pro")
    assert statuses(pro) == [200] * 7 + [429]
    assert {r.headers["X-RateLimit-Limit"] for r in pro} == {"7"}
    assert statuses(gets(httpd, 10, "sk_vip")) == [200] * 10
    assert statuses(gets(httpd, 4, "sk_gone")) == [200] * 3 + [429]
    assert statuses(gets(httpd, 4, "sk_new")) == [200] * 3 + [429]
    log = httpd.access_log(30)
    assert [e["result"] for e in log[4:12]] == \
        ["local-allowed"] * 7 + ["local-denied"]
    assert [e["limit"] for e in log[4:12]] == ["7"] * 8
    assert {e["name"] for e in log[12:22]} == {"-"}      # off: not limited


# ---- Cluster: the plan key in the counting key's slot ----

def test_plans_11_cluster_plan_beside_its_key(httpd, cluster_factory):
    """Under Redis Cluster the plan key carries the counting key's hash tag:
    the same slot, so the same node, read in the same EVALSHA; a plan
    changed while its slot moves (MOVED) is obeyed on the new node."""
    cl = cluster_factory()
    httpd.vars["redis_url"] = cl.url()
    httpd.start(redis_plans(extra="RateLimitDenyCache off"))
    client = cl.client()
    plan = "rl:plan/api:{sk_moving}"
    client.set(plan, "5/h")
    rs = gets(httpd, 6, "sk_moving")
    assert statuses(rs) == [200] * 5 + [429]
    assert rs[0].headers["X-RateLimit-Limit"] == "5"
    counting = "rl:api:{sk_moving}"
    node = cl.node_for_key(counting)
    assert keyslot(plan) == keyslot(counting)
    assert counting in cl.all_keys()[node] and plan in cl.all_keys()[node]
    # the slot moves to another node under traffic (ASK, then MOVED), and
    # the plan changes on the way
    slot = keyslot(counting)
    dst = next(n for n in cl.nodes if n is not node)
    with Traffic([httpd], "sk_moving", threads=2) as t:
        time.sleep(0.3)
        cl.begin_migration(slot, dst)          # keys moved: ASK from here
        client.set(plan, "100000/h burst=200000")
        time.sleep(0.3)
        cl.finish_migration(slot)              # MOVED from here
        done = time.time()
        time.sleep(0.5)
    assert not t.errors
    log = httpd.access_log()
    assert {e["status"] for e in log} <= {200, 429}
    after = [e for e in log if e["t"] > done]
    assert after and {(e["status"], e["limit"]) for e in after} == \
        {(200, "100000")}
    keys = cl.all_keys()
    assert counting in keys[dst] and plan in keys[dst]
    client = cl.client()
    assert client.get(plan) == b"100000/h burst=200000"
    assert client.pttl(plan) == -1
    assert 0 < client.pttl(counting) <= 7200 * 1000    # the plan's burst
    log = "\n".join(httpd.error_log_lines())
    assert "RRL00013" not in log and "RRL00019" not in log


# ---- what keys are: IPv6 groups, long values hashed ----

def test_plans_12_ipv6_and_hashed_values(httpd, redis_server):
    """A plan's key is its counting key's, with plan/ after the prefix: an
    IPv6 client stands for its /64, a long key value for its SHA-1, in
    Redis and in a file alike."""
    if not rrl.ipv6_usable():
        pytest.skip("no IPv6 loopback")
    c = redis_server.client()
    long_key = "sk_" + "x" * 100
    hashed = hashlib.sha1(long_key.encode()).hexdigest()
    c.set("rl:plan/ip:::/64", "4/h")
    c.set(f"rl:plan/api:{hashed}", "6/h")
    path = plans_file(httpd, f"::/64 8/h\n{long_key} 9/h\n")
    limits = {"ri": "name=ip plans=redis",
              "rk": "key=%{HTTP:X-Api-Key} name=api plans=redis",
              "fi": f"name=ipf plans={path}",
              "fk": f"key=%{{HTTP:X-Api-Key}} name=apif plans={path}"}
    httpd.start("RateLimitRedis ${redis_url}\n" + "".join(
        f"<Location /{where}>\n    RateLimit 3/h {limit}\n</Location>\n"
        for where, limit in limits.items()))
    for where in limits:
        (httpd.docroot / where).write_text(f"{where}\n")
    for where, want in (("ri", "4"), ("fi", "8")):
        r = httpd.get(f"/{where}", ipv6=True)
        assert r.headers["X-RateLimit-Limit"] == want, where
    for where, want in (("rk", "6"), ("fk", "9")):
        r = httpd.get(f"/{where}", headers=api(long_key))
        assert r.headers["X-RateLimit-Limit"] == want, where
    # a long value in the file by its SHA-1, as its key has it
    other = "sk_" + "y" * 100
    plans_file(httpd, f"::/64 8/h\n{long_key} 9/h\n"
                      f"{hashlib.sha1(other.encode()).hexdigest()} 11/h\n")
    wait_limit(httpd, other, "11", path="/fk")
    assert c.exists("rl:ip:::/64", f"rl:api:{hashed}") == 2
    assert long_key.encode() not in b"".join(c.keys("*"))


def test_plans_13_count_reservations_under_a_plan(httpd, redis_server):
    """count=: a request reserves at its plan's numbers and gives back at
    the same numbers, in the one EVALSHA at log time."""
    c = redis_server.client()
    c.set("rl:plan/api:sk_login", "3/h")
    httpd.start(redis_plans("RateLimit 1/h key=%{HTTP:X-Api-Key} name=api "
                            "plans=redis count=404"))
    assert statuses(gets(httpd, 5, "sk_login")) == [200] * 5   # given back
    assert statuses(gets(httpd, 4, "sk_login", path="/missing")) == \
        [404] * 3 + [429]
    assert 0 < c.pttl("rl:api:sk_login") <= 3600 * 1000
