"""Configuration errors stop `apachectl -t` with the file, the line and a
sentence naming what is wrong and what is accepted (SPEC section 8); nothing
can be set from .htaccess."""
import re

import pytest

import rrl


def line_of(httpd, text, needle):
    """The line of the rendered httpd.conf that holds needle."""
    for n, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return n
    raise AssertionError(f"{needle!r} is not in the configuration")


BAD_DIRECTIVES = [
    # (directive line, words the message must contain)
    ("RateLimit 100/x", ["'100/x' is not a rate", "N/PERIOD", "100/h",
                         "h, hr, hour"]),
    ("RateLimit 0/s", ["'0/s' is not a rate", "positive whole number"]),
    ("RateLimit -1/s", ["'-1/s' is not a rate"]),
    ("RateLimit 1e9/s", ["'1e9/s' is not a rate"]),
    ("RateLimit 10x/s", ["'10x/s' is not a rate"]),
    ("RateLimit 100", ["'100' is not a rate"]),
    ("RateLimit 2000000/s", ["more than 1,000,000 per second"]),
    ("RateLimit 1/400d", ["longer than 366 days"]),
    ("RateLimit 10/s burts=5", ["unknown option 'burts'", "accepted: burst"]),
    ("RateLimit 10/s burst", ["'burst' is not an option", "name=value"]),
    ("RateLimit 10/s algorithm=leaky", ["algorithm=leaky is not known",
                                        "gcra, token-bucket, fixed-window "
                                        "or sliding-window"]),
    ("RateLimit 10/s algorithm=fixed-window burst=5",
     ["burst= has no meaning for algorithm=fixed-window",
      "only with gcra and token-bucket"]),
    ("RateLimit 10/s algorithm=sliding-window burst=5",
     ["burst= has no meaning"]),
    ("RateLimit 10/s burst=5 cost=6", ["cost=6 is above burst=5",
                                       "cost from 1 to burst"]),
    ("RateLimit 10/s cost=11", ["cost=11 is above burst=10"]),
    ("RateLimit 10/s algorithm=fixed-window cost=11",
     ["cost=11 is above the 10 of 10/s"]),
    ("RateLimit 10/s cost=0", ["cost=0 is not accepted",
                               "positive whole number"]),
    ("RateLimit 10/s burst=0", ["burst=0 is not accepted"]),
    ("RateLimit 10/s burst=1 burst=2", ["burst= is given twice"]),
    ("RateLimit 10/s name=a/b", ["name=a/b is not accepted",
                                 "A-Z a-z 0-9 _ . -"]),
    ("RateLimit 10/s name=" + "n" * 65, ["is not accepted", "1 to 64"]),
    ("RateLimit 10/s phase=later", ["phase=later is not known",
                                    "access or auth"]),
    ("RateLimit 10/s ipv6-prefix=129", ["ipv6-prefix=129 is not accepted",
                                        "1 to 128"]),
    ("RateLimit 10/s count=200,abc", ["count=200,abc is not accepted",
                                      "count=401,403"]),
    ("RateLimit 10/s count=99", ["count=99 is not accepted"]),
    ("RateLimit 10/s key=%{HTTP:X", ["does not parse as an expression",
                                     "string expression"]),
    ("RateLimit 10/min key=%{REMOTE_USER} phase=access",
     ["key=%{REMOTE_USER} with phase=access is never known",
      "use phase=auth"]),
    ("RateLimit 10/min key=%{REMOTE_USER}-%{REMOTE_ADDR} phase=access",
     ["with phase=access is never known"]),
    ("RateLimit off burst=1", ["RateLimit off takes no options"]),
    ("RateLimit", ["RateLimit: expected RATE"]),
    ("RateLimitMode off", ["'off' is not a mode", "enforce or dry-run"]),
    ("RateLimitStatus 399", ["'399' is not accepted", "400 to 599"]),
    ("RateLimitStatus 600", ["'600' is not accepted", "400 to 599"]),
    ("RateLimitStatus 42x", ["'42x' is not accepted"]),
    ("RateLimitHeaders draft", ["'draft' is not accepted",
                                "off, legacy, ietf or both"]),
    ("RateLimitExempt 10.0.0.0/33", ["'10.0.0.0/33' is not an IP address "
                                     "or CIDR", "10.0.0.0/8"]),
    ("RateLimitExempt example.org", ["'example.org' is not an IP address"]),
    ("RateLimitExempt 10.0.0.0/", ["'10.0.0.0/' is not an IP address"]),
    ("RateLimitExempt 10.0.0.0/00x", ["'10.0.0.0/00x' is not an IP"]),
    ("RateLimitExempt ::/129", ["'::/129' is not an IP address",
                                "0.0.0.0/0"]),
    ("RateLimitKeyPrefix 'a b'", ["'a b' is not accepted", "printable"]),
    ("RateLimitLocalSize 1K", ["'1K' is not accepted", "64K to 64G"]),
    ("RateLimitLocalSize lots", ["'lots' is not accepted"]),
    ("RateLimitDenyCache maybe", ["RateLimitDenyCache must be On or Off"]),
]


@pytest.mark.parametrize("line,words", BAD_DIRECTIVES,
                         ids=[b[0][:40] for b in BAD_DIRECTIVES])
def test_config_01_bad_directive_names_file_line_and_accepted(httpd, line,
                                                              words):
    rrl.assert_config_error(httpd, line, words)


@pytest.mark.parametrize("directive", [
    "RateLimitKeyPrefix x:", "RateLimitDenyCache off",
    "RateLimitLocalSize 1M"])
def test_config_02_server_directives_not_in_sections(httpd, directive):
    rc, out = httpd.configtest(f"<Location /x>\n{directive}\n</Location>")
    assert rc != 0
    assert f"{directive.split()[0]} not allowed in <Location> context" in out, out


def test_config_03_local_size_is_global_only(httpd):
    rc, out = httpd.configtest("""
<VirtualHost *:${port}>
    ServerName v.test
    RateLimitLocalSize 1M
</VirtualHost>""")
    assert rc != 0
    assert "RateLimitLocalSize cannot occur within <VirtualHost>" in out, out


def test_config_04_not_inside_limit(httpd):
    rc, out = httpd.configtest("""
<Location /x>
    <Limit POST>
        RateLimit 1/s
    </Limit>
</Location>""")
    assert rc != 0
    assert "RateLimit cannot occur within <Limit>" in out, out


def test_config_05_one_name_one_limit_in_a_scope(httpd):
    snippet = """
<VirtualHost *:${port}>
    ServerName shop.test
    <Location /a>
        RateLimit 5/min name=login
    </Location>
    <Location /b>
        RateLimit 6/min name=login
    </Location>
</VirtualHost>"""
    rc, out = httpd.configtest(snippet)
    assert rc != 0, out
    text = httpd.render(snippet)
    a = line_of(httpd, text, "RateLimit 5/min name=login")
    b = line_of(httpd, text, "RateLimit 6/min name=login")
    assert re.search(rf"\.conf:{b}: RateLimit 6/min name=login differs "
                     rf"from the limit of that name at \S+\.conf:{a}",
                     out), out
    assert "same settings or different names" in out
    # the same settings are one limit shared by both places
    rc, out = httpd.configtest(snippet.replace("6/min", "5/min"))
    assert rc == 0, out
    # the same name in two virtual hosts is two limits
    rc, out = httpd.configtest("""
<VirtualHost *:${port}>
    ServerName a.test
    RateLimit 5/min name=login
</VirtualHost>
<VirtualHost *:${port}>
    ServerName b.test
    RateLimit 6/min name=login
</VirtualHost>""")
    assert rc == 0, out


def test_config_06_default_names_that_collide(httpd):
    rc, out = httpd.configtest("""
<Location /a>
    RateLimit 5/min
</Location>
<Location /a>
    RateLimit 6/min
</Location>""")
    assert rc != 0
    assert "name=location-a-1 differs" in out
    assert "a default name: add name= to tell them apart" in out, out


def test_config_07_name_twice_in_one_section(httpd):
    rc, out = httpd.configtest("""
<Location /a>
    RateLimit 5/min name=x
    RateLimit 5/min name=x
</Location>""")
    assert rc != 0
    assert "name=x is already used by the limit on line" in out, out


def test_config_08_every_form_accepted(httpd):
    rc, out = httpd.configtest("""
RateLimit 100/h burst=20
RateLimit 1000/15min name=a
RateLimit 100/10s name=b algorithm=token-bucket
RateLimit 5/sec name=c
RateLimit 5/second name=d
RateLimit 5/m name=e algorithm=fixed-window
RateLimit 5/minute name=f algorithm=sliding-window
RateLimit 5/hour name=g
RateLimit 5/hr name=o
RateLimit 5/d name=h
RateLimit 5/day name=i
RateLimit 1000000/s name=j
RateLimit 1/366d name=k
RateLimit 10/min key=%{HTTP:X-Api-Key} name=l cost=2 phase=auth
RateLimit 10/min name=m ipv6-prefix=48 count=401,403
RateLimit 10/min "key=%{REMOTE_ADDR} %{HTTP_HOST}" name=n
RateLimitMode dry-run
RateLimitStatus 503
RateLimitHeaders both
RateLimitExempt 127.0.0.1 10.0.0.0/8 ::1 2001:db8::/32 0.0.0.0/0 ::/0
RateLimitKeyPrefix shop:rl:
RateLimitDenyCache off
RateLimitLocalSize 16M
<Location /off>
    RateLimit off
</Location>""")
    assert rc == 0, out
    assert "Syntax OK" in out


# a valid line of each directive of the command table
HTACCESS_LINES = {
    "RateLimit": "RateLimit 2/min",
    "RateLimitConcurrency": "RateLimitConcurrency 1",
    "RateLimitRedis": "RateLimitRedis off",
    "RateLimitRedisTimeout": "RateLimitRedisTimeout connect=50ms",
    "RateLimitRedisPool": "RateLimitRedisPool max=2",
    "RateLimitOnError": "RateLimitOnError allow",
    "RateLimitMode": "RateLimitMode dry-run",
    "RateLimitStatus": "RateLimitStatus 503",
    "RateLimitHeaders": "RateLimitHeaders off",
    "RateLimitExempt": "RateLimitExempt 127.0.0.1",
    "RateLimitKeyPrefix": "RateLimitKeyPrefix tenant:",
    "RateLimitDenyCache": "RateLimitDenyCache off",
    "RateLimitLocalSize": "RateLimitLocalSize 1M",
}


def command_table() -> dict:
    """{directive: its contexts} of the module's command table"""
    main = (rrl.REPO / "mod_redis_ratelimit.c").read_text()
    table = main[main.index("static const command_rec rrl_cmds[]"):]
    table = table[:table.index("{ NULL }")]
    return dict(re.findall(r'AP_INIT_\w+\(\s*"(\w+)",\s*\w+,\s*\w+,'
                           r'\s*([A-Z_ |]+),', table))


@pytest.mark.parametrize("override", ["AllowOverride All",
                                      "AllowOverrideList"])
def test_config_09_nothing_from_htaccess(httpd, env, override):
    """SPEC 7a: whatever AllowOverride or AllowOverrideList say, no
    directive of the module takes effect from .htaccess: a 500 for that
    directory with the file and the reason logged, never a crashed child,
    and the host's limits hold"""
    table = command_table()
    assert sorted(HTACCESS_LINES) == sorted(table)
    env.expect_log(r"\.htaccess: RateLimit\w* (cannot occur within "
                   r"htaccess files|not allowed here)")
    listed = override == "AllowOverrideList"
    if listed:
        # httpd itself leaves out of the list (with a warning at startup)
        # what is allowed in no directory
        override = ("AllowOverride None\n    AllowOverrideList "
                    + " ".join(HTACCESS_LINES))
    httpd.start(f"""
RateLimit 100/min name=host
<Directory "${{docroot}}/dir">
    {override}
</Directory>
""")
    htaccess = httpd.docroot / "dir" / ".htaccess"
    left = 100
    for directive, line in HTACCESS_LINES.items():
        htaccess.write_text(line + "\n")
        for _ in range(2):
            assert httpd.get("/dir/").status == 500, line
        why = ("cannot occur within htaccess files"
               if listed and "ACCESS_CONF" in table[directive]
               else "not allowed here")
        httpd.wait_error_log(rf"{re.escape(str(htaccess))}: {directive} "
                             + why)
        # the host's limit holds, outside and inside that directory, and
        # nothing of the server's settings changed
        r = httpd.get("/small.txt")
        left -= 1
        assert r.status == 200
        assert r.headers["X-RateLimit-Limit"] == "100"
        assert r.headers["X-RateLimit-Remaining"] == str(left), line
    htaccess.unlink()
    r = httpd.get("/dir/")
    assert r.status == 200
    assert r.headers["X-RateLimit-Remaining"] == str(left - 1)


def test_config_10_redis_twice_in_one_scope(httpd):
    """SPEC 8: the second RateLimitRedis of a scope would silently win"""
    snippet = """
RateLimitRedis redis://127.0.0.1:6390
RateLimitRedis redis://127.0.0.1:6391
"""
    rc, out = httpd.configtest(snippet)
    assert rc != 0, out
    text = httpd.render(snippet)
    first = line_of(httpd, text, ":6390")
    assert re.search(rf"Syntax error on line {first + 1} of \S+", out), out
    assert re.search(rf"RateLimitRedis: a second line in this server config "
                     rf"\(the first is at \S+\.conf:{first}\)", out), out
    assert "remove one of them" in out
    rc, out = httpd.configtest("""
RateLimitRedis off
<VirtualHost *:${port}>
    ServerName a.test
    RateLimitRedis redis://127.0.0.1:6390
    RateLimitRedis off
</VirtualHost>""")
    assert rc != 0, out
    assert "a second line in this virtual host" in out, out
    # one in the server config, one in each virtual host: each its own
    rc, out = httpd.configtest("""
RateLimitRedis redis://127.0.0.1:6390
<VirtualHost *:${port}>
    ServerName a.test
    RateLimitRedis off
</VirtualHost>
<VirtualHost *:${port}>
    ServerName b.test
    RateLimitRedis redis://127.0.0.1:6391
</VirtualHost>""")
    assert rc == 0, out
