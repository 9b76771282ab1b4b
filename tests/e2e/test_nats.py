#!/usr/bin/env python3
"""End-to-end tests of the NATS JetStream output (doc/outputs.md): a real
slapd, a real nats-server -js on 127.0.0.1 in the test's temp dir, the real
daemon with -o nats://..., and the stream read back with ldapfeed-nats-tail.

Each test rebuilds the consumer's copy from the stream, in stream order, as
a stream consumer would (harness Model), and compares it with ldapsearch;
it checks that every message id is in the stream once, that no entry event
(epoch, seq) is there twice, that headers match the payload, and that each
entry's events come in seq order.
"""

import json
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F403
import nats_lab as N  # noqa: E402
from nats_lab import Changer, check_stream, hellos, loaded, person_dn, settled  # noqa: E402

SUFFIX = 'dc=example,dc=com'
PEOPLE = 'ou=people,' + SUFFIX


def start(tmp, s, nats, processes=4, fmt='json', extra=(), **kw):
    return Daemon(tmp, s, None, output=nats if isinstance(nats, str) else nats.url, fmt=fmt,
                  processes=processes, extra=extra, **kw)


def persist_changes(s, base=0):
    """adds, modifies, renames, a subtree move and deletes."""
    s.add_entry('ou=moved,' + SUFFIX, {'objectClass': ['organizationalUnit'], 'ou': ['moved']})
    s.add_people(5, start=base + 100)
    s.modify_entry(person_dn(1), [('replace', 'mail', ['one@example.com'])])
    s.modrdn(person_dn(2), 'uid=renamed2')
    s.modify_entry('uid=renamed2,' + PEOPLE, [('replace', 'description', ['after rename'])])
    s.add_entry('ou=sub,' + PEOPLE, {'objectClass': ['organizationalUnit'], 'ou': ['sub']})
    s.add_entry('uid=inner,ou=sub,' + PEOPLE, {'objectClass': ['account'], 'uid': ['inner']})
    s.modrdn('ou=sub,' + PEOPLE, 'ou=sub', newsuperior='ou=moved,' + SUFFIX)
    s.delete(person_dn(3))


@test(timeout=120)
def test_load_persist_and_subjects(tmp):
    s = Slapd(tmp)
    s.add_people(40)
    n = N.NatsServer(tmp)
    d = start(tmp, s, n)
    msgs = loaded(n.url)
    hs = hellos(msgs)
    assert len(hs) == 2 and all(h['reload'] is True for h in hs), hs
    assert len({h['epoch'] for h in hs}) == 1, hs
    assert_model_equals_server(check_stream(msgs), s, bind='reader')

    persist_changes(s)
    want = len(s.search(bind='reader'))
    N.wait_stream(n.url, lambda m: check_stream(m).entries and len(check_stream(m).entries) == want
                  and any(x['type'] == 'delete' for x in m), 30, 'persist changes in the stream')
    msgs = N.tail(n.url)
    assert_model_equals_server(check_stream(msgs), s, bind='reader')
    # A consumer may subscribe to one type alone.
    renames = N.tail(n.url, type='rename')
    assert renames and all(m['type'] == 'rename' for m in renames), renames
    assert len(renames) == sum(1 for m in msgs if m['type'] == 'rename')
    assert d.stop() == 0, d.stderr()
    assert d.marker_exists()


@test(timeout=150)
def test_clean_and_crash_restart(tmp):
    s = Slapd(tmp)
    s.add_people(20)
    n = N.NatsServer(tmp)
    d = start(tmp, s, n)
    msgs = loaded(n.url)
    epoch = hellos(msgs)[0]['epoch']
    assert d.stop() == 0, d.stderr()

    # Clean restart: same epoch, reload false, new hello ids, no repeats.
    s.modify_entry(person_dn(4), [('replace', 'mail', ['while-stopped@example.com'])])
    d = start(tmp, s, n)
    msgs = N.wait_stream(n.url, lambda m: len(N.refresh_dones(m, epoch)) >= 4, 30, 'second run done')
    hs = hellos(msgs)
    assert len(hs) == 4 and [h['reload'] for h in hs[2:]] == [False, False], hs
    assert all(h['epoch'] == epoch for h in hs), hs
    assert sum(1 for m in msgs if m['type'] == 'add') == len(s.search(bind='reader')), 'adds repeated'
    assert_model_equals_server(check_stream(msgs), s, bind='reader')

    # Crash: no marker; the next run has a new epoch and a full snapshot.
    d.kill_group()
    d.wait(10)
    assert not d.marker_exists()
    s.delete(person_dn(5))
    d = start(tmp, s, n)
    msgs = N.wait_stream(n.url, lambda m: len(hellos(m)) >= 6 and
                         len(N.refresh_dones(m, hellos(m)[-1]['epoch'])) >= 2, 30, 'reload done')
    hs = hellos(msgs)
    new = hs[-1]['epoch']
    assert new != epoch and all(h['reload'] is True and h['epoch'] == new for h in hs[-2:]), hs
    assert_model_equals_server(check_stream(msgs), s, bind='reader')
    assert d.stop() == 0, d.stderr()


@test(timeout=90)
def test_pickle_format(tmp):
    s = Slapd(tmp)
    s.add_people(10)
    n = N.NatsServer(tmp)
    d = start(tmp, s, n, fmt='pickle', processes=3)
    msgs = loaded(n.url, workers=1)
    assert all(isinstance(m['event'], dict) for m in msgs)
    adds = [m['event'] for m in msgs if m['type'] == 'add']
    assert adds and isinstance(next(iter(adds[0]['attrs'].values()))[0], bytes), adds[0]
    assert d.stop() == 0, d.stderr()


@test(timeout=150)
def test_nats_restart_and_outage(tmp):
    s = Slapd(tmp)
    s.add_people(20)
    n = N.NatsServer(tmp)
    d = start(tmp, s, n)
    loaded(n.url)
    ch = Changer(s, 150)
    ch.start()
    time.sleep(0.5)
    n.stop()                # a restart
    n.start()
    time.sleep(0.5)
    n.kill()                # down for a few seconds
    time.sleep(3)
    assert d.alive(), d.stderr()
    n.start()
    ch.join(60)
    assert ch.error is None, ch.error
    settled(n.url, s)
    assert d.alive(), d.stderr()
    assert 'reconnected' in d.stderr(), d.stderr()
    assert d.stop() == 0, d.stderr()


@test(timeout=90)
def test_durable_consumer_restarts(tmp):
    s = Slapd(tmp)
    s.add_people(30)
    n = N.NatsServer(tmp)
    d = start(tmp, s, n)
    total = len(loaded(n.url))
    first = N.tail(n.url, durable='reader1', count=10)
    assert len(first) == 10
    rest = N.tail(n.url, durable='reader1')
    seqs = [m['stream_seq'] for m in first + rest]
    assert seqs == list(range(1, total + 1)), seqs
    assert d.alive()
    assert d.stop() == 0, d.stderr()


class StoredEvents(threading.Thread):
    """A JetStream push consumer of the new messages of one subject, in
    NATS's text protocol: the arrival time and payload of each message the
    stream delivers (it delivers what it stored)."""

    def __init__(self, port, subject):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(('127.0.0.1', port))
        self.got = []
        self.created = threading.Event()    # JetStream answered the consumer's creation
        config = {'stream_name': 'LDAPFEED', 'config': {
            'deliver_subject': 'lat.deliver', 'ack_policy': 'none', 'deliver_policy': 'new',
            'filter_subject': subject}}
        body = json.dumps(config).encode()
        self.sock.sendall(b'CONNECT {"verbose":false,"headers":true}\r\nSUB lat.deliver 1\r\nSUB lat.created 2\r\n'
                          b'PUB $JS.API.CONSUMER.CREATE.LDAPFEED lat.created %d\r\n%s\r\nPING\r\n'
                          % (len(body), body))
        self.start()

    def run(self):
        f = self.sock.makefile('rb')
        for line in f:
            if line.startswith(b'PING'):
                self.sock.sendall(b'PONG\r\n')
            elif line.startswith((b'MSG', b'HMSG')):
                t, parts = time.monotonic(), line.split()
                data = f.read(int(parts[-1]) + 2)[:-2]
                if line.startswith(b'HMSG'):
                    data = data[int(parts[-2]):]
                if parts[1] == b'lat.created':
                    assert b'"error"' not in data, data
                    self.created.set()
                elif data:
                    self.got.append((t, json.loads(data)))


@test(timeout=90)
def test_persist_latency(tmp):
    """One change at a time: each is in the stream within milliseconds of
    the server's answer, not after the worker's next idle wake-up."""
    s = Slapd(tmp)
    s.add_people(20)
    n = N.NatsServer(tmp)
    d = start(tmp, s, n, processes=3)
    loaded(n.url, workers=1)
    c = StoredEvents(n.port, 'ldapfeed.modify')
    wait_until(c.created.is_set, 30, 'the test consumer to be created')
    lat = []
    for i in range(9):
        s.modify_entry(person_dn(i), [('replace', 'description', ['latency %d' % i])])
        t = time.monotonic()
        wait_until(lambda: len(c.got) > i, 30, 'modify %d in the stream' % i, interval=0.002)
        lat.append(c.got[i][0] - t)
        time.sleep(0.05)
    lat.sort()
    # Generous for a loaded machine: a change used to wait for the worker's
    # one-second idle poll.
    assert lat[len(lat) // 2] < 0.5, lat
    assert d.stop() == 0, d.stderr()


@test(timeout=120)
def test_startup_failures(tmp):
    s = Slapd(tmp)
    s.add_people(3)
    # Unreachable: 69, nothing changed.
    d = start(tmp, s, 'nats://127.0.0.1:%d' % free_port())
    assert d.wait(30) == 69, d.stderr()
    assert not os.path.exists(os.path.join(tmp, 'data', 'data.mdb'))
    # A wrong token: 77.
    n = N.NatsServer(tmp, token='s3cret')
    bad = write_secret(os.path.join(tmp, 'bad.token'), 'wrong\n')
    d = start(tmp, s, n, keyfile=bad)
    assert d.wait(30) == 77, d.stderr()
    good = write_secret(os.path.join(tmp, 'good.token'), 's3cret\n')
    d = start(tmp, s, n, keyfile=good, extra=['--nats-subject', 'other'])
    N.wait_stream(n.url, lambda m: len(m) >= 2, 30, 'a run on subjects other.>', prefix='other',
                  token_file=good)
    assert d.stop() == 0, d.stderr()
    # The stream LDAPFEED now takes other.> only: 78 for ldapfeed.<type>.
    d = start(tmp, s, n, keyfile=good)
    assert d.wait(30) == 78, d.stderr()
    assert 'does not take the subjects' in d.stderr(), d.stderr()
    # A server without JetStream is no stream at all: 78 too.
    assert os.path.exists(os.path.join(tmp, 'marker'))


if __name__ == '__main__':
    main()
