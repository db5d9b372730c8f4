"""Both stores alike, through a real httpd: the local shared-memory store and
Redis (a real redis-server) answer the same way when a limit's algorithm
changes under a name that keeps its keys, and when count= limits meet many
requests at once."""
import socket
import subprocess
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


# ---- SPEC 2: count= reserves at check time, gives back at log time ----

# A login whose password check takes a while (bcrypt, as a real site would
# store it): many attempts are in flight at once
LOGIN = """
LoadModule http2_module "${modules}/mod_http2.so"
Protocols h2c http/1.1
<Location /signin/>
    AuthType Basic
    AuthName "signin"
    AuthBasicProvider file
    AuthUserFile "${docroot}/.htpasswd-bcrypt"
    Require valid-user
    RateLimit 3/min count=401 name=failed
    ${extra}
</Location>
"""
ALICE, WRONG = ("alice", "secret"), ("alice", "wrong")


@pytest.fixture(params=["local", "redis", "cluster"])
def any_store(request, httpd):
    """As store, and Redis Cluster too (t/deploy.py)."""
    if request.param == "local":
        return ""
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url()
    else:
        url = request.getfixturevalue("cluster_factory")().url()
    httpd.vars["redis_url"] = url
    return "RateLimitRedis ${redis_url}\n"


def start_login(httpd, env, store, extra=""):
    env.expect_log("AH01617")         # auth_basic: password mismatch
    rrl.make_dir(httpd.docroot / "signin")
    for name in ("index.html", "tight.txt"):
        (httpd.docroot / "signin" / name).write_text("welcome\n")
    hashed = subprocess.run(
        ["htpasswd", "-nbB", "-C", "11", *ALICE], check=True, text=True,
        capture_output=True).stdout.strip()
    pw = httpd.docroot / ".htpasswd-bcrypt"
    pw.write_text(hashed + "\n")
    pw.chmod(0o644)
    httpd.start(store + LOGIN.replace("${extra}", extra),
                modules=rrl.modules_dir())


def h2_requests(httpd, n, path, auth):
    """n GET requests as n streams of one HTTP/2 connection (h2c with prior
    knowledge), all sent before anything is read; returns once every stream
    has ended.  The few frames this needs, written here: HPACK literals
    without indexing, no Huffman; what the server sends is only framed."""
    def frame(kind, flags, stream, payload=b""):
        return (len(payload).to_bytes(3, "big") + bytes([kind, flags])
                + stream.to_bytes(4, "big") + payload)

    def literal(index, value):        # a static table name, 4-bit prefix
        v = value.encode()
        name = bytes([index]) if index < 15 else bytes([15, index - 15])
        return name + bytes([len(v)]) + v

    block = (b"\x82\x86"                # :method GET, :scheme http
             + literal(4, path) + literal(1, f"127.0.0.1:{httpd.port}")
             + literal(23, rrl.basic_auth(*auth)))
    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0)
    for k in range(n):                   # HEADERS, END_STREAM|END_HEADERS
        out += frame(1, 5, 2 * k + 1, block)
    pending = set(range(1, 2 * n, 2))
    with socket.create_connection(("127.0.0.1", httpd.port),
                                  timeout=30) as sock:
        sock.sendall(out)
        f = sock.makefile("rb")
        while pending:
            head = f.read(9)
            assert len(head) == 9, f"connection closed, {len(pending)} open"
            size, kind, flags = int.from_bytes(head[:3], "big"), head[3], \
                head[4]
            stream = int.from_bytes(head[5:9], "big") & 0x7fffffff
            payload = f.read(size)
            assert kind != 7, f"GOAWAY {payload!r}"
            if kind in (4, 6) and not flags & 1:     # SETTINGS, PING: ack
                sock.sendall(frame(kind, 1, 0, payload if kind == 6 else b""))
            elif (kind in (0, 1) and flags & 1) or kind == 3:
                pending.discard(stream)          # END_STREAM, RST_STREAM


@pytest.mark.slow
def test_stores_02_count_exact_under_concurrency(httpd, env, any_store):
    """24 failing logins at once, each on its own connection, against
    RateLimit 3/min count=401: exactly 3 end 401, the 21 others are denied
    before they run; the failures spent stay spent, so a right password is
    denied too until the limit refills."""
    start_login(httpd, env, any_store)
    codes = httpd.hammer(24, "/signin/", concurrency=24, auth=WRONG)
    assert sorted(codes) == [401] * 3 + [429] * 21
    log = httpd.access_log(24)
    assert sorted(e["result"] for e in log) == ["allowed"] * 3 + \
        ["denied"] * 21
    r = httpd.get("/signin/", auth=ALICE)
    assert r.status == 429
    assert int(r.headers["Retry-After"]) >= 1


@pytest.mark.slow
def test_stores_03_count_exact_under_http2_multiplexing(httpd, env, store):
    """The same over one HTTP/2 connection: 40 streams at once."""
    start_login(httpd, env, store)
    h2_requests(httpd, 40, "/signin/", WRONG)
    log = httpd.access_log(40)
    assert sorted(e["status"] for e in log) == [401] * 3 + [429] * 37


def test_stores_04_successful_logins_give_back(httpd, env, store):
    """A login that succeeds gives back what it reserved: any number of
    them, then still three failures before a denial."""
    start_login(httpd, env, store)
    # three logins at once all succeed: three can be in flight
    assert sorted(httpd.hammer(3, "/signin/", concurrency=3, auth=ALICE)) \
        == [200] * 3
    httpd.access_log(3)
    httpd.mark()
    rs = []
    for i in range(6):
        rs.append(httpd.get("/signin/", auth=ALICE))
        httpd.access_log(i + 1)       # given back once logged
    assert statuses(rs) == [200] * 6
    # what was left with this request's reservation taken
    assert [r.headers["X-RateLimit-Remaining"] for r in rs] == ["2"] * 6
    for i in range(3):
        assert httpd.get("/signin/", auth=WRONG).status == 401
    assert httpd.get("/signin/", auth=WRONG).status == 429
    assert httpd.get("/signin/", auth=ALICE).status == 429


def test_stores_05_count_all_or_nothing_and_across_phases(httpd, env, store):
    """A request another limit denies reserves nothing; a reservation of
    the access phase is given back when a limit of the auth phase denies
    the request (429 is not a counted status)."""
    start_login(httpd, env, store, extra="""
    RateLimit 1/min key=%{REMOTE_USER} name=peruser
</Location>
<Location /signin/tight.txt>
    RateLimit 1/min name=tight""")
    # tight denies the second: failed reserves nothing for it
    assert httpd.get("/signin/tight.txt", auth=WRONG).status == 401
    assert httpd.get("/signin/tight.txt", auth=WRONG).status == 429
    # peruser (auth phase) denies alice's second login, after failed
    # reserved for it: given back at log time
    assert httpd.get("/signin/", auth=ALICE).status == 200
    assert httpd.get("/signin/", auth=ALICE).status == 429
    httpd.access_log(4)
    # so two failures of three are left
    assert httpd.get("/signin/", auth=WRONG).status == 401
    httpd.access_log(5)
    assert httpd.get("/signin/", auth=WRONG).status == 401
    httpd.access_log(6)
    assert httpd.get("/signin/", auth=WRONG).status == 429
    log = httpd.access_log(7)
    assert [e["name"] for e in log] == ["tight", "tight", "peruser",
                                        "peruser", "failed", "failed",
                                        "failed"]
