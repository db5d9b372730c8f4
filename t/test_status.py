"""SetHandler redis-ratelimit-status: known traffic, then the same numbers
in every format (HTML, ?auto, ?json, ?metrics), ?health following Redis,
counters shared by all children and surviving their recycling."""
import json
import re
import shutil
import subprocess
import time
import urllib.parse

import pytest

import rrl

STATUS = """
<Location "/rl-status">
    SetHandler redis-ratelimit-status
    ${status_extra}
</Location>
"""


def status_conf(body, status_extra=""):
    return body + STATUS.replace("${status_extra}", status_extra)


def auto(httpd):
    r = httpd.get("/rl-status?auto")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    out = {}
    for line in r.text.splitlines():
        key, _, value = line.partition(": ")
        out[key] = value
    return out


def status_json(httpd):
    r = httpd.get("/rl-status?json")
    assert r.status == 200
    assert r.headers["Content-Type"] == "application/json"
    return json.loads(r.body)


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text format, line by line: {(name, labels): value}, with
    every sample announced by its # HELP and # TYPE."""
    types, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            assert len(line.split(" ", 3)) == 4, line
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram"), line
            assert name not in types, f"{name} typed twice"
            types[name] = kind
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, _, labels, value = m.groups()
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or base in types, f"{name} has no # TYPE"
        assert name.startswith("redis_ratelimit_")
        float(value)
        key = (name, tuple(sorted(LABEL.findall(labels or ""))))
        assert key not in samples, f"{key} twice"
        samples[key] = float(value)
    return types, samples


def metric(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


# ---- known traffic, every format ----

@pytest.mark.parametrize("mpm", ["prefork", "event"])
def test_status_01_known_traffic_in_every_format(httpd, redis_server, mpm):
    httpd.start(status_conf("""
RateLimitRedis ${redis_url}
RateLimitExempt 127.0.0.2
RateLimit 5/min name=site
<Location /dir>
    RateLimit 2/min name=dry
    RateLimitMode dry-run
</Location>
"""), mpm=mpm)
    # 12 to the site: 5 allowed, 7 denied, over several connections
    codes = httpd.hammer(12, "/small.txt", concurrency=4)
    assert sorted(codes) == [200] * 5 + [429] * 7
    # 3 exempt, from another address
    for _ in range(3):
        assert httpd.get("/small.txt", source="127.0.0.2").status == 200
    # dry-run, from a third address: dry allows 2, would deny 2 (and
    # site, allowing those, spends nothing for them)
    for _ in range(4):
        assert httpd.get("/dir/", source="127.0.0.3").status == 200
    httpd.access_log(19)

    a = auto(httpd)
    assert a["Checked"] == "16"
    assert (a["Allowed"], a["Denied"], a["Exempt"], a["DryRunDenied"]) == \
        ("7", "7", "3", "2")
    assert int(a["Checked"]) == sum(int(a[k]) for k in (
        "Allowed", "Denied", "DryRunDenied", "FallbackAllowed",
        "FallbackDenied", "LocalAllowed", "LocalDenied"))
    assert a["Redis[0] URL"] == redis_server.url()
    assert a["Redis[0] Up"] == "1"
    assert a["Limit[site] Allowed"] == "7"
    assert a["Limit[site] Denied"] == "7"
    assert a["Limit[dry] Allowed"] == "2"
    assert a["Limit[dry] DryRunDenied"] == "2"
    # every decision is Redis's or a deny-cache hit; requests queued
    # together share a round trip (a batch), so there are no more round
    # trips than decisions (a NOSCRIPT adds a SCRIPT LOAD and a second
    # EVALSHA)
    trips = int(a["RedisRoundTrips"]) - 2 * int(a["ScriptLoads"])
    assert int(a["DenyCacheHits"]) + int(a["RedisDecisions"]) == 16
    assert 1 <= trips <= int(a["RedisDecisions"])

    j = status_json(httpd)
    c = j["counters"]
    assert (c["checked"], c["allowed"], c["denied"], c["exempt"],
            c["dry_run_denied"]) == (16, 7, 7, 3, 2)
    assert j["redis"][0]["url"] == redis_server.url()
    assert j["redis"][0]["up"] is True
    limits = {x["name"]: x for x in j["limits"]}
    assert (limits["site"]["allowed"], limits["site"]["denied"]) == (7, 7)
    assert limits["dry"]["dry_run_denied"] == 2
    assert j["redis_latency"]["count"] == \
        c["redis_round_trips"] - 2 * c["script_loads"]

    r = httpd.get("/rl-status?metrics")
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    types, samples = parse_metrics(r.text)
    m = "redis_ratelimit_requests_total"
    assert metric(samples, m, result="allowed") == 7
    assert metric(samples, m, result="denied") == 7
    assert metric(samples, m, result="exempt") == 3
    assert metric(samples, m, result="dry-run-denied") == 2
    assert metric(samples, "redis_ratelimit_requests_checked_total") == 16
    lm = "redis_ratelimit_limit_requests_total"
    assert metric(samples, lm, limit="site", vhost="", result="allowed") == 7
    assert metric(samples, lm, limit="dry", vhost="",
                  result="dry-run-denied") == 2
    assert metric(samples, "redis_ratelimit_redis_up",
                  redis=redis_server.url()) == 1

    html = httpd.get("/rl-status").text
    assert re.search(r"<h1>Rate limiting status for [\w.:-]+</h1>", html)
    assert re.search(r'<td>Allowed</td><td class="n">7</td>', html)
    assert re.search(r'<td>DryRunDenied</td><td class="n">2</td>', html)
    assert re.search(r'<td>site</td><td>\(all\)</td><td>5/min</td>.*'
                     r'<td class="n">7</td><td class="n">7</td>', html)
    assert redis_server.url() in html


def test_status_02_metrics_are_valid_prometheus(httpd, redis_server):
    httpd.start(status_conf("""
RateLimitRedis ${redis_url}
RateLimit 5/min name=site
<VirtualHost *:${port}>
    ServerName shop.test
    DocumentRoot "${docroot}"
    RateLimit 3/min name=shop
    <Location "/rl-status">
        SetHandler redis-ratelimit-status
    </Location>
</VirtualHost>
"""))
    for _ in range(4):
        httpd.get("/small.txt", headers={"Host": "shop.test"})
    httpd.access_log(4)
    text = httpd.get("/rl-status?metrics").text
    types, samples = parse_metrics(text)
    assert types["redis_ratelimit_redis_latency_seconds"] == "histogram"
    assert types["redis_ratelimit_requests_total"] == "counter"
    # a real histogram: cumulative buckets, +Inf equal to the count
    buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in samples.items()
                      if k[0] == "redis_ratelimit_redis_latency_seconds_bucket"),
                     key=lambda x: x[0])
    assert buckets[0][0] == 0.0001 and buckets[-1][0] == float("inf")
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))
    count = metric(samples, "redis_ratelimit_redis_latency_seconds_count")
    assert buckets[-1][1] == count == 4
    assert metric(samples, "redis_ratelimit_redis_latency_seconds_sum") > 0
    # labelled by limit name and virtual host
    lm = "redis_ratelimit_limit_requests_total"
    assert metric(samples, lm, limit="shop", vhost="shop.test",
                  result="allowed") == 3
    assert metric(samples, lm, limit="shop", vhost="shop.test",
                  result="denied") == 1
    promtool = shutil.which("promtool")
    if promtool:                          # Debian's prometheus package
        p = subprocess.run([promtool, "check", "metrics"], input=text,
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr


# ---- health ----

def test_status_03_health_follows_redis(httpd, redis_server, env):
    env.expect_log("RRL00013", "RRL00019")
    httpd.start(status_conf("RateLimitRedis ${redis_url}\n"
                            "RateLimitRedisTimeout connect=100ms "
                            "command=100ms\nRateLimit 5/min name=h\n"))
    r = httpd.get("/rl-status?health")
    assert (r.status, r.text) == (200, "OK\n")
    redis_server.stop()
    r = httpd.get("/rl-status?health")
    assert r.status == 503
    assert r.text.startswith(f"Redis unreachable: {redis_server.url()}")
    rrl.wait_for(lambda: auto(httpd)["Redis[0] Up"] == "0", 5, "Up: 0")
    redis_server.start(port=redis_server.port)
    rrl.wait_for(lambda: httpd.get("/rl-status?health").status == 200, 8,
                 "health to come back")
    assert auto(httpd)["Redis[0] Up"] == "1"


def test_status_04_health_without_redis(httpd):
    httpd.start(status_conf("RateLimit 5/min name=local"))
    r = httpd.get("/rl-status?health")
    assert (r.status, r.text) == (200, "OK\n")
    a = auto(httpd)
    assert "Redis[0] URL" not in a
    assert "No <code>RateLimitRedis</code>" in httpd.get("/rl-status").text


# ---- the page itself; children; restarts ----

def test_status_05_status_page_not_limited_or_counted(httpd):
    httpd.start(status_conf("RateLimit 1/min name=tight"))
    assert httpd.get("/small.txt").status == 200
    for _ in range(10):
        r = httpd.get("/rl-status?auto")
        assert r.status == 200
        assert "X-RateLimit-Limit" not in r.headers
    assert auto(httpd)["Checked"] == "1"
    # unless configured so: a limit in its own section
    httpd.start(status_conf("RateLimit 100/min name=loose",
                            "RateLimit 2/min name=page"))
    rs = [httpd.get("/rl-status?auto") for _ in range(3)]
    assert [r.status for r in rs] == [200, 200, 429]
    assert rs[0].headers["X-RateLimit-Limit"] == "2"


def test_status_06_counters_survive_recycled_children(httpd):
    httpd.start(status_conf("RateLimit 1000/min name=recycle"),
                mpm="prefork", mpm_conf="""
StartServers 2
MinSpareServers 2
MaxSpareServers 4
MaxRequestWorkers 8
MaxConnectionsPerChild 1
""")
    pids = set()
    for _ in range(10):
        assert httpd.get("/small.txt").status == 200
    for e in httpd.access_log(10):
        pids.add(e["pid"])
    assert len(pids) >= 5           # new children served them
    assert auto(httpd)["Allowed"] == "10"


def test_status_07_graceful_restart_keeps_full_restart_resets(httpd):
    conf = status_conf("RateLimit 1000/min name=g")
    httpd.start(conf)
    for _ in range(3):
        httpd.get("/small.txt")
    httpd.access_log(3)
    httpd.reload(conf)
    assert auto(httpd)["Allowed"] == "3"
    httpd.start(conf)
    assert auto(httpd)["Allowed"] == "0"


def test_status_08_password_never_shown(httpd, redis_factory):
    r = redis_factory(password="hunter2-secret")
    httpd.start(status_conf(f"RateLimitRedis {r.url()}\n"
                            "RateLimit 5/min name=pw\n"))
    httpd.get("/small.txt")
    masked = f"redis://:****@127.0.0.1:{r.port}"
    for q in ("", "?auto", "?json", "?metrics", "?health"):
        resp = httpd.get("/rl-status" + q)
        assert "hunter2-secret" not in resp.text + str(resp.headers), q
        if q != "?health":
            assert masked in resp.text, q
    text = "\n".join(httpd.error_log_lines())
    assert "hunter2-secret" not in text


def test_status_09_refresh_and_methods(httpd):
    httpd.start(status_conf("RateLimit 5/min name=x"))
    r = httpd.get("/rl-status?refresh=5")
    assert r.headers["Refresh"] == "5"
    r = httpd.get("/rl-status?refresh=0")
    assert r.headers["Refresh"] == "1"
    assert httpd.get("/rl-status", method="HEAD").status == 200
    assert httpd.get("/rl-status", method="PUT").status == 405


# ---- the limits table, sized to the configuration ----

def test_status_10_every_pair_of_many_vhosts_has_its_row(httpd):
    """300 virtual hosts, each its own limit, and the server's: a row for
    every (name, vhost) pair of the configuration, whatever the traffic's
    order, and each counts (the counters once stopped at 256 pairs, the
    rest added up under "(others)")"""
    n = 300
    vhosts = "\n".join(f"""
<VirtualHost *:${{port}}>
    ServerName v{i}.test
    RateLimit 10/min name=per-host
</VirtualHost>""" for i in range(n))
    httpd.start(status_conf(vhosts + "\nRateLimit 1000/min name=all\n"))
    hosts = [f"v{i}.test" for i in reversed(range(n))]
    for h in hosts:
        assert httpd.get("/small.txt", host=h).status == 200
    httpd.access_log(n)
    rows = {(x["name"], x["vhost"]): x for x in status_json(httpd)["limits"]}
    assert len(rows) == n + 1
    assert "(others)" not in {name for name, _ in rows}
    for h in hosts:
        assert rows[("per-host", h)]["allowed"] == 1, h
        assert rows[("per-host", h)]["rate"] == "10/min"
    assert rows[("all", "")]["allowed"] == n
    # a graceful restart keeps each pair's counts; one more vhost gets its
    # own row too
    more = vhosts + """
<VirtualHost *:${port}>
    ServerName new.test
    RateLimit 10/min name=per-host
</VirtualHost>"""
    httpd.reload(status_conf(more + "\nRateLimit 1000/min name=all\n"))
    assert httpd.get("/small.txt", host="new.test").status == 200
    httpd.access_log(1)
    rows = {(x["name"], x["vhost"]): x for x in status_json(httpd)["limits"]}
    assert len(rows) == n + 2
    assert rows[("per-host", "v7.test")]["allowed"] == 1
    assert rows[("per-host", "new.test")]["allowed"] == 1
    assert rows[("all", "")]["allowed"] == n + 1
    a = auto(httpd)
    assert a["Limit[per-host@v299.test] Allowed"] == "1"


def test_status_11_limits_table_says_what_each_limit_is(httpd):
    """Rate, burst, algorithm, key and where it is defined, in HTML, ?json
    and ?auto; text cells aligned left, numbers right"""
    snippet = status_conf("""
RateLimit 100/h burst=20 name=site
<Location /dir>
    RateLimit 5/min algorithm=fixed-window key=%{HTTP:X-Api-Key} name=api
</Location>
<Location /small.txt>
    RateLimit 5/min algorithm=fixed-window key=%{HTTP:X-Api-Key} name=api
</Location>
""")
    httpd.start(snippet)
    text = httpd.render(snippet).splitlines()
    conf = str(httpd.conf)
    site_at = f"{conf}:{text.index('RateLimit 100/h burst=20 name=site') + 1}"
    api_lines = [n for n, ln in enumerate(text, 1) if "name=api" in ln]
    api_at = [f"{conf}:{n}" for n in api_lines]
    httpd.get("/small.txt", headers={"X-Api-Key": "k"})
    httpd.access_log(1)

    limits = {x["name"]: x for x in status_json(httpd)["limits"]}
    site, api = limits["site"], limits["api"]
    assert (site["rate"], site["count"], site["period_seconds"],
            site["burst"], site["algorithm"], site["key"],
            site["defined"]) == ("100/h", 100, 3600, 20, "gcra",
                                 "%{REMOTE_ADDR}", [site_at])
    assert (api["rate"], api["burst"], api["algorithm"], api["key"],
            api["defined"]) == ("5/min", None, "fixed-window",
                                "%{HTTP:X-Api-Key}", api_at)
    assert (site["allowed"], api["allowed"]) == (1, 1)

    a = auto(httpd)
    assert a["Limit[site] Rate"] == "100/h"
    assert a["Limit[site] Burst"] == "20"
    assert a["Limit[site] Algorithm"] == "gcra"
    assert a["Limit[site] Key"] == "%{REMOTE_ADDR}"
    assert a["Limit[site] Defined"] == site_at
    assert "Limit[api] Burst" not in a
    assert a["Limit[api] Defined"] == ", ".join(api_at)

    html = httpd.get("/rl-status").text
    row = re.search(r"<tr><td>api</td>.*</tr>", html).group(0)
    cells = re.findall(r"<td( class=\"n\")?>(.*?)</td>", row)
    assert [c[1] for c in cells[:7]] == [
        "api", "(all)", "5/min", "", "fixed-window",
        "<code>%{HTTP:X-Api-Key}</code>", "<br>".join(api_at)]
    # numbers right, text left
    assert [bool(c[0]) for c in cells] == [False] * 3 + [True] + \
        [False] * 3 + [True] * 3 + [False] + [True] * 2 + [False] * 2
    assert [c[1] for c in cells[10:13]] == ["", "0", "0"]   # no plans=
    assert [c[1] for c in cells[13:]] == ["", ""]   # nor requests in flight
    css = re.search(r"<style>(.*)</style>", html, re.S).group(1)
    rules = dict(re.findall(r"^([^{\n]+) \{ (.*) \}$", css, re.M))
    assert "text-align: left" in rules["th, td"]
    assert rules["td.n"] == "text-align: right;"
    for line in re.findall(r"<tr><td>\w+</td><td class=\"n\">\d+</td>"
                           r"<td>[^<]+</td></tr>", html):
        assert line                      # every counter: name, n, words
    assert len(re.findall(r'<tr><td>\w+</td><td class="n">\d+</td><td>',
                          html)) >= 16


def test_status_12_long_redis_error_cut_at_a_word(httpd, redis_factory,
                                                  env):
    """A Redis error too long for the page is cut after a whole word, with
    "..."; a key of another type is shown whole"""
    env.expect_log("RRL00013")
    r = redis_factory("--enable-protected-configs", "local")
    httpd.start(status_conf(f"RateLimitRedis {r.url()}\n"
                            "RateLimit 5/min key=%{HTTP:X-K} name=long\n"))
    c = r.client()
    c.hset("rl:long:typed", "x", "1")
    httpd.get("/small.txt", headers={"X-K": "typed"})
    err = status_json(httpd)["redis"][0]["last_error"]
    # named by its limit and its key's hash (never the key), whole
    assert re.fullmatch(r"EVALSHA: RateLimit long, key SHA-1 [0-9a-f]{12}: "
                        r"not a string \(WRONGTYPE\)", err), err
    # MISCONF: writes refused after a failed save, a message of 300 bytes
    d = r.dir / "gone"
    d.mkdir()
    c.config_set("dir", str(d))
    c.config_set("save", "3600 1")
    d.rmdir()
    c.bgsave()
    rrl.wait_for(lambda: c.info("persistence")["rdb_last_bgsave_status"]
                 == "err", 10, "a failed BGSAVE")
    with pytest.raises(Exception) as e:
        c.set("probe", "1")
    full = str(e.value)
    assert full.startswith("MISCONF") and len(full) > 260, full
    httpd.get("/small.txt", headers={"X-K": "other"})
    shown = {
        "json": status_json(httpd)["redis"][0]["last_error"],
        "auto": auto(httpd)["Redis[0] LastError"],
    }
    html = httpd.get("/rl-status").text
    head = "EVALSHA for RateLimit long: "
    shown["html"] = re.search("<td>(" + re.escape(head) + r"MISCONF[^<]*) \(",
                              html).group(1)
    for where, text in shown.items():
        assert text.startswith(head + "MISCONF"), (where, text)
        assert text.endswith("..."), (where, text)
        kept = text[len(head):-3]
        assert full.startswith(kept), (where, text)
        assert full[len(kept)] in " ,", (where, text)   # a whole word
        assert len(text) < 256
    c.config_set("save", "")


# ---- unblock a client in the local store ----

def unblock(httpd, source=None, headers=None, **fields):
    body = urllib.parse.urlencode(fields).encode()
    h = {"Content-Type": "application/x-www-form-urlencoded",
         **(headers or {})}
    return httpd.get("/rl-status", method="POST", body=body, headers=h,
                     source=source)


def test_status_13_unblock_a_client_in_the_local_store(httpd, env):
    """POST action=unblock to the status page forgets one key's state in
    the local store, for whom the page's own Require lets in; the key
    value is neither logged nor shown"""
    env.expect_log("AH01630")                    # denied by Require
    secret = "sk_live_" + "S3CR3T" * 12           # hashed: over 64 bytes
    httpd.start(status_conf("""
RateLimit 2/h name=slow
<VirtualHost *:${port}>
    ServerName api.test
    RateLimit 1/h key=%{HTTP:X-Api-Key} name=apikey
    <Location "/rl-status">
        SetHandler redis-ratelimit-status
        Require ip 127.0.0.1 ::1
    </Location>
</VirtualHost>
""", "Require ip 127.0.0.1 ::1"))
    gets = [httpd.get("/small.txt").status for _ in range(3)]
    assert gets == [200, 200, 429]
    # the page's own access control, and no other site's page
    assert unblock(httpd, source="127.0.0.2", action="unblock",
                   limit="slow", key="127.0.0.1").status == 403
    r = unblock(httpd, headers={"Origin": "http://evil.example"},
                action="unblock", limit="slow", key="127.0.0.1")
    assert r.status == 403
    assert unblock(httpd, headers={"Sec-Fetch-Site": "cross-site"},
                   action="unblock", limit="slow",
                   key="127.0.0.1").status == 403
    r = unblock(httpd, action="unblock", limit="slow")
    assert r.status == 400 and "key=VALUE" in r.text
    r = unblock(httpd, action="unblock", limit="nope", key="127.0.0.1")
    assert r.status == 404 and "no limit named nope" in r.text
    assert httpd.get("/small.txt").status == 429     # nothing changed
    r = unblock(httpd, action="unblock", limit="slow", key="127.0.0.1")
    assert (r.status, r.text) == (200, "RateLimit slow: that key's state "
                                  "was cleared in the local store\n")
    assert [httpd.get("/small.txt").status for _ in range(3)] == \
        [200, 200, 429]
    httpd.wait_error_log(r"\[redis_ratelimit:notice\].*RRL00025: "
                         r"RateLimit slow: a key's state cleared")
    # a limit of a virtual host, by a key hashed in the store
    h = {"X-Api-Key": secret}
    assert [httpd.get("/small.txt", host="api.test", headers=h,
                      source="127.0.0.4").status
            for _ in range(2)] == [200, 429]
    r = unblock(httpd, action="unblock", limit="apikey", key=secret)
    assert r.status == 404                  # its vhost is part of its name
    r = unblock(httpd, action="unblock", limit="apikey", vhost="api.test",
                key=secret)
    assert r.text == ("RateLimit apikey of virtual host api.test: that "
                      "key's state was cleared in the local store\n")
    r = unblock(httpd, action="unblock", limit="apikey", vhost="api.test",
                key=secret)
    assert "kept no state for that key" in r.text
    assert httpd.get("/small.txt", host="api.test", headers=h,
                     source="127.0.0.5").status == 200
    # an IPv6 client, by its address: grouped by /64 as requests are
    if rrl.ipv6_usable():
        assert [httpd.get("/small.txt", ipv6=True).status
                for _ in range(3)] == [200, 200, 429]
        r = unblock(httpd, action="unblock", limit="slow", key="::1")
        assert "was cleared" in r.text
        assert httpd.get("/small.txt", ipv6=True).status == 200
    httpd.access_log()
    for q in ("", "?auto", "?json", "?metrics"):
        assert secret not in httpd.get("/rl-status" + q).text
    assert secret not in "\n".join(httpd.error_log_lines())


def test_status_14_local_store_capacity_keys_and_evictions(httpd):
    """The local store's numbers say what they are: its capacity, the keys
    in use, the entries given up for other keys and, of those, the ones
    that still held state, the same in ?auto, ?json and ?metrics (no
    LocalStoreKeys that was the capacity); ?json says its latency buckets
    are not cumulative (Prometheus's are)."""
    httpd.start(status_conf("""
RateLimitLocalSize 64K
RateLimit 5/min key=%{QUERY_STRING} name=q
"""))
    for i in range(7):
        assert httpd.get(f"/small.txt?k{i}").status == 200
    a = auto(httpd)
    assert "LocalStoreKeys" not in a
    capacity = int(a["LocalStoreCapacity"])
    assert 500 < capacity < 1500
    assert a["LocalStoreBytes"] == str(64 * 1024)
    assert a["LocalStoreKeysInUse"] == "7"
    assert a["LocalStoreEvictions"] == a["LocalStoreLiveEvictions"] == "0"
    j = status_json(httpd)
    assert j["local_store"] == {
        "allocated": True, "bytes": 64 * 1024, "capacity_keys": capacity,
        "keys_in_use": 7, "evictions": 0, "live_evictions": 0}
    assert j["redis_latency"]["buckets_cumulative"] is False
    types, samples = parse_metrics(httpd.get("/rl-status?metrics").text)
    for name, kind, value in [
            ("local_store_bytes", "gauge", 64 * 1024),
            ("local_store_capacity_keys", "gauge", capacity),
            ("local_store_keys", "gauge", 7),
            ("local_store_evictions_total", "counter", 0),
            ("local_store_live_evictions_total", "counter", 0)]:
        assert types["redis_ratelimit_" + name] == kind
        assert metric(samples, "redis_ratelimit_" + name) == value
    html = httpd.get("/rl-status").text
    assert f"room for {capacity} keys, 7 in use" in html
