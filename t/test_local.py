"""RateLimit on one server, no Redis: the local shared-memory store, driven
through a real httpd.  Every directive and option of the single-server
module, its headers, environment variables and corner cases."""
import http.client
import re
import time
from pathlib import Path

import pytest

import rrl


def statuses(responses):
    return [r.status for r in responses]


def rate_headers(r):
    return [h for h in r.headers if "ratelimit" in h.lower()]


def gets(httpd, n, path="/small.txt", **kw):
    return [httpd.get(path, **kw) for _ in range(n)]


def logged_count(httpd, number, what):
    """How many events the lines of a throttled message stand for: one
    each, and the N of "(and N more WHAT ...)" """
    lines = [ln for ln in httpd.error_log_lines() if number in ln]
    more = [re.search(rf"\(and (\d+) more {what} by this limit in this "
                      r"child since the last line\)", ln) for ln in lines]
    return len(lines) + sum(int(m.group(1)) for m in more if m)


def away_from_day_boundary():
    """Window algorithms with /d periods: not across a UTC midnight."""
    left = 86400 - time.time() % 86400
    if left < 5:
        time.sleep(left + 0.1)


# ---- counting, headers, Retry-After ----

def test_limit_01_exact_count_then_429(httpd):
    httpd.start("RateLimit 5/min name=basic")
    t0 = time.time()
    rs = gets(httpd, 8)
    assert statuses(rs) == [200] * 5 + [429] * 3
    assert [r.headers["X-RateLimit-Remaining"] for r in rs] == \
        ["4", "3", "2", "1", "0", "0", "0", "0"]
    assert {r.headers["X-RateLimit-Limit"] for r in rs} == {"5"}
    for r in rs[:5]:
        assert "Retry-After" not in r.headers
    for r in rs[5:]:
        # 5 spent at once: the next unit refills 12 s after the first
        assert 11 <= int(r.headers["Retry-After"]) <= 12
        assert "Too Many Requests" in r.text
    # back at the maximum once all 5 have refilled: 60 s after the start
    reset = int(rs[4].headers["X-RateLimit-Reset"])
    assert t0 + 59 <= reset <= time.time() + 61
    log = httpd.access_log(8)
    assert [e["result"] for e in log] == ["allowed"] * 5 + ["denied"] * 3
    assert {e["name"] for e in log} == {"basic"}
    assert {e["limit"] for e in log} == {"5"}
    assert [e["remaining"] for e in log] == ["4", "3", "2", "1", "0", "0",
                                             "0", "0"]


def test_limit_02_headers_ietf(httpd):
    httpd.start("RateLimit 5/min name=basic\nRateLimitHeaders ietf")
    rs = gets(httpd, 6)
    assert statuses(rs) == [200] * 5 + [429]
    assert rs[0].headers["RateLimit-Policy"] == '"basic";q=5;w=60'
    m = re.fullmatch(r'"basic";r=(\d+);t=(\d+)', rs[0].headers["RateLimit"])
    assert m and m.group(1) == "4" and 11 <= int(m.group(2)) <= 12
    m = re.fullmatch(r'"basic";r=(\d+);t=(\d+)', rs[5].headers["RateLimit"])
    assert m and m.group(1) == "0" and 59 <= int(m.group(2)) <= 60
    for r in rs:
        assert "X-RateLimit-Limit" not in r.headers
    assert "Retry-After" in rs[5].headers


def test_limit_03_headers_both_and_off(httpd):
    httpd.start("""
RateLimit 2/min name=hdr
<Location /dir>
    RateLimitHeaders both
</Location>
<Location /small.txt>
    RateLimitHeaders off
</Location>
""")
    r = httpd.get("/dir/")
    assert r.status == 200
    assert r.headers["X-RateLimit-Remaining"] == "1"
    assert r.headers["RateLimit-Policy"] == '"hdr";q=2;w=60'
    assert r.headers["RateLimit"].startswith('"hdr";r=1;t=')
    r = httpd.get("/small.txt")
    assert r.status == 200
    assert not rate_headers(r)
    r = httpd.get("/small.txt")
    assert r.status == 429
    assert not rate_headers(r)
    # Retry-After is sent on every denial, whatever RateLimitHeaders says
    assert int(r.headers["Retry-After"]) >= 1


@pytest.mark.slow
def test_limit_04_retry_after_then_allowed(httpd):
    httpd.start("RateLimit 1/s burst=1 name=sec")
    assert httpd.get("/small.txt").status == 200
    r = httpd.get("/small.txt")
    assert r.status == 429
    assert r.headers["Retry-After"] == "1"
    time.sleep(1.05)
    assert httpd.get("/small.txt").status == 200


def test_limit_05_remaining_never_above_burst(httpd):
    httpd.start("RateLimit 100/s burst=3 name=b")
    rs = gets(httpd, 5)
    assert statuses(rs)[:3] == [200] * 3
    for r in rs:
        assert int(r.headers["X-RateLimit-Remaining"]) <= 3
    assert rs[0].headers["X-RateLimit-Remaining"] == "2"


def test_limit_06_cost(httpd):
    httpd.start("RateLimit 10/min cost=3 name=c")
    rs = gets(httpd, 4)
    assert statuses(rs) == [200, 200, 200, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in rs] == \
        ["7", "4", "1", "1"]


@pytest.mark.parametrize("alg", ["gcra", "token-bucket", "fixed-window",
                                 "sliding-window"])
def test_limit_07_each_algorithm_exact(httpd, alg):
    away_from_day_boundary()
    httpd.start(f"RateLimit 5/d algorithm={alg} name=alg")
    rs = gets(httpd, 8)
    assert statuses(rs) == [200] * 5 + [429] * 3
    assert [r.headers["X-RateLimit-Remaining"] for r in rs[:5]] == \
        ["4", "3", "2", "1", "0"]
    for r in rs[5:]:
        assert int(r.headers["Retry-After"]) >= 1


# ---- several limits, the configuration tree, RateLimit off ----

def test_tree_01_limits_accumulate_and_off_cuts(httpd):
    httpd.start("""
RateLimit 4/min name=site
<Location /dir>
    RateLimit 2/min name=dirlimit
</Location>
<Location /small.txt>
    RateLimit off
</Location>
""")
    rs = gets(httpd, 3, "/dir/")
    assert statuses(rs) == [200, 200, 429]
    # the headers of the limit with the least left
    assert rs[0].headers["X-RateLimit-Limit"] == "2"
    assert rs[0].headers["X-RateLimit-Remaining"] == "1"
    assert rs[2].headers["X-RateLimit-Limit"] == "2"
    # /dir/ spent 2 of site's 4, its denial nothing
    rs = gets(httpd, 3, "/")
    assert statuses(rs) == [200, 200, 429]
    assert rs[0].headers["X-RateLimit-Remaining"] == "1"
    # RateLimit off: nothing inherited applies
    rs = gets(httpd, 10, "/small.txt")
    assert statuses(rs) == [200] * 10
    assert not rate_headers(rs[0])
    log = httpd.access_log(16)
    assert {e["result"] for e in log[-10:]} == {"-"}


def test_tree_02_denied_request_spends_nothing(httpd):
    httpd.start("""
RateLimit 3/min name=a
<Location /dir>
    RateLimit 1/min name=b
</Location>
""")
    assert httpd.get("/dir/").status == 200          # a: 2 left, b: 0
    r = httpd.get("/dir/")
    assert r.status == 429
    assert r.headers["X-RateLimit-Limit"] == "1"      # b denied it
    r = httpd.get("/")
    assert r.status == 200
    assert r.headers["X-RateLimit-Remaining"] == "1"  # a spent once only


def test_tree_03_several_limits_in_one_context(httpd):
    httpd.start("""
<Location />
    RateLimit 10/min name=ip
    RateLimit 3/min key=%{HTTP:X-User} name=user
</Location>
""")
    rs = gets(httpd, 4, "/", headers={"X-User": "u1"})
    assert statuses(rs) == [200, 200, 200, 429]
    assert rs[0].headers["X-RateLimit-Limit"] == "3"
    r = httpd.get("/", headers={"X-User": "u2"})
    assert r.status == 200
    assert r.headers["X-RateLimit-Limit"] == "3"
    assert r.headers["X-RateLimit-Remaining"] == "2"
    # without X-User only the IP limit counts: 3 + 1 spent, now 5 left
    r = httpd.get("/")
    assert r.status == 200
    assert r.headers["X-RateLimit-Limit"] == "10"
    assert r.headers["X-RateLimit-Remaining"] == "5"


def test_tree_04_off_then_new_limits_in_one_section(httpd):
    httpd.start("""
RateLimit 1/min name=outer
<Location /dir>
    RateLimit off
    RateLimit 3/min name=inner
</Location>
""")
    rs = gets(httpd, 4, "/dir/")
    assert statuses(rs) == [200, 200, 200, 429]
    assert {r.headers["X-RateLimit-Limit"] for r in rs} == {"3"}
    assert statuses(gets(httpd, 2, "/")) == [200, 429]


def test_tree_05_same_named_limit_shared_and_counted_once(httpd):
    httpd.start("""
<VirtualHost *:${port}>
    ServerName shop.test
    DocumentRoot "${docroot}"
    RateLimit 3/min name=login
    <Location /dir>
        RateLimit 3/min name=login
    </Location>
    <Location /small.txt>
        RateLimit 3/min name=login
    </Location>
</VirtualHost>
""")
    h = {"Host": "shop.test"}
    # inherited and repeated, the limit is counted once per request; all
    # three places share its count
    assert statuses([httpd.get("/dir/", headers=h),
                     httpd.get("/small.txt", headers=h),
                     httpd.get("/", headers=h),
                     httpd.get("/dir/", headers=h)]) == [200, 200, 200, 429]


def test_tree_06_default_names_say_where(httpd):
    httpd.start("""
RateLimit 100/min
<Location "/dir">
    RateLimit 10/min
    RateLimit 5/min key=%{HTTP:X-A}
</Location>
<If "%{HTTP:X-B} == 'b'">
    RateLimit 1/min
</If>
""")
    httpd.get("/")
    httpd.get("/dir/")
    httpd.get("/dir/", headers={"X-A": "a"})
    httpd.get("/", headers={"X-B": "b"})
    names = [e["name"] for e in httpd.access_log(4)]
    assert names[0] == "server-1"
    assert names[1] == "location-dir-1"
    assert names[2] == "location-dir-2"
    assert re.fullmatch(r"if-[0-9a-f]{8}-1", names[3])


def test_tree_07_vhosts_scope_their_limits(httpd):
    httpd.start("""
<VirtualHost *:${port}>
    ServerName a.test
    DocumentRoot "${docroot}"
    RateLimit 2/min name=site
</VirtualHost>
<VirtualHost *:${port}>
    ServerName b.test
    DocumentRoot "${docroot}"
    RateLimit 2/min name=site
</VirtualHost>
""")
    a, b = {"Host": "a.test"}, {"Host": "b.test"}
    assert statuses(gets(httpd, 3, headers=a)) == [200, 200, 429]
    # the same name in another virtual host is another limit
    assert statuses(gets(httpd, 3, headers=b)) == [200, 200, 429]


# ---- dry-run, exempt, status, ErrorDocument ----

def test_mode_01_dry_run_counts_and_never_denies(httpd):
    httpd.start("""
LogLevel warn redis_ratelimit:info
RateLimit 3/min name=d
RateLimitMode dry-run
<Location /dir>
    RateLimitMode enforce
</Location>
""")
    rs = gets(httpd, 5, "/")
    assert statuses(rs) == [200] * 5
    assert [r.headers["X-RateLimit-Remaining"] for r in rs] == \
        ["2", "1", "0", "0", "0"]
    for r in rs:
        assert "Retry-After" not in r.headers
    log = httpd.access_log(5)
    assert [e["result"] for e in log] == ["allowed"] * 3 + \
        ["dry-run-denied"] * 2
    # at most a line a second per child: one or two (two children)
    assert 1 <= logged_count(httpd, "RRL00007", "such requests") <= 2
    # the limit is the same one in enforce mode: used up, but the two
    # dry-run denials spent nothing (else it would refill 40 s away)
    r = httpd.get("/dir/")
    assert r.status == 429
    assert 19 <= int(r.headers["Retry-After"]) <= 20


def test_mode_02_exempt_clients(httpd):
    httpd.start("""
RateLimit 1/min name=ex
RateLimitExempt 127.0.0.0/8
""")
    rs = gets(httpd, 5)
    assert statuses(rs) == [200] * 5
    for r in rs:
        assert not rate_headers(r)
    assert {e["result"] for e in httpd.access_log(5)} == {"exempt"}
    if rrl.ipv6_usable():
        assert statuses(gets(httpd, 2, ipv6=True)) == [200, 429]


def test_mode_06_exempt_a_whole_family(httpd):
    """0.0.0.0/0 and ::/0 are CIDRs too: every client of that family"""
    httpd.start("""
RateLimit 1/min name=all
<Location /dir>
    RateLimitExempt 0.0.0.0/0
</Location>
<Location /small.txt>
    RateLimitExempt ::/0
</Location>
""")
    assert statuses(gets(httpd, 3, "/dir/")) == [200] * 3
    assert {e["result"] for e in httpd.access_log(3)} == {"exempt"}
    # ::/0 is IPv6 only: an IPv4 client is limited
    assert statuses(gets(httpd, 2, "/small.txt")) == [200, 429]
    if rrl.ipv6_usable():
        assert statuses(gets(httpd, 3, "/small.txt", ipv6=True)) == [200] * 3
        assert statuses(gets(httpd, 2, "/dir/", ipv6=True)) == [200, 429]


def test_mode_07_denials_logged_once_a_second(httpd):
    """RRL00008: at most one line a second per child and limit, naming
    the virtual host, with the number of denials it stands for"""
    httpd.start("""
LogLevel warn redis_ratelimit:info
<VirtualHost *:${port}>
    ServerName flood.test
    RateLimit 1/min name=flood
    RateLimit 1/min name=other key=%{HTTP:X-K}
</VirtualHost>
""", mpm="event", mpm_conf=rrl.ONE_CHILD)
    t0 = time.monotonic()
    codes = httpd.hammer(60, "/small.txt", concurrency=4, host="flood.test")
    assert codes.count(429) == 59
    # another limit of the same child has its own line
    assert [httpd.get("/small.txt", host="flood.test", source=ip,
                      headers={"X-K": "k"}).status
            for ip in ("127.0.0.2", "127.0.0.3")] == [200, 429]
    elapsed = time.monotonic() - t0
    time.sleep(1.1)
    assert httpd.get("/small.txt", host="flood.test").status == 429
    httpd.access_log(63)
    lines = [ln for ln in httpd.error_log_lines() if "RRL00008" in ln]
    flood = [ln for ln in lines if "RateLimit flood " in ln]
    other = [ln for ln in lines if "RateLimit other " in ln]
    assert len(other) == 1
    assert 2 <= len(flood) <= elapsed + 3, flood
    assert all("denies this request to flood.test" in ln for ln in lines)
    # the last line says how many the others left out: all 60 denials
    assert "more denials by this limit in this child" in flood[-1]
    assert logged_count(httpd, "RRL00008", "denials") == 61


def test_mode_03_exempt_accumulates_down_the_tree(httpd):
    httpd.start("""
RateLimit 1/min name=ex
RateLimitExempt 192.0.2.1
<Location /dir>
    RateLimitExempt 127.0.0.1
</Location>
""")
    assert statuses(gets(httpd, 3, "/dir/")) == [200] * 3
    assert statuses(gets(httpd, 2, "/")) == [200, 429]


def test_mode_04_custom_status_and_error_document(httpd):
    httpd.start("""
RateLimit 1/min name=st
RateLimitStatus 503
ErrorDocument 503 /err/429.html
""")
    assert httpd.get("/small.txt").status == 200
    for _ in range(2):
        r = httpd.get("/small.txt")
        assert r.status == 503
        assert r.text == "custom 429 page\n"
        assert int(r.headers["Retry-After"]) >= 1
        assert r.headers["X-RateLimit-Remaining"] == "0"
    log = httpd.access_log(3)
    assert [e["status"] for e in log] == [200, 503, 503]
    # the variables reach the log line of the redirected error page too
    assert [e["result"] for e in log] == ["allowed", "denied", "denied"]
    assert log[1]["name"] == "st"


def test_mode_05_error_document_429(httpd):
    httpd.start("""
RateLimit 2/min name=st
ErrorDocument 429 /err/429.html
""")
    rs = gets(httpd, 4)
    assert statuses(rs) == [200, 200, 429, 429]
    assert rs[2].text == "custom 429 page\n"
    # the error page is an internal redirect: it spends nothing
    assert rs[3].headers["X-RateLimit-Remaining"] == "0"


# ---- what is counted once, or not at all ----

def test_count_01_directory_index_counted_once(httpd):
    httpd.start("RateLimit 3/min name=di")
    rs = gets(httpd, 4, "/")
    assert statuses(rs) == [200, 200, 200, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in rs[:3]] == \
        ["2", "1", "0"]


def test_count_02_internal_redirect_counted_once(httpd):
    httpd.start("""
RateLimit 3/min name=rw
<Directory "${docroot}/dir">
    RewriteEngine on
    RewriteRule ^alias$$ /small.txt [PT]
</Directory>
RewriteEngine on
RewriteRule ^/pt$$ /small.txt [PT]
""")
    rs = gets(httpd, 2, "/dir/alias") + gets(httpd, 2, "/pt")
    assert [r.text for r in rs[:3]] == ["small\n"] * 3
    assert statuses(rs) == [200, 200, 200, 429]


def test_count_03_key_expression_and_empty_key(httpd):
    httpd.start("RateLimit 2/min key=%{HTTP:X-Api-Key} name=apikey")
    a = {"X-Api-Key": "a"}
    assert statuses(gets(httpd, 3, headers=a)) == [200, 200, 429]
    assert statuses(gets(httpd, 2, headers={"X-Api-Key": "b"})) == [200, 200]
    # an empty key is not counted by the limit
    rs = gets(httpd, 5)
    assert statuses(rs) == [200] * 5
    assert not rate_headers(rs[0])
    log = httpd.access_log(10)
    assert {e["result"] for e in log[-5:]} == {"-"}
    # key=%{HTTP:NAME} is read without ap_expr's evaluator: the same
    # answers as ap_expr gives, header names in any case, the first of
    # repeated headers joined as httpd joins them
    assert httpd.get("/small.txt", headers={"x-api-key": "a"}).status == 429
    assert httpd.get("/small.txt", headers={"X-API-KEY": "b"}).status == 429
    assert statuses(gets(httpd, 2, headers={"X-Api-Key": "a, b"})) \
        == [200, 200]
    raw = (b"GET /small.txt HTTP/1.1\r\nHost: localhost\r\nX-Api-Key: a\r\n"
           b"X-Api-Key: b\r\nConnection: close\r\n\r\n")
    assert httpd.raw(raw).split(b" ", 2)[1] == b"429"   # "a, b", spent


def test_count_04_long_and_binary_keys(httpd):
    httpd.start("RateLimit 1/min key=%{HTTP:X-K} name=k")
    long1, long2 = "x" * 200 + "1", "x" * 200 + "2"
    assert statuses(gets(httpd, 2, headers={"X-K": long1})) == [200, 429]
    assert httpd.get("/small.txt", headers={"X-K": long2}).status == 200
    for value in (b"\xff\xfe", b"\xff\xfd"):
        raw = (b"GET /small.txt HTTP/1.1\r\nHost: localhost\r\nX-K: " + value
               + b"\r\nConnection: close\r\n\r\n")
        replies = [httpd.raw(raw) for _ in range(2)]
        assert [r.split(b" ", 2)[1] for r in replies] == [b"200", b"429"]


# ---- phases: authentication, count= ----

AUTH = """
<Location />
    AuthType Basic
    AuthName "test"
    AuthBasicProvider file
    AuthUserFile "${docroot}/.htpasswd"
    Require valid-user
    ${limit}
</Location>
"""


def test_auth_01_key_by_user_decided_after_authentication(httpd, env):
    env.expect_log("AH01617")          # auth_basic: password mismatch
    httpd.start(AUTH, limit="RateLimit 2/min key=%{REMOTE_USER} name=peruser")
    alice, bob = ("alice", "secret"), ("bob", "hunter2")
    # unauthenticated requests never reach the limit
    assert statuses(gets(httpd, 3)) == [401] * 3
    assert statuses(gets(httpd, 3, auth=alice)) == [200, 200, 429]
    assert statuses(gets(httpd, 2, auth=bob)) == [200, 200]
    assert httpd.get("/small.txt", auth=("alice", "wrong")).status == 401
    log = httpd.access_log(9)
    assert [e["result"] for e in log[:3]] == ["-"] * 3
    assert [(e["user"], e["result"]) for e in log[3:6]] == \
        [("alice", "allowed")] * 2 + [("alice", "denied")]


def test_auth_02_phase_auth_versus_access(httpd):
    httpd.start(AUTH, limit="RateLimit 1/min phase=auth name=ph")
    assert statuses(gets(httpd, 3)) == [401] * 3      # not counted
    alice = ("alice", "secret")
    assert statuses(gets(httpd, 2, auth=alice)) == [200, 429]

    httpd.start(AUTH, limit="RateLimit 1/min name=pa")
    assert httpd.get("/small.txt").status == 401      # counted: access
    assert httpd.get("/small.txt", auth=alice).status == 429


def test_auth_03_count_only_failed_logins(httpd, env):
    env.expect_log("AH01617")          # auth_basic: password mismatch
    httpd.start(AUTH, limit="RateLimit 3/min count=401 name=failed")
    alice, wrong = ("alice", "secret"), ("alice", "nope")
    assert statuses(gets(httpd, 5, auth=alice)) == [200] * 5
    httpd.access_log(5)
    rs = []
    for i in range(3):
        rs.append(httpd.get("/small.txt", auth=wrong))
        # the failure is spent as the response is logged, after it is sent
        httpd.access_log(6 + i)
    assert statuses(rs) == [401] * 3
    # reserved before the request runs: what is left with it taken
    assert [r.headers["X-RateLimit-Remaining"] for r in rs] == \
        ["2", "1", "0"]
    # three failures: the next attempt is denied before it runs
    r = httpd.get("/small.txt", auth=wrong)
    assert r.status == 429
    assert int(r.headers["Retry-After"]) >= 1
    assert httpd.get("/small.txt", auth=alice).status == 429
    log = httpd.access_log(10)
    assert [e["result"] for e in log[-2:]] == ["denied", "denied"]


# ---- IPv6 grouping ----

REMOTEIP = """
RemoteIPHeader X-Forwarded-For
RemoteIPInternalProxy 127.0.0.1
"""


def xff(addr):
    return {"X-Forwarded-For": addr}


def test_ipv6_01_grouped_by_prefix(httpd):
    httpd.start(REMOTEIP + "RateLimit 2/min name=v6")
    assert httpd.get("/small.txt", headers=xff("2001:db8::1")).status == 200
    assert httpd.get("/small.txt", headers=xff("2001:db8::2")).status == 200
    # the same /64: one client
    assert httpd.get("/small.txt",
                     headers=xff("2001:db8::ff:1")).status == 429
    assert httpd.get("/small.txt",
                     headers=xff("2001:db8:0:1::1")).status == 200
    # IPv4 addresses are not grouped
    assert statuses([httpd.get("/small.txt", headers=xff(f"192.0.2.{i}"))
                     for i in (1, 1, 2)]) == [200, 200, 200]


def test_ipv6_02_prefix_option(httpd):
    httpd.start(REMOTEIP + """
<Location /dir>
    RateLimit 1/min ipv6-prefix=128 name=host
</Location>
<Location /small.txt>
    RateLimit 1/min ipv6-prefix=32 name=net
</Location>
""")
    assert httpd.get("/dir/", headers=xff("2001:db8::1")).status == 200
    assert httpd.get("/dir/", headers=xff("2001:db8::2")).status == 200
    assert httpd.get("/small.txt", headers=xff("2001:db8:1::1")).status == 200
    assert httpd.get("/small.txt", headers=xff("2001:db8:2::1")).status == 429


def test_ipv6_03_address_inside_a_key_expression(httpd):
    httpd.start(REMOTEIP +
                "RateLimit 1/min key=%{REMOTE_ADDR}|%{HTTP:X-T} name=mix")
    h = {"X-T": "t"}
    assert httpd.get("/small.txt", headers={**h, **xff("2001:db8::1")}) \
        .status == 200
    assert httpd.get("/small.txt", headers={**h, **xff("2001:db8::2")}) \
        .status == 429
    assert httpd.get("/small.txt", headers={"X-T": "u",
                                             **xff("2001:db8::2")}) \
        .status == 200


def test_ipv6_04_real_ipv6_client_and_exempt_by_cidr(httpd):
    if not rrl.ipv6_usable():
        pytest.skip("::1 is not usable here")
    httpd.start("""
RateLimit 2/min name=v6
<Location /dir>
    RateLimitExempt ::1
</Location>
""")
    assert statuses(gets(httpd, 3, ipv6=True)) == [200, 200, 429]
    assert statuses(gets(httpd, 3)) == [200, 200, 429]   # IPv4: its own
    assert statuses(gets(httpd, 3, "/dir/", ipv6=True)) == [200] * 3
    log = httpd.access_log(9)
    assert log[0]["remote"] == "::1"


# ---- one store for every child ----

@pytest.mark.slow
@pytest.mark.parametrize("mpm", ["prefork", "event"])
def test_store_01_children_share_one_store(httpd, mpm):
    """200 requests at once, 50 allowed; then, under prefork, four
    connections held open together, so four children (a prefork child
    serves one connection at a time), a request each: all four denied, so
    each child saw the 50 the others spent (children with stores of their
    own would allow at least three of them, whoever served the 50)."""
    httpd.start("RateLimit 50/h name=shared", mpm=mpm)
    codes = httpd.hammer(200, "/small.txt", concurrency=16)
    assert codes.count(200) == 50
    assert codes.count(429) == 150
    if mpm == "prefork":
        conns = [http.client.HTTPConnection("127.0.0.1", httpd.port,
                                            timeout=10) for _ in range(4)]
        try:
            for i, conn in enumerate(conns):
                conn.request("GET", f"/small.txt?held{i}")
                r = conn.getresponse()
                r.read()
                assert r.status == 429, i
        finally:
            for conn in conns:
                conn.close()
        log = httpd.access_log(204)[-4:]
        assert [e["query"] for e in log] == [f"?held{i}" for i in range(4)]
        assert len({e["pid"] for e in log}) == 4, log


def test_store_02_survives_graceful_restart(httpd):
    httpd.start("RateLimit 3/min name=g")
    assert statuses(gets(httpd, 2)) == [200, 200]
    httpd.reload("RateLimit 3/min name=g")
    assert statuses(gets(httpd, 2)) == [200, 429]


LOCAL_STATUS = """
<Location "/rl-status">
    SetHandler redis-ratelimit-status
</Location>
"""


def flood_conf(kept, flood):
    """A 64K store (872 keys), RATE kept on /dir and flood on /small.txt,
    each by query string"""
    return f"""
RateLimitLocalSize 64K
<Location /dir>
    RateLimit {kept} key=%{{QUERY_STRING}} name=kept
</Location>
<Location /small.txt>
    RateLimit {flood} key=%{{QUERY_STRING}} name=flood
</Location>
""" + LOCAL_STATUS


@pytest.mark.slow
def test_store_03_full_store_evicts_what_expires_first(httpd):
    httpd.start(flood_conf("1/d", "1/h"))
    keep = [f"/dir/?keep{i}" for i in range(20)]
    assert statuses([httpd.get(p) for p in keep]) == [200] * 20
    # 64K hold 872 keys: 5,000 short-lived keys overflow it
    flood = [f"/small.txt?k{i}" for i in range(5000)]
    codes = httpd.hammer(len(flood), paths=flood, concurrency=8)
    assert codes == [200] * 5000
    # the day-long keys outlived the flood: they expire last
    assert statuses([httpd.get(p) for p in keep]) == [429] * 20
    # the earliest hour-long keys gave way, so the store stayed bounded
    again = statuses([httpd.get(p) for p in flood[:100]])
    assert again.count(200) > 50


def auto(httpd):
    r = httpd.get("/rl-status?auto")
    assert r.status == 200
    return dict(line.split(": ", 1) for line in r.text.splitlines())


@pytest.mark.slow
def test_store_04_denied_keys_are_evicted_last(httpd):
    """RateLimitLocalSize 64K, twenty clients denied, then 3,000 other keys
    flood the store: the denied ones expire first (a minute, the flood's a
    day), yet a key denied now is evicted last, so they stay denied; the
    entries given up to make room are counted, live ones apart."""
    httpd.start(flood_conf("1/min", "100/d"))
    victims = [f"/dir/?victim{i}" for i in range(20)]
    assert statuses([httpd.get(p) for p in victims]) == [200] * 20
    assert statuses([httpd.get(p) for p in victims]) == [429] * 20
    flood = [f"/small.txt?k{i}" for i in range(3000)]
    assert httpd.hammer(len(flood), paths=flood, concurrency=8) == \
        [200] * 3000
    assert statuses([httpd.get(p) for p in victims]) == [429] * 20
    a = auto(httpd)
    capacity, in_use = int(a["LocalStoreCapacity"]), \
        int(a["LocalStoreKeysInUse"])
    assert 500 < capacity < 1500
    assert in_use == capacity           # full: every slot is live state
    assert int(a["LocalStoreLiveEvictions"]) >= 3000 + 20 - capacity
    assert int(a["LocalStoreEvictions"]) >= int(a["LocalStoreLiveEvictions"])


def shared_mappings(pid, size):
    """The shared mappings of process pid of size bytes (apr_shm adds a
    header, rounded up to pages)"""
    found = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        span, perms = line.split()[:2]
        lo, hi = (int(x, 16) for x in span.split("-"))
        if "s" in perms and size <= hi - lo < size + 65536:
            found.append(line)
    return found


REDIS_ALLOW = """
RateLimitRedis ${redis_url}
RateLimitOnError allow
RateLimit 10/min name=r
"""


@pytest.mark.parametrize("conf,store", [
    ("", False),                               # loaded, no directive
    (REDIS_ALLOW, False),
    (REDIS_ALLOW.replace("allow", "deny"), False),
    (REDIS_ALLOW + "<VirtualHost *:${port}>\n    ServerName v.test\n"
     "</VirtualHost>\n", False),              # inherits all of it
    (REDIS_ALLOW.replace("RateLimitOnError allow\n", ""), True),   # local
    (REDIS_ALLOW + "<Location /dir>\n    RateLimitOnError local\n"
     "</Location>\n", True),
    ("RateLimit 10/min name=l\n", True),       # no Redis
    (REDIS_ALLOW + "<VirtualHost *:${port}>\n    ServerName v.test\n"
     "    RateLimitRedis off\n</VirtualHost>\n", True),
], ids=["none", "redis-allow", "redis-deny", "vhost-inherits",
        "redis-local", "local-in-a-location", "no-redis", "vhost-off"])
def test_store_05_allocated_only_when_a_limit_can_use_it(httpd, redis_server,
                                                         conf, store):
    """The 8M of the local store are made (and zeroed, so resident) only
    when a limit can be decided there: with no Redis for its server, or
    RateLimitOnError local.  Without it, limits, the status page in every
    format and ?health work as ever."""
    httpd.start(conf + LOCAL_STATUS)
    found = shared_mappings(httpd.pid, 8 * 1024 * 1024)
    assert len(found) == (1 if store else 0), found
    assert httpd.get("/small.txt").status == 200
    a = auto(httpd)
    assert a["LocalStoreBytes"] == (str(8 * 1024 * 1024) if store else "0")
    assert int(a["LocalStoreCapacity"]) > 0 if store else \
        a["LocalStoreCapacity"] == "0"
    for q in ("", "?json", "?metrics", "?health"):
        assert httpd.get("/rl-status" + q).status == 200, q
    html = httpd.get("/rl-status").text
    assert ("room for" in html) == store


# ---- the configuration files of conf/ ----

def test_conf_01_example_vhost(httpd):
    example = (rrl.REPO / "conf" / "example-vhost.conf").read_text()
    example = example.replace("*:80", "*:${port}") \
                     .replace("/var/www/html", "${docroot}")
    httpd.start(example)
    h = {"Host": "api.example.com"}
    r = httpd.get("/small.txt", headers=h)
    assert r.status == 200
    assert r.headers["X-RateLimit-Limit"] == "100"
    assert r.headers["X-RateLimit-Remaining"] == "19"     # burst=20
    # /login adds its own 5/min
    (httpd.docroot / "login").write_text("login\n")
    rs = gets(httpd, 6, "/login", headers=h)
    assert statuses(rs) == [200] * 5 + [429]
    assert rs[0].headers["X-RateLimit-Limit"] == "5"
    # /healthz is never limited
    (httpd.docroot / "healthz").write_text("ok\n")
    assert statuses(gets(httpd, 30, "/healthz", headers=h)) == [200] * 30
    # an API key adds its own limit to the per-IP one, whose burst of 20
    # has 13 left (the denied /login spent nothing)
    r = httpd.get("/small.txt", headers={**h, "X-Api-Key": "k1"})
    assert r.status == 200
    assert r.headers["X-RateLimit-Remaining"] == "13"
    assert httpd.access_log()[-1]["name"] == "vhost-1"


def test_conf_02_demo(httpd):
    """conf/demo.conf, as bash .ci/demo loads it: its limit, and the status
    page it serves (Require local), which the limit does not count."""
    httpd.start((rrl.REPO / "conf" / "demo.conf").read_text())
    assert statuses(gets(httpd, 6)) == [200] * 5 + [429]
    for _ in range(3):
        r = httpd.get("/ratelimit-status?auto")
        assert r.status == 200
    counters = dict(line.split(": ", 1) for line in r.text.splitlines())
    assert (counters["Allowed"], counters["Denied"]) == ("5", "1")
    assert counters["Limit[demo] Denied"] == "1"
    r = httpd.get("/ratelimit-status")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/html")
