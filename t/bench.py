#!/usr/bin/python3
"""make bench: what the module costs, measured side by side in one run.

A baseline Apache without the module serves a small static file the whole
time; each scenario runs in its own Apache with the same tuning.  wrk drives
them for the same duration, alternating baseline and scenario (A B A B ...)
so that machine drift cancels, and the table gives requests/s (median), p50
and p99 latency, the ratio to the baseline runs of the same pairs, Apache
children's CPU and voluntary context switches per request, Redis commands
and Redis CPU per request.  Scenario 0, a second Apache without the module,
shows how far the ratios stray in this run when nothing differs.  Then Redis
memory per key for each algorithm, and the children's RSS before and after
1,000,000 requests.

BENCH_SECONDS (default 4) and BENCH_PAIRS (default 3) scale it; BENCH_OUT
names a file to write the Markdown table to; BENCH_SCENARIOS picks some
scenarios (e.g. "3 4"), without the memory and RSS figures.

Row "peer" (t/peer.py) is the same measure of nginx + ngx_lua +
lua-resty-redis running lua/ratelimit.lua against nginx alone; it is
skipped, with a word why, where those are not installed.  Each row also
gives the CPU a decision adds per request: the server's, above its paired
baseline runs, and Redis's.  Last, the floors: what the script alone
costs Redis a decision, driven by redis-benchmark without Apache, one call
at a time and pipelined in batches of 1, 4 and 16 (docs/benchmarks.md says
what they bound).
"""
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import peer  # noqa: E402
import rrl  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "4"))
PAIRS = int(os.environ.get("BENCH_PAIRS", "3"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
MILLION = int(os.environ.get("BENCH_RSS_REQUESTS", "1000000"))

# the same tuning for every Apache: event MPM, two children of 16 threads
# (on 2 cores more threads only add contention), driven by 16 connections
MPM = """
StartServers 2
ServerLimit 2
ThreadsPerChild 16
ThreadLimit 16
MinSpareThreads 32
MaxSpareThreads 32
MaxRequestWorkers 32
MaxConnectionsPerChild 0
"""

# every request names one of 10,000 clients, so that Redis sees a
# realistic number of keys; baseline runs send the same requests
WRK_LUA = """
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/small.txt", {["X-Client"] = tostring(n % 10000)})
end
"""

REDIS = "RateLimitRedis ${redis_url}\n"
SCENARIOS = [
    # a second Apache without the module against the baseline: how far
    # this run's ratios stray when nothing differs
    ("0", "control: Apache without the module again", "", "control"),
    ("2", "module loaded, no RateLimit on the path", "", None),
    ("3", "local store, one limit, all allowed",
     "RateLimit 1000000/s key=%{HTTP:X-Client} name=one", None),
    ("4", "Redis, one limit, all allowed",
     REDIS + "RateLimit 1000000/s key=%{HTTP:X-Client} name=one", None),
    ("4p", "Redis, one limit with plans=redis, 1 key in 100 has a plan",
     REDIS + "RateLimit 1000000/s key=%{HTTP:X-Client} name=one "
             "plans=redis", "plans"),
    ("4c", "Redis, one RateLimitConcurrency, all allowed (a slot taken, "
           "then released at log time)",
     REDIS + "RateLimitConcurrency 1000 key=%{HTTP:X-Client} name=conc",
     None),
    ("4t", "Redis over TLS (rediss://), one limit, all allowed",
     REDIS + "RateLimit 1000000/s key=%{HTTP:X-Client} name=one", "tls"),
    ("4u", "Redis over a Unix socket (unix:/PATH), one limit, all allowed",
     REDIS + "RateLimit 1000000/s key=%{HTTP:X-Client} name=one", "unix"),
    ("5", "Redis, three limits, all allowed",
     REDIS + "RateLimit 1000000/s key=%{HTTP:X-Client} name=one\n"
             "RateLimit 1000000/s name=ip\n"
             "RateLimit 1000000/s key=%{HTTP:X-Client}-b name=two", None),
    ("6a", "Redis, flood over the limit, deny cache on",
     REDIS + "RateLimit 1/h name=flood", "flood"),
    ("6b", "Redis, flood over the limit, deny cache off",
     REDIS + "RateLimitDenyCache off\nRateLimit 1/h name=flood", "flood"),
    ("7", "Redis down, RateLimitOnError allow, breaker open",
     REDIS + "RateLimitOnError allow\n"
             "RateLimit 1000000/s key=%{HTTP:X-Client} name=one", "down"),
    ("8", "Redis down, RateLimitOnError local",
     REDIS + "RateLimitOnError local\n"
             "RateLimit 1000000/s key=%{HTTP:X-Client} name=one", "down"),
]


_own_redis = {}


def prepare(mode, client):
    """What a scenario finds in Redis: nothing, but for mode "plans" a plan
    for one client in 100 (0, 100, 200 ...; all allowed still)"""
    client.flushall()
    if mode == "plans":
        for n in range(0, 10000, 100):
            client.set(f"rl:plan/one:{n}", "1000000/s burst=2000000")


def server_for(mode, redis, base_dir):
    """The Redis a scenario runs on and its URL: a TLS-only one (made once,
    with the tests' certificates) for mode "tls", one with a Unix socket
    for mode "unix", else redis."""
    if mode not in ("tls", "unix"):
        return redis, redis.url()
    if mode not in _own_redis:
        if mode == "tls":
            _own_redis[mode] = rrl.Redis(
                base_dir, name="redis-tls",
                tls=rrl.TlsFiles(base_dir / "tls")).start()
        else:
            _own_redis[mode] = rrl.Redis(base_dir, name="redis-unix",
                                         unixsocket=True).start()
    srv = _own_redis[mode]
    return srv, (f"unix:{srv.unixsocket}" if mode == "unix" else srv.url())


def stop_own_redis():
    for mode in list(_own_redis):
        _own_redis.pop(mode).stop()


def wrk(port, seconds, script):
    out = subprocess.run(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds:g}s",
                          "--latency", "-s", script,
                          f"http://127.0.0.1:{port}/small.txt"],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    codes = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "n": total, "p50": pct(50), "p99": pct(99),
            "non2xx": int(codes.group(1)) if codes else 0}


def cpu_seconds(httpd):
    """user+system CPU of the children of an Apache, in seconds"""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in rrl.child_pids(httpd.pid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1]
        except OSError:
            continue
        f = fields.split()
        total += int(f[11]) + int(f[12])
    return total / tick


def switches(httpd):
    """voluntary context switches of the children's threads: a thread that
    waits (for Redis, for work) sleeps and is woken"""
    total = 0
    for pid in rrl.child_pids(httpd.pid):
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                m = re.search(r"^voluntary_ctxt_switches:\s+(\d+)",
                              (task / "status").read_text(), re.M)
                total += int(m.group(1))
        except OSError:
            continue
    return total


def rss_kb(httpd):
    out = {}
    for pid in rrl.child_pids(httpd.pid):
        m = re.search(r"VmRSS:\s+(\d+) kB",
                      Path(f"/proc/{pid}/status").read_text())
        out[pid] = int(m.group(1))
    return out


def module_commands(redis):
    """calls of the commands the module sends (not those its script runs)"""
    stats = rrl.cmdstats(redis.client())
    sent = ("evalsha", "script|load", "auth", "select", "ping")
    return sum(stats.get(c, 0) for c in sent)


def redis_cpu(redis):
    """seconds of CPU the redis-server has used"""
    if not redis.running():
        return 0.0
    c = redis.client().info("cpu")
    return c["used_cpu_user"] + c["used_cpu_sys"]


# scenario 4's limit as src/rrl_script.c sends it, one request of one
# limit: 1, then its gcra spend in the short form: g, burst 1000000,
# 1 us apart, cost 1 (1000000/s)
LIMIT_ARGV = ["1", "g", "1000000", "1", "1"]
FLOOR_DECISIONS = 96000
SCRIPT = rrl.REPO / "lua" / "ratelimit.lua"


def script_benchmark(port, sha, batch, calls, depth=16):
    """redis-benchmark sending calls EVALSHAs of the script (sha), each a
    batch of batch requests of scenario 4's limit, depth calls a read, one
    client, keys of 10,000 clients"""
    keys = [f"rl:one:{i}:__rand_int__" for i in range(batch)]
    subprocess.run(["redis-benchmark", "-p", str(port), "-c", "1", "-P",
                    str(depth), "-n", str(calls), "-r", "10000", "-q",
                    "EVALSHA", sha, str(batch), *keys, "", str(batch),
                    *LIMIT_ARGV * batch],
                   check=True, stdout=subprocess.DEVNULL)


def redis_floors(redis):
    """Redis CPU per decision of the script alone, driven by redis-benchmark
    (one client, 10,000 clients' keys; the best of three runs): pipelined
    16 calls a read, so that Redis never sleeps between them, in batches of 1, 4 and 16 requests;
    and one call at a time, a batch of one, where Redis sleeps and is woken
    for every call as the module's pipeline has it.  What a decision costs
    Redis at best on this machine: {(batch, pipelined): us}, or {} where
    redis-benchmark is missing."""
    if not shutil.which("redis-benchmark"):
        print("floors: skipped: no redis-benchmark (Debian: redis-tools)")
        return {}
    client = redis.client()
    client.flushall()
    sha = client.script_load(SCRIPT.read_text())
    out = {}
    for batch, depth in ((1, 1), (1, 16), (4, 16), (16, 16)):
        calls = FLOOR_DECISIONS // batch // (4 if depth == 1 else 1)
        for _ in range(3):       # the best of three: a floor
            r0 = redis_cpu(redis)
            script_benchmark(redis.port, sha, batch, calls, depth)
            us = (redis_cpu(redis) - r0) * 1e6 / (calls * batch)
            out[(batch, depth)] = min(us, out.get((batch, depth), us))
    client.flushall()
    print(floors_line(out)[1], flush=True)
    return out


def measure(base, scen, redis, script):
    """A warm-up each (where Redis is down, the breaker opens), then PAIRS
    alternating runs: per-pair figures of baseline and scenario"""
    wrk(scen.port, 1, script)
    wrk(base.port, 1, script)
    rows = []
    for _ in range(PAIRS):
        c0, x0 = cpu_seconds(base), switches(base)
        b = wrk(base.port, SECONDS, script)
        b["cpu_us"] = (cpu_seconds(base) - c0) * 1e6 / b["n"]
        b["switches"] = (switches(base) - x0) / b["n"]
        c0, x0 = cpu_seconds(scen), switches(scen)
        k0 = module_commands(redis) if redis.running() else 0
        r0 = redis_cpu(redis)
        s = wrk(scen.port, SECONDS, script)
        s["cpu_us"] = (cpu_seconds(scen) - c0) * 1e6 / s["n"]
        s["redis_us"] = (redis_cpu(redis) - r0) * 1e6 / s["n"]
        s["switches"] = (switches(scen) - x0) / s["n"]
        s["cmds"] = ((module_commands(redis) - k0) / s["n"]
                     if redis.running() else 0.0)
        rows.append((b, s))
    return rows


def main():
    base_dir = Path(tempfile.mkdtemp(prefix="rrl-bench-"))
    base_dir.chmod(0o755)
    redis = rrl.Redis(base_dir).start()
    client = redis.client()
    script = base_dir / "clients.lua"
    script.write_text(WRK_LUA)
    flood = base_dir / "flood.lua"
    flood.write_text('request = function() return wrk.format("GET", '
                     '"/small.txt") end\n')

    base = rrl.Httpd(base_dir, "baseline", with_module=False,
                     with_access_log=False)
    base.start(mpm_conf=MPM)
    # the baseline's own CPU per request, for the module's CPU ratio
    wrk(base.port, 2, str(script))
    c0 = cpu_seconds(base)
    r = wrk(base.port, SECONDS, str(script))
    base_cpu = (cpu_seconds(base) - c0) * 1e6 / r["n"]

    results = []
    scen = s4 = None
    pick = os.environ.get("BENCH_SCENARIOS", "").split()
    for sid, title, snippet, mode in SCENARIOS:
        if pick and sid not in pick:
            continue
        if not redis.running():
            redis.start(port=redis.port)
        srv, url = server_for(mode, redis, base_dir)
        client = srv.client()
        prepare(mode, client)
        scen = rrl.Httpd(base_dir, f"s{sid}", with_access_log=False,
                         with_module=mode != "control")
        scen.vars["redis_url"] = url
        scen.start(snippet, mpm_conf=MPM)
        wrk_script = str(flood if mode == "flood" else script)
        if mode == "down":
            redis.stop()
        rows = measure(base, scen, srv, wrk_script)
        results.append((sid, title, rows))
        print_row(sid, title, rows, base_cpu)
        if sid == "4" and not pick:
            s4 = scen
        else:
            scen.stop()
    stop_own_redis()
    if not redis.running():
        redis.start(port=redis.port)
    if not pick or PEER in pick:
        results += peer_row(base_dir, redis, str(script))
    floors = redis_floors(redis)

    if pick:
        base.stop()
        redis.stop()
        report(results, base_cpu, floors)
        return
    memory = memory_per_key(base_dir, redis)
    rss = rss_over_million(s4, script)
    s4.stop()
    base.stop()
    redis.stop()
    report(results, base_cpu, floors, memory, rss)


PEER = "peer"
PEER_TITLE = "nginx + ngx_lua: lua/ratelimit.lua, one limit"


def peer_row(base_dir, redis, script):
    """nginx alone against nginx deciding with the script (t/peer.py), each
    a private instance with Apache's tuning, measured as a scenario is:
    [(PEER, title, rows)], or [] when nginx or its lua parts are missing"""
    why = peer.missing()
    if why:
        print(f"{PEER}: skipped: {why}", flush=True)
        return []
    prepare(None, redis.client())
    alone = peer.Nginx(base_dir, "nginx")
    lua = peer.Nginx(base_dir, "nginx-lua", lua=True)
    try:
        alone.start(redis.port)
        lua.start(redis.port)
        wrong = peer.check(lua, redis.client())
        if wrong:
            raise RuntimeError(wrong)
        rows = measure(alone, lua, redis, script)
    finally:
        alone.stop()
        lua.stop()
    print_row(PEER, PEER_TITLE, rows, None)
    return [(PEER, PEER_TITLE, rows)]


def summarize(rows):
    ratios = [s["rps"] / b["rps"] for b, s in rows]
    return {
        "base_rps": statistics.median(b["rps"] for b, _ in rows),
        "rps": statistics.median(s["rps"] for _, s in rows),
        "ratio": statistics.median(ratios),
        "p50": statistics.median(s["p50"] for _, s in rows),
        "p99": statistics.median(s["p99"] for _, s in rows),
        "base_p99": statistics.median(b["p99"] for b, _ in rows),
        "cpu_us": statistics.median(s["cpu_us"] for _, s in rows),
        "base_cpu_us": statistics.median(b["cpu_us"] for b, _ in rows),
        "added_us": statistics.median(s["cpu_us"] - b["cpu_us"]
                                      for b, s in rows),
        # what the lower throughput says the machine spent (wrk included)
        "wall_us": statistics.median(
            os.cpu_count() * 1e6 * (1 / s["rps"] - 1 / b["rps"])
            for b, s in rows),
        "cmds": statistics.median(s["cmds"] for _, s in rows),
        "redis_us": statistics.median(s["redis_us"] for _, s in rows),
        "switches": statistics.median(s["switches"] for _, s in rows),
        "non2xx": sum(s["non2xx"] for _, s in rows),
        "n": sum(s["n"] for _, s in rows),
    }


def print_row(sid, title, rows, base_cpu):
    m = summarize(rows)
    print(f"{sid:>4} {title:<50} {m['rps']:>9.0f} req/s  ratio "
          f"{m['ratio']:.3f}  p50 {m['p50']:.2f} ms  p99 {m['p99']:.2f} ms "
          f"(base {m['base_p99']:.2f})  cpu {m['cpu_us']:.1f} us "
          f"({m['cpu_us'] / m['base_cpu_us']:.2f}x, {m['added_us']:+.1f})  "
          f"cmds/req {m['cmds']:.3f}  redis {m['redis_us']:.1f} us/req  "
          f"switches/req {m['switches']:.2f}",
          flush=True)


def memory_per_key(base_dir, redis):
    h = rrl.Httpd(base_dir, "memory", with_access_log=False)
    h.vars["redis_url"] = redis.url()
    algs = ["gcra", "token-bucket", "fixed-window", "sliding-window"]
    h.start(REDIS + "\n".join(
        f'<Location "/{a}">\n    RateLimit 10/min algorithm={a} name={a}\n'
        f'</Location>' for a in algs), mpm_conf=MPM)
    c = redis.client()
    out = {}
    for a in algs:
        h.get(f"/{a}")
        out[a] = c.memory_usage(f"rl:{a}:127.0.0.1")
    h.stop()
    return out


def rss_over_million(httpd, script):
    before = rss_kb(httpd)
    done = 0
    while done < MILLION:
        done += wrk(httpd.port, 10, str(script))["n"]
    after = rss_kb(httpd)
    growth = {pid: after[pid] - before.get(pid, 0) for pid in after}
    return {"requests": done, "before": before, "after": after,
            "growth_max_kb": max(growth.values())}


def machine(nginx):
    cpu = re.search(r"model name\s+: (.+)", Path("/proc/cpuinfo").read_text())
    version = subprocess.run([rrl.httpd_binary(), "-v"], capture_output=True,
                             text=True).stdout.split("\n")[0]
    servers = version.split(": ")[-1]
    if nginx:
        servers += ", " + subprocess.run(
            [peer.NGINX, "-v"], capture_output=True,
            text=True).stderr.split(": ")[-1].strip()
    redis_v = subprocess.run(["redis-server", "--version"],
                             capture_output=True, text=True).stdout.split()[2]
    return (f"{os.cpu_count()} cores ({cpu.group(1) if cpu else '?'}), "
            f"Linux {platform.release()}; {servers}, Redis "
            f"{redis_v[2:]}; wrk -t2 -c{CONNECTIONS}, {SECONDS:g} s runs, "
            f"{PAIRS} pairs per scenario")


def baseline_row(sid, title, runs):
    def med(f):
        return statistics.median(b[f] for b in runs)
    return (f"| {sid} | {title} (all {len(runs)} runs) | {med('rps'):.0f} | "
            f"1 | {med('p50'):.2f} | {med('p99'):.2f} (range "
            f"{min(b['p99'] for b in runs):.2f}-"
            f"{max(b['p99'] for b in runs):.2f}) | {med('cpu_us'):.1f} (1) "
            f"| - | {med('switches'):.2f} | - | - |")


# the rows whose added CPU the report compares
ADDED = {"4": "the module (4, against Apache alone)",
         PEER: "the peer (against nginx alone)"}


def added(results):
    """What a decision adds per request in the rows of ADDED, each against
    its own server alone"""
    out = []
    for sid, _, rows in results:
        if sid in ADDED:
            m = summarize(rows)
            out.append(f"{ADDED[sid]}: {m['added_us']:.1f} + "
                       f"{m['redis_us']:.1f} = "
                       f"{m['added_us'] + m['redis_us']:.1f} us (by "
                       f"throughput on {os.cpu_count()} cores, wrk's share "
                       f"included: {m['wall_us']:.1f} us)")
    return (["", "Added CPU per request, server + Redis: "
             + "; ".join(out) + "."] if out else [])


def floors_line(floors):
    """What the script alone costs Redis a decision (redis_floors)"""
    if not floors:
        return []
    pipelined = ", ".join(f"{v:.1f} in batches of {b}"
                          for (b, d), v in floors.items() if d > 1)
    return ["", "Redis CPU per decision of the script alone (redis-benchmark, "
            "one client, 10,000 keys): one call at a time, Redis woken for "
            f"each: {floors[(1, 1)]:.1f} us; pipelined 16 calls a read: "
            f"{pipelined} us."]


def report(results, base_cpu, floors=None, memory=None, rss=None):
    """The Markdown table; memory and RSS when measured (all scenarios)"""
    apache = [r for r in results if r[0] != PEER]
    nginx = [r for r in results if r[0] == PEER]
    lines = [
        f"Machine: {machine(nginx)}",
        "",
        f"Baseline (module not loaded): {base_cpu:.1f} us of Apache CPU per "
        "request.",
        "",
        "| # | scenario | req/s | ratio | p50 ms | p99 ms (baseline) | "
        "server CPU us/req (x baseline) | added us/req | thread sleeps/req "
        "| Redis cmds/req | Redis CPU us/req |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    if apache:
        lines.append(baseline_row(
            "1", "baseline: module not loaded, a small static file",
            [b for _, _, rows in apache for b, _ in rows]))
    if nginx:
        lines.append(baseline_row(
            "1n", "the peer's baseline: nginx alone, the same file",
            [b for _, _, rows in nginx for b, _ in rows]))
    for sid, title, rows in results:
        m = summarize(rows)
        lines.append(
            f"| {sid} | {title} | {m['rps']:.0f} | {m['ratio']:.3f} | "
            f"{m['p50']:.2f} | {m['p99']:.2f} ({m['base_p99']:.2f}) | "
            f"{m['cpu_us']:.1f} ({m['cpu_us'] / m['base_cpu_us']:.2f}) | "
            f"{m['added_us']:+.1f} | {m['switches']:.2f} | {m['cmds']:.3f} | "
            + (f"{m['redis_us']:.1f} |" if m['cmds'] else "- |"))
    lines += added(results)
    lines += floors_line(floors)
    if memory:
        lines += ["", "Redis memory per key (MEMORY USAGE): " + ", ".join(
            f"{a} {b} bytes" for a, b in memory.items()), "",
            f"Apache children's RSS over {rss['requests']:,} requests "
            f"(scenario 4): largest growth {rss['growth_max_kb']} kB "
            f"(before {sorted(rss['before'].values())} kB, after "
            f"{sorted(rss['after'].values())} kB)"]
    text = "\n".join(lines)
    print("\n" + text)
    if os.environ.get("BENCH_OUT"):
        Path(os.environ["BENCH_OUT"]).write_text(text + "\n")


if __name__ == "__main__":
    rrl.run_script(main)
