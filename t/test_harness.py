"""The harness itself: no RateLimit directive needed, only a module that loads."""

import os
import re
import subprocess

import pytest

import rrl


def test_harness_01_serves_ipv4(httpd, env):
    env.expect_log("AH01630")   # client denied by server configuration (.htpasswd)
    httpd.start()
    r = httpd.get("/index.html")
    assert (r.status, r.body) == (200, b"index\n")
    r = httpd.get("/small.txt")
    assert r.status == 200 and r.body == b"small\n"
    assert r.headers["content-type"].startswith("text/plain")
    assert httpd.get("/dir/").body == b"dir index\n"
    assert httpd.get("/.htpasswd").status == 403
    assert httpd.get("/nonexistent").status == 404


def test_harness_02_serves_ipv6(httpd):
    if not rrl.ipv6_usable():
        pytest.skip("::1 is not usable here")
    httpd.start()
    r = httpd.get("/index.html", ipv6=True)
    assert (r.status, r.body) == (200, b"index\n")
    assert httpd.access_log(1)[-1]["remote"] == "::1"


def test_harness_03_access_log(httpd):
    httpd.start()
    httpd.get("/small.txt?a=%22b%22", headers={"User-Agent": 'x"y'})
    httpd.get("/index.html", auth=("alice", "secret"), source="127.0.0.2")
    log = httpd.access_log(2)
    assert len(log) == 2   # the readiness probe (a bare connect) logs nothing
    first, second = log
    assert first["status"] == 200 and first["method"] == "GET"
    assert first["uri"] == "/small.txt" and first["query"] == '?a=%22b%22'
    assert first["remote"] == "127.0.0.1" and second["remote"] == "127.0.0.2"
    for key in ("result", "name", "limit", "remaining", "user"):
        assert first[key] == "-", key
    assert isinstance(first["t"], float) and first["pid"] > 0
    # a later call returns the same window (the mark is per test)
    assert httpd.access_log() == log


def test_harness_04_basic_auth(httpd, env):
    env.expect_log("AH01617")   # alice: Password Mismatch
    httpd.start("""
<Location "/private">
    AuthType Basic
    AuthName "test"
    AuthUserFile "${docroot}/.htpasswd"
    Require valid-user
</Location>
Alias "/private" "${docroot}/dir"
""")
    assert httpd.get("/private/").status == 401
    assert httpd.get("/private/", auth=("alice", "wrong")).status == 401
    assert httpd.get("/private/", auth=("bob", "hunter2")).status == 200
    assert [e["user"] for e in httpd.access_log(3)] == ["-", "alice", "bob"]


def test_harness_05_configtest_syntax_error(httpd):
    rc, out = httpd.configtest("\n\nNoSuchDirective on\n")
    assert rc != 0
    assert "NoSuchDirective" in out
    m = re.search(r"line (\d+) of (\S+):", out)
    assert m and m.group(2).endswith("configtest.conf"), out
    assert httpd.conf_dir.joinpath("configtest.conf").read_text().splitlines()[
        int(m.group(1)) - 1] == "NoSuchDirective on"
    rc, out = httpd.configtest("")
    assert rc == 0, out


def test_harness_06_error_log_checker():
    lines = [
        "[Sun Nov 23 11:00:00.000 2025] [mpm_event:notice] [pid 1:tid 2] AH00489: resuming normal operations",
        "[Sun Nov 23 11:00:00.000 2025] [core:warn] [pid 1] AH00098: pid file overwritten",
        "[Sun Nov 23 11:00:00.000 2025] [redis_ratelimit:error] [pid 1:tid 3] RRL00042: EVALSHA failed",
        "[Sun Nov 23 11:00:00.000 2025] [:error] [pid 1] something",
        "[Sun Nov 23 11:00:00.000 2025] [redis_ratelimit:debug] [pid 1] RRL00007: fine",
        "[Sun Nov 23 11:00:00.000 2025] [core:notice] [pid 1] AH00052: child pid 7 exit signal Segmentation fault (11)",
    ]
    assert rrl.check_error_log(lines) == lines[1:4] + lines[5:]
    assert rrl.check_error_log(lines, ["RRL00042", "AH00098", r"\[:error\]"]) == [lines[5]]
    assert rrl.check_error_log(lines, ["AH00052", "."]) == [lines[5]]   # crashes always fail


def test_harness_07_error_log_check_fails_test(httpd, env):
    httpd.start(mpm="prefork")
    httpd.reload("LogLevel core:debug\n")
    assert httpd.get("/index.html").status == 200
    # the server itself logged nothing bad...
    env.check()
    # ...but a [warn] line from it would fail the test, unless expected
    with httpd.error_log.open("a") as f:
        f.write("[Sun Nov 23 11:00:00.000 2025] [core:warn] [pid 1] AH01234: injected\n")
    with pytest.raises(pytest.fail.Exception, match="AH01234: injected"):
        env.check()
    with httpd.error_log.open("a") as f:
        f.write("[Sun Nov 23 11:00:00.000 2025] [core:warn] [pid 1] AH01235: expected\n")
    env.expect_log("AH01235")
    env.check()


def test_harness_08_hammer_and_raw(httpd):
    httpd.start(mpm="worker")
    statuses = httpd.hammer(50, paths=["/index.html", "/small.txt", "/nope"], concurrency=5)
    assert statuses.count(200) == 34 and statuses.count(404) == 16
    log = httpd.access_log(50)
    assert len(log) == 50 and len({e["pid"] for e in log}) >= 1
    reply = httpd.raw(b"GET /small.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"\r\n\r\nsmall\n")


def test_harness_09_start_is_fresh_ensure_reuses(httpd):
    first = httpd.start("# one").pid
    assert httpd.ensure("# one").pid == first
    assert httpd.start("# one").pid != first
    assert httpd.ensure("# two").running()


def test_harness_10_factory(httpd, httpd_factory):
    httpd.start()
    other = httpd_factory("second").start()
    assert other.port != httpd.port and other.root != httpd.root
    assert other.get("/small.txt").status == 200
    assert httpd.access_log() == [] and len(other.access_log(1)) == 1


def test_harness_11_redis(redis_server):
    c = redis_server.client()
    assert c.ping()
    assert c.dbsize() == 0
    c.set("k", "v")
    port = redis_server.port
    redis_server.restart()
    assert redis_server.port == port
    assert redis_server.client().ping()
    assert redis_server.client().get("k") is None   # no persistence
    assert redis_server.url() == f"redis://127.0.0.1:{port}"


def test_harness_12_redis_flushed_per_test(redis_server):
    c = redis_server.client()
    assert c.dbsize() == 0
    c.set("left", "over")


def test_harness_13_redis_auth_and_unixsocket(redis_factory):
    import redis
    r = redis_factory(password="x", unixsocket=True)
    assert r.client().ping()
    with pytest.raises(redis.AuthenticationError):
        r.client(password=None).ping()
    assert redis.Redis(unix_socket_path=r.unixsocket, password="x").ping()
    assert r.url(db=2) == f"redis://:x@127.0.0.1:{r.port}/2"


def test_harness_14_redis_url_in_snippet(httpd, redis_server):
    httpd.start('Header always set X-Redis "${redis_url}"')
    assert httpd.get("/").headers["X-Redis"] == redis_server.url()


# ---- make check-asan's reports, decided by the stack (no httpd needed) ----

LSAN_HEAD = """\
=================================================================
==4711==ERROR: LeakSanitizer: detected memory leaks
"""

# seen with Apache 2.4.68 (issue 18): httpd's own, at a graceful stop
LEAK_HTTPD_MPM = """\
Direct leak of 200 byte(s) in 1 object(s) allocated from:
    #0 0x7f3968cb83b7 in __interceptor_calloc ../../../../src/libsanitizer/asan/asan_malloc_linux.cpp:77
    #1 0x7f3968b1c139 in apr_allocator_create (/lib/x86_64-linux-gnu/libapr-1.so.0+0x22139)
    #2 0x7f3967f0b504  (/usr/lib/apache2/modules/mod_mpm_event.so+0xb504)
    #3 0x7f39688a2043 in start_thread nptl/pthread_create.c:442
"""

# seen with Apache 2.4.71: in every child, from the configuration
LEAK_HTTPD_REGEX = """\
Direct leak of 179 byte(s) in 1 object(s) allocated from:
    #0 0x7f3968cb89cf in __interceptor_malloc ../../../../src/libsanitizer/asan/asan_malloc_linux.cpp:69
    #1 0x7f3968b73819 in pcre2_compile_8 (/lib/x86_64-linux-gnu/libpcre2-8.so.0+0xd819)
    #2 0x55cf32936067 in ap_regcomp (/usr/sbin/apache2+0x46067)
    #3 0x55cf3293233d in ap_pregcomp (/usr/sbin/apache2+0x4233d)
    #4 0x7f3967fd4aa2  (/usr/lib/apache2/modules/mod_setenvif.so+0x1aa2)
    #5 0x55cf329527d1  (/usr/sbin/apache2+0x627d1)
    #6 0x55cf32953c88 in ap_add_loaded_module (/usr/sbin/apache2+0x63c88)
    #7 0x55cf32966850  (/usr/sbin/apache2+0x76850)
    #8 0x55cf32951a00  (/usr/sbin/apache2+0x61a00)
    #9 0x55cf32952402  (/usr/sbin/apache2+0x62402)
    #10 0x55cf32954226 in ap_build_cont_config (/usr/sbin/apache2+0x64226)
    #11 0x55cf3294258d  (/usr/sbin/apache2+0x5258d)
    #12 0x55cf32951aed  (/usr/sbin/apache2+0x61aed)
    #13 0x55cf32952402  (/usr/sbin/apache2+0x62402)
    #14 0x55cf32954544 in ap_build_config (/usr/sbin/apache2+0x64544)
    #15 0x55cf32954e8d in ap_process_resource_config (/usr/sbin/apache2+0x64e8d)
    #16 0x55cf32955dd1 in ap_read_config (/usr/sbin/apache2+0x65dd1)
    #17 0x55cf3292b08e in main (/usr/sbin/apache2+0x3b08e)
    #18 0x7f396893f249 in __libc_start_call_main ../sysdeps/nptl/libc_start_call_main.h:58
    #19 0x7f396893f304 in __libc_start_main_impl ../csu/libc-start.c:360
    #20 0x55cf3292b2c0 in _start (/usr/sbin/apache2+0x3b2c0)
"""

# The module's below were planted in a copy of it (issue 18) and reported
# by make check-asan: a malloc per request in the access hook
LEAK_MODULE_HOOK = """\
Direct leak of 48 byte(s) in 2 object(s) allocated from:
    #0 0x7f48166b89cf in __interceptor_malloc ../../../../src/libsanitizer/asan/asan_malloc_linux.cpp:69
    #1 0x7f4814748d35 in rrl_hook_access /tmp/scratch18/mod_redis_ratelimit.c:4576
    #2 0x56359c118f4f in ap_run_access_checker (/usr/sbin/apache2+0x57f4f)
    #3 0x56359c11b632 in ap_process_request_internal (/usr/sbin/apache2+0x5a632)
    #4 0x56359c13d434 in ap_process_async_request (/usr/sbin/apache2+0x7c434)
    #5 0x56359c139732  (/usr/sbin/apache2+0x78732)
    #6 0x56359c12e31f in ap_run_process_connection (/usr/sbin/apache2+0x6d31f)
    #7 0x7f4815b56742  (/usr/lib/apache2/modules/mod_mpm_event.so+0xb742)
    #8 0x7f4815b57599  (/usr/lib/apache2/modules/mod_mpm_event.so+0xc599)
    #9 0x7f48164a71f4 in start_thread nptl/pthread_create.c:442
    #10 0x7f48165278eb in clone3 ../sysdeps/unix/sysv/linux/x86_64/clone3.S:81
"""

# a malloc in a cleanup the module registered on r->pool: APR calls it
LEAK_MODULE_CLEANUP = """\
Direct leak of 40 byte(s) in 1 object(s) allocated from:
    #0 0x7f27c30b89cf in __interceptor_malloc ../../../../src/libsanitizer/asan/asan_malloc_linux.cpp:69
    #1 0x7f27c10fccbd in rrl_planted_cleanup /tmp/scratch18/mod_redis_ratelimit.c:4576
    #2 0x7f27c37575dd in apr_pool_destroy (/lib/x86_64-linux-gnu/libapr-1.so.0+0x225dd)
    #3 0x558851690ebd  (/usr/sbin/apache2+0x5cebd)
    #4 0x558851691dd4 in ap_core_output_filter (/usr/sbin/apache2+0x5ddd4)
    #5 0x5588516af4bc in ap_process_request_after_handler (/usr/sbin/apache2+0x7b4bc)
    #6 0x5588516ac732  (/usr/sbin/apache2+0x78732)
    #7 0x5588516a131f in ap_run_process_connection (/usr/sbin/apache2+0x6d31f)
    #8 0x7f27c2716742  (/usr/lib/apache2/modules/mod_mpm_event.so+0xb742)
    #9 0x7f27c2717599  (/usr/lib/apache2/modules/mod_mpm_event.so+0xc599)
    #10 0x7f27c2ea71f4 in start_thread nptl/pthread_create.c:442
    #11 0x7f27c2f278eb in clone3 ../sysdeps/unix/sysv/linux/x86_64/clone3.S:81
"""

# the access hook's, unsymbolized (ASAN_OPTIONS symbolize=0): the module
# known only by the path of its .so
LEAK_MODULE_SO = """\
Direct leak of 72 byte(s) in 3 object(s) allocated from:
    #0 0x7ff9758b89cf  (/usr/lib/gcc/x86_64-linux-gnu/12/libasan.so+0xb89cf)
    #1 0x7ff973948d35  (/tmp/scratch18/asan/.libs/mod_redis_ratelimit.so+0xd2d35)
    #2 0x55e200190f4f  (/usr/sbin/apache2+0x57f4f)
    #3 0x55e200193632  (/usr/sbin/apache2+0x5a632)
    #4 0x55e2001b5434  (/usr/sbin/apache2+0x7c434)
    #5 0x55e2001b1732  (/usr/sbin/apache2+0x78732)
    #6 0x55e2001a631f  (/usr/sbin/apache2+0x6d31f)
    #7 0x7ff974be2742  (/usr/lib/apache2/modules/mod_mpm_event.so+0xb742)
    #8 0x7ff974be3599  (/usr/lib/apache2/modules/mod_mpm_event.so+0xc599)
    #9 0x7ff97566a1f4  (/lib/x86_64-linux-gnu/libc.so.6+0x891f4)
    #10 0x7ff9756ea8eb  (/lib/x86_64-linux-gnu/libc.so.6+0x1098eb)
"""

# a malloc in a cleanup the module registered on pconf, as httpd's parent
# reports it at exit: it has unloaded the module by then
LEAK_UNLOADED = """\
Direct leak of 56 byte(s) in 1 object(s) allocated from:
    #0 0x7ff4c3cb89cf in __interceptor_malloc ../../../../src/libsanitizer/asan/asan_malloc_linux.cpp:69
    #1 0x7ff4c1cfccbd  (<unknown module>)
    #2 0x7ff4c3be55dd in apr_pool_destroy (/lib/x86_64-linux-gnu/libapr-1.so.0+0x225dd)
    #3 0x7ff4c3be55bc in apr_pool_destroy (/lib/x86_64-linux-gnu/libapr-1.so.0+0x225bc)
    #4 0x5582893ad737  (/usr/sbin/apache2+0x3b737)
    #5 0x5582893ad209 in main (/usr/sbin/apache2+0x3b209)
    #6 0x7ff4c3a08249 in __libc_start_call_main ../sysdeps/nptl/libc_start_call_main.h:58
    #7 0x7ff4c3a08304 in __libc_start_main_impl ../csu/libc-start.c:360
    #8 0x5582893ad2c0 in _start (/usr/sbin/apache2+0x3b2c0)
"""


def lsan(*leaks: str, summary: str = "729 byte(s) leaked in 4 allocation(s)") -> str:
    """A LeakSanitizer report as a process writes it at exit."""
    return (LSAN_HEAD + "\n" + "\n".join(leaks)
            + f"\nSUMMARY: AddressSanitizer: {summary}.\n")


def test_harness_15_httpd_leak_fails_nothing():
    kept, httpd = rrl.SanitizerReports.split_leaks(lsan(LEAK_HTTPD_MPM).strip())
    assert kept == ""
    assert httpd == [LEAK_HTTPD_MPM.strip()]


def test_harness_16_module_leak_by_symbol_fails():
    # the same callback once the module is split into src/rrl_*.c
    split = LEAK_MODULE_CLEANUP.replace(
        "rrl_planted_cleanup /tmp/scratch18/mod_redis_ratelimit.c:4576",
        "rrl_pipe_cleanup /work/main/src/rrl_pipeline.c:210")
    for leak in (LEAK_MODULE_HOOK, LEAK_MODULE_CLEANUP, split):
        report = lsan(leak).strip()
        assert rrl.SanitizerReports.split_leaks(report) == (report, [])


def test_harness_17_module_leak_by_so_path_fails():
    report = lsan(LEAK_MODULE_SO).strip()
    assert rrl.SanitizerReports.split_leaks(report) == (report, [])


def test_harness_18_mixed_report_keeps_the_module_leaks():
    indirect = LEAK_HTTPD_REGEX.replace("Direct leak", "Indirect leak")
    report = lsan(LEAK_HTTPD_MPM, LEAK_MODULE_HOOK, indirect,
                  LEAK_MODULE_SO).strip()
    kept, httpd = rrl.SanitizerReports.split_leaks(report)
    assert kept == (lsan(LEAK_MODULE_HOOK, LEAK_MODULE_SO).strip() + "\n\n"
                    "(2 more, with no frame of the module: httpd's, not shown)")
    assert httpd == [LEAK_HTTPD_MPM.strip(), indirect.strip()]


def test_harness_19_undecided_leak_fails_saying_why():
    kept, httpd = rrl.SanitizerReports.split_leaks(lsan(LEAK_UNLOADED))
    assert httpd == [] and "a frame in a library no longer loaded" in kept
    assert LEAK_UNLOADED.strip() in kept
    # 21 frames, all LeakSanitizer keeps at malloc_context_size=21
    kept, httpd = rrl.SanitizerReports.split_leaks(lsan(LEAK_HTTPD_REGEX), 21)
    assert httpd == [] and "cut off at malloc_context_size=21" in kept
    kept, httpd = rrl.SanitizerReports.split_leaks(lsan(LEAK_HTTPD_REGEX), 22)
    assert (kept, httpd) == ("", [LEAK_HTTPD_REGEX.strip()])


def test_harness_20_other_reports_fail_as_they_are():
    ubsan = ("/work/wt18/mod_redis_ratelimit.c:812:17: runtime error: "
             "signed integer overflow: 9223372036854775807 + 1 cannot be "
             "represented in type 'long int'")
    kept, httpd = rrl.SanitizerReports.split_leaks(ubsan + "\n" + lsan(LEAK_HTTPD_MPM))
    assert (kept, len(httpd)) == (ubsan, 1)
    asan = ("=================================================================\n"
            "==4711==ERROR: AddressSanitizer: heap-use-after-free on address "
            "0x602000000010 at pc 0x7f39673a1b2c bp 0x7ffd sp 0x7ffd\n"
            "READ of size 8 at 0x602000000010 thread T3\n"
            "    #0 0x7f39673a1b2c in rrl_hook_access /work/wt18/mod_redis_ratelimit.c:4590\n"
            "\n"
            "SUMMARY: AddressSanitizer: heap-use-after-free "
            "/work/wt18/mod_redis_ratelimit.c:4590 in rrl_hook_access")
    assert rrl.SanitizerReports.split_leaks(asan) == (asan, [])


def test_harness_21_httpd_leaks_counted_and_listed(tmp_path, monkeypatch):
    # the reports' directory goes into the options httpd would inherit
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        monkeypatch.setenv(var, os.environ.get(var, ""))
    reports = rrl.SanitizerReports(tmp_path / "sanitizer")
    gone = subprocess.Popen(["true"])
    gone.wait()
    for pid, text in ((gone.pid, lsan(LEAK_HTTPD_MPM, LEAK_HTTPD_REGEX)),
                      (gone.pid + 1, lsan(LEAK_HTTPD_REGEX, LEAK_MODULE_SO))):
        (reports.dir / f"asan.{pid}").write_text("\n" + text)
    [failing] = reports.new()
    assert failing.startswith(f"--- {reports.dir}/asan.{gone.pid + 1} ---\n")
    assert LEAK_MODULE_SO.strip() in failing and "ap_regcomp" not in failing
    assert reports.new() == []
    listing = tmp_path / "tmp" / "httpd-leaks.txt"
    line = reports.write_httpd_leaks(listing)
    assert line == (f"3 httpd leaks not from the module ignored "
                    f"(2 distinct; the first of each: {listing})")
    text = listing.read_text()
    assert f"in 2 report(s), the first asan.{gone.pid}:\n{LEAK_HTTPD_REGEX.strip()}" in text
    assert f"in 1 report(s), the first asan.{gone.pid}:\n{LEAK_HTTPD_MPM.strip()}" in text
    reports.httpd_leaks.clear()
    assert reports.write_httpd_leaks(listing) == "" and not listing.exists()


def test_harness_22_the_redis_asked_for_runs(redis_server):
    """RRL_REDIS_SERVER picks the server the suite runs on (Valkey on
    Debian 13, .ci/debian13): the one that answers is that one."""
    info = redis_server.client().info("server")
    if "valkey" in rrl.REDIS_SERVER:
        assert "valkey_version" in info, info
    else:
        assert "valkey_version" not in info and "redis_version" in info
    assert redis_server.command()[0] == rrl.REDIS_SERVER
