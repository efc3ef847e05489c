"""server/cluster.py against a real redis-server on loopback (issue 14): names unique across
nodes, taken over only from a node that lapsed, one command per renewal, and an outage that is an
answer and one log line, not a hang or a flood."""
import logging

import gevent
import pytest

import helpers
from localtunnel.server.cluster import RegistryUnreachable, SharedNames, StillHeld

pytestmark = helpers.needs_redis


def node(redis_server, node_id, lease=10.0):
    names = SharedNames(redis_server.client(), node_id, "10.0.0.%s" % node_id[-1], lease)
    names.renew()
    return names


def test_a_name_is_held_by_one_node_at_a_time(redis_server):
    a, b = node(redis_server, "node-1"), node(redis_server, "node-2")
    assert a.claim("calm-otter")
    assert not b.claim("calm-otter")         # held by a live node: B gives its client another name
    assert a.claim("calm-otter")             # a client taking its own name back on the same node
    assert b.claim("brave-fox")
    assert a.owner("brave-fox") == ("node-2", "10.0.0.2", 0) and b.owner("calm-otter") == ("node-1", "10.0.0.1", 0)
    assert (a.held_here(), b.held_here()) == (1, 1)


def test_a_released_name_is_free_and_only_its_holder_releases_it(redis_server):
    a, b = node(redis_server, "node-1"), node(redis_server, "node-2")
    assert a.claim("calm-otter")
    assert not b.release("calm-otter") and a.owner("calm-otter") == ("node-1", "10.0.0.1", 0)
    assert a.release("calm-otter")
    assert a.owner("calm-otter") is None and b.claim("calm-otter")


def test_a_name_is_taken_over_only_once_its_node_has_lapsed(redis_server):
    a, b = node(redis_server, "node-1", lease=0.3), node(redis_server, "node-2")
    assert a.claim("calm-otter")
    assert not b.claim("calm-otter")
    gevent.sleep(0.5)                        # A stopped renewing (kill -9): its key expires
    assert b.owner("calm-otter") is None     # visitors get "no such tunnel" from the registry now
    assert b.claim("calm-otter")
    assert (a.held_here(), b.held_here()) == (0, 1)
    assert not a.release("calm-otter")       # A, back from the dead, cannot free B's tunnel


def test_every_live_nodes_host_is_known_for_trust(redis_server):
    a, b = node(redis_server, "node-1", lease=0.3), node(redis_server, "node-2")
    assert a.node_hosts() == {"10.0.0.1", "10.0.0.2"}
    gevent.sleep(0.5)       # node-1 stopped renewing
    assert b.node_hosts() == {"10.0.0.2"}


def test_a_client_back_at_another_node_waits_for_its_name_not_a_random_one(redis_server):
    a, b = node(redis_server, "node-1", lease=0.6), node(redis_server, "node-2")
    assert a.claim("calm-otter", "1.2.3.4")
    assert not b.claim("calm-otter", "5.6.7.8")     # someone else: a random name, as ever
    with pytest.raises(StillHeld) as info:
        b.claim("calm-otter", "1.2.3.4")             # its own client, back after A died
    assert info.value.status == 503 and info.value.headers == [("Retry-After", "1")]
    gevent.sleep(0.8)                                # A's key lapses
    assert b.claim("calm-otter", "1.2.3.4")


def test_leaving_frees_a_nodes_names_at_once(redis_server):
    a, b = node(redis_server, "node-1"), node(redis_server, "node-2")
    assert a.claim("calm-otter")
    a.leave()
    assert b.claim("calm-otter")


def test_renewal_is_one_command_whatever_the_number_of_tunnels(redis_server):
    a = node(redis_server, "node-1")
    for number in range(500):
        assert a.claim("tunnel-%d" % number)
    watcher = redis_server.client()

    def commands():
        return watcher.info("stats")["total_commands_processed"]

    before = commands()
    a.renew()
    after = commands()
    assert after - before == 2       # the renewal's SET, and the INFO that read `before`


def test_an_outage_is_a_503_and_one_log_line_and_it_recovers(redis_server, caplog):
    a = node(redis_server, "node-1")
    assert a.claim("calm-otter")
    redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="localtunnel.server.cluster"):
        for _ in range(5):
            with pytest.raises(RegistryUnreachable) as info:
                a.claim("brave-fox")
            assert info.value.status == 503 and info.value.code == "registry-unreachable"
        assert sum("unreachable" in r.getMessage() for r in caplog.records) == 1
        redis_server.start()     # persistence off: a fresh, empty registry, as after a restart
        helpers.wait_until(lambda: _renews(a), 5, "the node to reach Redis again")
        assert a.claim("brave-fox")
        assert sum("answers again" in r.getMessage() for r in caplog.records) == 1
    # The restarted Redis is empty: the node claims what it still serves, and learns of a loss.
    b = node(redis_server, "node-2")
    assert b.claim("taken-meanwhile")
    assert a.restore({"calm-otter": "1.2.3.4", "taken-meanwhile": "1.2.3.4"}) == ["taken-meanwhile"]
    assert b.owner("calm-otter") == ("node-1", "10.0.0.1", 0)


def _renews(names):
    try:
        names.renew()
        return True
    except RegistryUnreachable:
        return False
