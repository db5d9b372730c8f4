"""Test harness for mod_redis_ratelimit: a real httpd and a real redis-server
on loopback, each in its own directory, on ports picked at start.

Httpd   one Apache instance (server root, config from templates, requests,
        access and error logs).
Redis   one redis-server in the foreground.
check_error_log()  the error-log rule every test is held to (see conftest).
"""

import base64
import functools
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import string
import sys
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import redis as redis_py
from requests.structures import CaseInsensitiveDict

REPO = Path(__file__).resolve().parent.parent
POLL = 0.05          # seconds between two looks at anything we wait for
# RRL_CHECKER=valgrind (make check-valgrind): httpd runs as one process
# (-X) under memcheck, and every error whose stack passes through the
# module fails the test.  Everything is slower then: SLOW scales the
# bounds tests put on time.
CHECKER = os.environ.get("RRL_CHECKER", "")
SLOW = 20 if CHECKER == "valgrind" else 1
START_TIMEOUT = 10 * (6 if CHECKER else 1)   # for a server to come up or go down
VALGRIND = ["valgrind", "--tool=memcheck", "--leak-check=full",
            "--show-leak-kinds=definite", "--errors-for-leak-kinds=definite",
            "--num-callers=40", "--child-silent-after-fork=yes",
            "--keep-debuginfo=yes"]   # httpd unloads the module before exit
START_TRIES = 3      # a start that fails (port race) is retried whole
# RRL_LD_PRELOAD (make check-asan): the module and t/rrl_vectors are built
# with ASan and UBSan, and httpd runs with the ASan runtime preloaded.
# Servers stop after each test then, so that what LeakSanitizer reports as
# a process exits belongs to the test (see SanitizerReports), and children
# are made dumpable (CoreDumpDirectory): else, once setuid, they cannot
# read /proc/self/environ, where the sanitizers look for their options.
SANITIZED = bool(os.environ.get("RRL_LD_PRELOAD"))
# The Redis the tests run (RRL_REDIS_SERVER=valkey-server runs them on
# Valkey); its sentinel and its cli are found beside it
REDIS_SERVER = os.environ.get("RRL_REDIS_SERVER", "redis-server")


def redis_tool(tool: str) -> str:
    """redis-sentinel, redis-cli, ... of the server the tests run."""
    return re.sub(r"-server$", f"-{tool}", REDIS_SERVER)


# ---- locating httpd and the module ----

def apxs() -> str:
    return os.environ.get("APXS") or "apxs"


@functools.cache
def apxs_query(var: str) -> str:
    out = subprocess.run([apxs(), "-q", var], check=True, text=True,
                         capture_output=True).stdout
    return out.strip()


def httpd_binary() -> str:
    return os.environ.get("HTTPD") or os.path.join(apxs_query("SBINDIR"),
                                                   apxs_query("TARGET"))


def module_path() -> str:
    return os.environ.get("RRL_MODULE") or str(
        REPO / ".libs" / "mod_redis_ratelimit.so")


def modules_dir() -> str:
    """Where the distribution's modules live (Debian: /usr/lib/apache2/modules)."""
    return apxs_query("LIBEXECDIR")


# ---- ports and processes ----

def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (bind :0, read, close)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@functools.cache
def ipv6_usable() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def can_connect(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """True while pid runs (a zombie, which nobody may ever reap, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def child_pids(ppid: int) -> set[int]:
    pids = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == ppid and fields[0] != "Z":
            pids.add(int(d.name))
    return pids


def wait_for(predicate, timeout: float, what: str):
    """Poll predicate every POLL seconds; return its first true value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL)


def make_dir(path: Path, mode: int = 0o755) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    return path


def check_traversable(path: Path):
    """As root, httpd's children run as www-data: every directory above a
    server root must let them through."""
    for p in [path, *path.parents]:
        if not os.stat(p).st_mode & 0o001:
            raise RuntimeError(f"{p} is not world-searchable (o+x): httpd "
                               f"children running as www-data cannot reach {path}")


def tail(path: Path, n: int = 50, start: int = 0) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            lines = f.read().decode("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(lines[-n:])


# ---- error log rule (STYLE.md section 10) ----

LEVEL_RE = re.compile(r"\[[\w.-]*:(warn|error|crit|alert|emerg)\]")
# and sanitizer output on httpd's stderr: with GCC, UBSan's reports always
# go there (the ASan runtime answers its call to set log_path)
SANITIZER_RE = re.compile(r": runtime error: |==\d+==ERROR: \w*Sanitizer")
FATAL_RE = re.compile(r"exit signal|Segmentation fault|AH00052|" + SANITIZER_RE.pattern)


def check_error_log(lines, expected=()) -> list[str]:
    """Lines that fail a test: a crash, always; [warn] or worse unless one of
    the expected regexes (e.g. "RRL00042") is found in it."""
    pats = [re.compile(p) for p in expected]
    bad = []
    for line in lines:
        if FATAL_RE.search(line):
            bad.append(line)
        elif LEVEL_RE.search(line) and not any(p.search(line) for p in pats):
            bad.append(line)
    return bad


# ---- sanitizer reports (make check-asan) ----

# A stack frame of the module: in its .so (a frame without a symbol is known
# by its path: "(/build/asan/.libs/mod_redis_ratelimit.so+0x1234)"), in its
# sources (mod_redis_ratelimit.c, src/rrl_*.c) or in one of its functions
# (rrl_*; t/rrl_vectors is built from them).  The functions it hands to
# others count: a pool cleanup, a reslist constructor or a hiredis reader
# function runs as a frame of the module under APR's or hiredis'.
MODULE_FRAME_RE = re.compile(r"\bmod_redis_ratelimit\.(?:so|c)\b|\brrl_\w")


class SanitizerReports:
    """ASan and LeakSanitizer reports of every process the tests start, one
    file per process (asan.PID, or ubsan.PID once UBSan has set the path) in
    directory: log_path is added to this process's ASAN_OPTIONS and
    UBSAN_OPTIONS, which httpd and t/rrl_vectors inherit.  new() gives what
    was written since the last call; any of it fails the test, but for the
    leaks that are httpd's (split_leaks), which it counts in httpd_leaks
    instead (write_httpd_leaks() lists them).  What reaches httpd's stderr,
    its error log, fails the test through FATAL_RE."""

    SETTLE = 0.2   # seconds a live process's report must rest to be read
    SHOWN = 300    # lines of a report in the failure message
    FRAME_RE = re.compile(r"^\s*#\d+ (0x[0-9a-f]+) (.*)$", re.M)
    LEAK_RE = re.compile(r"(Direct|Indirect) leak of ")
    # a LeakSanitizer report's lines around its leaks
    LSAN_HEAD_TAIL_RE = re.compile(
        r"^(?:=+\n)?==\d+==ERROR: LeakSanitizer: .*\n?|"
        r"^SUMMARY: \w+Sanitizer: \d+ byte\(s\) leaked .*\n?", re.M)

    def __init__(self, directory: Path):
        self.dir = make_dir(Path(directory), 0o1777)   # children are www-data
        for var, prefix in (("ASAN_OPTIONS", "asan"), ("UBSAN_OPTIONS", "ubsan")):
            opts = [o for o in os.environ.get(var, "").split(":") if o]
            os.environ[var] = ":".join(opts + [f"log_path={self.dir / prefix}"])
        # frames LeakSanitizer keeps of a stack (its default is 30)
        sizes = re.findall(r"(?:^|:)malloc_context_size=(\d+)",
                           os.environ["ASAN_OPTIONS"])
        self.depth = int(sizes[-1]) if sizes else 30
        self.seen: dict[str, tuple[int, int]] = {}   # name -> (mtime_ns, size)
        # httpd's leaks by stack: [count, first report's file, its paragraph]
        self.httpd_leaks: dict[str, list] = {}

    def new(self) -> list[str]:
        """Report text written since the last call, one string per file."""
        def changed():
            out = []
            for p in sorted(self.dir.iterdir()):
                st = p.stat()
                mtime, size = self.seen.get(p.name, (0, 0))
                if st.st_mtime_ns != mtime or st.st_size != size:
                    # a smaller file is a new process that got an old pid
                    out.append((p, st, size if st.st_size > size else 0))
            return out

        def writing(p, st):   # by a live process, lately
            pid = p.suffix[1:]
            return (pid.isdigit() and pid_alive(int(pid))
                    and time.time_ns() - st.st_mtime_ns < self.SETTLE * 1e9)

        found = changed()
        deadline = time.monotonic() + START_TIMEOUT
        while (any(writing(p, st) for p, st, _ in found)
               and time.monotonic() < deadline):
            time.sleep(self.SETTLE)
            found = changed()
        reports = []
        for p, st, start in found:
            self.seen[p.name] = (st.st_mtime_ns, st.st_size)
            with open(p, "rb") as f:
                f.seek(start)
                text = f.read().decode("utf-8", "replace").strip()
            text, httpd = self.split_leaks(text, self.depth)
            for leak in httpd:
                seen = self.httpd_leaks.setdefault(self._stack(leak), [0, p, leak])
                seen[0] += 1
            lines = text.splitlines()
            if len(lines) > self.SHOWN:
                lines[self.SHOWN:] = [f"... ({len(lines) - self.SHOWN} more lines)"]
            if lines:
                reports.append(f"--- {p} ---\n" + "\n".join(lines))
        return reports

    @classmethod
    def split_leaks(cls, text: str, depth: int = 30) -> tuple[str, list[str]]:
        """(what of a report fails, the leaks in it that are httpd's).

        Each leak of a LeakSanitizer report (a "Direct leak" or "Indirect
        leak" paragraph) is decided by its stack: with a frame of the module
        (MODULE_FRAME_RE) it fails; without, it is httpd's (its pools are
        mmap'd, which LeakSanitizer does not scan, so what is malloc'd and
        pointed to only from a pool never destroyed looks lost), unless the
        stack cannot show that no frame is the module's: a frame in a library
        unloaded before the report ("<unknown module>": httpd unloads the
        module as its parent exits), or as many frames as LeakSanitizer keeps
        (depth, its malloc_context_size): those fail too, saying why.  A
        report left without leaks loses its header and summary lines.  All
        else (ASan errors, UBSan) fails as it is; the count of httpd's leaks
        left out ends what fails."""
        paras = re.split(r"\n[ \t]*\n", text)
        out, httpd = [], []
        for p in paras:
            if not cls.LEAK_RE.match(p):
                out.append(p)
                continue
            frames = cls.FRAME_RE.findall(p)
            pcs = [pc for i, (pc, _) in enumerate(frames)   # inlined: one pc
                   if i == 0 or pc != frames[i - 1][0]]
            if any(MODULE_FRAME_RE.search(f) for _, f in frames):
                out.append(p)
            elif any("(<unknown module>)" in f for _, f in frames):
                out.append(p + "\n    (not shown to be httpd's: a frame in a "
                           "library no longer loaded may be the module's)")
            elif len(pcs) >= depth:
                out.append(p + f"\n    (not shown to be httpd's: the stack may "
                           f"be cut off at malloc_context_size={depth})")
            else:
                httpd.append(p)
        if httpd and any(cls.LEAK_RE.match(p) for p in out):
            out.append(f"({len(httpd)} more, with no frame of the module: "
                       f"httpd's, not shown)")
        elif httpd:
            out = [cls.LSAN_HEAD_TAIL_RE.sub("", p) for p in out]
        return "\n\n".join(p.strip("\n") for p in out if p.strip()), httpd

    @classmethod
    def _stack(cls, leak: str) -> str:
        """A leak's stack without addresses: the same for the same leak in
        any process (offsets in a library stay)."""
        return "\n".join(f for _, f in cls.FRAME_RE.findall(leak))

    def write_httpd_leaks(self, path: Path) -> str:
        """The leaks that were httpd's, the first of each stack with how
        often it was seen, written to path; a line that says so ("" when
        there were none, and path is removed)."""
        if not self.httpd_leaks:
            path.unlink(missing_ok=True)
            return ""
        n = sum(c for c, _, _ in self.httpd_leaks.values())
        kinds = sorted(self.httpd_leaks.values(), key=lambda v: -v[0])
        make_dir(path.parent)
        path.write_text(
            f"{n} leaks of httpd, none with a frame of the module, in "
            f"{len(kinds)} stacks; the first of each:\n\n"
            + "\n\n".join(f"in {c} report(s), the first {f.name}:\n{leak}"
                          for c, f, leak in kinds) + "\n")
        return (f"{n} httpd leaks not from the module ignored "
                f"({len(kinds)} distinct; the first of each: {path})")


# ---- HTTP ----

class Response:
    """status, headers (case-insensitive; repeated ones joined with ", "),
    header_list ([(name, value)] as received), body (bytes)."""

    def __init__(self, status: int, reason: str, header_list, body: bytes):
        self.status = status
        self.reason = reason
        self.header_list = list(header_list)
        self.headers = CaseInsensitiveDict()
        for name, value in self.header_list:
            old = self.headers.get(name)
            self.headers[name] = value if old is None else f"{old}, {value}"
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return f"<Response {self.status} {self.reason}>"


def basic_auth(user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Basic {token}"


def _read_response(conn: http.client.HTTPConnection) -> Response:
    r = conn.getresponse()
    body = r.read()
    return Response(r.status, r.reason, r.getheaders(), body)


# Apache escapes '"', '\' and bytes outside printable ASCII as \" \\ \xhh \n
# \t \r \b \v in log items: all JSON but \xhh and \v.
_ESC_RE = re.compile(r"\\(x[0-9a-fA-F]{2}|v|.)")


def _apache_json(line: str):
    def fix(m):
        e = m.group(1)
        if e[0] == "x":
            return "\\u00" + e[1:]
        return "\\u000b" if e == "v" else m.group(0)
    return json.loads(_ESC_RE.sub(fix, line))


# ---- httpd ----

LOAD_MODULES = ["authz_core", "authz_host", "authz_user", "authn_core",
                "authn_file", "auth_basic", "mime", "dir", "log_config",
                "alias", "rewrite", "headers", "env", "setenvif", "remoteip",
                "status"]

MPM_CONF = {
    "event": """\
StartServers 2
ServerLimit 4
ThreadsPerChild 16
ThreadLimit 16
MinSpareThreads 16
MaxSpareThreads 48
MaxRequestWorkers 64
MaxConnectionsPerChild 0
""",
    "worker": """\
StartServers 2
ServerLimit 4
ThreadsPerChild 16
ThreadLimit 16
MinSpareThreads 16
MaxSpareThreads 48
MaxRequestWorkers 64
MaxConnectionsPerChild 0
""",
    "prefork": """\
StartServers 4
MinSpareServers 4
MaxSpareServers 8
MaxRequestWorkers 32
MaxConnectionsPerChild 0
""",
}

# event with one child: what a test that counts per child runs under
def one_child(threads: int) -> str:
    """mpm_conf for one event child of threads threads: every request of a
    test shares one child's pipeline and connections."""
    return (f"StartServers 1\nServerLimit 1\nThreadsPerChild {threads}\n"
            f"ThreadLimit {threads}\nMinSpareThreads 1\n"
            f"MaxSpareThreads {threads}\nMaxRequestWorkers {threads}\n")



# one event child of 8 threads
ONE_CHILD = one_child(8)

# One JSON object per request; "-" marks what is unset.
ACCESS_LOG_FORMAT = (
    '{"t":%{%s}t.%{usec_frac}t,"us":%D,"status":%>s,"method":"%m",'
    '"uri":"%U","query":"%q","vhost":"%v","remote":"%a","user":"%u",'
    '"result":"%{RATELIMIT_RESULT}e","name":"%{RATELIMIT_NAME}e",'
    '"limit":"%{RATELIMIT_LIMIT}e","remaining":"%{RATELIMIT_REMAINING}e",'
    '"pid":%P}')

BASE_CONF = """\
# Written by t/rrl.py for one test server: do not edit.
ServerRoot "${root}"
ServerName localhost
Listen 127.0.0.1:${port}
${listen6}
PidFile "${logs}/httpd.pid"
ErrorLog "${logs}/error_log"
LogLevel warn
DefaultRuntimeDir "${root}/run"
${user}
${coredumpdir}
${loadmodules}

<IfModule mpm_${mpm}_module>
${mpm_conf}
</IfModule>

GracefulShutdownTimeout 5
Timeout 10
KeepAlive On
KeepAliveTimeout 5
MaxKeepAliveRequests 0
HostnameLookups Off

TypesConfig /etc/mime.types
DocumentRoot "${docroot}"
DirectoryIndex index.html
<Directory />
    AllowOverride None
    Require all denied
</Directory>
<Directory "${docroot}">
    Require all granted
</Directory>
<FilesMatch "^\\.ht">
    Require all denied
</FilesMatch>

LogFormat "${access_format}" rrljson
CustomLog "${logs}/access.json" rrljson

Include "${root}/conf/redis_ratelimit.load"
Include "${repo}/conf/redis_ratelimit.conf"

# ---- test snippet ----
${snippet}
"""

DOCROOT_FILES = {
    "index.html": "index\n",
    "small.txt": "small\n",
    "dir/index.html": "dir index\n",
    "err/429.html": "custom 429 page\n",
}

USERS = {"alice": "secret", "bob": "hunter2"}


def _sha_htpasswd(users: dict) -> str:
    return "".join(
        f"{u}:{{SHA}}{base64.b64encode(hashlib.sha1(p.encode()).digest()).decode()}\n"
        for u, p in users.items())


class HttpdError(RuntimeError):
    pass


class PortInUse(HttpdError):
    pass


class Httpd:
    """One Apache instance with its own server root under base_dir.

    start(snippet, mpm="event", mpm_conf=None, **vars)  fresh process, fresh ports
    ensure(...)        start() unless already running that exact config
    reload(snippet, **vars)  graceful restart with a new snippet
    stop()             graceful stop; SIGTERM, then SIGKILL as a last resort
    configtest(snippet, ...) -> (returncode, output)   httpd -t
    get/raw/hammer     requests; access_log(), error_log_lines()

    Snippets are string.Template text: ${port} ${port6} ${root} ${docroot}
    ${module} ${logs} ${mpm}, ${redis_url} where a Redis is known, plus any
    keyword passed; write $$ for a literal $ (e.g. $${VAR} for Define).
    """

    instances: list["Httpd"] = []   # every instance, for log checks and cleanup

    def __init__(self, base_dir: Path, name: str = "httpd",
                 with_module: bool = True, with_access_log: bool = True):
        base_dir = Path(base_dir)
        self.name = name
        self.root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base_dir))
        self.root.chmod(0o755)
        if os.geteuid() == 0:
            check_traversable(self.root)
        self.conf_dir = make_dir(self.root / "conf")
        self.logs = make_dir(self.root / "logs")
        self.docroot = make_dir(self.root / "htdocs")
        make_dir(self.root / "run")
        for rel, text in DOCROOT_FILES.items():
            p = self.docroot / rel
            make_dir(p.parent)
            p.write_text(text)
            p.chmod(0o644)
        (self.docroot / ".htpasswd").write_text(_sha_htpasswd(USERS))
        (self.docroot / ".htpasswd").chmod(0o644)
        self.htpasswd = self.docroot / ".htpasswd"
        self.conf = self.conf_dir / "httpd.conf"
        self.error_log = self.logs / "error_log"
        self.access_log_path = self.logs / "access.json"
        self.pidfile = self.logs / "httpd.pid"
        self.vars: dict[str, str] = {}   # extra template variables (redis_url)
        self.port = self.port6 = None
        self.pid = None
        self.mpm = "event"
        self.running_conf = None   # config text of the running server
        self.killed = []           # messages about stops that needed force
        self.with_module = with_module           # False: a baseline httpd
        self.load_modules = list(LOAD_MODULES)   # besides the MPM
        self.with_access_log = with_access_log   # False: for benchmarks
        self.module = None         # another build of the module (a path)
        self.env: dict[str, str] = {}   # more environment for httpd
        self.checker_proc = None   # httpd -X under valgrind (RRL_CHECKER)
        self.checker_log = None
        self._skip = []            # error-log byte ranges of failed starts
        self.mark()
        Httpd.instances.append(self)

    def __repr__(self):
        return f"<Httpd {self.name} port={self.port} pid={self.pid}>"

    # -- configuration --

    def _template_vars(self, mpm: str, extra: dict) -> dict:
        v = {"root": str(self.root), "docroot": str(self.docroot),
             "logs": str(self.logs), "module": self.module or module_path(),
             "port": str(self.port), "port6": str(self.port6), "mpm": mpm,
             "repo": str(REPO)}
        v.update(self.vars)
        v.update({k: str(val) for k, val in extra.items()})
        return v

    def render(self, snippet: str = "", mpm: str = "event",
               mpm_conf: str | None = None, **extra) -> str:
        """The full httpd.conf for snippet (placeholders filled in)."""
        if mpm not in MPM_CONF:
            raise ValueError(f"mpm must be one of {sorted(MPM_CONF)}")
        v = self._template_vars(mpm, extra)
        mods = [f"mpm_{mpm}"] + self.load_modules
        base = string.Template(BASE_CONF).substitute(
            v,
            listen6=f"Listen [::1]:{self.port6}" if ipv6_usable() else "",
            user="User www-data\nGroup www-data" if os.geteuid() == 0 else "",
            coredumpdir=f'CoreDumpDirectory "{self.root}/run"' if SANITIZED else "",
            loadmodules="\n".join(   # some are built in (Debian: log_config)
                f'<IfModule !{m}_module>\n'
                f'    LoadModule {m}_module "{modules_dir()}/mod_{m}.so"\n'
                f'</IfModule>' for m in mods),
            mpm_conf=(mpm_conf if mpm_conf is not None else MPM_CONF[mpm]).strip(),
            access_format=ACCESS_LOG_FORMAT.replace('"', '\\"'),
            snippet=string.Template(snippet).substitute(v))
        if not self.with_access_log:
            base = base.replace('CustomLog "${logs}/access.json" rrljson'
                                .replace("${logs}", v["logs"]), "")
        if not self.with_module:
            base = re.sub(r'^Include ".*/redis_ratelimit\.(load|conf)"$', "",
                          base, flags=re.M)
        return base

    def _write_load_file(self):
        """The repo's .load file, its LoadModule path pointing at the build."""
        text = (REPO / "conf" / "redis_ratelimit.load").read_text()
        module = self.module or module_path()
        text = re.sub(r"^(\s*LoadModule\s+\S+\s+)\S+", lambda m: m.group(1) + f'"{module}"',
                      text, flags=re.M)
        (self.conf_dir / "redis_ratelimit.load").write_text(text)

    def _run(self, args, conf: Path, timeout: float = 30):
        env = {k: v for k, v in os.environ.items() if not k.startswith("APACHE_")}
        env["LANG"] = env["LC_ALL"] = "C"
        env.update(self.env)
        if os.environ.get("RRL_LD_PRELOAD"):   # e.g. the ASan runtime
            env["LD_PRELOAD"] = os.environ["RRL_LD_PRELOAD"]
        p = subprocess.run([httpd_binary(), "-d", str(self.root), "-f", str(conf),
                            *args], env=env, text=True, errors="replace",
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout)
        if SANITIZER_RE.search(p.stdout):   # before httpd has an error log
            self.killed.append(f"{self.name}: sanitizer report from httpd "
                               f"{' '.join(args)}:\n{p.stdout}")
        return p

    def configtest(self, snippet: str = "", mpm: str = "event",
                   mpm_conf: str | None = None, **extra) -> tuple[int, str]:
        """httpd -t on a config with snippet: (exit status, stdout+stderr)."""
        if self.port is None:
            self.port, self.port6 = free_port(), self._free_port6()
        self._write_load_file()
        conf = self.conf_dir / "configtest.conf"
        conf.write_text(self.render(snippet, mpm, mpm_conf, **extra))
        p = self._run(["-t"], conf)
        return p.returncode, p.stdout

    # -- lifecycle --

    @staticmethod
    def _free_port6() -> int:
        return free_port("::1") if ipv6_usable() else free_port()

    def _log_size(self) -> int:
        try:
            return self.error_log.stat().st_size
        except FileNotFoundError:
            return 0

    def _read_pid(self):
        try:
            return int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def start(self, snippet: str = "", mpm: str = "event",
              mpm_conf: str | None = None, **extra) -> "Httpd":
        """Stop what runs, write the config, start, wait until the port
        accepts connections (no HTTP request: it might be counted)."""
        self.stop()
        self._write_load_file()
        for attempt in range(1, START_TRIES + 1):
            self.port, self.port6 = free_port(), self._free_port6()
            text = self.render(snippet, mpm, mpm_conf, **extra)
            self.conf.write_text(text)
            offset = self._log_size()
            try:
                self._start_once(offset)
            except PortInUse as e:
                self._skip.append((offset, self._log_size()))
                if attempt == START_TRIES:
                    raise PortInUse(f"{e}\n(gave up after {START_TRIES} tries)") from None
                continue
            self.mpm = mpm
            self.running_conf = text
            return self

    def ensure(self, snippet: str = "", mpm: str = "event",
               mpm_conf: str | None = None, **extra) -> "Httpd":
        """start() unless this instance already runs exactly this config
        (state in the local store then carries over from earlier tests)."""
        if self.running() and self.render(snippet, mpm, mpm_conf, **extra) == self.running_conf:
            return self
        return self.start(snippet, mpm, mpm_conf, **extra)

    def _start_under_checker(self):
        """httpd -X under valgrind, in the foreground: a Popen, not -k."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("APACHE_")}
        env["LANG"] = env["LC_ALL"] = "C"
        env.update(self.env)
        self.checker_log = self.logs / f"valgrind.{time.monotonic_ns()}.log"
        out = open(self.logs / "checker.out", "ab")
        self.checker_proc = subprocess.Popen(
            VALGRIND + [f"--log-file={self.checker_log}", httpd_binary(), "-X",
                        "-d", str(self.root), "-f", str(self.conf)],
            env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()

        class Done:
            returncode, stdout = 0, ""
        return Done()

    def _checker_findings(self) -> list[str]:
        """memcheck's errors whose stack passes through the module."""
        if not self.checker_log or not self.checker_log.exists():
            return []
        blocks, cur = [], []
        for line in self.checker_log.read_text(errors="replace").splitlines():
            body = re.sub(r"^==\d+== ?", "", line)
            if not body.strip():
                if cur:
                    blocks.append(cur)
                cur = []
            else:
                cur.append(body)
        if cur:
            blocks.append(cur)
        bad = []
        for b in blocks:
            if not re.search(r"Invalid (read|write|free)|uninitialised|"
                             r"definitely lost|Mismatched free|overlap",
                             b[0]):
                continue
            if any(MODULE_FRAME_RE.search(ln) for ln in b):
                bad.append(f"{self.name}: memcheck: " + "\n    ".join(b))
        return bad

    def _start_once(self, offset: int):
        self.pidfile.unlink(missing_ok=True)
        if CHECKER:
            p = self._start_under_checker()
        else:
            p = self._run(["-k", "start"], self.conf)
        if p.returncode != 0 and "Address already in use" in p.stdout:
            raise PortInUse(f"{self.name}: a port was taken:\n{p.stdout}")
        if p.returncode != 0:
            raise HttpdError(f"{httpd_binary()} -k start failed ({p.returncode}):\n"
                             f"{p.stdout}\n--- error_log ---\n{tail(self.error_log, 50, offset)}")

        def ready():
            log = tail(self.error_log, 200, offset)
            if "Address already in use" in log or "AH00072" in log:
                raise PortInUse(f"port {self.port} taken:\n{log}")
            if re.search(r"AH00015|AH00016|AH00020|no listening sockets", log):
                raise HttpdError(f"httpd did not start:\n{log}")
            pid = self._read_pid()
            if not pid or not pid_alive(pid):
                return None
            if not can_connect("127.0.0.1", self.port):
                return None
            if ipv6_usable() and not can_connect("::1", self.port6):
                return None
            return pid

        try:
            self.pid = wait_for(ready, START_TIMEOUT, f"httpd on port {self.port}")
        except TimeoutError as e:
            pid = self._read_pid()
            if pid:
                self.pid = pid
                self.stop()
            raise HttpdError(f"{e}\n{p.stdout}\n--- error_log ---\n"
                             f"{tail(self.error_log, 50, offset)}") from None

    def reload(self, snippet: str = "", mpm_conf: str | None = None, **extra) -> "Httpd":
        """Graceful restart with a new snippet (same MPM, same ports); returns
        when the parent resumed and every child of the old generation is gone."""
        if not (self.pid and pid_alive(self.pid)):
            raise HttpdError("reload: httpd is not running")
        text = self.render(snippet, self.mpm, mpm_conf, **extra)
        self.conf.write_text(text)
        offset = self._log_size()
        old_children = child_pids(self.pid)
        p = self._run(["-k", "graceful"], self.conf)
        if p.returncode != 0:
            raise HttpdError(f"-k graceful failed ({p.returncode}):\n{p.stdout}")

        def resumed():
            log = tail(self.error_log, 200, offset)
            if re.search(r"AH00016|Configuration Failed", log) or not pid_alive(self.pid):
                raise HttpdError(f"httpd died on graceful restart:\n{log}")
            return "resuming normal operations" in log

        try:
            wait_for(resumed, START_TIMEOUT, "graceful restart")
            wait_for(lambda: not (old_children & child_pids(self.pid)),
                     START_TIMEOUT, "old children to exit")
        except TimeoutError as e:
            raise HttpdError(f"{e}\n{tail(self.error_log, 50, offset)}") from None
        self.running_conf = text
        return self

    def stop(self):
        """Graceful stop (SIGWINCH). Once the children are gone the parent
        only sleeps out a fixed second before it exits: a SIGTERM then cuts
        that short (it still reaps and reports every child). SIGTERM and
        SIGKILL also end a parent that outlives the deadline (recorded in
        self.killed, which fails the test)."""
        pid = self.pid or self._read_pid()
        self.pid = None
        self.running_conf = None
        if self.checker_proc is not None:
            self._stop_checker()
            return
        if not pid or not pid_alive(pid) or not self._is_ours(pid):
            return
        children = child_pids(pid)
        os.kill(pid, signal.SIGWINCH)
        try:
            wait_for(lambda: not pid_alive(pid) or not child_pids(pid),
                     START_TIMEOUT, f"children of httpd {pid} to exit")
        except TimeoutError:
            self.killed.append(f"{self.name}: children of httpd {pid} ignored "
                               f"a graceful stop for {START_TIMEOUT}s")
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            try:
                wait_for(lambda: not pid_alive(pid), START_TIMEOUT, f"httpd {pid} to exit")
                break
            except TimeoutError:
                self.killed.append(f"{self.name}: httpd {pid} ignored {sig.name} "
                                   f"for {START_TIMEOUT}s")
        for c in children | child_pids(pid):
            if pid_alive(c) and self._is_ours(c):
                self.killed.append(f"{self.name}: child {c} outlived its parent: SIGKILL")
                try:
                    os.kill(c, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.pidfile.unlink(missing_ok=True)

    def _stop_checker(self):
        """One process under memcheck: SIGTERM, then its report."""
        proc, self.checker_proc = self.checker_proc, None
        if proc.poll() is None:
            # Debian's valgrind is a shell wrapper around valgrind.bin:
            # the whole process group (its own session) gets the signal
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(START_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.killed.append(f"{self.name}: httpd -X under valgrind "
                                   f"ignored SIGTERM: SIGKILL")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.killed += self._checker_findings()
        self.pidfile.unlink(missing_ok=True)

    def _is_ours(self, pid: int) -> bool:
        """pid is an httpd of this server root (not a stranger that got a
        stale pid)."""
        try:
            return str(self.root).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    def running(self) -> bool:
        return bool(self.pid and pid_alive(self.pid))

    # -- logs --

    def mark(self):
        """Start of the current test's window in both logs."""
        self.err_mark = self._log_size()
        try:
            self.acc_mark = self.access_log_path.stat().st_size
        except FileNotFoundError:
            self.acc_mark = 0
        # httpd logs a request after its response: a request of the test
        # before may still be logged past acc_mark, but it began before this
        self.acc_time = time.time()
        self._skip = []

    def error_log_lines(self, since: int | None = None) -> list[str]:
        """Error-log lines since the test's mark (or byte offset since),
        without those of start attempts that lost a port race."""
        start = self.err_mark if since is None else since
        try:
            data = self.error_log.read_bytes()
        except FileNotFoundError:
            return []
        for a, b in sorted(self._skip, reverse=True):
            if b > start:
                data = data[:max(a, start)] + data[b:]
        return data[start:].decode("utf-8", "replace").splitlines()

    def wait_error_log(self, pattern: str, timeout: float = 2) -> str:
        """The first error-log line since the mark matching regex pattern."""
        rx = re.compile(pattern)
        return wait_for(lambda: next((l for l in self.error_log_lines() if rx.search(l)), None),
                        timeout, f"{pattern!r} in {self.error_log}")

    def access_log(self, count: int | None = None, timeout: float = 2) -> list[dict]:
        """Parsed access-log entries of requests made since the test's mark,
        in the order they began. httpd logs after the response is sent, so wait until count entries
        are there, or (count None) until no new line came for 100 ms, at
        most timeout seconds."""
        def read():
            try:
                with open(self.access_log_path, "rb") as f:
                    f.seek(self.acc_mark)
                    data = f.read()
            except FileNotFoundError:
                return []
            lines = data.decode("ascii", "replace").splitlines(keepends=True)
            entries = (_apache_json(l) for l in lines if l.endswith("\n"))
            # lines come in the order requests end; sort by when they began
            return sorted((e for e in entries if e["t"] >= self.acc_time),
                          key=lambda e: e["t"])

        deadline = time.monotonic() + timeout
        entries = read()
        while time.monotonic() < deadline:
            if count is not None and len(entries) >= count:
                break
            time.sleep(0.1 if count is None else POLL)
            again = read()
            if count is None and len(again) == len(entries):
                break
            entries = again
        return entries

    # -- requests --

    def _conn(self, ipv6: bool, source: str | None, timeout: float):
        host = "::1" if ipv6 else "127.0.0.1"
        port = self.port6 if ipv6 else self.port
        return http.client.HTTPConnection(
            host, port, timeout=timeout,
            source_address=(source, 0) if source else None)

    @staticmethod
    def _headers(headers, host, auth) -> dict:
        h = dict(headers or {})
        if host:
            h["Host"] = host
        if auth:
            h["Authorization"] = basic_auth(*auth)
        return h

    def get(self, path: str = "/", headers: dict | None = None, host: str | None = None,
            ipv6: bool = False, auth: tuple[str, str] | None = None, method: str = "GET",
            body: bytes | None = None, source: str | None = None,
            timeout: float = 10) -> Response:
        """One request on a fresh connection. source: a local address to
        connect from (any 127.x.y.z is a different client)."""
        conn = self._conn(ipv6, source, timeout)
        try:
            conn.request(method, path, body=body, headers=self._headers(headers, host, auth))
            return _read_response(conn)
        finally:
            conn.close()

    def raw(self, data: bytes, ipv6: bool = False, source: str | None = None,
            timeout: float = 10) -> bytes:
        """Send data as is, half-close, return everything the server sent."""
        host, port = ("::1", self.port6) if ipv6 else ("127.0.0.1", self.port)
        with socket.create_connection((host, port), timeout=timeout,
                                      source_address=(source, 0) if source else None) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    def hammer(self, n: int, path: str = "/", concurrency: int = 8,
               headers: dict | None = None, paths: list[str] | None = None,
               host: str | None = None, auth: tuple[str, str] | None = None,
               ipv6: bool = False, source: str | None = None,
               responses: bool = False, timeout: float = 10) -> list:
        """n requests from concurrency threads, each on its own keep-alive
        connection; request i goes to paths[i % len(paths)] (or path).
        Returns the statuses (Responses if responses=True) in request order."""
        paths = paths or [path]
        hdrs = self._headers(headers, host, auth)
        results: list = [None] * n
        errors: list = []
        counter = iter(range(n))
        lock = threading.Lock()

        def worker():
            conn = self._conn(ipv6, source, timeout)
            try:
                while True:
                    with lock:
                        i = next(counter, None)
                    if i is None:
                        return
                    p = paths[i % len(paths)]
                    for retry in (0, 1):   # the server may close a kept-alive connection
                        try:
                            conn.request("GET", p, headers=hdrs)
                            r = _read_response(conn)
                            break
                        except (http.client.RemoteDisconnected, ConnectionResetError,
                                BrokenPipeError, http.client.CannotSendRequest):
                            conn.close()
                            conn = self._conn(ipv6, source, timeout)
                            if retry:
                                raise
                    if r.headers.get("Connection", "").lower() == "close":
                        conn.close()
                        conn = self._conn(ipv6, source, timeout)
                    results[i] = r if responses else r.status
            except Exception as e:   # reported below, in the caller's thread
                errors.append(e)
            finally:
                conn.close()

        threads = [threading.Thread(target=worker, daemon=True)
                   for _ in range(min(concurrency, n))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout * n + 10)
        if errors:
            raise errors[0]
        return results


# ---- redis ----

class TlsFiles:
    """Certificates for TLS tests, made once with openssl in directory:
    a CA (ca) and another (other-ca); certificates NAME with .pem and .key:
    server (localhost, 127.0.0.1, ::1), dns-only (localhost), other-name
    (other.example), expired (as server, expired yesterday), client, all by
    ca, and other-client by other-ca.  EC P-256 keys: quick to make."""

    SERVERS = {"server": "DNS:localhost,IP:127.0.0.1,IP:::1",
               "dns-only": "DNS:localhost",
               "other-name": "DNS:other.example",
               "expired": "DNS:localhost,IP:127.0.0.1,IP:::1"}

    def __init__(self, directory: Path):
        self.dir = make_dir(Path(directory))
        for ca in ("ca", "other-ca"):
            self._openssl("req", "-x509", "-new", "-key", self._key(ca),
                          "-out", self.pem(ca), "-days", "30",
                          "-subj", f"/CN=rrl test {ca}")
        for name, san in self.SERVERS.items():
            self._signed(name, "ca", san, expired=name == "expired")
        self._signed("client", "ca", None)
        self._signed("other-client", "other-ca", None)
        self.ca = self.pem("ca")

    def pem(self, name: str) -> str:
        return str(self.dir / f"{name}.pem")

    def key(self, name: str) -> str:
        return str(self.dir / f"{name}.key")

    def _openssl(self, *args: str):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    def _key(self, name: str) -> str:
        self._openssl("genpkey", "-algorithm", "EC", "-pkeyopt",
                      "ec_paramgen_curve:P-256", "-out", self.key(name))
        Path(self.key(name)).chmod(0o644)
        return self.key(name)

    def _signed(self, name: str, ca: str, san: str | None, expired=False):
        csr = str(self.dir / f"{name}.csr")
        ext = self.dir / f"{name}.ext"
        ext.write_text((f"subjectAltName={san}\n" if san else "")
                       + "extendedKeyUsage="
                       + ("serverAuth,clientAuth" if san else "clientAuth")
                       + "\n")
        self._openssl("req", "-new", "-key", self._key(name), "-out", csr,
                      "-subj", f"/CN={name}")
        sign = ["x509", "-req", "-in", csr, "-CA", self.pem(ca),
                "-CAkey", self.key(ca), "-CAcreateserial",
                "-out", self.pem(name), "-extfile", str(ext)]
        if not expired:
            self._openssl(*sign, "-days", "30")
            return
        try:   # OpenSSL 3.0 takes days back; 3.4 and later its dates only
            self._openssl(*sign, "-days", "-1")
        except subprocess.CalledProcessError:
            self._openssl(*sign, "-not_before", "20200101000000Z",
                          "-not_after", "20200102000000Z")


class Redis:
    """One redis-server (foreground child) on 127.0.0.1 with its own --dir.

    Redis(base_dir, *args, name="redis", password=None, username=None,
          unixsocket=False, tls=None, tls_cert="server",
          tls_auth_clients=False)   args are extra redis-server arguments;
          tls (TlsFiles): TLS only, on .port, with certificate tls_cert
    start(port=None)  stop() restart() flush() client() url() running()
    """

    instances: list["Redis"] = []

    def __init__(self, base_dir: Path, *args: str, name: str = "redis",
                 password: str | None = None, username: str | None = None,
                 unixsocket: bool = False, tls: TlsFiles | None = None,
                 tls_cert: str = "server", tls_auth_clients: bool = False):
        self.name = name
        self.tls, self.tls_cert = tls, tls_cert
        self.tls_auth_clients = tls_auth_clients
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base_dir))
        self.dir.chmod(0o755)
        self.args = list(args)
        self.password, self.username = password, username
        self.unixsocket = str(self.dir / "redis.sock") if unixsocket else None
        self.logfile = self.dir / "redis.log"
        self.port = None
        self.proc = None
        Redis.instances.append(self)

    def __repr__(self):
        return f"<Redis {self.name} port={self.port}>"

    def url(self, db: int | None = None, password: str | None = None,
            username: str | None = None) -> str:
        auth = ""
        password = password or self.password
        username = username or self.username
        if password:
            auth = f"{username or ''}:{password}@"
        return (f"{'rediss' if self.tls else 'redis'}://{auth}127.0.0.1:"
                f"{self.port}" + (f"/{db}" if db is not None else "")
                + self.tls_query())

    def tls_query(self, **opts) -> str:
        """?cacert=... (the test CA) and opts for a TLS URL; "" without TLS."""
        if not self.tls:
            return ""
        opts = {"cacert": self.tls.ca, **opts}
        return "?" + "&".join(f"{k}={v}" for k, v in opts.items())

    def client(self, **kw) -> redis_py.Redis:
        kw.setdefault("password", self.password)
        kw.setdefault("username", self.username)
        kw.setdefault("socket_timeout", 10)
        if self.tls:   # the tests' own client checks nothing, shows a cert
            kw.update(ssl=True, ssl_cert_reqs="none",
                      ssl_certfile=self.tls.pem("client"),
                      ssl_keyfile=self.tls.key("client"))
        return redis_py.Redis(host="127.0.0.1", port=self.port, **kw)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, port: int | None = None) -> "Redis":
        """Start on port (fresh ones, retried on a race, when None)."""
        self.stop()
        for attempt in range(1, START_TRIES + 1):
            self.port = port or free_port()
            try:
                self._start_once()
                return self
            except PortInUse:
                if port or attempt == START_TRIES:
                    raise
        return self

    def command(self) -> list[str]:
        """The redis-server command line (t/deploy.py's Sentinel changes it)."""
        cmd = [REDIS_SERVER, *self.listen(), "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", "--daemonize", "no",
               "--enable-debug-command", "local", "--dir", str(self.dir),
               "--logfile", str(self.logfile)]
        if self.unixsocket:
            cmd += ["--unixsocket", self.unixsocket, "--unixsocketperm", "777"]
        if self.password and not self.username:
            cmd += ["--requirepass", self.password]
        return cmd + self.args

    def listen(self) -> list[str]:
        """Where it listens: .port, plain or TLS only."""
        if not self.tls:
            return ["--port", str(self.port)]
        return ["--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", self.tls.pem(self.tls_cert),
                "--tls-key-file", self.tls.key(self.tls_cert),
                "--tls-ca-cert-file", self.tls.ca,
                "--tls-auth-clients", "yes" if self.tls_auth_clients else "no"]

    # the log line that proves this process, not a stranger, has the port
    READY_LINE = "Ready to accept connections"

    def _start_once(self):
        cmd = self.command()
        offset = self.logfile.stat().st_size if self.logfile.exists() else 0
        out = open(self.dir / "redis.out", "ab")
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        out.close()
        c = self.client(socket_timeout=1, socket_connect_timeout=1)

        def ready():
            if self.proc.poll() is not None:
                log = tail(self.logfile, 30, offset) + tail(self.dir / "redis.out", 10)
                self.proc = None
                if "Address already in use" in log:
                    raise PortInUse(f"redis port {self.port} taken")
                raise RuntimeError(f"redis-server exited:\n{log}")
            # the log line proves that this process, not a stranger, has the port
            if self.READY_LINE not in tail(self.logfile, 100, offset):
                return False
            try:
                return c.ping()
            except (redis_py.AuthenticationError, redis_py.ResponseError):
                return True   # it answered; the test chose its credentials
            except (redis_py.ConnectionError, redis_py.TimeoutError):
                return False

        try:
            wait_for(ready, START_TIMEOUT, f"redis on port {self.port}")
        except TimeoutError as e:
            self.stop()
            raise RuntimeError(f"{e}\n{tail(self.logfile, 30, offset)}") from None
        finally:
            c.close()

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(START_TIMEOUT)
            except subprocess.TimeoutExpired:
                print(f"{self.name}: redis-server {self.proc.pid} ignored SIGTERM: SIGKILL")
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self):
        """SIGKILL, as a crash would end it: no reply to what it holds."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self) -> "Redis":
        """Stop and start again on the same port (data is lost: no persistence)."""
        port = self.port
        self.stop()
        # the port is ours until someone else takes it; retry briefly on a race
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                return self.start(port)
            except PortInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(POLL)

    def flush(self):
        c = self.client()
        try:
            c.flushall()
        finally:
            c.close()


# ---- helpers shared by test files ----

# the status page where tests read the counters (counters())
STATUS_LOCATION = """
<Location "/rl-status">
    SetHandler redis-ratelimit-status
</Location>
"""


def counters(httpd) -> dict:
    """The status page's counters (?json), at STATUS_LOCATION."""
    return json.loads(httpd.get("/rl-status?json").body)["counters"]


def cmdstats(client) -> dict:
    """calls per command from a Redis's INFO commandstats"""
    return {k[len("cmdstat_"):]: v["calls"]
            for k, v in client.info("commandstats").items()}


def hammer_together(servers, n, path="/small.txt", concurrency=8,
                    headers=None):
    """n requests to each server, all servers at once: {server: statuses}."""
    results = {}

    def run(h):
        results[h] = h.hammer(n, path, concurrency=concurrency,
                              headers=headers)

    threads = [threading.Thread(target=run, args=(h,)) for h in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def assert_config_error(httpd, line, words):
    """apachectl -t rejects the directive line, naming the file, the line
    and each of words (what is wrong, what is accepted)."""
    snippet = f"# before\n{line}\n# after"
    rc, out = httpd.configtest(snippet)
    assert rc != 0, out
    n = httpd.render(snippet).splitlines().index(line) + 1
    assert re.search(rf"Syntax error on line {n} of \S+", out), out
    for w in words:
        assert w in out, out


def run_script(main) -> None:
    """Run a script's main() (make bench, soak, profile) and exit with what
    it returns, stopping every server it started however it ends."""
    try:
        sys.exit(main())
    finally:
        for h in Httpd.instances:
            h.stop()
        for r in Redis.instances:
            r.stop()


# ---- a backend that holds its responses until told ----

class HeldBackend:
    """A small HTTP/1.1 server on 127.0.0.1 behind mod_proxy, in this
    process, that holds each response until the test lets it go: what a
    slow PHP worker is to a concurrency limit.

    GET /hold/...    sends its headers and a first chunk at once, then
                     holds the rest until release(); with ?trickle=S it
                     keeps sending a chunk every S seconds while held
    GET /quick/...   answers at once

    held()           requests being held now; peak: the most at once
    wait_held(n)     until n requests are held
    release()        let every held response (and those to come) finish
    """

    def __init__(self):
        import http.server

        backend = self
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.now = 0
        self.peak = 0
        self.total = 0
        self.go = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                hold = self.path.startswith("/hold")
                trickle = None
                m = re.search(r"[?&]trickle=([\d.]+)", self.path)
                if m:
                    trickle = float(m.group(1))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    self._chunk(b"first\n")
                    if hold:
                        backend._enter()
                        try:
                            while not backend.go.wait(trickle or 0.05):
                                if trickle:
                                    self._chunk(b".\n")
                        finally:
                            backend._leave()
                    self._chunk(b"done\n")
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def _chunk(self, data: bytes):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)
        self.thread.start()

    def _enter(self):
        with self.cond:
            self.now += 1
            self.total += 1
            self.peak = max(self.peak, self.now)
            self.cond.notify_all()

    def _leave(self):
        with self.cond:
            self.now -= 1
            self.cond.notify_all()

    def held(self) -> int:
        with self.lock:
            return self.now

    def wait_held(self, n: int, timeout: float = 10):
        with self.cond:
            if not self.cond.wait_for(lambda: self.now >= n, timeout):
                raise AssertionError(f"{self.now} requests held, not {n}")

    def wait_none(self, timeout: float = 10):
        with self.cond:
            if not self.cond.wait_for(lambda: self.now == 0, timeout):
                raise AssertionError(f"{self.now} requests still held")

    def release(self):
        self.go.set()

    def hold_again(self):
        """hold the requests to come (after release())"""
        self.go.clear()
        with self.lock:
            self.peak = self.now

    def close(self):
        self.go.set()
        self.server.shutdown()
        self.server.server_close()


PROXY_MODULES = """
<IfModule !proxy_module>
    LoadModule proxy_module "${mods}/mod_proxy.so"
</IfModule>
<IfModule !proxy_http_module>
    LoadModule proxy_http_module "${mods}/mod_proxy_http.so"
</IfModule>
"""
