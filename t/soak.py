#!/usr/bin/python3
"""make soak: a long run under mixed traffic and faults, not part of make check.

Two Apache instances (event and prefork) share one Redis and take traffic
from many keys for SOAK_MINUTES (default 30) while, on a schedule, the
script cache is flushed (SCRIPT FLUSH, every minute), Redis is stopped for a
moment and restarted (state lost, every 2 minutes) and both instances are
restarted gracefully (apachectl -k graceful, every 5 minutes).  A shorter
run scales these intervals down in proportion (to at least every 5 s,
20 s and 30 s), so that a 2-minute run still sees each event.
SOAK_FLUSH_EVERY, SOAK_RESTART_EVERY and SOAK_RELOAD_EVERY (seconds)
override them; SOAK_CLIENTS (default 4) is the client threads per instance.

At the end it fails (exit 1) unless:
- no child crashed ("exit signal", "Segmentation fault", "segfault") and
  the error logs hold nothing at [warn] or worse but the Redis-lost lines
  (RRL00013, RRL00019);
- every response was 200 or 429 (RateLimitOnError deny answers 429), no
  request failed or hung, and, outside Redis outages (from the stop to 8 s
  after it is back), no request was decided by the fallback: SCRIPT FLUSH,
  restarts and graceful restarts never fail a request;
- per key, the allowed requests stayed within what the limits allow:
  fixed-window 20/10s, per window (identified by X-RateLimit-Reset, taken
  from Redis's clock) at most 20 x (1 + Redis restarts during it), and gcra
  10/5s burst=10 over the run at most (restarts + 1) x (burst + 1) plus
  the run's seconds x rate;
- every key in Redis at the end carries an expiry;
- each child's RSS grew by at most SOAK_RSS_MAX_KB (default 2048) from the
  end of its warm-up to its last sample; the parents' likewise.
A summary of the figures is printed either way.
"""
import collections
import http.client
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import rrl  # noqa: E402

MINUTES = float(os.environ.get("SOAK_MINUTES", "30"))
DURATION = MINUTES * 60
SCALE = min(1.0, MINUTES / 30)
FLUSH_EVERY = float(os.environ.get("SOAK_FLUSH_EVERY") or max(5, 60 * SCALE))
RESTART_EVERY = float(os.environ.get("SOAK_RESTART_EVERY")
                      or max(20, 120 * SCALE))
RELOAD_EVERY = float(os.environ.get("SOAK_RELOAD_EVERY")
                     or max(30, 300 * SCALE))
DOWNTIME = min(2.0, RESTART_EVERY / 10)   # seconds Redis stays stopped
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "4"))
RSS_MAX_KB = int(os.environ.get("SOAK_RSS_MAX_KB", "2048"))
SAMPLE_EVERY = 1.0                        # seconds between RSS samples
WARMUP = min(60.0, max(10.0, RELOAD_EVERY / 3))   # of each child
RECOVERY = 8.0        # after Redis is back: back-off (5 s at most) and slack

FW_N, FW_P = 20, 10                       # fixed-window 20/10s
GCRA_RATE, GCRA_BURST = 2.0, 10           # 10/5s burst=10: 2 per second
HOT, COLD = 10, 20000                     # keys: a few flooded, many not

SNIPPET = """
RateLimitRedis ${redis_url}
RateLimitRedisTimeout connect=1s command=1s
RateLimitOnError deny
RateLimitHeaders legacy
CustomLog "${logs}/soak.log" "%{%s}t.%{usec_frac}t %>s %{RATELIMIT_RESULT}e"
RateLimit 1000000/min name=soak-ip
RateLimit 20/10s algorithm=fixed-window key=%{HTTP:X-Key} name=soak-fw
<Location /dir/>
    RateLimit off
    RateLimit 1000000/min name=soak-ip
    RateLimit 10/5s burst=10 key=%{HTTP:X-Key} name=soak-gcra
</Location>
"""

# fixed sizes: no child is started or stopped for want of spare ones, so
# that each lives from one graceful restart to the next
EVENT = """
StartServers 2
ServerLimit 2
ThreadsPerChild 16
ThreadLimit 16
MinSpareThreads 1
MaxSpareThreads 32
MaxRequestWorkers 32
MaxConnectionsPerChild 0
"""
PREFORK = """
StartServers 8
MinSpareServers 1
MaxSpareServers 16
ServerLimit 16
MaxRequestWorkers 16
MaxConnectionsPerChild 0
"""

PROMISED = {200, 429}
RESULTS = {"allowed", "denied", "fallback-denied"}
ALLOWED_LOG = re.compile(r"RRL00013|RRL00019")
CRASH = re.compile(r"exit signal|Segmentation fault|segfault|AH00052")


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- traffic ----

class Windows:
    """Allowed requests per key and fixed window, all clients together;
    each window is checked against its bound once it is over, then
    dropped (a long run sees millions of key-windows)."""

    def __init__(self, outages):
        self.outages = outages   # (stopped, back), appended as they happen
        self.lock = threading.Lock()
        self.live = collections.defaultdict(collections.Counter)
        self.keys = set()
        self.key_windows = self.at_limit = self.most = self.hot = 0
        self.over = []

    def add(self, key, end):
        with self.lock:
            self.live[end][key] += 1

    def bound(self, end):
        """N for each piece of the window between Redis restarts."""
        restarts = sum(1 for s, _ in self.outages
                       if end - FW_P - 1 <= s < end + 1)
        return FW_N * (1 + restarts)

    def retire(self, before=float("inf")):
        with self.lock:
            done = [(e, self.live.pop(e)) for e in list(self.live)
                    if e < before]
        for end, counts in done:
            bound = self.bound(end)
            for key, n in counts.items():
                self.keys.add(key)
                self.key_windows += 1
                self.at_limit += n == FW_N
                self.most = max(self.most, n)
                self.hot += key.startswith("hot") and n >= FW_N
                if n > bound:
                    self.over.append(f"fixed-window {key}, window ending "
                                     f"{end}: {n} allowed > {bound}")


class Client(threading.Thread):
    """Requests one after another on a kept-alive connection to one
    instance, from its own loopback address, tallying what came back."""

    def __init__(self, httpd, idx, stop, windows):
        super().__init__(daemon=True)
        self.httpd, self.stop, self.windows = httpd, stop, windows
        self.source = f"127.0.0.{10 + idx}"
        self.rng = random.Random(idx)
        self.statuses = collections.Counter()
        self.gcra = collections.Counter()    # key -> allowed
        self.bad = []                        # what should never happen
        self.retries = 0                     # kept-alive connections closed
        self.errors = 0

    def pick(self):
        r = self.rng.random()
        path = "/small.txt" if r < 0.7 else "/" if r < 0.85 else "/dir/"
        r = self.rng.random()
        if r < 0.05:
            return path, None
        if r < 0.30:
            return path, f"hot{self.rng.randrange(HOT)}"
        return path, f"cold{self.rng.randrange(COLD)}"

    def connect(self):
        return http.client.HTTPConnection("127.0.0.1", self.httpd.port,
                                          timeout=30,
                                          source_address=(self.source, 0))

    def run(self):
        conn = None
        while not self.stop.is_set():
            path, key = self.pick()
            headers = {"X-Key": key} if key else {}
            resp = None
            for attempt in (0, 1):
                try:
                    if conn is None:
                        conn = self.connect()
                    conn.request("GET", path, headers=headers)
                    resp = conn.getresponse()
                    resp.read()
                    break
                except (http.client.RemoteDisconnected, ConnectionResetError,
                        BrokenPipeError, http.client.CannotSendRequest) as e:
                    if conn:
                        conn.close()
                    conn = None
                    if attempt:
                        self.error(f"{path} {key}: {e!r} (after a retry)")
                    else:
                        self.retries += 1
                except Exception as e:      # noqa: BLE001 - a failure
                    if conn:
                        conn.close()
                    conn = None
                    self.error(f"{path} {key}: {e!r}")
                    break
            if resp is None:
                continue
            if (resp.getheader("Connection") or "").lower() == "close":
                conn.close()
                conn = None
            self.tally(path, key, resp)
        if conn:
            conn.close()

    def error(self, what):
        self.errors += 1
        if len(self.bad) < 20:
            self.bad.append(what)

    def tally(self, path, key, resp):
        status = resp.status
        self.statuses[status] += 1
        if status not in PROMISED:
            self.error(f"{path} {key}: status {status}")
            return
        if status == 429 and not resp.getheader("Retry-After"):
            self.error(f"{path} {key}: 429 without Retry-After")
        if status != 200 or key is None:
            return
        limit = resp.getheader("X-RateLimit-Limit")
        if path == "/dir/":
            if limit != "10":
                self.error(f"{path} {key}: X-RateLimit-Limit {limit}")
            self.gcra[key] += 1
        else:
            reset = resp.getheader("X-RateLimit-Reset")
            if limit != "20" or not reset or int(reset) % FW_P:
                self.error(f"{path} {key}: X-RateLimit-Limit {limit}, "
                           f"X-RateLimit-Reset {reset}")
                return
            self.windows.add(key, int(reset))


# ---- memory ----

def rss_kb(pid):
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(m.group(1)) if m else None


class Memory:
    """RSS samples of each instance's parent and children, by pid."""

    def __init__(self, servers):
        self.servers = servers
        self.samples = collections.defaultdict(list)   # (name, pid, role)

    def sample(self, t):
        for h in self.servers:
            if not h.pid:
                continue
            for pid, role in [(h.pid, "parent")] + \
                    [(c, "child") for c in rrl.child_pids(h.pid)]:
                kb = rss_kb(pid)
                if kb is not None:
                    self.samples[(h.name, pid, role)].append((t, kb))

    def report(self, first_reload=None):
        """Rows (name, pid, role, first seen, (t, kB) at the end of its
        warm-up, (t, kB) last, growth or None when it lived too short).
        A parent's warm-up ends with the first graceful restart, which
        grows it once (by ~0.5 MB, with or without the module)."""
        rows = []
        for (name, pid, role), s in sorted(self.samples.items(),
                                           key=lambda i: i[1][0][0]):
            born = s[0][0]
            ready = born + WARMUP
            if role == "parent" and first_reload is not None:
                ready = max(ready, first_reload)
            warm = next((x for x in s if x[0] >= ready), None)
            last = s[-1]
            growth = None
            if warm and last[0] - warm[0] >= WARMUP / 2:
                growth = last[1] - warm[1]
            rows.append((name, pid, role, born, warm, last, growth))
        return rows


# ---- the run ----

def access_entries(httpd):
    """(start time, status, RATELIMIT_RESULT) of each request in the soak's
    own access log (three fields a line: a long run logs millions)."""
    with open(httpd.logs / "soak.log", "rb") as f:
        for line in f:
            try:
                t, status, result = line.decode("ascii").split()
                yield float(t), int(status), result
            except ValueError:
                yield 0.0, 0, f"unparsed: {line[:100]!r}"


def scan_redis(r):
    c = r.client()
    try:
        keys = no_ttl = 0
        for k in c.scan_iter(count=1000):
            keys += 1
            # -2: it expired since SCAN saw it
            if not k.startswith(b"rl:") or c.pttl(k) == -1:
                no_ttl += 1
        return keys, no_ttl, c.info("memory")["used_memory"]
    finally:
        c.close()


def main():
    t_wall = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="rrl-soak-",
                                 dir=os.environ.get("RRL_TMPDIR")))
    base.chmod(0o755)
    redis = rrl.Redis(base, name="redis").start()
    a = rrl.Httpd(base, "event", with_access_log=False)
    b = rrl.Httpd(base, "prefork", with_access_log=False)
    servers = [a, b]
    for h in servers:
        h.vars["redis_url"] = redis.url()
    a.start(SNIPPET, mpm="event", mpm_conf=EVENT)
    b.start(SNIPPET, mpm="prefork", mpm_conf=PREFORK)
    log(f"{MINUTES:g} min; SCRIPT FLUSH every {FLUSH_EVERY:g} s, Redis "
        f"restart every {RESTART_EVERY:g} s (down {DOWNTIME:g} s), graceful "
        f"restart every {RELOAD_EVERY:g} s; {CLIENTS} clients per instance; "
        f"base {base}")

    stop = threading.Event()
    outages = []             # (stopped, back) in time.time()
    windows = Windows(outages)
    clients = [Client(h, i * CLIENTS + j, stop, windows)
               for i, h in enumerate(servers) for j in range(CLIENTS)]
    memory = Memory(servers)
    first_reload = None      # seconds into the run
    events = collections.Counter()
    failures = []
    t0 = time.time()
    for c in clients:
        c.start()

    # phases keep the events apart: flush at 0.5, restart at 0.3 and
    # graceful restart at 0.8 of their intervals
    due = {"flush": 0.5 * FLUSH_EVERY, "restart": 0.3 * RESTART_EVERY,
           "reload": 0.8 * RELOAD_EVERY, "sample": 0.0}
    every = {"flush": FLUSH_EVERY, "restart": RESTART_EVERY,
             "reload": RELOAD_EVERY, "sample": SAMPLE_EVERY}
    try:
        while True:
            now = time.time() - t0
            if now >= DURATION:
                break
            what = min(due, key=due.get)
            if due[what] > now:
                time.sleep(min(due[what] - now, DURATION - now))
                continue
            due[what] += every[what]
            if what == "sample":
                memory.sample(now)
                windows.retire(time.time() - 2 * FW_P)
                continue
            try:
                if what == "flush":
                    c = redis.client()
                    try:
                        c.script_flush()
                    finally:
                        c.close()
                elif what == "restart":
                    stopped = time.time()
                    redis.stop()
                    time.sleep(DOWNTIME)
                    redis.restart()
                    outages.append((stopped, time.time()))
                elif what == "reload":
                    for h in servers:
                        h.reload(SNIPPET, mpm_conf=EVENT if h is a
                                 else PREFORK)
                    if first_reload is None:
                        first_reload = time.time() - t0
                events[what] += 1
                log(f"{what} at {now:.0f} s")
            except Exception as e:   # noqa: BLE001 - a failure
                failures.append(f"{what} at {now:.0f} s failed: {e!r}")
                log(failures[-1])
    finally:
        stop.set()
        for c in clients:
            c.join(60)
    t_end = time.time()
    hung = [c.source for c in clients if c.is_alive()]
    keys, no_ttl, used = scan_redis(redis)   # before the keys expire
    memory.sample(t_end - t0)
    time.sleep(0.5)

    # ---- what the clients saw ----
    statuses = collections.Counter()
    gcra = collections.Counter()
    retries = errors = 0
    windows.retire()
    for c in clients:
        statuses.update(c.statuses)
        gcra.update(c.gcra)
        retries += c.retries
        errors += c.errors
        failures += [f"client {c.source}: {x}" for x in c.bad]
    if hung:
        failures.append(f"clients still waiting at the end: {hung}")
    requests = sum(statuses.values())

    over = list(windows.over)
    run_s = t_end - t0
    gcra_bound = (len(outages) + 1) * (GCRA_BURST + 1) + GCRA_RATE * run_s
    for key, n in gcra.items():
        if n > gcra_bound:
            over.append(f"gcra {key}: {n} allowed > {gcra_bound:.0f}")
    failures += over[:20]
    if statuses[429] == 0 or not windows.hot:
        failures.append("no request was denied: the limits were never "
                        "reached, nothing was proven")

    # ---- what the servers logged ----
    results = collections.Counter()
    fallback_outside = []
    log_statuses = collections.Counter()
    for h in servers:
        for t, status, result in access_entries(h):
            log_statuses[status] += 1
            results[result] += 1
            if result not in RESULTS and len(failures) < 50:
                failures.append(f"{h.name}: result {result!r} ({status})")
            if result.startswith("fallback") and not any(
                    s - 0.5 <= t <= back + RECOVERY for s, back in outages):
                fallback_outside.append(t)
    if set(log_statuses) - PROMISED:
        failures.append(f"access logs: statuses {dict(log_statuses)}")
    if fallback_outside:
        failures.append(f"{len(fallback_outside)} requests decided by "
                        f"RateLimitOnError outside Redis outages, first at "
                        f"{fallback_outside[0] - t0:.1f} s")

    if no_ttl:
        failures.append(f"{no_ttl} of {keys} Redis keys without an expiry "
                        f"(or outside rl:)")

    for h in servers:
        h.stop()
    redis.stop()
    warn_lines = collections.Counter()
    for h in servers:
        for line in h.error_log_lines(since=0):
            if CRASH.search(line):
                failures.append(f"{h.name}: {line}")
            elif rrl.LEVEL_RE.search(line):
                m = re.search(r"(RRL|AH)\d{5}", line)
                tag = m.group(0) if m else line[:120]
                warn_lines[(h.name, tag)] += 1
                if not ALLOWED_LOG.search(line):
                    failures.append(f"{h.name}: {line}")
        failures += h.killed

    for what in ("flush", "restart", "reload"):
        if not events[what]:
            failures.append(f"no {what} happened: the run is too short")
    rows = memory.report(first_reload)
    for name, pid, role, born, warm, last, growth in rows:
        if growth is not None and growth > RSS_MAX_KB:
            failures.append(f"{name} {role} {pid}: RSS grew {growth} kB "
                            f"(from {warm[1]} kB at {warm[0]:.0f} s to "
                            f"{last[1]} kB at {last[0]:.0f} s)")

    # ---- summary ----
    print()
    print(f"soak summary ({MINUTES:g} min of traffic, wall time "
          f"{time.monotonic() - t_wall:.0f} s)")
    print(f"  requests {requests} ({requests / run_s:.0f}/s): allowed "
          f"{statuses[200]}, denied {statuses[429]}, other statuses "
          f"{sum(n for s, n in statuses.items() if s not in PROMISED)}, "
          f"errors {errors}; kept-alive connections closed by httpd and "
          f"retried: {retries}")
    print(f"  access logs: {sum(results.values())} requests, "
          + ", ".join(f"{k} {v}" for k, v in sorted(results.items()))
          + f"; decided by RateLimitOnError outside outages: "
          f"{len(fallback_outside)}")
    print(f"  events: SCRIPT FLUSH {events['flush']}, Redis restarts "
          f"{events['restart']} (down {DOWNTIME:g} s each), graceful "
          f"restarts {events['reload']} (of both instances)")
    print(f"  fixed-window 20/10s: {len(windows.keys)} keys, "
          f"{windows.key_windows} key-windows, {windows.at_limit} at exactly "
          f"20 ({windows.hot} of hot keys), most in one window "
          f"{windows.most}; over the bound: {len(windows.over)}")
    print(f"  gcra 10/5s burst=10: {len(gcra)} keys, most allowed for one "
          f"key {max(gcra.values(), default=0)} (bound {gcra_bound:.0f})")
    print(f"  Redis at the end: {keys} keys, {no_ttl} without expiry, "
          f"used_memory {used} bytes")
    print("  RSS (kB), from the end of each process's warm-up (children "
          f"{WARMUP:g} s, parents the first graceful restart) to its last "
          "sample:")
    print(f"    {'instance':8} {'role':6} {'pid':>7} {'seen':>6} "
          f"{'warm-up':>14} {'end':>14} {'growth':>7}")
    for name, pid, role, born, warm, last, growth in rows:
        w = f"{warm[1]} @{warm[0]:.0f}s" if warm else "-"
        e = f"{last[1]} @{last[0]:.0f}s"
        g = f"{growth:+d}" if growth is not None else "(short)"
        print(f"    {name:8} {role:6} {pid:7d} {born:5.0f}s {w:>14} "
              f"{e:>14} {g:>7}")
    grown = [r[6] for r in rows if r[6] is not None and r[2] == "child"]
    print(f"  children measured: {len(grown)}, largest growth "
          f"{max(grown, default=0)} kB (bound {RSS_MAX_KB} kB)")
    print("  error log lines at [warn] or worse: "
          + (", ".join(f"{n} {t} x{c}" for (n, t), c in
                       sorted(warn_lines.items())) or "none"))
    if failures:
        print(f"\nresult: FAILED ({len(failures)} problems; server roots "
              f"kept in {base})")
        for f in failures[:50]:
            print(f"  - {f}")
        return 1
    shutil.rmtree(base, ignore_errors=True)
    print("\nresult: OK")
    return 0


if __name__ == "__main__":
    rrl.run_script(main)
