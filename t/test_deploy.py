"""t/deploy.py itself, with plain redis-py (no httpd, no module): the
Sentinel and Cluster deployments the redis-sentinel:// and redis-cluster://
tests stand on behave as Redis documents."""

import pytest
import redis as redis_py

import deploy
import rrl


def _sentinels_agree(dep, node):
    return all(dep.master_addr(s) == ("127.0.0.1", node.port) for s in dep.sentinels)


def test_deploy_01_sentinel_failover(sentinel_factory):
    dep = sentinel_factory()
    ports = [s.port for s in dep.sentinels]
    assert len(set(ports)) == 3
    assert dep.url() == "redis-sentinel://" + ",".join(
        f"127.0.0.1:{p}" for p in ports) + "/mymaster"
    assert dep.url(db=3).endswith("/mymaster/3")
    assert dep.url(master="other").endswith("/other")

    old = dep.master()
    assert old is dep.nodes[0] and dep.replicas() == [dep.nodes[1]]
    assert _sentinels_agree(dep, old)
    c = old.client()
    try:
        c.set("before", "failover")
        c.wait(1, 10000)   # on the replica too
    finally:
        c.close()

    new = dep.failover()
    assert new is not old and new is dep.nodes[1]
    assert dep.master() is new and _sentinels_agree(dep, new)
    assert deploy.role(new)[0] == "master"
    assert deploy.role(old)[:2] == ("slave", new.port)
    c = new.client()
    try:
        assert c.get("before") == b"failover"
        c.set("after", "1")   # writable
    finally:
        c.close()

    # and back: a second failover right after the first works as well
    assert dep.failover() is old


def test_deploy_02_sentinel_kill_master_with_password(sentinel_factory):
    dep = sentinel_factory(password="s3cret")
    assert dep.url().startswith("redis-sentinel://:s3cret@127.0.0.1:")
    for node in dep.nodes + dep.sentinels:   # everything wants the password
        c = node.client(password=None)
        try:
            with pytest.raises(redis_py.AuthenticationError):
                c.ping()
        finally:
            c.close()

    old = dep.master()
    new = dep.kill_master()
    assert not old.running() and rrl.pid_alive(new.proc.pid)
    assert new is not old and dep.master() is new
    assert _sentinels_agree(dep, new)
    assert deploy.role(new)[0] == "master"

    dep.revive(old)   # back, as a replica of the new master
    assert deploy.role(old)[:3] == ("slave", new.port, "connected")
    assert dep.replicas() == [old]


def test_deploy_03_cluster_slots_and_keys(cluster_factory):
    cl = cluster_factory()
    assert cl.url() == "redis-cluster://" + ",".join(
        f"127.0.0.1:{n.port}" for n in cl.nodes)
    assert cl.url(nodes=cl.nodes[:2]).count(",") == 1

    # every slot covered, once, by three different masters
    ranges = cl.slots()
    covered = sorted(s for a, b, _ in ranges for s in range(a, b + 1))
    assert covered == list(range(16384))
    assert {p for _, _, p in ranges} == {n.port for n in cl.nodes}

    # keyslot() is Redis's: the spec's check value and hash tags
    assert deploy.crc16(b"123456789") == 0x31C3
    c = cl.nodes[0].client()
    try:
        for key in ["foo", "bar", "123456789", "{user1000}.following",
                    "{user1000}.followers", "foo{}{bar}", "foo{{bar}}zap",
                    "foo{bar}{zap}", "{}", "{", "}", "", "rrl:ip:127.0.0.1",
                    "caf\u00e9"]:
            assert cl.keyslot(key) == c.execute_command("CLUSTER", "KEYSLOT", key), key
    finally:
        c.close()
    assert cl.keyslot("{user1000}.following") == cl.keyslot("{user1000}.followers")

    # keys of different slots land on different nodes, where node_for_key says
    rc = cl.client()
    try:
        keys = [f"key:{i}" for i in range(300)]
        for k in keys:
            rc.set(k, k)
        assert rc.get("key:7") == b"key:7"
    finally:
        rc.close()
    found = cl.all_keys()
    assert set(found) == set(cl.nodes)
    assert all(found[n] for n in cl.nodes)   # each holds some
    assert sorted(k for ks in found.values() for k in ks) == sorted(keys)
    for node, ks in found.items():
        for k in ks:
            assert cl.node_for_key(k) is node
    for node in cl.nodes:
        assert cl.node_for_key(cl.key_for_node(node, "x")) is node
    assert cl.keyslot(cl.key_for_slot(1234)) == 1234


def test_deploy_04_cluster_half_migrated_slot(cluster_factory):
    cl = cluster_factory(password="s3cret")
    assert cl.url().startswith("redis-cluster://:s3cret@127.0.0.1:")
    slot = cl.keyslot("{t}")
    moved, stays = "{t}moved", "{t}stays"
    src = cl.slot_owner(slot)
    dst = next(n for n in cl.nodes if n is not src)
    c = src.client()
    d = dst.client()
    try:
        c.set(moved, "m")
        c.set(stays, "s")

        cl.begin_migration(slot, dst, move_keys=False)
        # GETKEYSINSLOT gives keys in order: move the first, keep the other
        first = c.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1)[0].decode()
        moved, stays = first, ({moved, stays} - {first}).pop()
        assert cl.move_keys(slot, 1) == 1
        assert c.get(stays) is not None   # still here: served
        with pytest.raises(redis_py.ResponseError) as e:
            c.get(moved)
        assert deploy.redirect(e.value) == ("ASK", slot, dst.port)
        with pytest.raises(redis_py.ResponseError) as e:
            c.set("{t}new", "x")   # a new key goes to the target too
        assert deploy.redirect(e.value) == ("ASK", slot, dst.port)
        # the target serves it after ASKING, only then
        with pytest.raises(redis_py.ResponseError) as e:
            d.get(moved)
        assert deploy.redirect(e.value) == ("MOVED", slot, src.port)
        p = d.pipeline(transaction=False)   # one connection
        p.execute_command("ASKING")
        p.get(moved)
        assert p.execute()[1] is not None
        # a cluster client follows the ASK by itself
        rc = cl.client()
        try:
            assert {rc.get(moved), rc.get(stays)} == {b"m", b"s"}
        finally:
            rc.close()

        cl.finish_migration(slot)
        assert cl.slot_owner(slot) is dst
        assert cl.all_keys()[dst] == sorted(["{t}moved", "{t}stays"])
        with pytest.raises(redis_py.ResponseError) as e:
            c.get(stays)
        assert deploy.redirect(e.value) == ("MOVED", slot, dst.port)
        assert {d.get("{t}moved"), d.get("{t}stays")} == {b"m", b"s"}
    finally:
        c.close()
        d.close()

    # and whole, in one call, back
    cl.migrate_slot(slot, src)
    assert cl.slot_owner(slot) is src and cl.node_for_key("{t}x") is src
    assert cl.all_keys()[src].count("{t}moved") == 1
