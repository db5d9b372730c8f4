"""make bench's peer row: nginx alone against nginx + ngx_lua +
lua-resty-redis running the project's own lua/ratelimit.lua for one limit
per request, the OpenResty way (what Kong's redis policy does): EVALSHA on
a non-blocking cosocket from a keepalive pool, SCRIPT LOAD and one retry on
NOSCRIPT.  Debian: nginx, libnginx-mod-http-lua, lua-nginx-redis.

Nginx(base_dir, name, lua=False)  a private nginx: its own prefix under
        base_dir, 127.0.0.1 on a free port, pid file and logs in the prefix;
        start(redis_port) stop() (QUIT, by its pid); .pid (the master) .port
missing()  why the peer cannot run here, or None
"""
import http.client
import os
import shutil
import signal
import string
import subprocess
import tempfile
from pathlib import Path

import rrl

NGINX = shutil.which(os.environ.get("NGINX", "nginx"),
                     path=os.environ.get("PATH", "") + ":/usr/sbin")
MODULES = Path(os.environ.get("NGINX_MODULES", "/usr/lib/nginx/modules"))
LUA_DIRS = [Path("/usr/share/lua/5.1"), Path("/usr/local/share/lua/5.1")]

# the tuning of make bench's Apaches, as nginx says it: two processes,
# keepalive without a cap on requests, no access log, the same small file
CONF = """
daemon on;
master_process on;
worker_processes 2;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
${user}
${load}
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_timeout 5s;
    keepalive_requests 1000000000;
    client_body_temp_path ${prefix}/tmp/body;
    proxy_temp_path ${prefix}/tmp/proxy;
    fastcgi_temp_path ${prefix}/tmp/fastcgi;
    uwsgi_temp_path ${prefix}/tmp/uwsgi;
    scgi_temp_path ${prefix}/tmp/scgi;
    ${http}
    server {
        listen 127.0.0.1:${port};
        root ${docroot};
        location / {
            ${access}
        }
        location /five/ {
            alias ${docroot}/;
            ${five}
        }
    }
}
"""

# the lua module's part: the script from lua/, one limit on every file,
# and 5/min under /five/ (check() sees it deny)
LUA_CONF = {
    "load": "load_module ${modules}/ndk_http_module.so;\n"
            "load_module ${modules}/ngx_http_lua_module.so;",
    "http": 'lua_package_path "${prefix}/?.lua;;";\n'
            "    init_by_lua_block { require('rrl_peer').init("
            "'${script}', ${redis_port}) }",
    "access": "access_by_lua_block { require('rrl_peer').decide("
              "'one', 1000000, 1000000) }",
    "five": "access_by_lua_block { require('rrl_peer').decide("
            "'five', 5, 60000000) }",
}

PEER_LUA = r"""
-- make bench's peer (t/peer.py): one limit per request decided by
-- lua/ratelimit.lua in Redis, as mod_redis_ratelimit asks it
local ok, redis = pcall(require, "resty.redis")
if not ok then
  redis = require "nginx.redis"          -- Debian's lua-nginx-redis
end
local M = {}
local script, sha, port

function M.init(path, redis_port)
  local f = assert(io.open(path))
  script = f:read("*a")
  f:close()
  sha = ngx.sha1_bin(script):gsub(".", function(c)
    return string.format("%02x", c:byte())
  end)
  port = redis_port
end

-- RateLimit COUNT/PERIOD key=%{HTTP:X-Client} name=NAME: key rl:NAME:VALUE,
-- ARGV as src/rrl_script.c sends a request alone (a batch of one): now
-- (empty: Redis TIME), 1 request, 1 limit, then its gcra spend in the
-- script's short form: g, burst, interval (us), cost
function M.decide(name, count, period)
  local red = redis:new()
  red:set_timeout(1000)
  local ok, err = red:connect("127.0.0.1", port)
  if not ok then
    ngx.log(ngx.ERR, "rrl_peer: connect: ", err, "; allowed")
    return
  end
  local key = "rl:" .. name .. ":" .. (ngx.var.http_x_client or "")
  local argv = { sha, 1, key, "", 1, 1, "g", count,
                 math.floor(period / count), 1 }
  local res
  res, err = red:evalsha(unpack(argv))
  if not res and err and err:find("^NOSCRIPT") then
    red:script("load", script)
    res, err = red:evalsha(unpack(argv))
  end
  red:set_keepalive(10000, 64)           -- a broken one is closed instead
  if not res then
    ngx.log(ngx.ERR, "rrl_peer: EVALSHA: ", err, "; allowed")
    return
  end
  -- reply: the request's entry: all allowed, now, then allowed,
  -- remaining, reset, retry; or its error
  res = res[1]
  if type(res) ~= "table" or res[1] == false then  -- {false, err}: its error
    ngx.log(ngx.ERR, "rrl_peer: EVALSHA: ",
            tostring(type(res) == "table" and res[2] or res), "; allowed")
    return
  end
  ngx.header["X-RateLimit-Limit"] = count
  ngx.header["X-RateLimit-Remaining"] = res[4]
  ngx.header["X-RateLimit-Reset"] = math.ceil((res[2] + res[5]) / 1e6)
  if res[1] == 0 then
    return ngx.exit(429)
  end
end

return M
"""


def missing():
    """What is not installed for the peer row (None: all is)"""
    if not NGINX:
        return "nginx not found (NGINX=path, or the package nginx)"
    for so in ("ndk_http_module.so", "ngx_http_lua_module.so"):
        if not (MODULES / so).exists():
            return (f"{MODULES / so} not found (NGINX_MODULES=dir, or the "
                    "package libnginx-mod-http-lua)")
    if not any((d / sub / "redis.lua").exists()
               for d in LUA_DIRS for sub in ("nginx", "resty")):
        return "lua-resty-redis not found (the package lua-nginx-redis)"
    return None


class Nginx:
    def __init__(self, base_dir: Path, name: str, lua: bool = False):
        self.prefix = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base_dir))
        self.prefix.chmod(0o755)
        self.docroot = rrl.make_dir(self.prefix / "htdocs")
        (self.docroot / "small.txt").write_text(rrl.DOCROOT_FILES["small.txt"])
        rrl.make_dir(self.prefix / "tmp")
        self.lua = lua
        self.pidfile = self.prefix / "nginx.pid"
        self.error_log = self.prefix / "error.log"
        self.pid = self.port = None

    def render(self, redis_port: int) -> str:
        v = {"prefix": self.prefix, "docroot": self.docroot,
             "port": self.port, "modules": MODULES, "redis_port": redis_port,
             "script": rrl.REPO / "lua" / "ratelimit.lua",
             "user": "user www-data;" if os.geteuid() == 0 else ""}
        parts = {k: string.Template(t).substitute(v)
                 for k, t in LUA_CONF.items()} if self.lua else {}
        for k in LUA_CONF:
            v[k] = parts.get(k, "")
        return string.Template(CONF).substitute(v)

    def start(self, redis_port: int) -> "Nginx":
        """Start on a free port (fresh ones, 3 tries, on a race); return
        when the master has written its pid and the port accepts"""
        (self.prefix / "rrl_peer.lua").write_text(PEER_LUA)
        conf = self.prefix / "nginx.conf"
        for attempt in range(1, rrl.START_TRIES + 1):
            self.port = rrl.free_port()
            conf.write_text(self.render(redis_port))
            p = subprocess.run([NGINX, "-p", str(self.prefix), "-c", str(conf),
                                "-e", str(self.error_log)],
                               capture_output=True, text=True)
            if p.returncode == 0:
                break
            if "Address already in use" not in p.stderr \
                    or attempt == rrl.START_TRIES:
                raise RuntimeError(f"nginx did not start:\n{p.stderr}")
        self.pid = rrl.wait_for(
            lambda: self.pidfile.exists() and rrl.can_connect(
                "127.0.0.1", self.port) and int(self.pidfile.read_text()),
            rrl.START_TIMEOUT, f"nginx on port {self.port}")
        return self

    def stop(self):
        """Graceful stop (QUIT) of our master, by its pid"""
        pid, self.pid = self.pid, None
        if not pid or not rrl.pid_alive(pid):
            return
        os.kill(pid, signal.SIGQUIT)
        rrl.wait_for(lambda: not rrl.pid_alive(pid), rrl.START_TIMEOUT,
                     f"nginx {pid} to exit")

    def get(self, path: str, client: str) -> int:
        """The status of one GET with X-Client: client"""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        c.request("GET", path, headers={"X-Client": client})
        status = c.getresponse().status
        c.close()
        return status


def check(peer: Nginx, client) -> str | None:
    """Does the peer decide?  Under /five/ (5/min) one client gets five 200s,
    then 429, in 6 EVALSHAs; also after SCRIPT FLUSH (NOSCRIPT, load, retry).
    None, or what went wrong."""
    client.script_flush()
    before = rrl.cmdstats(client).get("evalsha", 0)
    got = [peer.get("/five/small.txt", "check") for _ in range(6)]
    calls = rrl.cmdstats(client).get("evalsha", 0) - before
    if got != [200] * 5 + [429] or calls != 7:   # 7: one NOSCRIPT retried
        return (f"peer check failed: statuses {got}, {calls} EVALSHA "
                f"(want 5 x 200 then 429, 7 EVALSHA)\n"
                + rrl.tail(peer.error_log, 20))
    return None
