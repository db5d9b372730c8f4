"""Both stores alike, through a real httpd: the local shared-memory store and
Redis (a real redis-server) answer the same way when a limit's algorithm
changes under a name that keeps its keys, and when count= limits meet many
requests at once."""
import time

import pytest

import rrl

STORES = ["local", "redis"]


@pytest.fixture(params=STORES)
def store(request, httpd):
    """"" for the local store, the RateLimitRedis line for Redis (the
    session's redis-server, flushed)."""
    if request.param == "local":
        return ""
    httpd.vars["redis_url"] = request.getfixturevalue("redis_server").url()
    return "RateLimitRedis ${redis_url}\n"


def statuses(rs):
    return [r.status for r in rs]


def gets(httpd, n, path="/small.txt", **kw):
    return [httpd.get(path, **kw) for _ in range(n)]


def away_from_window_edge(period, margin):
    """Window algorithms: not across a boundary of their window in the next
    margin seconds."""
    left = period - time.time() % period
    if left < margin:
        time.sleep(left + 0.1)


# ---- SPEC 4: a state of another algorithm reads as no state ----

# Each algorithm in turn under one name, so under one key: every one of
# them reads a state another wrote (sliding-window after fixed-window
# finds "WINDOW COUNT" it could take for its own)
CHAIN = ["gcra", "fixed-window", "sliding-window", "token-bucket", "gcra",
         "sliding-window", "fixed-window", "token-bucket", "sliding-window",
         "gcra"]


@pytest.mark.skipif(rrl.CHECKER != "", reason="graceful restarts need "
                    "httpd's parent process; httpd -X has none")
def test_stores_01_algorithm_change_starts_afresh(httpd, store):
    """name=site gcra, limit spent, then algorithm=fixed-window and a
    graceful restart: no error, no warning, the key starts afresh (3
    allowed, then denied), in both stores, whichever algorithm wrote the
    state before."""
    def conf(alg):
        return (store + f"LogLevel warn redis_ratelimit:debug\n"
                f"RateLimit 3/d name=site algorithm={alg}\n")

    away_from_window_edge(86400, 120)
    httpd.start(conf(CHAIN[0]))
    assert statuses(gets(httpd, 4)) == [200, 200, 200, 429]
    for before, alg in zip(CHAIN, CHAIN[1:]):
        httpd.reload(conf(alg))
        rs = gets(httpd, 4)
        assert statuses(rs) == [200, 200, 200, 429], f"{before} -> {alg}"
        assert [r.headers["X-RateLimit-Remaining"] for r in rs] == \
            ["2", "1", "0", "0"], f"{before} -> {alg}"
    log = httpd.access_log()
    assert {e["result"] for e in log} == {"allowed", "denied"}
    # nothing went wrong, so nothing was said about it
    assert not [ln for ln in httpd.error_log_lines() if "RRL00013" in ln]
