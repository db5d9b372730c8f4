"""Redis deployments beyond one server, for RateLimitRedis redis-sentinel://
and redis-cluster:// URLs: real processes on 127.0.0.1, fresh ports, each
node in its own directory under base_dir.  Every process is an rrl.Redis
(or a subclass), so rrl.Redis.instances and conftest's atexit stop them all.

SentinelSet  a master, its replica(s) and three sentinels watching them
Cluster      three masters sharing the 16384 slots; slots can be moved,
             whole or halfway (ASK), as redis-cli --cluster reshard does
keyslot(key) the Redis Cluster hash slot of a key
redirect(e)  ("ASK"|"MOVED", slot, port) of a redis-py ResponseError, else None

conftest's fixtures sentinel_factory and cluster_factory stop what they
made at test end, passed or failed.
"""

import os
import shutil
import signal
import subprocess
from pathlib import Path

import redis as redis_py
import redis.cluster

import rrl

# A failover is down-after + agreement + election + promotion, and a retry
# after 2 * failover-timeout when an election splits; loaded machines and
# valgrind runs (RRL_CHECKER) get more time too.
FAILOVER_WAIT = 90 * rrl.SLOW
SETTLE_WAIT = 60 * rrl.SLOW   # for a deployment to agree with itself


def _decoded(s):
    return s.decode() if isinstance(s, bytes) else s


def _pairs(flat) -> dict:
    """Sentinel's [k1, v1, k2, v2, ...] replies as {k1: v1, ...} (str)."""
    flat = [_decoded(x) for x in flat]
    return dict(zip(flat[0::2], flat[1::2]))


def kill(node: rrl.Redis):
    """SIGKILL, as a crash: no shutdown, no goodbye to replicas or sentinels."""
    if node.proc is None:
        return
    if node.proc.poll() is None:
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(rrl.START_TIMEOUT)
    node.proc = None


def _ask(node: rrl.Redis, *cmd):
    """One command to node on a short-lived connection; None when it cannot
    be reached (down, starting, or timing out)."""
    c = node.client(socket_timeout=2, socket_connect_timeout=2,
                    decode_responses=True)
    try:
        return c.execute_command(*cmd)
    except (redis_py.ConnectionError, redis_py.TimeoutError):
        return None
    finally:
        c.close()


def role(node: rrl.Redis):
    """ROLE as ("master", [(port, offset)...]) or ("slave", master_port,
    link_state); None when node does not answer."""
    r = _ask(node, "ROLE")
    if r is None:
        return None
    if r[0] == "master":
        return ("master", [(int(p), int(o)) for _, p, o in r[2]])
    if r[0] == "slave":
        return ("slave", int(r[2]), r[3])
    return tuple(r)


# ---- sentinel ----

def _wait_explained(check, timeout: float, what: str):
    """rrl.wait_for(check(why)), the timeout saying why[0]: the last reason
    check gave for not being there yet."""
    why = ["?"]
    try:
        rrl.wait_for(lambda: check(why), timeout, what)
    except TimeoutError as e:
        raise TimeoutError(f"{e}: {why[0]}") from None


class Sentinel(rrl.Redis):
    """One redis-sentinel with its own, writable configuration file (a
    sentinel rewrites it as it learns and fails over)."""

    READY_LINE = "Sentinel ID is"   # sentinel mode logs no "Ready to accept"

    def __init__(self, base_dir: Path, conf: str, name: str = "sentinel",
                 password: str | None = None, tls: rrl.TlsFiles | None = None):
        super().__init__(base_dir, name=name, password=password, tls=tls)
        self.conf = self.dir / "sentinel.conf"
        self.conf.write_text(conf)

    def command(self) -> list[str]:
        sentinel = rrl.redis_tool("sentinel")
        binary = ([sentinel, str(self.conf)] if shutil.which(sentinel)
                  else [rrl.REDIS_SERVER, str(self.conf), "--sentinel"])
        cmd = binary + [*self.listen(), "--bind", "127.0.0.1",
                        "--daemonize", "no", "--dir", str(self.dir),
                        "--logfile", str(self.logfile)]
        if self.tls:   # and to the data nodes
            cmd += ["--tls-replication", "yes"]
        if self.password:
            cmd += ["--requirepass", self.password]
        return cmd + self.args


class SentinelSet:
    """A master, replicas=1 replica(s) of it, sentinels=3 sentinels monitoring
    it as master_name with the given quorum.

    SentinelSet(base_dir, master_name="mymaster", password=None, replicas=1,
                sentinels=3, quorum=2, down_after_ms=1000,
                failover_timeout_ms=5000, tls=None)
                      tls (rrl.TlsFiles): every node and sentinel TLS only
    start() -> self   all running, sentinels knowing the replicas and each other
    stop()            every process, by PID
    url(master=None, db=None, password=None) -> "redis-sentinel://[:PASS@]
                      127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/mymaster[/DB]"
    master() -> Redis          the data node the sentinels name master
    replicas() -> [Redis]      the running data nodes but the master
    master_addr(sentinel=None) -> (host, port) from one sentinel
    failover(timeout=FAILOVER_WAIT, settle=True) -> Redis
                               SENTINEL FAILOVER; returns the new master
    kill_master(timeout=FAILOVER_WAIT, settle=True) -> Redis
                               SIGKILL the master; returns the promoted replica
    revive(node) -> Redis      restart a stopped data node as a replica
    wait_stable()              sentinels agree, links up, see each other
    client(**kw)               redis-py client of the current master
    sentinel_client(i=0, **kw) redis-py client of sentinel i

    data nodes: .nodes (rrl.Redis; the first is the first master);
    sentinels: .sentinels (Sentinel).  password= protects both data nodes
    (requirepass, masterauth) and sentinels (requirepass; auth-pass).
    """

    def __init__(self, base_dir: Path, master_name: str = "mymaster",
                 password: str | None = None, replicas: int = 1,
                 sentinels: int = 3, quorum: int = 2,
                 down_after_ms: int = 1000, failover_timeout_ms: int = 5000,
                 tls: rrl.TlsFiles | None = None):
        self.base_dir = Path(base_dir)
        self.tls = tls
        self.master_name = master_name
        self.password = password
        self.n_replicas, self.n_sentinels, self.quorum = replicas, sentinels, quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.nodes: list[rrl.Redis] = []
        self.sentinels: list[Sentinel] = []

    def __repr__(self):
        return (f"<SentinelSet {self.master_name} nodes="
                f"{[n.port for n in self.nodes]} sentinels={[s.port for s in self.sentinels]}>")

    def _data_args(self, master: rrl.Redis | None) -> list[str]:
        # a full sync at once, not after the default 5 s wait for more replicas
        args = ["--repl-diskless-sync-delay", "0"]
        if self.tls:
            args += ["--tls-replication", "yes"]
        if self.password:
            args += ["--masterauth", self.password]
        if master is not None:
            args += ["--replicaof", "127.0.0.1", str(master.port)]
        return args

    def start(self) -> "SentinelSet":
        self.stop()
        try:
            first = rrl.Redis(self.base_dir, *self._data_args(None),
                              name="sent-data", password=self.password,
                              tls=self.tls)
            self.nodes = [first.start()]
            for _ in range(self.n_replicas):
                r = rrl.Redis(self.base_dir, *self._data_args(first),
                              name="sent-data", password=self.password,
                              tls=self.tls)
                self.nodes.append(r.start())
            # replicas online before the sentinels' first INFO of the master:
            # they learn of them at once (else at the next INFO, 10 s later)
            rrl.wait_for(lambda: self._replication_ok(first, self.nodes[1:]),
                         SETTLE_WAIT, f"replicas of {first} online")
            for i in range(self.n_sentinels):
                s = Sentinel(self.base_dir, self._sentinel_conf(first),
                             name="sentinel", password=self.password,
                             tls=self.tls)
                self.sentinels.append(s.start())
            self.wait_stable()
        except BaseException:
            self.stop()
            raise
        return self

    def _sentinel_conf(self, master: rrl.Redis) -> str:
        m = self.master_name
        lines = ["# Written by t/deploy.py; the sentinel rewrites it.",
                 f"sentinel monitor {m} 127.0.0.1 {master.port} {self.quorum}",
                 f"sentinel down-after-milliseconds {m} {self.down_after_ms}",
                 f"sentinel failover-timeout {m} {self.failover_timeout_ms}",
                 f"sentinel parallel-syncs {m} 1"]
        if self.password:
            lines.append(f"sentinel auth-pass {m} {self.password}")
        return "\n".join(lines) + "\n"

    def stop(self):
        for s in self.sentinels:   # first, or they fail over what is stopping
            s.stop()
        for n in self.nodes:
            n.stop()

    # -- looking --

    def url(self, master: str | None = None, db: int | None = None,
            password: str | None = None) -> str:
        password = password or self.password
        auth = f":{password}@" if password else ""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return (f"{'rediss' if self.tls else 'redis'}-sentinel://{auth}{hosts}"
                f"/{master or self.master_name}"
                + (f"/{db}" if db is not None else "")
                + self.nodes[0].tls_query())

    def sentinel_client(self, i: int = 0, **kw) -> redis_py.Redis:
        return self.sentinels[i].client(**kw)

    def client(self, **kw) -> redis_py.Redis:
        return self.master().client(**kw)

    def master_addr(self, sentinel: Sentinel | None = None):
        """(host, port) one sentinel (default: the first running) gives for
        the master; None when it does not answer or does not know."""
        s = sentinel or next(s for s in self.sentinels if s.running())
        r = _ask(s, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        return (r[0], int(r[1])) if r else None

    def node(self, port: int) -> rrl.Redis:
        for n in self.nodes:
            if n.port == port:
                return n
        raise LookupError(f"no data node on port {port} in {self}")

    def master(self) -> rrl.Redis:
        return self.node(self.master_addr()[1])

    def replicas(self) -> list[rrl.Redis]:
        m = self.master()
        return [n for n in self.nodes if n is not m and n.running()]

    @staticmethod
    def _replication_ok(master: rrl.Redis, replicas) -> bool:
        r = role(master)
        if not r or r[0] != "master":
            return False
        ports = {p for p, _ in r[1]}
        for rep in replicas:
            rr = role(rep)
            if (rep.port not in ports or not rr or rr[0] != "slave"
                    or rr[1] != master.port or rr[2] != "connected"):
                return False
        return True

    def _stable(self, why: list):
        """True when every running sentinel names the same running master,
        which says so, and sees the running replicas linked to it and the
        other sentinels; else False, with the reason in why[0]."""
        live = [s for s in self.sentinels if s.running()]
        addrs = {self.master_addr(s) for s in live}
        if len(addrs) != 1 or None in addrs:
            why[0] = f"sentinels name masters {addrs}"
            return False
        port = addrs.pop()[1]
        m = self.node(port)
        reps = [n for n in self.nodes if n is not m and n.running()]
        if not m.running() or not self._replication_ok(m, reps):
            why[0] = f"replication: master {m} role {role(m)}, " \
                     f"replicas {[(r.port, role(r)) for r in reps]}"
            return False
        for s in live:
            info = _ask(s, "SENTINEL", "MASTER", self.master_name)
            if info is None:
                why[0] = f"{s} does not answer"
                return False
            info = _pairs(info)
            if info["flags"] != "master":
                why[0] = f"{s}: master flags {info['flags']}"
                return False
            seen = {}
            for e in _ask(s, "SENTINEL", "REPLICAS", self.master_name) or []:
                e = _pairs(e)
                seen[int(e["port"])] = e
            # known and reachable; not how it replicates: a sentinel that did
            # not lead a failover refreshes that (INFO) every 10 s only
            for r in reps:
                e = seen.get(r.port)
                if e is None or e["flags"] != "slave":
                    why[0] = f"{s} sees replica {r.port} as " + repr(e and {
                        k: e.get(k) for k in ("flags", "master-link-status",
                                              "master-port", "info-refresh")})
                    return False
            others = [_pairs(e) for e in
                      _ask(s, "SENTINEL", "SENTINELS", self.master_name) or []]
            ok = [e for e in others if e["flags"] == "sentinel"]
            if len(ok) < len(live) - 1:
                why[0] = f"{s} sees sentinels {[(e['port'], e['flags']) for e in others]}"
                return False
        return True

    def wait_stable(self, timeout: float = SETTLE_WAIT):
        _wait_explained(self._stable, timeout, f"{self} to settle")

    # -- changing --

    def _wait_new_master(self, old: rrl.Redis, timeout: float) -> rrl.Redis:
        def moved():
            addrs = {self.master_addr(s) for s in self.sentinels if s.running()}
            if len(addrs) != 1 or None in addrs:
                return None
            new = self.node(addrs.pop()[1])
            if new is old:
                return None
            r = role(new)
            return new if r and r[0] == "master" else None
        return rrl.wait_for(moved, timeout,
                            f"{self}: sentinels to agree on a master other than {old}")

    def failover(self, timeout: float = FAILOVER_WAIT, settle: bool = True) -> rrl.Redis:
        """SENTINEL FAILOVER; wait until every sentinel names another master
        and it says ROLE master.  settle: then make the old master a replica
        of it (REPLICAOF, as the sentinels would after 8 s) and wait_stable(),
        so that a further failover can follow; settle=False returns at once,
        the old master still saying ROLE master for those 8 s."""
        old = self.master()
        c = self.sentinel_client(decode_responses=True)
        try:
            c.execute_command("SENTINEL", "FAILOVER", self.master_name)
        finally:
            c.close()
        new = self._wait_new_master(old, timeout)
        if settle:
            self._demote_others(new)
            self.wait_stable(timeout)
        return new

    def _demote_others(self, master: rrl.Redis):
        for n in self.nodes:
            if n is master or not n.running():
                continue
            r = role(n)
            if not r or r[:2] != ("slave", master.port):
                _ask(n, "REPLICAOF", "127.0.0.1", str(master.port))

    def kill_master(self, timeout: float = FAILOVER_WAIT, settle: bool = True) -> rrl.Redis:
        """SIGKILL the master; wait until every sentinel names a promoted
        replica and it says ROLE master (about 4 s here).  settle: then
        wait_stable() too (about 4 s more: sentinels forget the old votes
        after 5 s).  The old master stays down; revive() brings it back."""
        old = self.master()
        kill(old)
        new = self._wait_new_master(old, timeout)
        if settle:
            self._demote_others(new)
            self.wait_stable(timeout)
        return new

    def revive(self, node: rrl.Redis, timeout: float = SETTLE_WAIT) -> rrl.Redis:
        """Start a stopped data node again, on its port, replicating the
        current master; wait until the sentinels see it linked."""
        node.args = self._data_args(self.master())
        node.restart()
        self.wait_stable(timeout)
        return node


# ---- cluster ----

def _crc16_table():
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC16 = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC16-CCITT (XMODEM): the Redis Cluster key hash."""
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ b) & 0xFF]
    return crc


def keyslot(key) -> int:
    """Hash slot of key: of the part between the first { and the next },
    when that is not empty (a hash tag), else of the whole key."""
    k = key.encode() if isinstance(key, str) else bytes(key)
    s = k.find(b"{")
    if s >= 0:
        e = k.find(b"}", s + 1)
        if e > s + 1:
            k = k[s + 1:e]
    return crc16(k) % 16384


def redirect(err: Exception):
    """("ASK" | "MOVED", slot, port) of a redirection error as a plain
    (non-cluster) redis-py client raises it: an AskError or MovedError
    (redis-py 5 and later), a ResponseError saying so (4.x); None for any
    other error."""
    if isinstance(err, redis_py.exceptions.AskError):   # MovedError too
        kind = "MOVED" if isinstance(err, redis_py.exceptions.MovedError) \
            else "ASK"
        return kind, int(err.slot_id), int(err.port)
    words = str(err).split()
    if len(words) == 3 and words[0] in ("ASK", "MOVED"):
        return words[0], int(words[1]), int(words[2].rsplit(":", 1)[1])
    return None


class ClusterNode(rrl.Redis):
    """A redis-server with cluster-enabled; its bus port is picked with its
    port (not port + 10000, which may be taken or beyond 65535)."""

    def __init__(self, base_dir: Path, *args: str, name: str = "cluster",
                 password: str | None = None, tls: rrl.TlsFiles | None = None):
        super().__init__(base_dir, *args, name=name, password=password,
                         tls=tls)
        self.bus_port = None
        self._bus_for = None   # the port bus_port was picked with

    def command(self) -> list[str]:
        if self._bus_for != self.port:   # a new port (a retry): a new bus port
            self.bus_port, self._bus_for = rrl.free_port(), self.port
        return super().command() + ["--cluster-port", str(self.bus_port)]

    def node_id(self) -> str:
        return _ask(self, "CLUSTER", "MYID")

    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"


class Cluster:
    """masters=3 cluster masters, no replicas, created by redis-cli --cluster.

    Cluster(base_dir, masters=3, password=None, node_timeout_ms=2000, tls=None)
                       tls (rrl.TlsFiles): every node TLS only, its bus too
    start() -> self    created, every node cluster_state:ok and agreeing
    stop()             every node, by PID
    url(nodes=None, password=None) -> "redis-cluster://[:PASS@]127.0.0.1:P1,..."
                       (nodes: which ones to list; default all)
    client(**kw) -> redis.cluster.RedisCluster (close() it)
    keyslot(key) -> int        (also the module function keyslot)
    slot_owner(slot) -> ClusterNode   as the nodes' CLUSTER SLOTS say
    node_for_key(key) -> ClusterNode
    key_for_node(node, prefix="k") -> str   a key node owns
    key_for_slot(slot, prefix="k") -> str   a key of that slot
    all_keys() -> {ClusterNode: [key (str)]}   SCAN of every running node
    begin_migration(slot, to, move_keys=True)  IMPORTING/MIGRATING, and the
                       keys moved (move_keys=False: none yet): ASK from now
    move_keys(slot, count=None) -> int   MIGRATE up to count keys (all)
    finish_migration(slot)     the rest of the keys, SETSLOT NODE everywhere,
                       wait until all nodes agree: MOVED from now
    migrate_slot(slot, to)     begin and finish
    wait_ok()                  every running node ok and agreeing on slots
    .nodes: [ClusterNode]
    """

    BATCH = 100   # keys per MIGRATE

    def __init__(self, base_dir: Path, masters: int = 3,
                 password: str | None = None, node_timeout_ms: int = 2000,
                 tls: rrl.TlsFiles | None = None):
        self.base_dir = Path(base_dir)
        self.tls = tls
        self.n = masters
        self.password = password
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[ClusterNode] = []
        self.migrations: dict[int, tuple[ClusterNode, ClusterNode]] = {}

    def __repr__(self):
        return f"<Cluster {[n.port for n in self.nodes]}>"

    def start(self) -> "Cluster":
        self.stop()
        args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms)]
        if self.password:
            args += ["--masterauth", self.password]
        tls_cli = []
        if self.tls:
            args += ["--tls-cluster", "yes", "--tls-replication", "yes"]
            tls_cli = ["--tls", "--cacert", self.tls.ca,
                       "--cert", self.tls.pem("client"),
                       "--key", self.tls.key("client")]
        try:
            for _ in range(self.n):
                node = ClusterNode(self.base_dir, *args, password=self.password,
                                   tls=self.tls)
                self.nodes.append(node.start())
            env = dict(os.environ)
            if self.password:
                env["REDISCLI_AUTH"] = self.password
            p = subprocess.run(
                [rrl.redis_tool("cli"), *tls_cli, "--cluster", "create",
                 *(n.addr() for n in self.nodes),
                 "--cluster-replicas", "0", "--cluster-yes"],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, timeout=SETTLE_WAIT)
            (self.nodes[0].dir / "cluster-create.out").write_text(p.stdout)
            if p.returncode != 0 or "[OK] All 16384 slots covered" not in p.stdout:
                raise RuntimeError(f"redis-cli --cluster create failed "
                                   f"({p.returncode}):\n{p.stdout}")
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        for n in self.nodes:
            n.stop()

    # -- looking --

    def url(self, nodes=None, password: str | None = None) -> str:
        password = password or self.password
        auth = f":{password}@" if password else ""
        return (f"{'rediss' if self.tls else 'redis'}-cluster://" + auth
                + ",".join(n.addr() for n in (nodes if nodes is not None
                                              else self.nodes))
                + self.nodes[0].tls_query())

    def client(self, **kw) -> redis.cluster.RedisCluster:
        kw.setdefault("password", self.password)
        kw.setdefault("socket_timeout", 10)
        n = next(n for n in self.nodes if n.running())
        if self.tls:
            kw.update(ssl=True, ssl_cert_reqs="none",
                      ssl_certfile=self.tls.pem("client"),
                      ssl_keyfile=self.tls.key("client"))
        return redis.cluster.RedisCluster(host="127.0.0.1", port=n.port, **kw)

    keyslot = staticmethod(keyslot)

    def node(self, port: int) -> ClusterNode:
        for n in self.nodes:
            if n.port == port:
                return n
        raise LookupError(f"no node on port {port} in {self}")

    def slots(self, node: ClusterNode | None = None) -> list[tuple[int, int, int]]:
        """[(first, last, master port)] as node (default: the first running
        one) sees the slot map, sorted; None when it does not answer."""
        node = node or next(n for n in self.nodes if n.running())
        r = _ask(node, "CLUSTER", "SLOTS")
        if r is None:
            return None
        return sorted((int(a), int(b), int(m[1])) for a, b, m, *_ in r)

    def slot_owner(self, slot: int) -> ClusterNode:
        for a, b, port in self.slots():
            if a <= slot <= b:
                return self.node(port)
        raise LookupError(f"slot {slot} has no owner in {self}")

    def node_for_key(self, key) -> ClusterNode:
        return self.slot_owner(keyslot(key))

    def key_for_slot(self, slot: int, prefix: str = "k") -> str:
        """prefix{TAG} whose hash tag puts it in slot."""
        i = 0
        while keyslot(str(i)) != slot:
            i += 1
        return f"{prefix}{{{i}}}"

    def key_for_node(self, node: ClusterNode, prefix: str = "k") -> str:
        slots = self.slots()
        i = 0
        while True:
            key = f"{prefix}{i}"
            s = keyslot(key)
            if any(a <= s <= b and p == node.port for a, b, p in slots):
                return key
            i += 1

    def all_keys(self) -> dict:
        """{node: sorted keys} of every running node (SCAN; str keys)."""
        out = {}
        for n in self.nodes:
            if not n.running():
                continue
            c = n.client(decode_responses=True)
            try:
                out[n] = sorted(c.scan_iter(count=1000))
            finally:
                c.close()
        return out

    def _agree(self, why: list) -> bool:
        maps = {}
        for n in self.nodes:
            if not n.running():
                continue
            info = _ask(n, "CLUSTER", "INFO")
            if info is None:
                why[0] = f"{n} does not answer"
                return False
            if isinstance(info, dict):
                info = {k: str(v) for k, v in info.items()}
            else:
                info = dict(l.split(":", 1) for l in info.split("\r\n") if ":" in l)
            if (info.get("cluster_state") != "ok"
                    or info.get("cluster_slots_ok") != "16384"
                    or info.get("cluster_known_nodes") != str(len(self.nodes))):
                why[0] = f"{n}: {info}"
                return False
            maps[n.port] = self.slots(n)
        if len({repr(m) for m in maps.values()}) != 1:
            why[0] = f"slot maps differ: {maps}"
            return False
        return True

    def wait_ok(self, timeout: float = SETTLE_WAIT):
        _wait_explained(self._agree, timeout, f"{self} to be ok")

    # -- moving slots (the steps of redis-cli --cluster reshard) --

    def _cmd(self, node: ClusterNode, *cmd):
        c = node.client(decode_responses=True)
        try:
            return c.execute_command(*cmd)
        finally:
            c.close()

    def begin_migration(self, slot: int, to: ClusterNode, move_keys: bool = True):
        """slot IMPORTING on to, MIGRATING on its owner; then (move_keys) its
        keys moved.  From now the owner answers ASK for a key it lacks."""
        src = self.slot_owner(slot)
        if src is to:
            raise ValueError(f"slot {slot} is on {to} already")
        self._cmd(to, "CLUSTER", "SETSLOT", slot, "IMPORTING", src.node_id())
        self._cmd(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", to.node_id())
        self.migrations[slot] = (src, to)
        if move_keys:
            self.move_keys(slot)

    def move_keys(self, slot: int, count: int | None = None) -> int:
        """MIGRATE up to count (default: all) of slot's keys still on the
        source, BATCH at a time; how many were moved."""
        src, dst = self.migrations[slot]
        moved = 0
        while count is None or moved < count:
            n = self.BATCH if count is None else min(self.BATCH, count - moved)
            keys = self._cmd(src, "CLUSTER", "GETKEYSINSLOT", slot, n)
            if not keys:
                break
            auth = ["AUTH", self.password] if self.password else []
            self._cmd(src, "MIGRATE", "127.0.0.1", dst.port, "", 0, 10000,
                      *auth, "KEYS", *keys)
            moved += len(keys)
        return moved

    def finish_migration(self, slot: int):
        """Move what keys are left, make the target the owner on every
        node, and wait until they all say so."""
        src, dst = self.migrations[slot]
        self.move_keys(slot)
        dst_id = dst.node_id()
        # the target first (it bumps its epoch), then the source, then the rest
        for n in [dst, src] + [n for n in self.nodes if n not in (dst, src)]:
            if n.running():
                self._cmd(n, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        del self.migrations[slot]
        rrl.wait_for(lambda: all(self._owner_seen(n, slot) == dst.port
                                 for n in self.nodes if n.running()),
                     SETTLE_WAIT, f"every node to see slot {slot} on {dst}")
        self.wait_ok()

    def _owner_seen(self, node: ClusterNode, slot: int):
        for a, b, port in self.slots(node) or []:
            if a <= slot <= b:
                return port
        return None

    def migrate_slot(self, slot: int, to: ClusterNode):
        self.begin_migration(slot, to)
        self.finish_migration(slot)
