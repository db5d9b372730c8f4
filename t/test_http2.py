"""HTTP/2 through a real httpd with mod_http2, driven by curl (python has
no HTTP/2 client here): one client request spends once, however it comes
(SPEC 3), in both stores."""
import re
import shutil
import subprocess

import pytest

import rrl

H2 = """
<IfModule !http2_module>
    LoadModule http2_module "${mods}/mod_http2.so"
</IfModule>
Protocols h2c http/1.1
"""


def need_curl_h2():
    curl = shutil.which("curl")
    if not curl:
        pytest.skip("no curl")
    out = subprocess.run([curl, "--version"], capture_output=True,
                         text=True).stdout
    if "HTTP2" not in out:
        pytest.skip("curl without HTTP/2")
    return curl


def curl(httpd, *paths, how="--http2", headers=()):
    """curl's responses, each (status line, headers dict), in order: the
    interim 101 of an upgrade among them.  One path a call: after an
    upgrade httpd closes the connection (GOAWAY after stream 1), and
    curl 7.88 fails a second request of a prior-knowledge connection"""
    args = [need_curl_h2(), "-s", "-D", "-", how,
            "--max-time", str(10 * rrl.SLOW)]
    for h in headers:
        args += ["-H", h]
    for p in paths:
        args += ["-o", "/dev/null", f"http://127.0.0.1:{httpd.port}{p}"]
    out = subprocess.run(args, capture_output=True, text=True,
                         timeout=30 * rrl.SLOW).stdout
    blocks = []
    for block in re.split(r"\r?\n\r?\n", out.strip()):
        lines = block.splitlines()
        if not lines:
            continue
        hdrs = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        blocks.append((lines[0], hdrs))
    return blocks


def finals(blocks):
    """the final responses, without the interim 101"""
    return [b for b in blocks if b[0].split()[1] != "101"]


@pytest.fixture(params=["local", "redis"])
def store(request):
    if request.param == "redis":
        r = request.getfixturevalue("redis_server")
        return f"RateLimitRedis {r.url()}\n"
    return ""


@pytest.mark.parametrize("mpm", ["event", "worker"])
def test_http2_01_h2c_upgrade_spends_once(httpd, store, mpm):
    """Upgrade: h2c: mod_http2 answers 101 and replays the request as
    stream 1 of the new connection; the client made one request: one
    spend, and the response it gets carries the headers of that spend
    (event hands the connection back to the MPM between the two, worker
    runs the HTTP/2 connection inside the upgrading request)"""
    httpd.start(H2 + store + """
RateLimit 5/min name=up
<Location /status>
    SetHandler redis-ratelimit-status
</Location>
""", mpm=mpm, mods=rrl.modules_dir())
    blocks = curl(httpd, "/small.txt")
    assert [b[0].split()[:2] for b in blocks] == \
        [["HTTP/1.1", "101"], ["HTTP/2", "200"]], blocks
    final = blocks[-1][1]
    assert final["x-ratelimit-limit"] == "5"
    assert final["x-ratelimit-remaining"] == "4"
    for left in ("3", "2"):
        blocks = curl(httpd, "/small.txt")
        assert [b[0].split()[1] for b in blocks] == ["101", "200"], blocks
        assert blocks[-1][1]["x-ratelimit-remaining"] == left
    # the 101 is logged with the decision its stream 1 carries
    log = httpd.access_log(6)
    assert [(e["status"], e["result"], e["remaining"]) for e in log] == [
        (101, "allowed", "4"), (200, "allowed", "4"),
        (101, "allowed", "3"), (200, "allowed", "3"),
        (101, "allowed", "2"), (200, "allowed", "2")], log
    # counted once each: three client requests
    a = dict(ln.split(": ", 1) for ln in httpd.get("/status?auto")
             .text.splitlines())
    assert (a["Checked"], a["Allowed"], a["Limit[up] Allowed"]) == \
        ("3", "3", "3")
    # stream 1 of a connection that did not upgrade is a request like any
    for left in ("1", "0"):
        blocks = curl(httpd, "/small.txt", how="--http2-prior-knowledge")
        assert [b[0].split()[:2] for b in blocks] == [["HTTP/2", "200"]], \
            blocks
        assert blocks[0][1]["x-ratelimit-remaining"] == left
    blocks = curl(httpd, "/small.txt")
    assert [b[0].split()[:2] for b in blocks] == [["HTTP/1.1", "429"]], \
        blocks                 # a denied request is not upgraded
    assert blocks[0][1]["retry-after"]


def test_http2_02_h2c_upgrade_one_per_minute(httpd, store):
    """The issue's case: RateLimit 1/min, curl --http2 got 101 then 429"""
    httpd.start(H2 + store + "RateLimit 1/min name=one\n",
                mods=rrl.modules_dir())
    blocks = curl(httpd, "/small.txt")
    assert [b[0].split()[1] for b in blocks] == ["101", "200"], blocks
    assert blocks[-1][1]["x-ratelimit-remaining"] == "0"
    blocks = curl(httpd, "/small.txt")
    assert [b[0].split()[1] for b in finals(blocks)] == ["429"], blocks
    # the 101, its stream 1, and the denial (answered in HTTP/1.1: no
    # upgrade of a denied request)
    log = httpd.access_log(3)
    assert [(e["status"], e["result"]) for e in log] == [
        (101, "allowed"), (200, "allowed"), (429, "denied")], log


def test_http2_03_h2c_upgrade_count_by_the_final_status(httpd, store):
    """count=: what the upgraded request owes is spent by the status of
    the response the client gets (stream 1's), not the 101"""
    httpd.start(H2 + store + "RateLimit 1/min count=404 name=miss\n",
                mods=rrl.modules_dir())
    blocks = curl(httpd, "/nothing-here")
    assert [b[0].split()[1] for b in blocks] == ["101", "404"], blocks
    blocks = curl(httpd, "/nothing-here")
    assert [b[0].split()[1] for b in finals(blocks)] == ["429"], blocks
    # a 200 is not counted
    httpd.start(H2 + store + "RateLimit 1/min count=404 name=miss2\n",
                mods=rrl.modules_dir())
    for _ in range(3):
        blocks = curl(httpd, "/small.txt")
        assert [b[0].split()[1] for b in finals(blocks)] == ["200"], blocks


def test_http2_04_h2c_upgrade_of_an_exempt_client(httpd):
    httpd.start(H2 + """
RateLimit 1/min name=ex
RateLimitExempt 127.0.0.1
<Location /status>
    SetHandler redis-ratelimit-status
</Location>
""", mods=rrl.modules_dir())
    for _ in range(3):
        blocks = curl(httpd, "/small.txt")
        assert [b[0].split()[1] for b in blocks] == ["101", "200"], blocks
        assert "x-ratelimit-limit" not in blocks[-1][1]
    log = httpd.access_log(6)
    assert {e["result"] for e in log} == {"exempt"}, log
    a = dict(ln.split(": ", 1) for ln in httpd.get("/status?auto")
             .text.splitlines())
    assert (a["Exempt"], a["Checked"]) == ("3", "0")
