"""Keys under attack: whatever a client puts where a key expression reads
(headers, the query string, the path), every key the module writes to
Redis starts with the configured RateLimitKeyPrefix, has a bounded length
(SPEC section 4: a value over 64 bytes, or with a byte outside printable
ASCII, is replaced by its SHA-1 in hex), carries an expiry, and the request
gets an answer the configuration promises: 200 or 429, or httpd's own 400
for what its parser refuses (then nothing is counted).  Nothing the client
sent comes back in a response header, and key values never reach the error
log (the module's own lines, up to trace3: from trace4 on, httpd's
expression evaluator traces every result under the module's name).

Requests go over raw sockets (Httpd.raw) so that exactly these bytes reach
httpd: long values up to 64 KiB and past httpd's limit, every byte value,
obs-fold, bare CR, bare LF, %0d%0a decoded by the expression itself."""
import hashlib
import random
import re

import pytest

import rrl

PREFIX = "atk:"
OTHER_PREFIX = "other:"
FIELD_MAX = 70000          # LimitRequestFieldSize: 64 KiB values fit
KEY_VALUE_MAX = 64         # SPEC 4: longer values are hashed
MARKER = b"Injected"       # what CRLF cases try to turn into a header

# Limits defined outside any virtual host: PREFIX NAME ":" VALUE; the one in
# a <VirtualHost>: PREFIX "keys.test:" NAME ":" VALUE.  Both virtual hosts
# inherit the Locations above them; other.test has its own prefix.
SNIPPET = """
RateLimitRedis ${redis_url}
RateLimitKeyPrefix atk:
RateLimitHeaders both
LimitRequestFieldSize ${field_max}
HttpProtocolOptions ${protocol}
LogLevel warn redis_ratelimit:trace3
RemoteIPHeader X-Forwarded-For
RemoteIPInternalProxy 127.0.0.1
AliasMatch "^/(hdr|many|enc|qs|qsu|uri|vh)/" "${docroot}/small.txt"
<Location /hdr/>
    RateLimit 2/min key=%{HTTP:X-Key} name=hdr
</Location>
<Location /many/>
    RateLimit 2/min key=%{HTTP:X-A}%{HTTP:X-B}%{HTTP:X-C}%{HTTP:X-D} name=many
</Location>
<Location /enc/>
    RateLimit 2/min key=%{unescape:%{HTTP:X-Key}} name=enc
</Location>
<Location /qs/>
    RateLimit 2/min key=%{QUERY_STRING} name=qs
</Location>
<Location /qsu/>
    RateLimit 2/min key=%{unescape:%{QUERY_STRING}} name=qsu
</Location>
<Location /uri/>
    RateLimit 2/min key=%{REQUEST_URI} name=uri
</Location>
<VirtualHost *:${port}>
    ServerName keys.test
    ServerAlias *.keys.test
    DocumentRoot "${docroot}"
    <Location /vh/>
        RateLimit 2/min key=%{HTTP:X-Key} name=vhdr
    </Location>
</VirtualHost>
<VirtualHost *:${port}>
    ServerName other.test
    DocumentRoot "${docroot}"
    RateLimitKeyPrefix other:
</VirtualHost>
"""

# every key the configuration can make: prefix, then one of these heads
HEADS = {PREFIX: ["hdr:", "many:", "enc:", "qs:", "qsu:", "uri:",
                  "keys.test:vhdr:"],
         OTHER_PREFIX: ["hdr:", "many:", "enc:", "qs:", "qsu:", "uri:"]}
VALUE_RE = re.compile(rb"[\x20-\x7e]{1,64}|[0-9a-f]{40}")
TTL_MAX_MS = 60000         # 2/min: nothing needs to be kept longer

# what a response may carry: httpd's own headers and the module's
RESPONSE_HEADERS = {
    "date", "server", "last-modified", "etag", "accept-ranges",
    "content-length", "content-type", "connection", "vary",
    "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset",
    "ratelimit-policy", "ratelimit", "retry-after"}
HEADER_LINE_RE = re.compile(rb"([A-Za-z0-9-]+): [\x20-\x7e]*")
PRINTABLE = bytes(range(0x21, 0x7f))


def start(httpd, protocol="Strict"):
    return httpd.start(SNIPPET, protocol=protocol, field_max=FIELD_MAX)


def key_value(v: bytes) -> bytes:
    """What SPEC 4 stores for key value v."""
    if len(v) <= KEY_VALUE_MAX and all(0x20 <= b <= 0x7e for b in v):
        return v
    return hashlib.sha1(v).hexdigest().encode()


def filler(n: int, seed: int, alphabet: bytes = PRINTABLE) -> bytes:
    """n bytes of alphabet, different for each seed; never starts or ends
    with white space (httpd strips it)."""
    rng = random.Random(seed)
    return bytes(rng.choice(alphabet) for _ in range(n))


# ---- requests and responses ----

def request(httpd, path=b"/hdr/x", headers=b"", host=b"keys.test", **kw):
    """One request as these bytes, on its own connection: (status, raw)."""
    data = (b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n"
            + headers + b"Connection: close\r\n\r\n")
    raw = httpd.raw(data, **kw)
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", raw)
    assert m, raw[:200]
    return int(m.group(1)), raw


def check_response(status, raw, sent: bytes = b""):
    """One well-formed response whose headers are httpd's and the module's
    only, in printable ASCII; what the client sent is not echoed in them
    (nor anywhere, when the module answered: 200 or 429)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, raw[:300]
    lines = head.split(b"\r\n")[1:]
    for line in lines:
        m = HEADER_LINE_RE.fullmatch(line)
        assert m, f"malformed response header line {line[:200]!r}"
        assert m.group(1).decode().lower() in RESPONSE_HEADERS, line
    length = [int(l.split(b": ")[1]) for l in lines
              if l.lower().startswith(b"content-length:")]
    assert length == [len(body)], "one response, nothing after it"
    assert MARKER not in head
    if status in (200, 429):
        assert MARKER not in body
        if len(sent) >= 8:
            assert sent not in raw
    if status == 429:
        assert b"\r\nRetry-After: " in head


def hostile(httpd, times=3, **kw):
    """The same request `times` times: the statuses (each response checked)."""
    out = []
    for _ in range(times):
        status, raw = request(httpd, **kw)
        check_response(status, raw, kw.get("headers", b"").partition(b": ")[2]
                       [:64])
        out.append(status)
    return out


# ---- what is in Redis ----

def scan_keys(client) -> dict:
    """Every key in Redis (SCAN), each held to the rules: {key: pttl}."""
    keys = {}
    for k in client.scan_iter(count=1000):
        prefix = next((p for p in HEADS if k.startswith(p.encode())), None)
        assert prefix, f"key outside the prefixes: {k[:200]!r}"
        rest = k[len(prefix):]
        head = next((h for h in HEADS[prefix] if rest.startswith(h.encode())),
                    None)
        assert head, f"key of no configured limit: {k[:200]!r}"
        value = rest[len(head):]
        assert VALUE_RE.fullmatch(value), f"unbounded key value: {k[:200]!r}"
        assert len(k) <= len(prefix) + len(head) + KEY_VALUE_MAX
        ttl = client.pttl(k)
        assert 0 < ttl <= TTL_MAX_MS, (k, ttl)
        keys[k] = ttl
    return keys


def expect_keys(client, *keys):
    """Redis holds exactly these keys (bytes, or (prefix, head, value) with
    value stored per SPEC 4), all held to the rules."""
    want = set()
    for k in keys:
        if isinstance(k, tuple):
            prefix, head, value = k
            k = prefix.encode() + head.encode() + key_value(value)
        want.add(k)
    got = set(scan_keys(client))
    assert got == want, (sorted(x[:120] for x in got),
                         sorted(x[:120] for x in want))


def key(value, head="hdr:", prefix=PREFIX):
    return (prefix, head, value)


# ---- long values ----

@pytest.mark.parametrize("n", [1, 63, 64, 65, 100, 8190, 16384, 65536,
                               FIELD_MAX - 100])
def test_keys_01_long_values(httpd, redis_server, n):
    """Up to 64 printable bytes a value is the key as it is; past that, up to
    64 KiB and more, its SHA-1."""
    start(httpd)
    c = redis_server.client()
    value = filler(n, seed=n)
    assert hostile(httpd, headers=b"X-Key: " + value + b"\r\n") == \
        [200, 200, 429]
    expect_keys(c, key(value))
    # the same in a virtual host's own limit: VHOST part from ServerName
    c.flushall()
    assert hostile(httpd, path=b"/vh/x",
                   headers=b"X-Key: " + value + b"\r\n") == [200, 200, 429]
    expect_keys(c, key(value, "keys.test:vhdr:"))


def test_keys_02_past_httpds_limit_nothing_counted(httpd, redis_server):
    start(httpd)
    c = redis_server.client()
    # one field past LimitRequestFieldSize, and repeated fields whose merged
    # value would be: httpd answers 400 before any limit is asked
    too_long = b"X-Key: " + filler(FIELD_MAX + 10, 1) + b"\r\n"
    repeated = b"".join(b"X-Key: " + filler(30000, i) + b"\r\n"
                        for i in range(3))
    for headers in (too_long, repeated):
        assert hostile(httpd, headers=headers) == [400] * 3
    expect_keys(c)


def test_keys_03_values_longer_than_any_field(httpd, redis_server):
    """A key made of several fields, and repeated fields merged into one
    (both longer than one field may be): still one 40-hex-digit key."""
    start(httpd)
    c = redis_server.client()
    parts = [filler(65536, 10 + i) for i in range(4)]
    headers = b"".join(b"X-%c: %s\r\n" % (ord("A") + i, p)
                       for i, p in enumerate(parts))
    assert hostile(httpd, path=b"/many/x", headers=headers) == [200, 200, 429]
    expect_keys(c, key(b"".join(parts), "many:"))
    c.flushall()
    parts = [filler(16000, 20 + i) for i in range(4)]
    headers = b"".join(b"X-Key: " + p + b"\r\n" for p in parts)
    assert hostile(httpd, headers=headers) == [200, 200, 429]
    expect_keys(c, key(b", ".join(parts)))


# ---- binary values ----

def surviving_request(httpd, c, value, path=b"/hdr/x"):
    """One request with X-Key: value; the key it wrote (or None when httpd
    refused it with 400 and nothing was counted)."""
    c.flushall()
    status, raw = request(httpd, path=path, headers=b"X-Key: " + value
                          + b"\r\n")
    check_response(status, raw)
    keys = scan_keys(c)
    if status == 400:
        assert keys == {}, (value, keys)
        return None
    assert status == 200, (value, status)
    assert len(keys) == 1, (value, keys)
    return next(iter(keys))


@pytest.mark.parametrize("protocol", ["Strict", "Unsafe"])
def test_keys_04_every_byte_value(httpd, redis_server, protocol):
    """k<byte>k for each of the 256 byte values: what httpd lets through is
    stored as itself when printable, as the SHA-1 of exactly those bytes
    otherwise; a byte that ends the line (LF) leaves "k"."""
    start(httpd, protocol)
    c = redis_server.client()
    survived = set()
    for b in range(256):
        value = b"k" + bytes([b]) + b"k"
        got = surviving_request(httpd, c, value)
        if got is None:
            continue
        survived.add(b)
        want = {PREFIX.encode() + b"hdr:" + key_value(value)}
        if b in (0x0a, 0x0d):
            want.add(PREFIX.encode() + b"hdr:k")
        assert got in want, (b, got)
    # not vacuous: HTTP's field-content got through, NUL and CR did not
    field_content = {0x09, *range(0x20, 0x7f), *range(0x80, 0x100)}
    assert field_content <= survived, sorted(field_content - survived)
    assert 0x00 not in survived and 0x0d not in survived
    if protocol == "Strict":
        assert survived <= field_content | {0x0a}, sorted(survived)

    # all of them in one value, and 64 KiB of random high bytes
    every = bytes(sorted(field_content - {0x20, 0x09})) + b"\t \x80"
    got = surviving_request(httpd, c, b"x" + every + b"x")
    assert got == PREFIX.encode() + b"hdr:" + key_value(b"x" + every + b"x")
    blob = filler(65536, 7, bytes(range(0x80, 0x100)))
    got = surviving_request(httpd, c, blob, b"/vh/x")
    assert got == PREFIX.encode() + b"keys.test:vhdr:" + key_value(blob)


# ---- CR, LF, folding, encoded CRLF ----

INJECT = b"Injected: x"
ENC = b"a%0d%0aInjected:%20x"      # "a\r\nInjected: x" once decoded
DECODED = b"a\r\n" + INJECT

# (id, path, header lines, key value(s) it may leave (None: not counted,
# "400": refused by httpd), name of the limit).  No two cases leave the
# same key: a child's deny cache remembers a denied key past FLUSHALL.
CRLF_CASES = [
    ("obs-fold", b"/hdr/x", b"X-Key: a\r\n " + INJECT + b"\r\n",
     [b"a " + INJECT, b"a  " + INJECT, b"a\r\n " + INJECT], "hdr:"),
    ("obs-fold-tab", b"/hdr/x", b"X-Key: b\r\n\t" + INJECT + b"\r\n",
     [b"b " + INJECT, b"b \t" + INJECT, b"b\t" + INJECT,
      b"b\r\n\t" + INJECT], "hdr:"),
    ("bare-cr", b"/hdr/x", b"X-Key: c\r" + INJECT + b"\r\n", ["400"], "hdr:"),
    ("bare-lf", b"/hdr/x", b"X-Key: d\n" + INJECT + b"\r\n",
     [b"d", "400"], "hdr:"),
    ("encoded-kept", b"/hdr/x", b"X-Key: " + ENC + b"\r\n", [ENC], "hdr:"),
    ("encoded-decoded", b"/enc/x", b"X-Key: " + ENC + b"\r\n", [DECODED],
     "enc:"),
    ("encoded-nul", b"/enc/x", b"X-Key: a%00b\r\n", [None], "enc:"),
    ("encoded-bad", b"/enc/x", b"X-Key: a%zz%\r\n", [None], "enc:"),
    ("query-kept", b"/qs/x?" + ENC, b"", [ENC], "qs:"),
    ("query-decoded", b"/qsu/x?" + ENC, b"", [DECODED], "qsu:"),
    ("query-nul", b"/qsu/x?a%00b", b"", [None], "qsu:"),
    ("path-decoded", b"/uri/" + ENC, b"", [b"/uri/" + DECODED], "uri:"),
    ("path-high", b"/uri/%ff%fe%80", b"", [b"/uri/\xff\xfe\x80"], "uri:"),
]


@pytest.mark.parametrize("protocol", ["Strict", "Unsafe"])
def test_keys_05_crlf_and_folding(httpd, redis_server, protocol):
    start(httpd, protocol)
    c = redis_server.client()
    for name, path, headers, values, head in CRLF_CASES:
        c.flushall()
        codes = hostile(httpd, path=path, headers=headers)
        keys = scan_keys(c)
        if codes == [400] * 3:
            assert "400" in values, name
            assert keys == {}, name
            continue
        if values == [None]:
            assert codes == [200] * 3, name
            assert keys == {}, name
            continue
        assert codes == [200, 200, 429], (name, codes)
        want = {PREFIX.encode() + head.encode() + key_value(v)
                for v in values if isinstance(v, bytes)}
        assert len(keys) == 1 and set(keys) <= want, (name, keys, want)


def test_keys_06_vhost_and_prefix_are_not_the_clients(httpd, redis_server):
    """The VHOST part is the ServerName of the limit's virtual host and the
    prefix is its configuration's: no Host header changes either."""
    start(httpd)
    c = redis_server.client()
    for i, host in enumerate([b"keys.test", b"KEYS.TEST", b"keys.test:80",
                              b"x.keys.test", b"a.b.keys.test",
                              b"unknown.test"]):
        c.flushall()
        value = b"v%d" % i
        assert hostile(httpd, path=b"/vh/x", host=host,
                       headers=b"X-Key: " + value + b"\r\n") == \
            [200, 200, 429], host
        expect_keys(c, key(value, "keys.test:vhdr:"))
    # other.test: its own prefix for the limits it inherits
    c.flushall()
    assert hostile(httpd, path=b"/hdr/x", host=b"other.test",
                   headers=b"X-Key: o\r\n") == [200, 200, 429]
    expect_keys(c, key(b"o", prefix=OTHER_PREFIX))
    # Host values httpd refuses count nothing
    c.flushall()
    for host in (b"keys.test\x80", b"keys.test/..", b"k" * 300 + b".test",
                 b"keys.test\tInjected: x", b"[::1"):
        status, raw = request(httpd, path=b"/vh/x", host=host,
                              headers=b"X-Key: h\r\n")
        check_response(status, raw)
        assert status in (200, 400, 429), (host, status)
    for k in scan_keys(c):
        assert k.startswith(PREFIX.encode() + b"keys.test:vhdr:"), k


def test_keys_07_key_values_never_logged(httpd, redis_server):
    """The module's lines name limits, never their values (they may be API
    keys), up to trace3; from trace4 on, httpd's ap_expr evaluator logs
    each result (util_expr_eval.c "gave: ...") under the module's name."""
    start(httpd)
    secret = b"s3cret-api-key-" + filler(20, 99,
                                          b"abcdefghijklmnopqrstuvwxyz")
    assert hostile(httpd, headers=b"X-Key: " + secret + b"\r\n") == \
        [200, 200, 429]
    assert hostile(httpd, path=b"/vh/x",
                   headers=b"X-Key: " + secret + b"\xff\r\n") == [200, 200, 429]
    httpd.access_log(6)   # every request is over
    text = "\n".join(httpd.error_log_lines())
    assert secret.decode() not in text
    assert key_value(secret + b"\xff").decode() not in text


# ---- an IPv6 client's address inside a key expression ----

V6 = "2001:db8::1"


def test_keys_08_ipv6_address_in_a_long_value(httpd, redis_server):
    """The client's IPv6 address, wherever it appears in a key value, stands
    for its /64 (SPEC 2, ipv6-prefix); the result is still one bounded key."""
    start(httpd)
    c = redis_server.client()
    value = ("x" + V6) * 200 + "y"
    assert hostile(httpd, headers=f"X-Forwarded-For: {V6}\r\n"
                   f"X-Key: {value}\r\n".encode()) == [200, 200, 429]
    expect_keys(c, key(value.replace(V6, "2001:db8::/64").encode()))


def children_hwm(httpd) -> dict:
    """Peak resident set (VmHWM, kB) of each child of httpd."""
    out = {}
    for pid in rrl.child_pids(httpd.pid):
        try:
            status = open(f"/proc/{pid}/status").read()
        except OSError:
            continue
        m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
        if m:
            out[pid] = int(m.group(1))
    return out


def test_keys_09_ipv6_rewrite_is_linear(httpd, redis_server):
    """16 KiB of the client's address: rewriting each occurrence costs
    memory in proportion to the value (a rewrite that copied everything so
    far at each occurrence took ~75 MB here, ~1.2 GB for 64 KiB)."""
    start(httpd)
    c = redis_server.client()
    xff = b"X-Forwarded-For: ::2\r\n"      # a short address: many of them
    for i in range(4):                       # warm every child up
        request(httpd, headers=xff + b"X-Key: w%d\r\n" % i)
    c.flushall()
    before = children_hwm(httpd)
    value = b"::2" * (16384 // 3)
    status, raw = request(httpd, headers=xff + b"X-Key: " + value + b"\r\n")
    check_response(status, raw)
    assert status == 200
    after = children_hwm(httpd)
    growth = max(after.get(p, 0) - kb for p, kb in before.items())
    expect_keys(c, key(value.replace(b"::2", b"::/64")))
    assert growth < 16 * 1024, f"a child's peak RSS grew by {growth} kB"


# ---- Redis down: the local store gets the same values ----

@pytest.mark.parametrize("on_error,codes", [
    ("local", [200, 200, 429]), ("deny", [429] * 3), ("allow", [200] * 3)])
def test_keys_10_hostile_values_while_redis_is_down(httpd, redis_server, env,
                                                    on_error, codes):
    env.expect_log("RRL00013", "RRL00019")
    httpd.start(SNIPPET + f"RateLimitOnError {on_error}\n", protocol="Strict",
                field_max=FIELD_MAX)
    redis_server.stop()
    for i, headers in enumerate([
            b"X-Key: " + filler(65536, 30) + b"\r\n",
            b"X-Key: " + filler(100, 31, bytes(range(0x80, 0x100))) + b"\r\n",
            b"X-Key: a\r\n " + INJECT + b"\r\n"]):
        assert hostile(httpd, headers=headers) == codes, i
    assert hostile(httpd, path=b"/enc/x",
                   headers=b"X-Key: " + ENC + b"\r\n") == codes
