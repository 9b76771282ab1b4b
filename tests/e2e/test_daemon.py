"""End-to-end tests of the daemon's body (doc/processes.md; ldapfeed.8,
OPTIONS, SIGNALS and EXIT STATUS; doc/events.md, "The connection"): the
process budget and the hello messages over every consumer family, both
formats and both handshake schemes; orderly shutdown from SIGTERM (or
SIGINT) to any process, SIGHUP; SIGKILL of any process; a consumer whose
accept queue is full; every startup failure with its exit status, its
one-line reason and nothing changed; the startup barrier when a party dies
before arriving; SASL EXTERNAL over ldapi; StartTLS and ldaps:// (following
across a slapd restart, an untrusted certificate refused), StartTLS refused.

Workers are told apart from the reader by SO_PEERCRED on the consumer's
unix-socket connections (the harness keeps those connections private)."""

import hashlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F403
import harness  # noqa: E402
from multiprocessing.connection import Connection, Listener, answer_challenge, deliver_challenge  # noqa: E402
from modern_listener import ModernListener  # noqa: E402

HELLO_FIELDS = ('type', 'worker', 'workers', 'format', 'version', 'epoch', 'reload')


# ---------------------------------------------------------------- helpers

def expected_workers(n):
    """W for `--processes n`, computed from our CPUs as doc/processes.md, "The
    process budget", says."""
    cpus = len(os.sched_getaffinity(0))
    budget = cpus if n == 0 else (cpus + n if n < 0 else n)
    return max(1, budget - 2)


_version = []


def daemon_version():
    """The version `ldapfeed -V` prints (what hello's `version` must say)."""
    if not _version:
        binary = harness.ldapfeed_binary()
        if not os.access(binary, os.X_OK):
            raise Skip('ldapfeed binary not built (%s)' % binary)
        out = subprocess.run([binary, '-V'], capture_output=True, timeout=10).stdout.decode().split()
        assert out, 'ldapfeed -V printed nothing'
        _version.append(out[-1])
    return _version[0]


def check_hellos(con, workers, fmt, reload, what=''):
    """Wait for `workers` connections each opened by a hello, and check every
    hello (doc/events.md, "hello") on a consumer that served this one run
    only."""
    wait_until(lambda: con.connections >= workers and
               all(len(msgs) >= 1 for msgs in con.per_connection().values()),
               10, '%s: %d connections, each with a hello' % (what, workers))
    per = con.per_connection()
    assert len(per) == workers, '%s: %d connections for W=%d' % (what, len(per), workers)
    firsts = [msgs[0] for _, msgs in sorted(per.items())]
    for h in firsts:
        assert isinstance(h, dict) and h.get('type') == 'hello', '%s: first message %r is no hello' % (what, h)
        missing = [f for f in HELLO_FIELDS if f not in h]
        assert not missing, '%s: hello lacks %s: %r' % (what, missing, h)
        assert h['workers'] == workers, '%s: hello says workers=%r, W is %d' % (what, h['workers'], workers)
        assert h['format'] == fmt, '%s: hello says format=%r, not %r' % (what, h['format'], fmt)
        assert h['version'] == daemon_version(), '%s: hello version %r, ldapfeed -V says %r' % (
            what, h['version'], daemon_version())
        assert h['reload'] is reload, '%s: hello reload=%r, expected %r' % (what, h['reload'], reload)
    assert sorted(h['worker'] for h in firsts) == list(range(workers)), \
        '%s: worker indices %r' % (what, sorted(h['worker'] for h in firsts))
    assert len(con.hellos()) == workers, '%s: %d hellos for W=%d' % (what, len(con.hellos()), workers)
    return firsts


def reader_pid(d, con):
    """The supervisor's child that is not connected to the consumer."""
    workers = set(con.connection_pids().values())
    rest = [p for p in d.children() if p not in workers]
    assert len(rest) == 1, 'children %r, workers %r: cannot tell the reader' % (d.children(), sorted(workers))
    return rest[0]


def roomy(address, family=None, authkey=None):
    """The stock Listener with a deep accept queue.  Tests about something
    else use it when W >= 3, so that the accept queue of the stock default
    (backlog 1) is covered by consumer_backlog_full alone."""
    return Listener(address, family=family, authkey=authkey, backlog=16)


def error_lines(text):
    return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith('usage:')]


def startup_failure(problems, label, code, culprits, datadir, marker, limit=15, **kw):
    """Start a daemon that must fail to start: exit `code` within `limit` s,
    one line on stderr naming every string in `culprits` (case-folded),
    store and marker untouched, no process of the instance left.  Appends
    what is wrong to `problems` (so one test reports every case)."""
    before = store_snapshot(datadir, marker)
    t0 = time.monotonic()
    d = Daemon(datadir=datadir, marker=marker, **kw)
    try:
        rc = d.wait(limit)
    except AssertionError as e:
        problems.append('%s: no exit within %ds: %s' % (label, limit, e))
        return d
    took = time.monotonic() - t0
    err = d.stderr()
    lines = error_lines(err)
    out = []
    if rc != code:
        out.append('exit %s, expected %d' % (rc, code))
    if len(lines) != 1:
        out.append('%d error lines, expected exactly one' % len(lines))
    if not any(all(c.lower() in ln.lower() for c in culprits) for ln in lines):
        out.append('no line names %r' % (culprits,))
    after = store_snapshot(datadir, marker)
    if after['marker'] != before['marker']:
        out.append('marker changed: %r -> %r' % (before['marker'], after['marker']))
    if after['files'] != before['files']:
        out.append('data dir changed: %r -> %r' % (before['files'], after['files']))
    left = set(group_members(d.pid)) | set(instance_procs(datadir))
    if left:
        out.append('processes left behind: %r' % sorted(left))
    if out:
        problems.append('%s (%.1fs): %s\n    stderr: %s' % (label, took, '; '.join(out),
                                                          '\n            '.join(err.splitlines()[:6])))
    else:
        note('%s: exit %d in %.2fs: %s' % (label, rc, took, lines[0]))
    return d


def assert_no_problems(problems):
    assert not problems, '%d case(s) failed:\n  %s' % (len(problems), '\n  '.join(problems))


# ---------------------------------------------------------------- hellos

@test
def hellos_process_budgets(tmp):
    # Scenario: --processes 0, 3, 5, -1 (and -64, beyond the CPU count) give W = max(1, P-2) workers as
    # doc/processes.md, "The process budget", computes P from sched_getaffinity; each worker sends one hello (index
    # 0..W-1, workers=W, format, version, reload=true on a first run); the supervisor has exactly 1 + W children;
    # SIGTERM -> exit 0.
    s = Slapd(tmp)
    s.add_people(3)
    for n, (p, fmt) in enumerate([(0, 'pickle'), (3, 'json'), (5, 'pickle'), (-1, 'json'), (-64, 'pickle')]):
        w = expected_workers(p)
        con = Consumer(tmp, fmt=fmt, name='c%d' % n, listener_factory=roomy)
        d = Daemon(tmp, s, con, processes=p, datadir=os.path.join(tmp, 'data%d' % n),
                   marker=os.path.join(tmp, 'marker%d' % n))
        what = '--processes %d (W=%d, %s)' % (p, w, fmt)
        check_hellos(con, w, fmt, True, what)
        assert len(d.children()) == 1 + w, '%s: children %r' % (what, d.children())
        con.wait_refresh_done()
        assert len(con.messages('add')) == len(s.base_dns()) + 3, (what, len(con.messages('add')))
        assert d.stop() == 0, (what, d.stderr())
        assert con.connections == w, (what, con.connections)
        note('%s: ok' % what)


def _listener_modern(address, family=None, authkey=None):
    return ModernListener(address, family=family, authkey=authkey, backlog=16)


@test(timeout=90)
def hellos_families_formats_handshakes(tmp):
    # Scenario: for each consumer family (unix path, abstract @name, 127.0.0.1:port, [::1]:port), each
    # format (pickle, json) and each listener (stock Listener: legacy HMAC-MD5 challenge; ModernListener:
    # the 3.12 {sha256} challenge), W=2 workers authenticate, send their hellos and the full load; a second
    # run resuming the store says reload=false; SIGTERM -> exit 0 each time.
    s = Slapd(tmp)
    s.add_people(4)
    total = len(s.base_dns()) + 4
    w = expected_workers(4)
    families = ['unix', 'abstract', 'inet', 'inet6']
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        probe.bind(('::1', 0))
        probe.close()
    except OSError as e:
        note('no IPv6 loopback (%s): [::1] skipped' % e)
        families.remove('inet6')
    n = 0
    for fam in families:
        for listener in ('stock', 'modern'):
            for fmt in ('pickle', 'json'):
                n += 1
                what = '%s/%s/%s' % (fam, listener, fmt)
                kw = {'listener_factory': _listener_modern} if listener == 'modern' else {}
                con = Consumer(tmp, family=fam, fmt=fmt, name='c%d' % n, **kw)
                datadir, marker = os.path.join(tmp, 'data%d' % n), os.path.join(tmp, 'marker%d' % n)
                d = Daemon(tmp, s, con, processes=4, datadir=datadir, marker=marker)
                check_hellos(con, w, fmt, True, what)
                con.wait_refresh_done()
                assert len(con.messages('add')) == total, (what, len(con.messages('add')))
                assert con.errors == [], (what, con.errors)
                assert d.stop() == 0, (what, d.stderr())
                if (fmt == 'json' and listener == 'modern') or fam == 'unix':
                    # a second run resumes: reload=false, nothing re-sent
                    con2 = Consumer(tmp, family=fam, fmt=fmt, name='c%d-again' % n, **kw)
                    d2 = Daemon(tmp, s, con2, processes=4, datadir=datadir, marker=marker)
                    check_hellos(con2, w, fmt, False, what + ' (resumed)')
                    con2.wait_refresh_done()
                    assert con2.messages('add') == [], (what, con2.messages('add')[:3])
                    assert d2.stop() == 0, (what, d2.stderr())
                    con2.close()
                con.close()
                note('%s: ok' % what)


# ---------------------------------------------------------------- orderly shutdown

def _sigterm_case(tmp, target):
    s = Slapd(tmp)
    people = 'ou=people,' + s.suffix
    s.add_people(20)
    # a clean first run, so that a marker exists to be deleted
    con0 = Consumer(tmp, name='c0')
    d0 = Daemon(tmp, s, con0, processes=4)
    con0.wait_refresh_done()
    assert d0.stop() == 0 and d0.marker_exists(), d0.stderr()

    con = Consumer(tmp, name='c1')
    d = Daemon(tmp, s, con, processes=4)
    w = expected_workers(4)
    check_hellos(con, w, 'pickle', False, 'second run')
    # the supervisor deletes it once it sees the barrier open (that it does so before any event flows is
    # marker_deleted_before_events_flow's business)
    wait_until(lambda: not d.marker_exists(), 10, 'the marker to go while the daemon runs')
    con.wait_refresh_done()
    workers = con.worker_pids()
    reader = reader_pid(d, con)
    children = d.children()
    # changes, with the consumer not reading: events pile up in sockets, workers and pipes
    con.pause()
    s.add_people(200, start=1000, extra=lambda i: {'description': 'x' * 2000})
    s.replace('uid=user00001,' + people, 'description', 'changed')
    s.modrdn('uid=user00002,' + people, 'uid=renamed')
    s.delete('uid=user00003,' + people)
    pid = {'supervisor': d.pid, 'reader': reader, 'worker': workers[w - 1]}[target]
    os.kill(pid, signal.SIGTERM)
    # The reader must end first, the workers then drain what they hold.  With the consumer paused the
    # reader can end only if its pipes take the backlog (they are enlarged to 1 MiB): give it 5 s, then
    # let the consumer read in any case, and check the order of the exits from /proc.
    gone = {}

    def track():
        for p in children:
            if p not in gone and not pid_alive(p):
                gone[p] = time.monotonic()
        return reader in gone
    try:
        wait_until(track, 5, 'the reader to exit with the consumer paused')
    except AssertionError as e:
        note('%s: resuming the consumer anyway' % e)
    con.resume()
    wait_until(lambda: track() and len(gone) == len(children), 30, 'every child to exit')
    late = [p for p in workers.values() if gone[p] < gone[reader]]
    assert not late, 'workers %r exited before the reader (doc/processes.md, "Orderly shutdown")' % late
    rc = d.wait(30)
    assert rc == 0, 'SIGTERM to the %s: exit %s\n%s' % (target, rc, d.stderr())
    assert d.marker_exists(), 'no marker after a clean shutdown'
    assert not [p for p in children + [d.pid] if pid_alive(p)], 'processes left'
    assert group_members(d.pid) == []
    con.wait_closed()
    assert set(con.closed.values()) == {'eof'}, con.closed
    assert con.errors == []
    # every event made before the stop arrived: a resumed run sends only what the reader had not seen,
    # and the consumer's copy equals the server
    con2 = Consumer(tmp, name='c2')
    d2 = Daemon(tmp, s, con2, processes=4)
    check_hellos(con2, w, 'pickle', False, 'resumed run')
    con2.wait_refresh_done()
    m = Model()
    for c in (con0, con, con2):
        m.apply_records(c.records())
    assert_model_equals_server(m, s, bind='reader')
    assert m.anomalies == [], m.anomalies
    # nothing twice: each new person was added once over the two later runs
    adds = [e['dn'] for c in (con, con2) for e in c.messages('add')]
    dup = sorted(dn for dn in set(adds) if adds.count(dn) > 1)
    assert not dup, 'added twice: %r' % dup[:5]
    got1 = len(con.events())
    note('SIGTERM to the %s: %d events arrived before exit, %d in the resumed run'
         % (target, got1, len(con2.events())))
    assert got1 > 0, 'nothing arrived in the stopped run'
    assert d2.stop() == 0


@test
def sigterm_supervisor(tmp):
    # Scenario: with events in flight (consumer paused), SIGTERM to the supervisor: the reader exits first,
    # the workers drain, exit 0, marker written, no process left; the marker was gone while running; a
    # resumed run completes the copy with no loss and no duplicate.
    _sigterm_case(tmp, 'supervisor')


@test
def sigterm_reader(tmp):
    # Scenario: the same, with SIGTERM sent to the reader: it asks the supervisor to stop everything.
    _sigterm_case(tmp, 'reader')


@test
def sigterm_worker(tmp):
    # Scenario: the same, with SIGTERM sent to one worker: it asks for the orderly shutdown and keeps draining.
    _sigterm_case(tmp, 'worker')


@test
def sigint_and_sighup(tmp):
    # Scenario: SIGHUP to the supervisor is never a shutdown (changes keep flowing); SIGINT is the same
    # orderly shutdown as SIGTERM: exit 0, marker written, every event delivered, nothing left.
    s = Slapd(tmp)
    s.add_people(5)
    con = Consumer(tmp)
    d = Daemon(tmp, s, con, processes=4)
    con.wait_refresh_done()
    children = d.children()
    d.signal(signal.SIGHUP)
    s.add_people(5, start=100)
    wait_until(lambda: len(con.messages('add')) == len(s.search()), 10, 'the adds after SIGHUP')
    assert d.alive() and d.children() == children, 'SIGHUP changed the processes: %r -> %r' % (
        children, d.children())
    s.add_people(50, start=200)
    d.signal(signal.SIGINT)
    assert d.wait(30) == 0, d.stderr()
    assert d.marker_exists() and group_members(d.pid) == []
    con2 = Consumer(tmp, name='c2')
    d2 = Daemon(tmp, s, con2, processes=4)
    con2.wait_refresh_done()
    m = Model()
    m.apply_records(con.records())
    m.apply_records(con2.records())
    assert_model_equals_server(m, s, bind='reader')
    assert d2.stop() == 0


# ---------------------------------------------------------------- SIGKILL

def _sigkill_child_case(tmp, target):
    s = Slapd(tmp)
    s.add_people(10)
    con0 = Consumer(tmp, name='c0', listener_factory=roomy)
    d0 = Daemon(tmp, s, con0, processes=5)
    con0.wait_refresh_done()
    assert d0.stop() == 0 and d0.marker_exists()
    w = expected_workers(5)
    con = Consumer(tmp, name='c1', listener_factory=roomy)
    d = Daemon(tmp, s, con, processes=5)
    check_hellos(con, w, 'pickle', False, 'second run')
    con.wait_refresh_done()
    wait_until(lambda: not d.marker_exists(), 10, 'the marker to go while the daemon runs')
    workers = con.worker_pids()
    reader = reader_pid(d, con)
    children = d.children()
    victim = reader if target == 'reader' else workers[1 % w]
    t0 = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    rc = d.wait(15)
    took = time.monotonic() - t0
    assert rc == 70, 'SIGKILL of the %s: exit %s, expected 70\n%s' % (target, rc, d.stderr())
    assert not d.marker_exists(), 'a marker after a SIGKILLed %s' % target
    assert not [p for p in children if pid_alive(p)] and group_members(d.pid) == [], 'processes left'
    err = d.stderr()
    assert any(re.search(r'signal 9|SIGKILL|killed', ln) and target in ln for ln in err.splitlines()), \
        'no line says the %s was killed:\n%s' % (target, err)
    note('SIGKILL of the %s: exit 70 after %.2fs' % (target, took))
    # the next start does not trust the store: a full reload, seq from 1
    con2 = Consumer(tmp, name='c2', listener_factory=roomy)
    d2 = Daemon(tmp, s, con2, processes=5)
    check_hellos(con2, w, 'pickle', True, 'run after the SIGKILL')
    con2.wait_refresh_done()
    adds = con2.messages('add')
    assert len(adds) == len(s.search()), (len(adds), len(s.search()))
    assert min(a['seq'] for a in adds) == 1, 'seq does not restart at 1 after the wipe: %r' % \
        sorted(a['seq'] for a in adds)[:5]
    m = Model.from_consumer(con2)
    assert_model_equals_server(m, s, bind='reader')
    assert d2.stop() == 0


@test
def sigkill_worker(tmp):
    # Scenario: SIGKILL of one worker: the others stop, exit 70, no marker, nothing left; the next start
    # wipes the store (hello reload=true, the whole directory again, seq from 1).
    _sigkill_child_case(tmp, 'worker')


@test
def sigkill_reader(tmp):
    # Scenario: SIGKILL of the reader: the workers stop, exit 70, no marker; the next start reloads fully.
    _sigkill_child_case(tmp, 'reader')


@test
def sigkill_supervisor(tmp):
    # Scenario: SIGKILL of the supervisor: every child (reader and workers) exits by itself within two
    # seconds (checked in /proc), the consumer connections close, no marker; the next start reloads.
    s = Slapd(tmp)
    s.add_people(5)
    con = Consumer(tmp, name='c1', listener_factory=roomy)
    d = Daemon(tmp, s, con, processes=5)
    w = expected_workers(5)
    check_hellos(con, w, 'pickle', True, 'first run')
    con.wait_refresh_done()
    children = d.children()
    assert len(children) == 1 + w, children
    os.kill(d.pid, signal.SIGKILL)
    t0 = time.monotonic()
    wait_until(lambda: not [p for p in children if pid_alive(p)], 2,
               'the children of a SIGKILLed supervisor to exit (left: %r)' % children)
    note('children gone %.2fs after the SIGKILL' % (time.monotonic() - t0))
    assert d.wait(5) == -signal.SIGKILL
    con.wait_closed(timeout=5)
    assert not d.marker_exists()
    con2 = Consumer(tmp, name='c2', listener_factory=roomy)
    d2 = Daemon(tmp, s, con2, processes=5)
    check_hellos(con2, w, 'pickle', True, 'run after the SIGKILL')
    con2.wait_refresh_done()
    assert len(con2.messages('add')) == len(s.search())
    assert d2.stop() == 0


@test
def sigkill_supervisor_datadir_busy_while_a_child_lives(tmp):
    # Scenario: SIGKILL of the supervisor while its reader cannot finish (SIGSTOPped: a reader slow to
    # shut down): a second ldapfeed on the same data dir is refused (78, "in use") as long as the old
    # reader lives, store and marker untouched; once the reader has exited, the next start reloads.
    s = Slapd(tmp)
    s.add_people(5)
    con = Consumer(tmp, name='c1')
    d = Daemon(tmp, s, con, processes=3)
    check_hellos(con, 1, 'pickle', True, 'first run')
    con.wait_refresh_done()
    reader = reader_pid(d, con)
    os.kill(reader, signal.SIGSTOP)
    try:
        os.kill(d.pid, signal.SIGKILL)
        assert d.wait(5) == -signal.SIGKILL
        before = store_snapshot(d.datadir, d.marker)
        con2 = Consumer(tmp, name='c2')
        d2 = Daemon(tmp, s, con2, processes=3, datadir=d.datadir, marker=d.marker)
        rc = d2.wait(15)
        assert rc == 78 and 'in use' in d2.stderr(), (rc, d2.stderr())
        assert store_snapshot(d.datadir, d.marker) == before
        assert con2.hellos() == []
    finally:
        os.kill(reader, signal.SIGCONT)
    wait_until(lambda: not pid_alive(reader), 10, 'the old reader to exit')
    con3 = Consumer(tmp, name='c3')
    d3 = Daemon(tmp, s, con3, processes=3, datadir=d.datadir, marker=d.marker)
    check_hellos(con3, 1, 'pickle', True, 'run after the old reader exited')
    con3.wait_refresh_done()
    assert len(con3.messages('add')) == len(s.search())
    assert d3.stop() == 0


class GatedListener:
    """multiprocessing.connection.Listener (default backlog 1) that accepts
    nothing until .gate is set: a consumer busy elsewhere."""

    def __init__(self, address, family=None, authkey=None, backlog=1):
        self._l = Listener(address, family=family, authkey=authkey, backlog=backlog)
        self.address = self._l.address
        self.gate = threading.Event()

    def accept(self):
        self.gate.wait()
        return self._l.accept()

    def close(self):
        self.gate.set()
        self._l.close()


@test
def consumer_backlog_full(tmp):
    # Scenario: a stock Listener (backlog 1, the multiprocessing default) whose owner is slow to accept:
    # W=4 workers connect at once over a unix socket, so most find the accept queue full.  Python's Client
    # would wait for room; so must the workers: once the consumer accepts, all 4 hellos arrive and the daemon
    # runs (no startup failure).
    s = Slapd(tmp)
    s.add_people(3)
    gated = []

    def factory(address, family=None, authkey=None):
        gated.append(GatedListener(address, family=family, authkey=authkey))
        return gated[0]
    con = Consumer(tmp, listener_factory=factory)
    w = expected_workers(6)
    d = Daemon(tmp, s, con, processes=6)
    try:
        # Accept nothing until every child has been asleep for two polls in a row (the reader at the
        # barrier, the queued workers in the handshake, the others blocked on or retrying connect(): none
        # is on its way to connect()), or a child has given up.
        seen, calm = set(), [0]

        def ready():
            kids = d.children()
            if not d.alive() or seen - set(kids):
                return True
            seen.update(kids)
            asleep = len(kids) == 1 + w and all((harness._proc_stat(p) or ('?',))[0] == 'S' for p in kids)
            calm[0] = calm[0] + 1 if asleep else 0
            return calm[0] >= 2
        try:
            wait_until(ready, 5, 'every child to wait')
        except AssertionError as e:
            note('%s: accepting anyway' % e)
    finally:
        gated[0].gate.set()
    t0 = time.monotonic()
    wait_until(lambda: len(con.hellos()) >= w or not d.alive(), 10, 'the hellos or the end of the daemon')
    note('gate opened; %d hellos, daemon %s after %.2fs' % (len(con.hellos()), 'running' if d.alive() else
                                                          'exited %s' % d.returncode, time.monotonic() - t0))
    assert d.alive(), 'the workers did not wait for room in the accept queue: exit %s\n%s' % (
        d.returncode, d.stderr())
    check_hellos(con, w, 'pickle', True, 'W=%d through a backlog of 1' % w)
    con.wait_refresh_done()
    assert d.alive() and d.stop() == 0, d.stderr()


def frozen_start(tmp, s, processes=4):
    """Start a daemon whose supervisor is SIGSTOPped as soon as it sleeps after
    its forks (it has arrived at the barrier), then let the consumer accept:
    the children go on without the supervisor looking.  Returns (daemon,
    consumer, thaw) where thaw() sends SIGCONT (also done at teardown)."""
    gated = []

    def factory(address, family=None, authkey=None):
        gated.append(GatedListener(address, family=family, authkey=authkey, backlog=16))
        return gated[0]
    con = Consumer(tmp, listener_factory=factory)
    w = expected_workers(processes)
    d = Daemon(tmp, s, con, processes=processes)
    state = {'stopped': False}

    def thaw():
        gated[0].gate.set()
        if state['stopped']:
            state['stopped'] = False
            try:
                os.kill(d.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    class _Thaw:
        def _teardown(self):
            thaw()
    harness._register(_Thaw())
    def waiting():
        # asleep in its main loop (sigsuspend, poll...), not on the barrier's lock (a futex)
        try:
            with open('/proc/%d/wchan' % d.pid) as f:
                wchan = f.read()
        except OSError:
            wchan = ''
        return len(d.children()) == 1 + w and (harness._proc_stat(d.pid) or ('?',))[0] == 'S' and \
            'futex' not in wchan
    wait_until(waiting, 10, 'the supervisor to sleep after its forks')
    os.kill(d.pid, signal.SIGSTOP)
    state['stopped'] = True
    gated[0].gate.set()
    return d, con, thaw


@test
def marker_deleted_before_events_flow(tmp):
    # Scenario: after a clean run (marker present), a run whose supervisor is slow to notice that the
    # barrier opened (SIGSTOPped once it arrived): the reader resumes and events reach the consumer.  The
    # marker must already be gone then (doc/store.md, "The clean-shutdown marker": it exists only while the store
    # matches what the consumer was sent; after a crash from here on the next start would trust a store that ran
    # ahead of the consumer).
    s = Slapd(tmp)
    s.add_people(3)
    con0 = Consumer(tmp, name='c0')
    d0 = Daemon(tmp, s, con0, processes=4)
    con0.wait_refresh_done()
    assert d0.stop() == 0 and d0.marker_exists()
    s.add_people(5, start=100)
    d, con, thaw = frozen_start(tmp, s)
    # A daemon whose children wait for the supervisor sends nothing meanwhile: give them 3 s to show it.
    try:
        wait_until(lambda: con.messages('add'), 3, 'an add while the supervisor is stopped')
        flowed = True
    except AssertionError:
        flowed = False
    if flowed:
        present = d.marker_exists()
        thaw()
        assert not present, 'events reached the consumer while the clean-shutdown marker still existed (the ' \
            'supervisor deletes it only when it gets to run after the barrier opened)'
    else:
        note('nothing flowed while the supervisor was stopped: the children wait for it')
        thaw()
        wait_until(lambda: con.messages('add'), 10, 'an add once the supervisor runs')
        assert not d.marker_exists(), 'events reached the consumer while the marker still existed'
    assert d.stop() == 0


@test
def child_dies_before_supervisor_sees_release(tmp):
    # Scenario: the supervisor is slow (SIGSTOPped after it arrived at the barrier): the others arrive, the
    # barrier opens, events flow, and a worker dies (its consumer connection is shut) before the supervisor
    # has noticed the release.  Once the supervisor runs again it must treat that death like any death after
    # startup: stop the others, exit 70, no marker, nothing left (never go on with a worker short).
    s = Slapd(tmp)
    s.add_people(5)
    w = expected_workers(4)
    d, con, thaw = frozen_start(tmp, s)
    try:
        con.wait_refresh_done(timeout=3)
    except AssertionError:
        # the children wait for the supervisor: this race cannot happen
        note('nothing flowed while the supervisor was stopped: the children wait for it')
        thaw()
        con.wait_refresh_done()
        assert d.stop() == 0
        return
    pids = con.worker_pids()
    victim = pids[w - 1]
    con.close_connection(worker_connection(con, w - 1))
    wait_until(lambda: not pid_alive(victim), 10, 'the worker to exit after losing its consumer')
    thaw()
    try:
        rc = d.wait(10)
    except AssertionError:
        raise AssertionError('the supervisor went on with worker %d dead (it died before the supervisor saw the '
                             'barrier open): still running 10 s later, children %r\n%s'
                             % (w - 1, d.children(), d.stderr())) from None
    assert rc == 70, 'exit %s' % rc
    assert not d.marker_exists()
    assert group_members(d.pid) == []


def worker_connection(con, index):
    for i, msgs in con.per_connection().items():
        if msgs and isinstance(msgs[0], dict) and msgs[0].get('type') == 'hello' and msgs[0].get('worker') == index:
            return i
    raise AssertionError('no connection of worker %d' % index)


# ---------------------------------------------------------------- startup failures

@test(timeout=120)
def startup_fail_consumer(tmp):
    # Scenario: consumer not listening (unix path, inet port: 69), consumer with another key (stock
    # Listener refuses us: 77), consumer that welcomes anything but fails our challenge (77): each exits
    # with its code, one line naming the consumer, marker and store untouched, no process left, < 15 s;
    # and once more without a marker: the untrusted store is still left as it was (doc/processes.md, "Startup and
    # the barrier"; doc/store.md, "The data directory").
    s, datadir, marker = prepared_store(tmp)
    problems = []
    con = Consumer(tmp, name='good')
    nowhere = os.path.join(tmp, 'nobody-listens.sock')
    startup_failure(problems, 'consumer not listening (unix)', 69, [nowhere], datadir, marker,
                    slapd=s, consumer=con, processes=4, output=nowhere)
    port = free_port()   # nothing listens there
    startup_failure(problems, 'consumer not listening (inet)', 69, ['127.0.0.1:%d' % port], datadir, marker,
                    slapd=s, consumer=con, processes=4, output='127.0.0.1:%d' % port)
    other = Consumer(tmp, name='otherkey')           # the consumer has another key than ours
    startup_failure(problems, 'consumer refuses our key', 77, [other.address], datadir, marker,
                    slapd=s, consumer=other, processes=4, keyfile=con.keyfile)
    assert other.hellos() == [] and other.connections == 0
    # the other direction: the listener welcomes our answer, but answers our challenge with another key
    liar = Consumer(tmp, name='liar', listener_factory=lambda a, family=None, authkey=None: ModernListener(
        a, family=family, authkey=authkey, backlog=16, welcome_any=True, wrong_key=True))
    startup_failure(problems, 'consumer fails our challenge', 77, [liar.address], datadir, marker,
                    slapd=s, consumer=liar, processes=4)
    assert liar.hellos() == [], 'a hello reached a consumer that failed the challenge'
    # without the marker the store is not trusted, but a failed start still must not wipe it
    os.unlink(marker)
    startup_failure(problems, 'consumer not listening, no marker', 69, [nowhere], datadir, marker,
                    slapd=s, consumer=con, processes=4, output=nowhere)
    assert_no_problems(problems)


@test(timeout=120)
def startup_fail_ldap(tmp):
    # Scenario: LDAP unreachable (69), wrong LDAP password (77), a search base that does not exist (78),
    # a bad filter (64): exit code, one line naming the server / bind DN / base / filter, nothing changed.
    s, datadir, marker = prepared_store(tmp)
    problems = []
    con = Consumer(tmp)
    port = free_port()   # nothing listens there
    url = ldap_url('ldap://127.0.0.1:%d' % port, s.suffix, exts=['bindname=' + s.reader_dn])
    startup_failure(problems, 'LDAP unreachable', 69, ['127.0.0.1:%d' % port], datadir, marker,
                    slapd=s, consumer=con, url=url, password=s.reader_pw)
    startup_failure(problems, 'wrong LDAP password', 77, [s.reader_dn], datadir, marker,
                    slapd=s, consumer=con, password='not-the-password')
    base = 'ou=nowhere,' + s.suffix
    startup_failure(problems, 'search base does not exist', 78, [base], datadir, marker, slapd=s, consumer=con,
                    url=ldap_url(s, base, exts=['bindname=' + s.reader_dn]), password=s.reader_pw)
    startup_failure(problems, 'bad filter', 64, ['(&(cn=a)'], datadir, marker, slapd=s, consumer=con,
                    url=ldap_url(s, s.suffix, filt='(&(cn=a)', exts=['bindname=' + s.reader_dn]),
                    password=s.reader_pw)
    assert con.hellos() == [], 'a hello reached the consumer during failed starts'
    assert_no_problems(problems)


@test
def startup_fail_foreign_datadir(tmp):
    # Scenario: --data-dir holding an unrelated file, and one that looks like slapd's own DB directory
    # (data.mdb, lock.mdb, no ldapfeed.store): exit 78, one line naming the directory, the foreign files
    # byte for byte untouched, the marker kept, no process left.
    s, datadir, marker = prepared_store(tmp)
    problems = []
    con = Consumer(tmp)
    foreign = os.path.join(tmp, 'home')
    os.makedirs(foreign)
    with open(os.path.join(foreign, 'thesis.tex'), 'wb') as f:
        f.write(b'\\documentclass{article} years of work\n')
    startup_failure(problems, 'data dir with a foreign file', 78, [foreign], foreign, marker,
                    slapd=s, consumer=con)
    look = os.path.join(tmp, 'slapd-db-copy')
    os.makedirs(look)
    for name in os.listdir(s.db_dir):
        with open(os.path.join(s.db_dir, name), 'rb') as src, open(os.path.join(look, name), 'wb') as dst:
            dst.write(src.read())
    assert 'data.mdb' in os.listdir(look) and 'ldapfeed.store' not in os.listdir(look)
    # checksum lock.mdb too here: it is not ours, so nothing may touch it
    before = {n: hashlib.sha256(open(os.path.join(look, n), 'rb').read()).hexdigest() for n in os.listdir(look)}
    startup_failure(problems, "slapd's DB dir", 78, [look], look, marker, slapd=s, consumer=con)
    after = {n: hashlib.sha256(open(os.path.join(look, n), 'rb').read()).hexdigest() for n in os.listdir(look)}
    if after != before:
        problems.append("slapd's DB dir: files changed or added: %r -> %r" % (sorted(before), sorted(after)))
    assert con.hellos() == []
    assert_no_problems(problems)


@test
def startup_fail_files(tmp):
    # Scenario: missing password file (66), missing key file (66), empty key file (64): exit code, one line
    # naming the file, nothing changed, no process left.
    s, datadir, marker = prepared_store(tmp)
    problems = []
    con = Consumer(tmp)
    url = ldap_url(s, s.suffix, exts=['bindname=' + s.reader_dn])

    def argv(pwfile=None, keyfile=None):
        out = ['-H', url, '-D', datadir, '-m', marker, '-o', con.address, '-k', keyfile or con.keyfile,
               '-p', '4', '-f']
        return out + ['-y', pwfile or _pwfile()]

    def _pwfile():
        p = os.path.join(tmp, 'pw')
        if not os.path.exists(p):
            write_secret(p, s.reader_pw + '\n')
        return p
    missing_pw = os.path.join(tmp, 'no-such-password-file')
    startup_failure(problems, 'missing password file', 66, [missing_pw], datadir, marker,
                    argv=argv(pwfile=missing_pw))
    missing_key = os.path.join(tmp, 'no-such-key-file')
    startup_failure(problems, 'missing key file', 66, [missing_key], datadir, marker, argv=argv(keyfile=missing_key))
    empty = os.path.join(tmp, 'empty.key')
    open(empty, 'wb').close()
    os.chmod(empty, 0o600)
    startup_failure(problems, 'empty key file', 64, [empty], datadir, marker, argv=argv(keyfile=empty))
    assert con.hellos() == [] and con.connections == 0
    assert_no_problems(problems)


@test
def startup_fail_usage(tmp):
    # Scenario: --processes 1 and 2, malformed URLs, bad consumer addresses: usage error 64 with one line
    # naming the flag's value, before anything is touched (marker and store unchanged, no process left).
    s, datadir, marker = prepared_store(tmp)
    problems = []
    con = Consumer(tmp)
    url = ldap_url(s, s.suffix, exts=['bindname=' + s.reader_dn])
    pw = write_secret(os.path.join(tmp, 'pw'), s.reader_pw + '\n')

    def argv(url=url, output=con.address, processes='4'):
        return ['-H', url, '-D', datadir, '-m', marker, '-o', output, '-k', con.keyfile, '-y', pw,
                '-p', processes, '-f']
    for p in ('1', '2'):
        startup_failure(problems, '--processes %s' % p, 64, ['processes', p], datadir, marker, argv=argv(processes=p))
    startup_failure(problems, '--processes x', 64, ['processes', 'x'], datadir, marker, argv=argv(processes='x'))
    for bad in ('http://127.0.0.1:%d/dc=example,dc=com' % s.port,
                'ldap//127.0.0.1:%d/dc=example,dc=com' % s.port,
                'ldap://127.0.0.1:%d/dc=example,dc=com?cn?nosuchscope' % s.port):
        startup_failure(problems, 'malformed URL %s' % bad, 64, [bad], datadir, marker, argv=argv(url=bad))
    for bad in ('127.0.0.1:99999', '127.0.0.1:0', '[::1:4000', '[::1]:port'):
        startup_failure(problems, 'bad address %s' % bad, 64, [bad], datadir, marker, argv=argv(output=bad))
    # an explicit --output-type inet makes HOST:PORT mandatory
    startup_failure(problems, 'bad inet address', 64, ['localhost:notaport'], datadir, marker,
                    argv=argv(output='localhost:notaport') + ['-t', 'inet'])
    assert con.connections == 0
    assert_no_problems(problems)


# ---------------------------------------------------------------- the barrier

class HangListener:
    """A unix-socket listener that accepts every connection and completes the
    server side of the handshake (legacy challenge, as the stock Listener)
    for all but the connections whose accept order is in `mute` (all of them
    by default): those never get a word, so their worker waits for a
    challenge that never comes.  .pids holds the peers' pids (SO_PEERCRED) in
    accept order, .authenticated the pids that passed the handshake."""

    def __init__(self, path, key=None, mute=None):
        self.path, self.key, self.mute = path, key, mute
        self.pids, self.authenticated, self.errors = [], [], []
        Acceptor(socket.AF_UNIX, path, self._accepted)

    def _accepted(self, c):
        data = c.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize('3i'))
        pid = struct.unpack('3i', data)[0]
        n = len(self.pids)
        self.pids.append(pid)
        if self.mute is None or n in self.mute:
            return
        threading.Thread(target=self._handshake, args=(c, pid), daemon=True).start()

    def _handshake(self, c, pid):
        conn = Connection(os.dup(c.fileno()))
        try:
            deliver_challenge(conn, self.key)
            answer_challenge(conn, self.key)
            self.authenticated.append(pid)
        except Exception as e:     # noqa: BLE001
            self.errors.append(repr(e))


def _barrier_end(d, datadir, marker, before, what, limit=15):
    t0 = time.monotonic()
    rc = d.wait(limit)
    took = time.monotonic() - t0
    assert rc not in (0, None) and rc > 0, '%s: exit %s\n%s' % (what, rc, d.stderr())
    assert group_members(d.pid) == [] and instance_procs(datadir) == [], '%s: processes left' % what
    assert store_snapshot(datadir, marker) == before, '%s: store or marker changed' % what
    note('%s: exit %d %.2fs later; stderr: %s' % (what, rc, took, ' | '.join(d.stderr().splitlines()[:4])))
    return rc, took


@test(timeout=90)
def barrier_worker_dies_before_arriving(tmp):
    # Scenario: the consumer completes the handshake with two of W=3 workers and never answers the third,
    # which therefore cannot arrive at the barrier while the reader and the other workers wait there; that
    # worker is SIGKILLed: the barrier breaks, every process exits at once, the daemon exits non-zero (no
    # hang), no hello is sent, store and marker untouched, nothing left.
    s, datadir, marker = prepared_store(tmp)
    before = store_snapshot(datadir, marker)
    key = b'barrier-key-' + os.urandom(8).hex().encode()
    keyfile = write_secret(os.path.join(tmp, 'barrier.key'), key)
    hang = HangListener(os.path.join(tmp, 'hang.sock'), key=key, mute={1})
    d = Daemon(tmp, s, processes=5, output=hang.path, keyfile=keyfile, datadir=datadir, marker=marker,
               fmt='pickle')
    wait_until(lambda: len(hang.pids) == 3 and len(hang.authenticated) == 2, 10,
               'three workers connected, two authenticated')
    assert hang.errors == [], hang.errors
    assert set(hang.pids) <= set(d.children()), (hang.pids, d.children())
    os.kill(hang.pids[1], signal.SIGKILL)
    rc, took = _barrier_end(d, datadir, marker, before, 'unanswered worker SIGKILLed before the barrier')
    assert took < scaled(5), 'the daemon took %.1fs to give up after a party died' % took
    assert any('worker' in ln and ('9' in ln or 'kill' in ln.lower()) for ln in d.stderr().splitlines()), \
        'no line says a worker was killed:\n%s' % d.stderr()


@test(timeout=90)
def barrier_party_dies_while_others_prepare(tmp):
    # Scenario: the consumer accepts all W=3 connections and answers none, so every worker is still preparing;
    # one is SIGKILLed: the barrier is broken and every process must exit, not only those already waiting at
    # it: the daemon exits non-zero at once (well before the workers' own handshake timeout), store and
    # marker untouched, nothing left.
    s, datadir, marker = prepared_store(tmp)
    before = store_snapshot(datadir, marker)
    hang = HangListener(os.path.join(tmp, 'hang.sock'))
    con = Consumer(tmp)
    d = Daemon(tmp, s, con, processes=5, output=hang.path, datadir=datadir, marker=marker)
    wait_until(lambda: len(hang.pids) == 3, 10, 'three workers connected')
    assert set(hang.pids) <= set(d.children()), (hang.pids, d.children())
    os.kill(hang.pids[1], signal.SIGKILL)
    rc, took = _barrier_end(d, datadir, marker, before, 'worker SIGKILLed while the others prepare')
    assert took < scaled(5), 'the daemon took %.1fs to give up after a party died (the other workers were ' \
        'left in their handshake until it timed out)' % took


@test(timeout=90)
def barrier_reader_dies_before_arriving(tmp):
    # Scenario: the LDAP server accepts the connection but never answers the bind, so the reader cannot
    # arrive while the workers wait at the barrier; SIGKILL of the reader breaks it: non-zero exit promptly,
    # store and marker untouched, nothing left.
    s, datadir, marker = prepared_store(tmp)
    before = store_snapshot(datadir, marker)
    mute = Acceptor(socket.AF_INET, ('127.0.0.1', 0))     # accepts LDAP, never answers
    con = Consumer(tmp, listener_factory=roomy)
    url = ldap_url('ldap://127.0.0.1:%d' % mute.address[1], s.suffix, exts=['bindname=' + s.reader_dn])
    d = Daemon(tmp, s, con, processes=5, url=url, password=s.reader_pw, datadir=datadir, marker=marker)
    w = expected_workers(5)
    wait_until(lambda: con.connections == w and len(mute.conns) >= 1, 10,
               'the workers authenticated and the reader connected')
    assert con.hellos() == [], 'hellos before the barrier opened'
    assert len(d.children()) == 1 + w
    reader = reader_pid(d, con)
    os.kill(reader, signal.SIGKILL)
    rc, took = _barrier_end(d, datadir, marker, before, 'reader SIGKILLed before the barrier')
    assert took < scaled(5), 'the daemon took %.1fs to give up after the reader died' % took
    assert con.hellos() == [], 'hellos were sent although startup failed'
    con.wait_closed()


@test(timeout=90)
def barrier_listener_accepts_some(tmp):
    # Scenario: W=3 workers point at a listener that authenticates only the first connection and leaves the
    # others unanswered; startup cannot complete: the daemon exits non-zero within the deadline, without
    # sending a hello, store and marker untouched, nothing left.
    s, datadir, marker = prepared_store(tmp)
    before = store_snapshot(datadir, marker)
    path = os.path.join(tmp, 'some.sock')
    key = b'k' * 16
    keyfile = write_secret(os.path.join(tmp, 'some.key'), key)
    from multiprocessing.connection import Listener
    lst = Listener(path, family='AF_UNIX', authkey=key)
    got = []

    def accept_one():
        try:
            got.append(lst.accept())
        except Exception as e:     # noqa: BLE001
            got.append(e)
    t = threading.Thread(target=accept_one, daemon=True)
    t.start()

    class _Close:
        def _teardown(self):
            for c in got:
                if hasattr(c, 'close'):
                    c.close()
            lst.close()
    harness._register(_Close())
    d = Daemon(tmp, s, processes=5, output=path, keyfile=keyfile, datadir=datadir, marker=marker, fmt='pickle')
    rc, took = _barrier_end(d, datadir, marker, before, 'listener that accepts one of three', limit=15)
    t.join(1)
    hello = None
    if got and hasattr(got[0], 'poll') and got[0].poll(0):
        try:
            hello = got[0].recv()
        except EOFError:
            pass
    assert hello is None, 'a hello was sent although startup failed: %r' % (hello,)


@test
def barrier_sigterm_during_startup(tmp):
    # Scenario: SIGTERM to the supervisor while the workers hang in the handshake: startup is abandoned,
    # non-zero exit promptly, store and marker untouched, nothing left.
    s, datadir, marker = prepared_store(tmp)
    before = store_snapshot(datadir, marker)
    hang = HangListener(os.path.join(tmp, 'hang.sock'))
    con = Consumer(tmp)
    d = Daemon(tmp, s, con, processes=4, output=hang.path, datadir=datadir, marker=marker)
    wait_until(lambda: len(hang.pids) == expected_workers(4), 10, 'the workers connected')
    d.signal(signal.SIGTERM)
    rc, took = _barrier_end(d, datadir, marker, before, 'SIGTERM during startup')
    assert took < scaled(5), 'the daemon took %.1fs to stop after SIGTERM during startup' % took


# ---------------------------------------------------------------- LDAP binds

@test
def sasl_external_ldapi(tmp):
    # Scenario: SASL EXTERNAL over ldapi:// (peer credentials, no password file): W hellos and the full
    # load arrive; the consumer's copy equals what the EXTERNAL identity sees; SIGTERM -> 0 and a marker.
    s = Slapd(tmp, ldapi=True)
    s.add_people(30)
    con = Consumer(tmp, fmt='json')
    d = Daemon(tmp, s, con, processes=4, bind='external')
    assert d.url.startswith('ldapi://') and 'x-saslmech=EXTERNAL' in d.url and '-y' not in d.cmd
    check_hellos(con, expected_workers(4), 'json', True, 'ldapi EXTERNAL')
    con.wait_refresh_done()
    m = Model.from_consumer(con)
    assert_model_equals_server(m, s, bind='external')
    assert m.anomalies == []
    assert d.stop() == 0 and d.marker_exists(), d.stderr()


def tls_env(ca):
    """ldapfeed's environment trusting only `ca` (libldap reads LDAPTLS_*)."""
    env = dict(os.environ, LDAPTLS_CACERT=ca, LDAPTLS_REQCERT='demand')
    env.pop('LDAPNOINIT', None)
    return env


def tls_sessions(s, since):
    """TLS sessions slapd logged after byte `since` of its log (debug stats)."""
    with open(s.log_path, 'rb') as f:
        f.seek(since)
        return len(re.findall(rb'TLS established', f.read()))


def tls_follow(tmp, s, con, url, extra):
    """Start ldapfeed over TLS (url, extra flags): load, then a modify, a slapd
    restart and another modify all arrive; slapd saw TLS sessions only from it;
    SIGTERM -> 0 and a marker."""
    since = os.path.getsize(s.log_path)
    d = Daemon(tmp, s, con, processes=3, url=url, password=s.reader_pw, extra=extra, env=tls_env(s.ca.cert))
    con.wait_refresh_done()
    assert tls_sessions(s, since) >= 1, 'slapd logged no TLS session for ldapfeed'
    people = [dn for dn in s.search() if dn.startswith('uid=')]
    s.replace(people[0], 'sn', 'Before-Restart')
    wait_until(lambda: any(m.get('type') == 'modify' for m in con.messages()), 10, 'the first modify')
    s.restart()
    s.replace(people[1], 'sn', 'After-Restart')
    wait_until(lambda: len([m for m in con.messages() if m.get('type') == 'modify']) >= 2, 30,
               'the modify after the restart (a reconnect over TLS)')
    assert d.alive(), d.stderr()
    m = Model.from_consumer(con)
    assert_model_equals_server(m, s)
    assert m.anomalies == []
    assert d.stop() == 0 and d.marker_exists(), d.stderr()


@test
def starttls_follows(tmp):
    # Scenario: -Z against a slapd with TLS, trusting its CA through LDAPTLS_CACERT: the load, a modify,
    # a slapd restart (reconnect, StartTLS again) and another modify arrive; slapd logged TLS sessions.
    s = Slapd(tmp, tls=True, debug='stats')
    s.add_people(20)
    tls_follow(tmp, s, Consumer(tmp, fmt='json'), ldap_url(s, s.suffix, exts=['bindname=' + s.reader_dn]),
               ['-Z'])


@test
def ldaps_follows(tmp):
    # Scenario: the same over an ldaps:// URL (TLS from the first byte), no -Z.
    s = Slapd(tmp, tls=True, debug='stats')
    s.add_people(20)
    tls_follow(tmp, s, Consumer(tmp), ldap_url(s.ldaps_url, s.suffix, exts=['bindname=' + s.reader_dn]), [])


@test
def tls_untrusted_certificate(tmp):
    # Scenario: StartTLS and ldaps:// to a server whose certificate comes from a CA ldapfeed does not trust:
    # startup fails with 69, one line naming the server, nothing changed, no hello, nothing left.
    s, datadir, marker = prepared_store(tmp, tls=True)
    other = TestCA(os.path.join(tmp, 'other-ca'))
    problems = []
    con = Consumer(tmp)
    pw = write_secret(os.path.join(tmp, 'tls.pw'), s.reader_pw + '\n')
    startup_failure(problems, 'StartTLS, untrusted CA', 69, ['starttls', '127.0.0.1:%d' % s.port], datadir,
                    marker, slapd=s, consumer=con, extra=['-Z'], env=tls_env(other.cert))
    url = ldap_url(s.ldaps_url, s.suffix, exts=['bindname=' + s.reader_dn])
    startup_failure(problems, 'ldaps, untrusted CA', 69, ['127.0.0.1:%d' % s.ldaps_port], datadir, marker,
                    slapd=s, consumer=con, url=url, extra=['-y', pw], env=tls_env(other.cert))
    assert con.hellos() == []
    assert_no_problems(problems)


@test
def starttls_without_tls(tmp):
    # Scenario: -Z against a slapd without TLS: startup fails with 69, one line naming the server,
    # StartTLS and slapd's diagnostic text, store and marker untouched, no hello sent, no process left.
    s, datadir, marker = prepared_store(tmp)
    problems = []
    con = Consumer(tmp)
    startup_failure(problems, 'StartTLS without TLS', 69, ['starttls', '127.0.0.1:%d' % s.port,
                                                           'unsupported extended operation'], datadir, marker,
                    slapd=s, consumer=con, extra=['-Z'])
    assert con.hellos() == []
    assert_no_problems(problems)


if __name__ == '__main__':
    main()
