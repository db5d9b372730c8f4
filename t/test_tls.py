"""TLS to Redis (SPEC §4): rediss://, rediss-sentinel:// and rediss-cluster://
through the module's own OpenSSL layer, against real redis-servers that
speak TLS only, with certificates the tests make (rrl.TlsFiles).  The chain
and the name are verified by default; a failure is a Redis error like any
other (RateLimitOnError decides, the breaker backs off), never a crash or a
hang."""
import re
import socket
import threading

import pytest

import rrl
from deploy import keyslot

ONE_CHILD = rrl.one_child(48)
STATUS = rrl.STATUS_LOCATION


def snippet(limit, on_error="allow", extra=""):
    return (f"RateLimitRedis ${{redis_url}}\nRateLimitOnError {on_error}\n"
            f"RateLimitRedisTimeout connect=1s command=2s\n{extra}\n"
            f"{limit}\n{STATUS}")


counters = rrl.counters


def tls_url(r, **opts):
    """rediss://127.0.0.1:PORT?cacert=CA&opts... of r."""
    return f"rediss://127.0.0.1:{r.port}" + r.tls_query(**opts)


@pytest.fixture
def tls_redis(redis_factory, tls_files):
    """A redis-server that speaks TLS only: tls_redis(cert="server",
    auth_clients=False)."""
    def make(cert="server", auth_clients=False):
        return redis_factory(name="tls", tls=tls_files, tls_cert=cert,
                             tls_auth_clients=auth_clients)
    return make


def results(httpd, n):
    return [e["result"] for e in httpd.access_log(n)]


# ---- decisions over TLS ----

def test_tls_01_exact_across_two_instances(httpd, httpd_factory, tls_redis):
    r = tls_redis()
    servers = []
    for h in (httpd, httpd_factory("peer")):
        h.vars["redis_url"] = tls_url(r)
        servers.append(h.start(snippet("RateLimit 10/min name=tls")))
    codes = [servers[i % 2].get("/small.txt").status for i in range(16)]
    assert codes == [200] * 10 + [429] * 6
    c = r.client()
    assert c.keys("*") == [b"rl:tls:127.0.0.1"]
    assert 0 < c.pttl("rl:tls:127.0.0.1") <= 60000
    assert set(results(servers[0], 8)) | set(results(servers[1], 8)) \
        == {"allowed", "denied"}


def test_tls_02_client_certificate_required_and_given(httpd, tls_redis,
                                                      tls_files, env):
    env.expect_log("RRL00013", "RRL00019", "RRL00023")
    r = tls_redis(auth_clients=True)
    # without a certificate, Redis ends the handshake: a Redis error
    httpd.vars["redis_url"] = tls_url(r)
    httpd.start(snippet("RateLimit 2/min name=mtls"))
    assert [httpd.get("/small.txt").status for _ in range(3)] == [200] * 3
    assert set(results(httpd, 3)) == {"fallback-allowed"}
    assert httpd.wait_error_log(r"RRL00019: rediss://127\.0\.0\.1:\d+\?"
                                r"cacert=\S+ is lost \(connect to "
                                r"127\.0\.0\.1:\d+: TLS")
    # with one: Redis decides
    httpd.mark()
    httpd.vars["redis_url"] = tls_url(r, cert=tls_files.pem("client"),
                                      key=tls_files.key("client"))
    httpd.start(snippet("RateLimit 2/min name=mtls"))
    assert [httpd.get("/small.txt").status for _ in range(3)] \
        == [200, 200, 429]
    assert results(httpd, 3) == ["allowed", "allowed", "denied"]
    # a certificate of another CA is refused too
    httpd.mark()
    httpd.vars["redis_url"] = tls_url(r, cert=tls_files.pem("other-client"),
                                      key=tls_files.key("other-client"))
    httpd.start(snippet("RateLimit 2/min name=mtls2"))
    assert httpd.get("/small.txt").status == 200
    assert results(httpd, 1) == ["fallback-allowed"]


REFUSED = [
    # (server certificate, URL options, what OpenSSL says)
    ("server", {"cacert": "other-ca"},
     "self-signed certificate in certificate chain|unable to get local "
     "issuer"),
    ("expired", {}, "certificate has expired"),
    ("other-name", {}, "IP address mismatch"),
    ("dns-only", {}, "IP address mismatch"),
    ("server", {"sni": "other.example"}, "(?i:hostname mismatch)"),
]


@pytest.mark.parametrize("cert,opts,why", REFUSED,
                         ids=[f"{c}-{'-'.join(o) or 'default'}"
                              for c, o, _ in REFUSED])
def test_tls_03_a_server_that_does_not_verify_is_refused(httpd, tls_redis,
                                                         tls_files, env,
                                                         cert, opts, why):
    """A wrong CA, an expired certificate, a name or address it was not
    made for: refused by default, with OpenSSL's reason in the log, and
    RateLimitOnError decides; verify=off accepts it, with a warning."""
    env.expect_log("RRL00013", "RRL00019", "RRL00023", "RRL00040")
    r = tls_redis(cert=cert)
    opts = {k: tls_files.pem(v) if k == "cacert" else v
            for k, v in opts.items()}
    httpd.vars["redis_url"] = tls_url(r, **opts)
    httpd.start(snippet("RateLimit 2/min name=ver", on_error="deny"))
    # the parent's PING at startup says so first, with the same reason
    assert re.search(why, httpd.wait_error_log("RRL00023.*does not verify"))
    assert httpd.get("/small.txt").status == 429
    assert results(httpd, 1) == ["fallback-denied"]
    line = httpd.wait_error_log("RRL00019")
    assert "does not verify" in line and re.search(why, line), line
    assert not r.client().keys("*")
    # verify=off: no check at all, and a warning at startup
    httpd.mark()
    httpd.vars["redis_url"] = tls_url(r, verify="off", **opts)
    httpd.start(snippet("RateLimit 2/min name=ver", on_error="deny"))
    assert httpd.wait_error_log("RRL00040.*verify=off")
    assert [httpd.get("/small.txt").status for _ in range(3)] \
        == [200, 200, 429]
    assert r.client().keys("*") == [b"rl:ver:127.0.0.1"]


def test_tls_04_sni_names_the_server(httpd, tls_redis, tls_files):
    """The certificate names localhost only: reached at 127.0.0.1, sni=
    sends and verifies the name it has (without it: test_tls_03)."""
    r = tls_redis(cert="dns-only")
    httpd.vars["redis_url"] = tls_url(r, sni="localhost")
    httpd.start(snippet("RateLimit 2/min name=sni", on_error="deny"))
    assert [httpd.get("/small.txt").status for _ in range(3)] \
        == [200, 200, 429]
    # and by name, with no sni=: the URL's host is the name (where the
    # system resolves localhost: a bare chroot may have no /etc/hosts)
    try:
        socket.getaddrinfo("localhost", r.port)
    except socket.gaierror:
        return
    httpd.mark()
    httpd.vars["redis_url"] = (f"rediss://localhost:{r.port}"
                               + r.tls_query())
    httpd.start(snippet("RateLimit 2/min name=sni2", on_error="deny"))
    assert [httpd.get("/small.txt").status for _ in range(3)] \
        == [200, 200, 429]


def test_tls_05_requests_pipelined_over_one_connection(httpd, tls_redis):
    r = tls_redis()
    httpd.vars["redis_url"] = tls_url(r)
    httpd.start(snippet("RateLimit 20/h name=tpipe"), mpm_conf=ONE_CHILD)
    assert httpd.get("/rl-status?health").status == 200
    before = counters(httpd)
    c = r.client()
    c.execute_command("CLIENT", "PAUSE", "1000", "ALL")
    codes = [None] * 32
    go = threading.Barrier(32)

    def one(i):
        go.wait()
        codes[i] = httpd.get("/small.txt", timeout=30).status
    threads = [threading.Thread(target=one, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    after = counters(httpd)
    assert sorted(codes) == [200] * 20 + [429] * 12
    assert after["redis_errors"] == before["redis_errors"]
    assert after["redis_connections"] == before["redis_connections"]
    writes = after["redis_writes"] - before["redis_writes"]
    assert 2 <= writes <= 8, writes


def test_tls_06_restart_script_flush_and_session_reuse(httpd, tls_redis,
                                                       env):
    """SCRIPT FLUSH and a Redis restart under TLS fail no request; a
    connection made again resumes the TLS session of the last one."""
    r = tls_redis()
    httpd.vars["redis_url"] = tls_url(r)
    httpd.start(snippet("RateLimit 100/h name=trs", on_error="deny"),
                mpm_conf=ONE_CHILD)
    assert httpd.get("/small.txt").status == 200
    r.client().script_flush()
    assert httpd.get("/small.txt").status == 200
    before = counters(httpd)
    # connections closed by the server: the next request makes a new one,
    # resuming the session
    c = r.client()
    c.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    assert httpd.get("/small.txt").status == 200
    after = counters(httpd)
    assert after["redis_connections"] > before["redis_connections"]
    assert after["redis_tls_resumed"] > before["redis_tls_resumed"]
    r.restart()
    assert [httpd.get("/small.txt").status for _ in range(3)] == [200] * 3
    assert {e["result"] for e in httpd.access_log(8)
            if e["uri"] == "/small.txt"} == {"allowed"}
    assert r.client().get("rl:trs:127.0.0.1") is not None


def test_tls_07_files_that_cannot_be_read_stop_configtest(httpd, tls_files,
                                                          tmp_path):
    bad = tmp_path / "not-a-cert.pem"
    bad.write_text("hello\n")
    cases = [
        (f"rediss://h:6380?cacert={tmp_path}/missing.pem",
         ["cacert=", "missing.pem cannot be read"]),
        (f"rediss://h:6380?cacert={bad}", ["cacert=", "not-a-cert.pem"]),
        (f"rediss://h:6380?cert={tls_files.pem('client')}"
         f"&key={tls_files.key('server')}", ["does not belong to cert="]),
        (f"rediss-cluster://h:7000?cert={tls_files.pem('client')}"
         f"&key={tmp_path}/nokey", ["nokey cannot be read"]),
    ]
    for url, expected in cases:
        rc, out = httpd.configtest(f"RateLimitRedis {url}\n")
        assert rc != 0, url
        assert "RateLimitRedis" in out, out
        for e in expected:
            assert e in out, (url, out)


# ---- Sentinel and Cluster over TLS ----

@pytest.mark.slow
def test_tls_08_sentinel_over_tls_follows_a_failover(httpd, sentinel_factory,
                                                     tls_files):
    dep = sentinel_factory(tls=tls_files)
    assert dep.url().startswith("rediss-sentinel://127.0.0.1:")
    httpd.vars["redis_url"] = dep.url()
    httpd.start(snippet("RateLimit 5/min key=%{HTTP:X-Key} name=tsent"))
    assert [httpd.get("/small.txt", headers={"X-Key": "a"}).status
            for _ in range(6)] == [200] * 5 + [429]
    assert dep.client().get("rl:tsent:a") is not None
    new = dep.failover()

    def on_new_master():
        httpd.get("/small.txt", headers={"X-Key": "probe"})
        return new.client().exists("rl:tsent:probe")
    rrl.wait_for(on_new_master, 20, "the module to use the new master")
    assert [httpd.get("/small.txt", headers={"X-Key": "b"}).status
            for _ in range(6)] == [200] * 5 + [429]
    httpd.mark()


@pytest.mark.slow
def test_tls_09_cluster_over_tls_follows_moved(httpd, cluster_factory,
                                               tls_files):
    cl = cluster_factory(tls=tls_files)
    assert cl.url().startswith("rediss-cluster://127.0.0.1:")
    httpd.vars["redis_url"] = cl.url(nodes=cl.nodes[:1])
    httpd.start(snippet("RateLimit 30/h key=%{HTTP:X-Key} name=tcl",
                        on_error="deny"))
    v = "moving"
    key = f"rl:tcl:{{{v}}}"
    slot = keyslot(key)
    get = lambda: httpd.get("/small.txt", headers={"X-Key": v}).status
    assert [get() for _ in range(10)] == [200] * 10
    src = cl.node_for_key(key)
    dst = next(n for n in cl.nodes if n is not src)
    cl.migrate_slot(slot, dst)
    assert cl.node_for_key(key).port == dst.port
    # MOVED followed over TLS to the new owner: the count went with the key
    codes = [get() for _ in range(25)]
    assert codes == [200] * 20 + [429] * 5
    assert key in cl.all_keys()[dst]
    log = "\n".join(httpd.error_log_lines())
    assert "RRL00013" not in log and "RRL00019" not in log
