#!/usr/bin/env python3
"""The NATS output against a three-node cluster (doc/outputs.md,
"Delivery"): nats-server -js on three loopback ports with routes between
them, the stream created by ldapfeed with three replicas.  While a stream of
changes runs, the node a worker is connected to is killed, and then the
stream's leader: ldapfeed never exits, and the stream ends up with every
change once (by message id and by epoch and seq) and equal to the server.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F403
import nats_lab as N  # noqa: E402
from nats_lab import Changer, check_stream, loaded, settled  # noqa: E402

STREAM = 'LDAPFEED'


@test(timeout=240)
def test_kill_connected_node_and_leader(tmp):
    s = Slapd(tmp)
    s.add_people(20)
    nodes = N.cluster(tmp)
    wait_until(lambda: N.meta_leader(nodes), 30, 'a JetStream meta leader')
    urls = ','.join(node.url for node in nodes)
    d = Daemon(tmp, s, None, output=urls, fmt='json', processes=4,
               extra=['--nats-replicas', '3'])
    loaded(urls, timeout=180)  # a cluster forming on two busy CPUs can take a while
    by_name = {node.name: node for node in nodes}

    ch = Changer(s, 300, pause=0.03)
    ch.start()
    time.sleep(1)
    # The node worker 0 is connected to.
    connected = wait_until(lambda: next((nd for nd in nodes if nd.running() and
                                         'ldapfeed worker 0' in nd.clients()), None),
                           10, 'the node of worker 0')
    connected.kill()
    time.sleep(2)
    assert d.alive(), d.stderr()
    connected.start(wait=False)
    connected.wait_ready(30)
    # The stream's leader.
    leader = wait_until(lambda: next((by_name.get(nd.stream_leader(STREAM)) for nd in nodes
                                      if nd.running() and nd.stream_leader(STREAM)), None),
                        20, 'the stream leader')
    leader.kill()
    time.sleep(3)
    assert d.alive(), d.stderr()
    leader.start(wait=False)
    leader.wait_ready(30)
    ch.join(120)
    assert ch.error is None, ch.error
    model = settled(urls, s)
    # The stream may still be electing a leader after the restarts: read it
    # again until it answers.
    msgs = N.wait_stream(urls, bool, 60, 'the stream readable after the restarts')
    check_stream(msgs)
    mods = [m for m in msgs if m['type'] == 'modify']
    assert len(mods) >= ch.done // 2, (len(mods), ch.done)
    assert d.alive(), d.stderr()
    assert d.stop() == 0, d.stderr()
    assert model.entries


@test(timeout=240)
def test_start_while_the_stream_has_no_leader(tmp):
    # Scenario: ldapfeed starts while its replicated stream has no leader:
    # two of the three nodes are down, and come back 3 s later.  The
    # stream's lookup gets no answer, or "temporarily unavailable", until
    # the stream elects a leader: ldapfeed asks again rather than exit (a
    # first start's workers meet the same while one of them creates the
    # stream and the others look it up).
    s = Slapd(tmp)
    s.add_people(10)
    nodes = N.cluster(tmp)
    wait_until(lambda: N.meta_leader(nodes), 30, 'a JetStream meta leader')
    urls = ','.join(node.url for node in nodes)
    d = Daemon(tmp, s, None, output=urls, fmt='json', processes=4, extra=['--nats-replicas', '3'])
    loaded(urls, timeout=180)
    assert d.stop() == 0, d.stderr()
    for node in nodes[1:]:
        node.kill()
    s.modify_entry(N.person_dn(3), [('replace', 'description', ['while the stream had no leader'])])
    d = Daemon(tmp, s, None, output=urls, fmt='json', processes=4, extra=['--nats-replicas', '3'])
    time.sleep(3)
    assert d.alive(), d.stderr()
    for node in nodes[1:]:
        node.start(wait=False)
    for node in nodes[1:]:
        node.wait_ready(30)
    wait_until(lambda: 'supervisor: started' in d.stderr() or not d.alive(), 120, 'ldapfeed to start')
    assert d.alive(), d.stderr()
    settled(urls, s)
    assert d.stop() == 0, d.stderr()


if __name__ == '__main__':
    main()
