"""The documentation stays true to the code: every directive of the command
table has its section in docs/directives.md, in the same order, in the
Apache manual's format; every log message number is documented once."""
import re

import rrl

MAIN = (rrl.REPO / "mod_redis_ratelimit.c").read_text()
SOURCE = MAIN + "".join(p.read_text()
                        for p in sorted((rrl.REPO / "src").glob("*.c")))
DIRECTIVES_MD = (rrl.REPO / "docs" / "directives.md").read_text()
LOG_MD = (rrl.REPO / "docs" / "log-messages.md").read_text()


def command_table():
    table = MAIN[MAIN.index("static const command_rec rrl_cmds[]"):]
    table = table[:table.index("{ NULL }")]
    return re.findall(r'AP_INIT_\w+\(\s*"(\w+)"', table)


def test_docs_01_directives_in_command_table_order():
    documented = re.findall(r"^## (\w+)$", DIRECTIVES_MD, re.M)
    assert documented == command_table()


def test_docs_02_directive_sections_in_manual_format():
    sections = re.split(r"^## ", DIRECTIVES_MD, flags=re.M)[1:]
    for sec in sections:
        name = sec.split("\n", 1)[0]
        for row in ("Description", "Syntax", "Default", "Context",
                    "Override", "Status", "Module"):
            assert re.search(rf"^\| {row} \| .+ \|$", sec, re.M), (name, row)
        assert f"`{name}" in re.search(r"^\| Syntax \| (.+) \|$", sec,
                                       re.M).group(1)


def test_docs_03_every_log_number_documented_once():
    used = re.findall(r"RRL_LOGNO\((\d{5})\)", SOURCE)
    assert len(used) == len(set(used)), "a log number is used twice"
    documented = re.findall(r"^\| RRL(\d{5}) \|", LOG_MD, re.M)
    assert len(documented) == len(set(documented))
    assert sorted(used) == sorted(documented)


def test_docs_04_log_levels_match():
    for num, level in re.findall(r"^\| RRL(\d{5}) \| (\w+) \|", LOG_MD, re.M):
        call = re.search(r"APLOG_(EMERG|ALERT|CRIT|ERR|WARNING|NOTICE|INFO"
                         rf"|DEBUG)\b[^;]*?RRL_LOGNO\({num}\)", SOURCE)
        assert call, num
        name = call.group(1).lower()
        assert {"err": "error", "warning": "warn"}.get(name, name) == level, \
            num


def test_docs_05_acl_lists_what_the_script_calls():
    """docs/operations.md's ACL list names every command lua/ratelimit.lua
    calls (an ACL user without one fails its decisions)"""
    script = (rrl.REPO / "lua" / "ratelimit.lua").read_text()
    calls = set(re.findall(r"redis\.p?call\('(\w+)'", script))
    ops = (rrl.REPO / "docs" / "operations.md").read_text()
    at = ops.index("With ACLs, the user needs")
    acl = set(re.findall(r"\+([a-z|]+)", ops[at:ops.index("(`~rl:*`)", at)]))
    assert calls and {c.lower() for c in calls} <= acl, \
        {c.lower() for c in calls} - acl
