"""The shared test vectors (vectors.json) against both implementations of the
rate arithmetic: the module's own C (t/rrl_vectors, which compiles the module
source) and lua/ratelimit.lua in a real redis-server.  Both must give the
table's answers, and the same answers as each other on random traffic."""
import json
import os
import random
import subprocess
from pathlib import Path

import pytest
import redis as redis_py

HERE = Path(__file__).resolve().parent
VECTORS = json.loads((HERE / "vectors.json").read_text())
SCRIPT = (HERE.parent / "lua" / "ratelimit.lua").read_text()
MODES = {"spend": 0, "refund": 1}
BASE = VECTORS["base"]


def mode_of(text):
    """"spend" -> (0, None); "refund@U" -> (1, BASE + U)"""
    name, _, until = text.partition("@")
    return MODES[name], BASE + int(until) if until else None


class Driver:
    """t/rrl_vectors: the C arithmetic, one line in, one line out."""

    def __init__(self):
        path = os.environ.get("RRL_VECTORS", str(HERE / "rrl_vectors"))
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing: run the tests through make check")
        self.proc = subprocess.Popen([path], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def ask(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().split(maxsplit=1)

    def limit(self, rate, algorithm, burst, cost, keep=False):
        """keep: the limit changed under its name; the state stays"""
        kind, rest = self.ask(f"LIMIT {rate} {algorithm} "
                              f"{'-' if burst is None else burst} {cost}"
                              + (" keep" if keep else ""))
        return kind, rest.strip()

    def step(self, now, cost, mode, until=None):
        kind, rest = self.ask(f"STEP {now} {cost} {mode}"
                              + ("" if until is None else f" {until}"))
        assert kind == "OUT", rest
        return [int(x) for x in rest.split()]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=5)


@pytest.fixture
def driver():
    d = Driver()
    yield d
    d.close()


def item(params, cost, mode, until, plan_at, form="module"):
    """A limit's ARGV in a request: as src/rrl_script.c sends it (form
    "module": a gcra spend without plans= in the short form, g, burst,
    interval, cost), or always the ten of the full form ("full")"""
    alg, _, _, burst, interval, _ = params
    if form == "module" and alg == "0" and str(mode) == "0" \
            and not plan_at:
        return ["g", burst, interval, str(cost)]
    return [*params, str(cost), str(mode), "" if until is None else str(until),
            str(plan_at) if plan_at else ""]


class Script:
    """lua/ratelimit.lua in Redis, with the clock passed in as ARGV[1];
    each limit's ARGV in form (item())."""

    def __init__(self, client, form="module"):
        self.r = client
        self.sha = client.script_load(SCRIPT)
        self.form = form

    def step(self, params, key, now, cost, mode, until=None, plan=None):
        """plan: the key of the limit's plan (plans=redis), read first"""
        keys = [key] + ([plan] if plan else [])
        # Redis expires keys by its own clock, the vectors run on theirs:
        # read the expiry the script set and keep the state for the next
        # step, in one transaction (no key expires in the middle of one);
        # the tests forget it when it expires by the vectors' clock
        p = self.r.pipeline(transaction=True)
        # a batch of one request of one limit (ARGV: now, 1 request, 1
        # limit, its item); its plan key is its second KEY
        p.evalsha(self.sha, len(keys), *keys, str(now), "1", "1",
                  *item(params, cost, mode, until, 2 if plan else 0,
                        self.form))
        p.pttl(key)
        p.persist(key)
        (reply,), ttl, _ = p.execute()
        if isinstance(reply, Exception):      # that request's error entry
            raise reply
        return reply, ttl

    def batch(self, now, requests):
        """Several requests in one call at one clock, each [(params, key,
        cost, mode, until, plan)] of its limits (plan: the key of its plan,
        or None): each request's entry, in order, and each key's expiry
        afterwards (kept, as step does)"""
        keys, argv = [], [str(now), str(len(requests))]
        for items in requests:
            plans = [it[5] for it in items if it[5]]
            keys += [it[1] for it in items] + plans
            argv.append(str(len(items)))
            at = len(items)        # a plan key's place in its request's KEYS
            for params, _, cost, mode, until, plan in items:
                at += 1 if plan else 0
                argv += item(params, cost, mode, until, at if plan else 0,
                             self.form)
        p = self.r.pipeline(transaction=True)
        p.evalsha(self.sha, len(keys), *keys, *argv)
        for key in keys:
            p.pttl(key)
            p.persist(key)
        out = p.execute()
        return out[0], dict(zip(keys, out[1::2]))


def params_of(driver, case, keep=False):
    kind, rest = driver.limit(case["rate"], case["algorithm"], case["burst"],
                              case["cost"], keep)
    assert kind == "PARAMS", rest
    return rest.split()[:6]


def phases(case):
    """A case's limits in turn, one key: "phases" (the limit changes under
    its name, its state stays), or the case itself"""
    return case.get("phases", [case])


# The letter each algorithm's value in Redis starts with (gcra's is one
# number, lua/ratelimit.lua) and how many numbers follow
TAGS = {"0": [], "1": ["t"], "2": ["f"], "3": ["s"]}
NUMBERS = {"0": 1, "1": 2, "2": 2, "3": 3}


def stored_value(out):
    """The value Redis must hold after a step the driver answered out"""
    alg = str(out[9])
    return TAGS[alg] + [str(v) for v in out[6:6 + NUMBERS[alg]]]


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["name"])
def test_vectors_01_local_arithmetic(driver, case):
    for i, phase in enumerate(phases(case)):
        params_of(driver, phase, keep=i > 0)
        for t, cost, mode, *want in phase["steps"]:
            out = driver.step(BASE + t, cost, *mode_of(mode))
            assert out[:4] == want, f"phase {i}, step at {t} us"


FORMS = ["module", "full"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["name"])
def test_vectors_02_lua_script(driver, redis_server, case, form):
    """Each case through the script, its limits sent as the module sends
    them (a gcra spend in the short form) and in the full form: the same
    answers and values"""
    client = redis_server.client()
    script = Script(client, form)
    expires = 0
    for i, phase in enumerate(phases(case)):
        params = params_of(driver, phase, keep=i > 0)
        for t, cost, mode, *want in phase["steps"]:
            if BASE + t >= expires:       # expired by the vectors' clock
                client.delete("rl:v:k")
            reply, ttl = script.step(params, "rl:v:k", BASE + t, cost,
                                     *mode_of(mode))
            out = driver.step(BASE + t, cost, *mode_of(mode))   # expiry
            if out[0] and out[4]:
                expires = BASE + t + out[5]
            assert reply[1] == BASE + t
            assert reply[2:6] == want, f"phase {i}, step at {t} us"
            assert reply[0] == want[0]
            if out[0] and out[4] and out[5] > 0:     # wrote: the same
                assert client.get("rl:v:k").decode().split() == \
                    stored_value(out)


@pytest.mark.parametrize("rate,alg,burst,cost,words", VECTORS["errors"])
def test_vectors_03_rejected_limits(driver, rate, alg, burst, cost, words):
    kind, text = driver.limit(rate, alg, burst, cost)
    assert kind == "ERROR"
    assert words in text


RANDOM_LIMITS = [
    ("7/s", "gcra", None), ("7/s", "gcra", 3), ("7/s", "token-bucket", 2),
    ("3/10s", "fixed-window", None), ("5/s", "sliding-window", None),
    ("100000/s", "gcra", 50), ("11/min", "sliding-window", None),
    ("13/min", "token-bucket", None), ("1000000/s", "sliding-window", None),
]


@pytest.mark.parametrize("rate,alg,burst", RANDOM_LIMITS)
def test_vectors_04_random_traffic_agrees(driver, redis_server, rate, alg,
                                          burst):
    """Random arrivals, costs and modes, the clock sometimes stepping back:
    C and Lua agree on every answer and on what each stores, and every key
    expires no later than its state matters."""
    rng = random.Random(f"{rate}{alg}{burst}")
    kind, rest = driver.limit(rate, alg, burst, 1)
    assert kind == "PARAMS", rest
    params = rest.split()[:6]
    period = int(params[2])
    script = Script(redis_server.client())
    client = redis_server.client()
    now = latest = BASE + rng.randrange(period)
    expires = 0
    spends = []                   # (cost, until) of recent spends
    for i in range(400):
        now += rng.choice([0, 0, 1, rng.randrange(period // 50 + 1),
                           rng.randrange(period), -rng.randrange(period // 20 + 1)])
        latest = max(latest, now)
        cost = rng.choice([1, 1, 1, 2, 3])
        mode, until = rng.choice([0, 0, 0, 0, 1, 1]), None
        if mode:        # give back a recent spend, now and then a made-up one
            if spends and rng.random() < 0.8:
                cost, until = spends.pop(rng.randrange(len(spends)))
            else:
                until = now + rng.randrange(-period, 2 * period)
        if now >= expires:        # expired by the vectors' clock, as Redis
            client.delete("rl:r:k")   # would have by its own
        out = driver.step(now, cost, mode, until)
        reply, ttl = script.step(params, "rl:r:k", now, cost, mode, until)
        if out[0] and not mode:
            spends = (spends + [(cost, now + out[2])])[-5:]
        if out[0] and out[4]:
            expires = now + out[5]
        assert reply[2:6] == out[:4], f"step {i} at {now}"
        if out[4] and out[0]:                    # wrote: same state, same ttl
            stored = client.get("rl:r:k")
            if out[5] > 0:
                assert stored.decode().split() == stored_value(out)
                # PX is the ttl rounded up to ms; PTTL has run on since
                assert (out[5] + 999) // 1000 - 100 <= ttl <= (out[5] + 999) // 1000
                limit_ttl = {"sliding-window": 2 * period}.get(
                    alg, max(period, int(params[3]) * int(params[4])))
                if now == latest:       # not after the clock went back
                    assert out[5] <= limit_ttl


ALGORITHMS = ["gcra", "token-bucket", "fixed-window", "sliding-window"]


@pytest.mark.parametrize("rate", ["7/s", "3/10s", "13/min"])
def test_vectors_05_algorithm_changes_agree(driver, redis_server, rate):
    """SPEC 4: a limit whose algorithm changes under its name (so its key)
    reads the state another algorithm wrote as no state, in both stores
    alike: random traffic, the algorithm (and sometimes the rate) changed
    every few steps, C and Lua agree on every answer, on what is stored and
    for how long, and a step right after a change of algorithm answers as a
    fresh key would."""
    rng = random.Random(f"changes {rate}")
    client = redis_server.client()
    script = Script(client)
    alg, params, period, expires, now = None, None, None, 0, BASE
    for i in range(600):
        if i % rng.choice([3, 5, 11]) == 0:
            changed = rng.choice(ALGORITHMS)
            burst = rng.choice([None, 2]) if changed in ("gcra",
                                                         "token-bucket") \
                else None
            kind, rest = driver.limit(rng.choice([rate, rate, "5/s"]), changed,
                                      burst, 1, keep=True)
            assert kind == "PARAMS", rest
            fresh = changed != alg
            alg, params = changed, rest.split()[:6]
            period = int(params[2])
        else:
            fresh = False
        now += rng.choice([0, 1, rng.randrange(period // 20 + 1),
                           rng.randrange(period)])
        cost = rng.choice([1, 1, 2])
        if now >= expires:
            client.delete("rl:c:k")
        out = driver.step(now, cost, 0)
        reply, ttl = script.step(params, "rl:c:k", now, cost, 0)
        assert reply[2:6] == out[:4], f"step {i} at {now}, {alg}"
        if fresh:       # as if nothing were stored: all of burst there
            assert out[:2] == [1, int(params[3]) - cost], f"step {i}"
        if out[0] and out[4]:
            expires = now + out[5]
            if out[5] > 0:
                assert client.get("rl:c:k").decode().split() == \
                    stored_value(out)
                assert (out[5] + 999) // 1000 - 100 <= ttl <= \
                    (out[5] + 999) // 1000


@pytest.mark.parametrize("alg,value", [
    ("gcra", b"2 1799971200"),             # before values had a letter:
    ("gcra", b"29999520 1 0"),             # token-bucket, fixed-, sliding-
    ("gcra", b"t 2 1799971200000000"), ("gcra", b"f 1799971200000000 3"),
    ("gcra", b"s 1799971200000000 3 1"),
    ("fixed-window", b"1799971260000000"),  # gcra's, then and now
    ("fixed-window", b"2 1799971200"), ("sliding-window", b"f 1 2"),
    ("token-bucket", b"s 1 2 3"),
])
def test_vectors_06_another_algorithms_value_is_no_value(driver,
                                                         redis_server,
                                                         alg, value):
    """A limit meets values another algorithm (or the module before values
    carried their algorithm's letter) wrote under its key: each reads as
    nothing stored, never an error."""
    kind, rest = driver.limit("3/min", alg, None, 1)
    assert kind == "PARAMS", rest
    client = redis_server.client()
    client.set("rl:o:k", value)
    reply, ttl = Script(client).step(rest.split()[:6], "rl:o:k", BASE, 1, 0)
    out = driver.step(BASE, 1, 0)             # on a fresh key
    assert reply[2:6] == out[:4] and out[:2] == [1, 2]
    assert client.get("rl:o:k").decode().split() == stored_value(out)


@pytest.mark.parametrize("value", [
    b"99999999999999999", b"-5", b"1e9", b" 1", b"1 ", b"g 1", b"hello",
    b"", b"1 2 3 4", b"t", b"T 1 2", b"x 1",
])
def test_vectors_07_an_unreadable_value_is_an_error(redis_server, value):
    """What no algorithm wrote, or this one's letter with numbers that are
    not its own, is an error reply: never a guess."""
    client = redis_server.client()
    client.set("rl:u:k", value)
    with pytest.raises(redis_py.ResponseError, match="unreadable"):
        Script(client).step(["0", "3", "60000000", "3", "20000000", "0"],
                            "rl:u:k", BASE, 1, 0)
    assert client.get("rl:u:k") == value


def test_vectors_08_errors_name_the_item_never_the_key(redis_server):
    """The script's error replies say which limit (by its place in KEYS)
    and why, never the key: its value may be an API key (SPEC 7a)."""
    client = redis_server.client()
    sha = client.script_load(SCRIPT)
    limit = ["0", "3", "60000000", "3", "20000000", "0", "1", "0", "", ""]
    keys = ["rl:e:sk_live_A", "rl:e:sk_live_B"]
    for make, why in ((lambda k: client.hset(k, "x", "1"),
                       "not a string (WRONGTYPE)"),
                      (lambda k: client.set(k, "hello"), "unreadable state")):
        client.delete(*keys)
        make(keys[1])
        # one request of two limits: its entry is the error
        e, = client.evalsha(sha, 2, *keys, str(BASE), "1", "2", *limit,
                            *limit)
        assert isinstance(e, redis_py.ResponseError)
        assert str(e) == f"rrl: item 2: {why}"
        assert client.exists(keys[0]) == 0          # nothing written


def _siphash128(key: bytes, msg: bytes) -> bytes:
    """SipHash-2-4, 128-bit output, written from the paper: the second
    implementation the module's is held to."""
    mask = (1 << 64) - 1

    def rotl(x, b):
        return ((x << b) | (x >> (64 - b))) & mask

    def rounds(v, n):
        v0, v1, v2, v3 = v
        for _ in range(n):
            v0 = (v0 + v1) & mask; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32)
            v2 = (v2 + v3) & mask; v3 = rotl(v3, 16); v3 ^= v2
            v0 = (v0 + v3) & mask; v3 = rotl(v3, 21); v3 ^= v0
            v2 = (v2 + v1) & mask; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32)
        return [v0, v1, v2, v3]

    k0, k1 = int.from_bytes(key[:8], "little"), int.from_bytes(key[8:], "little")
    v = [0x736f6d6570736575 ^ k0, 0x646f72616e646f6d ^ k1 ^ 0xee,
         0x6c7967656e657261 ^ k0, 0x7465646279746573 ^ k1]
    tail = len(msg) & ~7
    for i in range(0, tail, 8):
        m = int.from_bytes(msg[i:i + 8], "little")
        v[3] ^= m
        v = rounds(v, 2)
        v[0] ^= m
    b = (len(msg) << 56 | int.from_bytes(msg[tail:], "little")) & mask
    v[3] ^= b
    v = rounds(v, 2)
    v[0] ^= b
    v[2] ^= 0xee
    v = rounds(v, 4)
    out = (v[0] ^ v[1] ^ v[2] ^ v[3]).to_bytes(8, "little")
    v[1] ^= 0xdd
    v = rounds(v, 4)
    return out + (v[0] ^ v[1] ^ v[2] ^ v[3]).to_bytes(8, "little")


def test_siphash_matches_the_reference(driver):
    """The local store's and deny cache's key hash is SipHash-2-4-128: the
    reference vector for the empty message, and every length to 64 bytes
    (each tail length, several blocks) against a second implementation."""
    key = bytes(range(16))
    assert _siphash128(key, b"").hex() == "a3817f04ba25a8e66df67214c7550293"
    for n in range(65):
        kind, rest = driver.ask(f"SIPHASH {n}")
        assert kind == "HASH", rest
        assert rest.strip() == _siphash128(key, bytes(range(n))).hex(), n


# ---- plans= (SPEC 4a): the plan grammar and its numbers, C and Lua alike ----

SAID = {"none": 0, "applied": 1, "off": 2, "invalid": 3}
PLAN_KEY = "rl:plan/v:k"


def driver_plan(driver, plan):
    """t/rrl_vectors' answer to a plan: [said, count, period, burst]"""
    kind, rest = driver.ask("NOPLAN" if plan is None else f"PLAN {plan}")
    assert kind == "PLANNED", rest
    words = rest.split()
    said = int(words[0])
    return [said] + ([int(w) for w in words[1:4]] if said == 1 else [0, 0, 0])


def set_plan_key(client, key, plan):
    if plan is None:
        client.delete(key)
    else:
        client.set(key, plan)


def set_plan(client, plan):
    set_plan_key(client, PLAN_KEY, plan)


@pytest.mark.parametrize("case", VECTORS["plans"], ids=lambda c: c["name"])
def test_vectors_09_plans_local_arithmetic(driver, case):
    """The module's own parser (plans=FILE) and arithmetic under a plan."""
    params_of(driver, case)
    for i, phase in enumerate(case["phases"]):
        said = driver_plan(driver, phase["plan"])
        assert said[0] == SAID[phase["said"]], f"phase {i}"
        if phase["said"] == "applied":
            assert said[1:] == phase["params"], f"phase {i}"
        for t, cost, mode, *want in phase["steps"]:
            out = driver.step(BASE + t, cost, *mode_of(mode))
            assert out[:4] == want, f"phase {i}, step at {t} us"


@pytest.mark.parametrize("case", VECTORS["plans"], ids=lambda c: c["name"])
def test_vectors_10_plans_lua_script(driver, redis_server, case):
    """The script reads the plan key in the same call, parses the plan as
    the module does, decides with its numbers and says so in its reply;
    the plan key is read, never written."""
    client = redis_server.client()
    script = Script(client)
    params = params_of(driver, case)
    expires = 0
    for i, phase in enumerate(case["phases"]):
        set_plan(client, phase["plan"])
        said = driver_plan(driver, phase["plan"])
        for t, cost, mode, *want in phase["steps"]:
            if BASE + t >= expires:
                client.delete("rl:v:k")
            before = client.get("rl:v:k")
            reply, ttl = script.step(params, "rl:v:k", BASE + t, cost,
                                     *mode_of(mode), plan=PLAN_KEY)
            out = driver.step(BASE + t, cost, *mode_of(mode))
            expires = out[10]          # what the driver's store keeps
            if out[9] >= 0 and ttl != -1:     # written: for as long
                kept = (expires - BASE - t + 999) // 1000
                assert kept - 100 <= ttl <= kept    # PTTL has run on
            elif out[9] < 0:
                assert client.get("rl:v:k") is None
            assert reply[2:6] == want, f"phase {i}, step at {t} us"
            assert reply[6:] == said, f"phase {i}, step at {t} us"
            if phase["said"] == "off":       # neither read nor written
                assert client.get("rl:v:k") == before
            elif out[0] and out[4] and out[5] > 0:
                assert client.get("rl:v:k").decode().split() == \
                    stored_value(out)
            if phase["plan"] is not None:
                assert client.get(PLAN_KEY) == phase["plan"].encode()
                assert client.pttl(PLAN_KEY) == -1


def random_plan(rng):
    """A plan as an operator might mistype it: mostly the grammar's words,
    sometimes at its edges or beside it."""
    def number():
        return rng.choice(["1", "2", "7", "10", "100", "5000", "1000000",
                           "1000001", "0", "00", "007", "-1", "+1", "1e3",
                           "1.5", "", "35", "36", "1125899906842624",
                           "1125899906842625", "9007199254740993",
                           "9223372036854775808", "99999999999999999999",
                           str(rng.randrange(1, 10 ** rng.randrange(1, 15)))])

    def rate():
        unit = rng.choice(["s", "sec", "secs", "second", "seconds", "m",
                           "min", "MIN", "minute", "minutes", "h", "hr", "H",
                           "hour", "hours", "d", "day", "Days", "x", "",
                           "ms", "w", "s/", "min "])
        mult = rng.choice(["", "", "", "10", "15", "366", "367", "0",
                           "31622400", "31622401", "05"])
        return number() + rng.choice(["/", "/", "/", "//", ""]) + mult + unit

    words = []
    shape = rng.randrange(6)
    if shape == 0:
        words = [rng.choice(["off", "OFF", "Off", "of", "offf"])]
    elif shape == 1:
        words = [rate()]
    else:
        words = [rate(), rng.choice(["burst", "BURST", "Burst", "burst",
                                     "bursts", "cost"]) + "=" + number()]
    if rng.random() < 0.1:
        words.append(rng.choice(["burst=2", "off", "x", "#"]))
    if rng.random() < 0.05:
        rng.shuffle(words)
    seps = [rng.choice([" ", " ", "\t", "  ", " \t"]) for _ in words]
    text = "".join(s + w for s, w in zip(seps, words))
    return text if rng.random() < 0.5 else text.strip()


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_vectors_11_random_plans_agree(driver, redis_server, alg):
    """Random plans, most near the grammar's edges: the module's parser and
    the script's take each for the same thing (applied with the same
    numbers, off, or not a plan) and decide alike with it."""
    rng = random.Random(f"plans {alg}")
    client = redis_server.client()
    script = Script(client)
    seen = set()
    for i in range(400):
        cost = rng.choice([1, 1, 1, 2, 6])
        params = params_of(driver, {"rate": "10/min", "algorithm": alg,
                                    "burst": None, "cost": cost})
        plan = random_plan(rng)
        client.delete("rl:v:k")
        set_plan(client, plan)
        said = driver_plan(driver, plan)
        seen.add(said[0])
        reply, _ = script.step(params, "rl:v:k", BASE, cost, 0,
                               plan=PLAN_KEY)
        out = driver.step(BASE, cost, 0)
        assert reply[6:] == said, f"{i}: {plan!r}"
        assert reply[2:6] == out[:4], f"{i}: {plan!r}"
    assert seen == {1, 2, 3}


def test_vectors_12_a_plan_key_of_another_type_does_not_parse(redis_server):
    """A plan key that is not a string is a plan that does not parse: the
    directive's numbers decide, never an error for the request."""
    client = redis_server.client()
    client.hset(PLAN_KEY, "x", "1")
    reply, _ = Script(client).step(["0", "3", "60000000", "3", "20000000",
                                    "0"], "rl:v:k", BASE, 1, 0,
                                   plan=PLAN_KEY)
    assert reply[2:] == [1, 2, 20000000, 0, 3, 0, 0, 0]


# ---- the batch form (a child's queued requests in one call) ----

def in_batches(client, cases, name, plans=False, form="module"):
    """vectors.json's cases at once, through the script's batch form: each
    batch holds, for every case whose next step is at the earliest clock,
    its steps at that clock in one phase (several on one key, in order),
    each step a request of its own; every request must get the case's
    answer, whatever the others in its batch did.  Each case has its own
    key (and plan key) and its own t/rrl_vectors, for the expiry by the
    vectors' clock (and the plan it said).  How many batches, and the
    largest."""
    script = Script(client, form)
    run = []
    for ci, case in enumerate(cases):
        run.append({"key": f"rl:{name}:{ci}", "plan": f"rl:plan/{name}:{ci}",
                    "steps": [(pi, phase, step)
                              for pi, phase in enumerate(phases(case))
                              for step in phase["steps"]],
                    "at": 0, "driver": Driver(), "phase": -1,
                    "params": None, "said": None, "expires": 0,
                    "name": case["name"]})
        if plans:
            run[-1]["params"] = params_of(run[-1]["driver"], case)
    batches = largest = 0
    try:
        while True:
            live = [c for c in run if c["at"] < len(c["steps"])]
            if not live:
                break
            now = min(BASE + c["steps"][c["at"]][2][0] for c in live)
            requests, asked = [], []
            for c in live:
                pi, phase, _ = c["steps"][c["at"]]
                if BASE + c["steps"][c["at"]][2][0] != now:
                    continue
                if c["phase"] != pi and plans:
                    set_plan_key(client, c["plan"], phase["plan"])
                    c["said"] = driver_plan(c["driver"], phase["plan"])
                elif c["phase"] != pi:
                    c["params"] = params_of(c["driver"], phase,
                                            keep=c["phase"] >= 0)
                c["phase"] = pi
                if now >= c["expires"]:       # by the vectors' clock
                    client.delete(c["key"])
                while (c["at"] < len(c["steps"])
                       and c["steps"][c["at"]][0] == pi
                       and BASE + c["steps"][c["at"]][2][0] == now):
                    t, cost, mode, *want = c["steps"][c["at"]][2]
                    m, until = mode_of(mode)
                    requests.append([(c["params"], c["key"], cost, m, until,
                                      c["plan"] if plans else None)])
                    asked.append((c, cost, m, until, want))
                    c["at"] += 1
            entries, _ = script.batch(now, requests)
            batches += 1
            largest = max(largest, len(requests))
            assert len(entries) == len(requests)
            for entry, (c, cost, m, until, want) in zip(entries, asked):
                out = c["driver"].step(now, cost, m, until)
                if plans:
                    c["expires"] = out[10]    # what the driver's store keeps
                elif out[0] and out[4]:
                    c["expires"] = now + out[5]
                where = f"{c['name']}, step at {now - BASE} us"
                assert not isinstance(entry, Exception), (where, entry)
                assert entry[1] == now, where
                assert entry[2:6] == want, where
                assert entry[0] == want[0], where
                if plans:
                    assert entry[6:] == c["said"], where
    finally:
        for c in run:
            c["driver"].close()
    return batches, largest


@pytest.mark.parametrize("form", FORMS)
def test_vectors_13_cases_in_batches(redis_server, form):
    """Every case of vectors.json at once, through the script's batch form
    (in_batches): far fewer calls than steps, each answer the case's, in
    either form of a limit's ARGV."""
    steps = sum(len(p["steps"]) for c in VECTORS["cases"] for p in phases(c))
    batches, largest = in_batches(redis_server.client(), VECTORS["cases"],
                                  "vb", form=form)
    assert largest > 5 and batches < steps


def test_vectors_15_plans_in_batches(redis_server):
    """Every plans case of vectors.json at once, through the batch form:
    each request's plan key is indexed among its own KEYS (the second),
    whatever came before it in the batch, and each gets the case's answer
    and plan."""
    steps = sum(len(p["steps"]) for c in VECTORS["plans"] for p in c["phases"])
    batches, largest = in_batches(redis_server.client(), VECTORS["plans"],
                                  "vpb", plans=True)
    assert largest > 5 and batches < steps


@pytest.mark.parametrize("form", FORMS)
def test_vectors_14_a_request_fails_alone_in_a_batch(redis_server, form):
    """In one batch: a request decided, one whose second limit's key is of
    another type (its entry the error, nothing of it written, its first
    limit's key included), one whose state cannot be read, and requests
    with plans=redis, each plan key indexed among its own request's KEYS;
    the others are decided as if alone, each on what came before it.  The
    spends in either form; the plans' always in the full one."""
    client = redis_server.client()
    script = Script(client)
    gcra = ["0", "3", "60000000", "3", "20000000", "0"]
    spend = item(gcra, 1, 0, None, 0, form)
    client.hset("rl:bb:hash", "x", "1")
    client.set("rl:bb:bad", "hello")
    client.set("rl:plan/bb:1", "10/min burst=5")
    client.set("rl:plan/bb:2", "off")
    sha = script.sha
    plan_item = item(gcra, 1, 0, None, 2, form)
    assert plan_item == [*gcra, "1", "0", "", "2"]
    argv = [str(BASE), "6",
            "1", *spend,                                  # decided
            "2", *spend, *spend,                          # WRONGTYPE
            "1", *spend,                                  # unreadable
            "1", *plan_item,                              # plan applied
            "1", *plan_item,                              # plan off
            "1", *spend]                                  # after the first
    keys = ["rl:bb:a", "rl:bb:b", "rl:bb:hash", "rl:bb:bad",
            "rl:bb:p1", "rl:plan/bb:1", "rl:bb:p2", "rl:plan/bb:2",
            "rl:bb:a"]
    entries = client.evalsha(sha, len(keys), *keys, *argv)
    assert len(entries) == 6
    assert entries[0] == [1, BASE, 1, 2, 20000000, 0]
    assert isinstance(entries[1], redis_py.ResponseError)
    assert str(entries[1]) == "rrl: item 2: not a string (WRONGTYPE)"
    assert client.exists("rl:bb:b") == 0
    assert isinstance(entries[2], redis_py.ResponseError)
    assert str(entries[2]) == "rrl: item 1: unreadable state"
    assert client.get("rl:bb:bad") == b"hello"
    assert entries[3] == [1, BASE, 1, 4, 6000000, 0, 1, 10, 60000000, 5]
    assert entries[4] == [1, BASE, 1, 0, 0, 0, 2, 0, 0, 0]
    assert client.exists("rl:bb:p2") == 0
    # the same key as the first request's: it sees what that one spent
    assert entries[5] == [1, BASE, 1, 1, 40000000, 0]
    assert client.get("rl:bb:a") == str(BASE + 40000000).encode()
    assert 0 < client.pttl("rl:bb:a") <= 40000


def test_vectors_16_a_request_of_both_forms(driver, redis_server):
    """A request whose limits go in both forms, a gcra spend in the short
    one between two of a token-bucket's in the full one: each item is read
    at its own place, and each limit answers and stores as it would alone
    (the request after it in the batch too)."""
    client = redis_server.client()
    script = Script(client)
    kind, rest = driver.limit("3/min", "token-bucket", None, 1)
    assert kind == "PARAMS", rest
    bucket = rest.split()[:6]
    gcra = ["0", "3", "60000000", "3", "20000000", "0"]
    spend, full = item(gcra, 1, 0, None, 0), item(bucket, 2, 0, None, 0)
    assert len(spend) == 4 and len(full) == 10
    keys = ["rl:f:a", "rl:f:b", "rl:f:c", "rl:f:d"]
    entries = client.evalsha(script.sha, len(keys), *keys, str(BASE), "2",
                             "3", *full, *spend, *full, "1", *spend)
    alone = [script.step(p, k, BASE, c, 0)[0][2:6] for p, k, c in
             [(bucket, "rl:f:1", 2), (gcra, "rl:f:2", 1),
              (bucket, "rl:f:3", 2), (gcra, "rl:f:4", 1)]]
    assert entries[0] == [1, BASE, *alone[0], *alone[1], *alone[2]]
    assert entries[1] == [1, BASE, *alone[3]]
    for k in "abcd":
        assert client.get(f"rl:f:{k}") == \
            client.get(f"rl:f:{'abcd'.index(k) + 1}")
