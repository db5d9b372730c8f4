#!/usr/bin/python3
"""make profile: instructions per request, by scenario, under callgrind.

Each scenario of make bench runs in `httpd -X` (one process, one request at
a time) under valgrind's callgrind: a warm-up and then PROFILE_REQUESTS
requests are sent on one kept-alive connection; a second run with the
warm-up alone is subtracted.  Instruction counts do not depend on the machine's load,
so two versions of the module can be compared on a busy machine, where
make bench cannot.  It prints instructions per request and the difference
to Apache without the module; PROFILE_KEEP=1 keeps the callgrind.out files
(callgrind_annotate them) and prints where they are.

PROFILE_SCENARIOS picks some (e.g. "1 3 4"); the default is all of them.

Then ("script", pickable too) the same for Redis's side: instructions per
decision of lua/ratelimit.lua in a redis-server under callgrind, driven by
redis-benchmark with scenario 4's limit (one client, 16 calls a read), a
request alone in its call and in batches of 16; two runs of n and 2n calls
subtracted, so that startup and the first keys' creation cancel.
"""
import http.client
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import rrl  # noqa: E402
from bench import (REDIS, SCENARIOS, SCRIPT, prepare,  # noqa: E402
                   script_benchmark, server_for, stop_own_redis)

REQUESTS = int(os.environ.get("PROFILE_REQUESTS", "2000"))
WARMUP = 200


def requests(port, n, clients=True):
    """n requests on one connection, naming one of 10,000 clients (or,
    for a flood, none); {status: count}"""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    codes = {}
    for i in range(n):
        conn.request("GET", "/small.txt",
                     headers={"X-Client": str(i % 10000)} if clients else {})
        r = conn.getresponse()
        r.read()
        codes[r.status] = codes.get(r.status, 0) + 1
    conn.close()
    return codes


def callgrind_total(out):
    for line in out.read_text().splitlines():
        m = re.match(r"(?:summary|totals): (\d+)", line)
        if m:
            return int(m.group(1))
    raise RuntimeError(f"no totals in {out}")


def run_once(base_dir, redis, sid, snippet, mode, with_module, n):
    """callgrind's total for WARMUP + n requests in a fresh httpd -X"""
    redis, url = server_for(mode, redis, base_dir)
    h = rrl.Httpd(base_dir, f"p{sid}", with_module=with_module,
                  with_access_log=False)
    h.vars["redis_url"] = url
    h.port, h.port6 = rrl.free_port(), rrl.Httpd._free_port6()
    h._write_load_file()
    h.conf.write_text(h.render(snippet, "event"))
    h.logs.chmod(0o777)           # the child (www-data) writes the dump
    out = h.logs / "callgrind.out"
    out.touch(0o666)              # opened by root, written by www-data
    out.chmod(0o666)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("APACHE_")}
    env["LANG"] = env["LC_ALL"] = "C"
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
         rrl.httpd_binary(), "-X", "-d", str(h.root), "-f", str(h.conf)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        rrl.wait_for(lambda: rrl.can_connect("127.0.0.1", h.port), 120,
                     "httpd -X under callgrind")
        prepare(mode, redis.client())
        if mode == "down":
            redis.stop()
        codes = requests(h.port, WARMUP + n, clients=mode != "flood")
        time.sleep(0.2)
    finally:
        proc.terminate()          # httpd -X exits; callgrind writes out
        proc.wait(120)
        if not redis.running():
            redis.start(port=redis.port)
    return callgrind_total(out), codes, out


def profile(base_dir, redis, sid, snippet, mode, with_module=True):
    """instructions per request: the difference of two runs"""
    t0, _, _ = run_once(base_dir, redis, sid, snippet, mode, with_module, 0)
    t1, codes, out = run_once(base_dir, redis, sid, snippet, mode,
                              with_module, REQUESTS)
    return (t1 - t0) / REQUESTS, codes, out


class CallgrindRedis(rrl.Redis):
    """A redis-server under callgrind, its counts written to out on exit"""

    def __init__(self, base_dir, out):
        super().__init__(base_dir, "--hz", "1", name="redis-callgrind")
        self.out = out

    def command(self):
        return ["valgrind", "--tool=callgrind",
                f"--callgrind-out-file={self.out}", *super().command()]


def script_run(base_dir, batch, calls):
    """callgrind's total for a redis-server that ran calls EVALSHAs of
    batch requests each (scenario 4's limit, 10,000 clients' keys)"""
    out = base_dir / f"redis-{batch}-{calls}.callgrind"
    redis = CallgrindRedis(base_dir, out).start()
    try:
        sha = redis.client().script_load(SCRIPT.read_text())
        script_benchmark(redis.port, sha, batch, calls)
    finally:
        redis.stop()
    return callgrind_total(out)


def script_profile(base_dir):
    """{batch: instructions per decision} of the script in Redis"""
    out = {}
    for batch in (1, 16):
        calls = 3200 // batch
        out[batch] = ((script_run(base_dir, batch, 2 * calls)
                       - script_run(base_dir, batch, calls))
                      / (calls * batch))
    return out


def main():
    pick = os.environ.get("PROFILE_SCENARIOS", "").split()
    base_dir = Path(tempfile.mkdtemp(prefix="rrl-profile-"))
    base_dir.chmod(0o755)
    redis = rrl.Redis(base_dir).start()
    todo = [("1", "baseline: module not loaded", "", None)] + SCENARIOS
    base = None
    for sid, title, snippet, mode in todo:
        if pick and sid not in pick and sid != "1":
            continue
        per, codes, out = profile(base_dir, redis, sid, snippet, mode,
                                  with_module=sid != "1")
        if sid == "1":
            base = per
        extra = f"{per - base:+9.0f}" if base else ""
        print(f"{sid:>3} {title:<50} {per:9.0f} instr/req {extra}  {codes}"
              + (f"  {out}" if os.environ.get("PROFILE_KEEP") else ""),
              flush=True)
    stop_own_redis()
    redis.stop()
    if not pick or "script" in pick:
        per = script_profile(base_dir)
        print(f"script: lua/ratelimit.lua in Redis, {per[1]:,.0f} "
              f"instructions a decision alone in its call, {per[16]:,.0f} "
              "in batches of 16", flush=True)
    if not os.environ.get("PROFILE_KEEP"):
        subprocess.run(["rm", "-rf", str(base_dir)])


if __name__ == "__main__":
    rrl.run_script(main)
