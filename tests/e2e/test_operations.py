"""End-to-end tests of ldapfeed as an operator runs it (ldapfeed.8, OPTIONS,
SIGNALS and FILES; doc/processes.md, "Signals"): detaching with a truthful
launcher exit status and a locked pidfile, SIGUSR1 status lines, SIGHUP, the
Prometheus --status-file, what the logs say (and never say) at each
verbosity, and a consumer that drops a worker's connection mid-run."""

import hashlib
import math
import os
import re
import secrets
import signal
import sys
import threading
import time
from multiprocessing.connection import Listener

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F403


# ---------------------------------------------------------------- helpers

def expected_workers(n):
    """W for `--processes n` (doc/processes.md, "The process budget") from the
    CPUs we may run on."""
    cpus = len(os.sched_getaffinity(0))
    budget = cpus if n == 0 else (cpus + n if n < 0 else n)
    return max(1, budget - 2)


def proc_stat(pid):
    """{'state', 'ppid', 'pgrp', 'session'} from /proc/PID/stat, or None."""
    try:
        with open('/proc/%d/stat' % pid, 'rb') as f:
            data = f.read()
    except OSError:
        return None
    f = data[data.rindex(b')') + 2:].split()
    return {'state': f[0].decode(), 'ppid': int(f[1]), 'pgrp': int(f[2]), 'session': int(f[3])}


def worker_connection(con, index):
    for i, msgs in con.per_connection().items():
        if msgs and msgs[0].get('type') == 'hello' and msgs[0].get('worker') == index:
            return i
    raise AssertionError('no connection of worker %d' % index)


def roomy(address, family=None, authkey=None):
    """The stock Listener with a deep accept queue (for W >= 3; the default
    backlog of 1 is test_daemon's consumer_backlog_full's business)."""
    return Listener(address, family=family, authkey=authkey, backlog=16)


def marker_exists(path):
    return os.path.exists(path)


def lines_after(d, offset):
    return d.stderr()[offset:].splitlines()


# ---------------------------------------------------------------- detach

@test
def detach_start_and_sigterm(tmp):
    # Scenario: without -f the launcher exits 0 once startup succeeded; the pidfile then holds the live
    # supervisor, which is not the launcher's child, has a session of its own, cwd /, stdio on /dev/null,
    # and the workers' hellos have arrived (marker gone); SIGTERM to the pid in the pidfile: the whole
    # daemon exits, pidfile removed, marker written, connections closed, nothing left.
    s, datadir, marker = prepared_store(tmp)
    con = Consumer(tmp)
    w = expected_workers(4)
    d = Daemon(tmp, s, con, processes=4, foreground=False, datadir=datadir, marker=marker)
    assert '-f' not in d.cmd and d.pidfile
    rc = d.wait(15)
    assert rc == 0, 'launcher exit %s\n%s' % (rc, d.stderr())
    # the launcher's answer comes only once startup succeeded: pidfile, hellos and marker are already so
    assert os.path.exists(d.pidfile), 'launcher exited 0 but there is no pidfile'
    pid = d.supervisor_pid()
    assert pid and pid != d.pid and pid_alive(pid), 'pidfile %r: not a live process' % open(d.pidfile).read()
    assert not marker_exists(marker), 'marker still there after a successful detached start'
    st = proc_stat(pid)
    assert st['ppid'] != d.pid, 'the supervisor is a child of the launcher'
    assert st['session'] not in (os.getsid(0), d.pid), 'the supervisor shares a session: %r' % st
    assert os.readlink('/proc/%d/cwd' % pid) == '/', 'cwd is %s' % os.readlink('/proc/%d/cwd' % pid)
    for fd in (0, 1, 2):
        target = os.readlink('/proc/%d/fd/%d' % (pid, fd))
        assert target == '/dev/null', 'the supervisor fd %d is %s' % (fd, target)
    with open('/proc/%d/cmdline' % pid, 'rb') as f:
        assert datadir.encode() in f.read().split(b'\0')
    wait_until(lambda: len(con.hellos()) == w, 10, '%d hellos' % w)
    assert len(proc_children(pid)) == 1 + w, proc_children(pid)
    con.wait_refresh_done()
    s.add_people(3, start=100)
    wait_until(lambda: len(con.messages('add')) == 3, 10, 'the new people to arrive')
    procs = instance_procs(datadir)
    assert len(procs) == 2 + w, procs
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not instance_procs(datadir), 20, 'every process of the detached daemon to exit')
    wait_until(lambda: not os.path.exists(d.pidfile), 2, 'the pidfile to be removed')
    assert marker_exists(marker), 'no marker after SIGTERM to the detached supervisor'
    con.wait_closed()
    assert set(con.closed.values()) == {'eof'}, con.closed


@test(timeout=90)
def detach_startup_failures(tmp):
    # Scenario: detached starts that fail: consumer not listening (69), wrong key (77), LDAP unreachable
    # (69), foreign data dir (78): the launcher exits with that code within 15 s, the reason (naming the
    # culprit) on its stderr, no pidfile, marker and store untouched, no process of the instance left.
    s, datadir, marker = prepared_store(tmp)
    con = Consumer(tmp)
    other = Consumer(tmp, name='otherkey')
    foreign = os.path.join(tmp, 'home')
    os.makedirs(foreign)
    with open(os.path.join(foreign, 'notes.txt'), 'w') as f:
        f.write('mine\n')
    port = free_port()     # nothing listens there
    nowhere = os.path.join(tmp, 'nobody.sock')
    cases = [
        ('consumer not listening', 69, [nowhere], dict(output=nowhere)),
        ('wrong key', 77, [other.address], dict(consumer=other, keyfile=con.keyfile)),
        ('LDAP unreachable', 69, ['127.0.0.1:%d' % port],
         dict(url=ldap_url('ldap://127.0.0.1:%d' % port, s.suffix, exts=['bindname=' + s.reader_dn]),
              password=s.reader_pw)),
        ('foreign data dir', 78, [foreign], dict(datadir=foreign)),
    ]
    problems = []
    for label, code, culprits, kw in cases:
        dd = kw.pop('datadir', datadir)
        kw.setdefault('consumer', con)
        before = store_snapshot(dd, marker)
        foreign_before = open(os.path.join(foreign, 'notes.txt')).read()
        t0 = time.monotonic()
        d = Daemon(tmp, s, processes=4, foreground=False, datadir=dd, marker=marker, **kw)
        try:
            rc = d.wait(15)
        except AssertionError as e:
            problems.append('%s: %s' % (label, e))
            continue
        took = time.monotonic() - t0
        err = d.stderr()
        bad = []
        if rc != code:
            bad.append('exit %s, expected %d' % (rc, code))
        if not any(all(c.lower() in ln.lower() for c in culprits) for ln in err.splitlines()):
            bad.append('no stderr line names %r' % culprits)
        if os.path.exists(d.pidfile):
            bad.append('pidfile left: %r' % open(d.pidfile).read())
        if store_snapshot(dd, marker) != before:
            bad.append('store or marker changed')
        if open(os.path.join(foreign, 'notes.txt')).read() != foreign_before or \
                os.listdir(foreign) != ['notes.txt']:
            bad.append('the foreign directory changed: %r' % os.listdir(foreign))
        # the detached supervisor may still be on its way out when the launcher exits: a second
        try:
            wait_until(lambda: not instance_procs(dd), 2, 'no process of the instance')
        except AssertionError:
            bad.append('processes left: %r' % instance_procs(dd))
        if bad:
            problems.append('%s (%.1fs): %s\n    stderr: %s' % (label, took, '; '.join(bad),
                                                              ' | '.join(err.splitlines()[:5])))
        else:
            note('%s: launcher exit %d in %.2fs: %s' % (label, rc, took, ' | '.join(err.splitlines())))
    assert con.hellos() == [] and other.hellos() == []
    assert not problems, '%d case(s) failed:\n  %s' % (len(problems), '\n  '.join(problems))


@test
def detach_second_instance_refused(tmp):
    # Scenario: a second detached instance on the same pidfile (other data dir) is refused with a clear error
    # naming the pidfile, sends nothing, leaves nothing running, and the first keeps running with its pid in
    # the pidfile; a second instance on the same data dir (other pidfile) is refused too; then SIGTERM to
    # the first: clean exit, pidfile removed, marker written.
    s = Slapd(tmp)
    s.add_people(3)
    con = Consumer(tmp)
    w = expected_workers(4)
    first = Daemon(tmp, s, con, processes=4, foreground=False)
    assert first.wait(15) == 0, first.stderr()
    pid = first.supervisor_pid()
    assert pid and pid_alive(pid)
    pid_text = open(first.pidfile).read()
    wait_until(lambda: len(con.hellos()) == w, 10, 'the first instance hellos')
    con.wait_refresh_done()

    con2 = Consumer(tmp, name='c2')
    second = Daemon(tmp, s, con2, processes=4, foreground=False, pidfile=first.pidfile,
                    datadir=os.path.join(tmp, 'data2'), marker=os.path.join(tmp, 'marker2'))
    rc = second.wait(15)
    err = second.stderr()
    assert rc not in (0, None), 'a second instance on the same pidfile started (exit %s)' % rc
    assert any(first.pidfile in ln for ln in err.splitlines()), 'no error naming the pidfile:\n%s' % err
    note('same pidfile: exit %d: %s' % (rc, ' | '.join(err.splitlines())))
    # (The refused instance's last process may still be exiting: under a
    # sanitizer its leak check takes a moment after the launcher returned.)
    wait_until(lambda: instance_procs(os.path.join(tmp, 'data2')) == [], 10,
               'the second instance to leave no process')
    assert con2.connections == 0 and con2.hellos() == []
    assert pid_alive(pid) and open(first.pidfile).read() == pid_text, 'the first instance or its pidfile suffered'

    third = Daemon(tmp, s, con2, processes=4, foreground=False, pidfile=os.path.join(tmp, 'third.pid'),
                   datadir=first.datadir, marker=os.path.join(tmp, 'marker3'))
    rc = third.wait(15)
    err = third.stderr()
    assert rc not in (0, None), 'a second instance on the same data dir started (exit %s)' % rc
    assert any(first.datadir in ln for ln in err.splitlines()), 'no error naming the data dir:\n%s' % err
    note('same data dir: exit %d: %s' % (rc, ' | '.join(err.splitlines())))
    assert not os.path.exists(third.pidfile)
    assert con2.connections == 0
    assert pid_alive(pid)
    wait_until(lambda: len(instance_procs(first.datadir)) == 2 + w, 10,
               'only the first instance\'s %d processes' % (2 + w))

    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not instance_procs(first.datadir), 20, 'the first instance to exit')
    wait_until(lambda: not os.path.exists(first.pidfile), 2, 'the pidfile to be removed')
    assert first.marker_exists()


@test
def detach_stale_pidfile(tmp):
    # Scenario: a detached daemon's supervisor is SIGKILLed: its children exit by themselves, the pidfile
    # stays behind naming a dead pid; a new detached start on the same pidfile is not refused (the lock, not
    # the file, says who runs), exits 0, rewrites the pidfile with the new supervisor's pid and reloads fully
    # (no marker); a pidfile naming a live process that is no ldapfeed (pid reuse) does not block either.
    s = Slapd(tmp)
    s.add_people(3)
    w = expected_workers(4)
    con = Consumer(tmp)
    d = Daemon(tmp, s, con, processes=4, foreground=False)
    assert d.wait(15) == 0, d.stderr()
    pid = d.supervisor_pid()
    wait_until(lambda: len(con.hellos()) == w, 10, 'hellos')
    kids = proc_children(pid)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not [p for p in kids + [pid] if pid_alive(p)], 3,
               'the children of the killed supervisor to exit')
    assert os.path.exists(d.pidfile) and int(open(d.pidfile).read().split()[0]) == pid
    assert not d.marker_exists()
    con2 = Consumer(tmp, name='c2')
    d2 = Daemon(tmp, s, con2, processes=4, foreground=False, pidfile=d.pidfile)
    assert d2.wait(15) == 0, 'a stale pidfile blocked the start: %s' % d2.stderr()
    pid2 = d2.supervisor_pid()
    assert pid2 and pid2 != pid and pid_alive(pid2), open(d2.pidfile).read()
    wait_until(lambda: len(con2.hellos()) == w, 10, 'hellos of the new instance')
    assert all(h['reload'] is True for h in con2.hellos()), con2.hellos()
    os.kill(pid2, signal.SIGTERM)
    wait_until(lambda: not pid_alive(pid2) and not os.path.exists(d2.pidfile), 20, 'a clean exit')
    assert d2.marker_exists()
    # a pidfile that names a live process which is not ldapfeed (this test)
    with open(d.pidfile, 'w') as f:
        f.write('%d\n' % os.getpid())
    con3 = Consumer(tmp, name='c3')
    d3 = Daemon(tmp, s, con3, processes=4, foreground=False, pidfile=d.pidfile)
    assert d3.wait(15) == 0, 'a pidfile naming an unrelated live process blocked the start: %s' % d3.stderr()
    pid3 = d3.supervisor_pid()
    assert pid3 not in (None, os.getpid()) and pid_alive(pid3)
    os.kill(pid3, signal.SIGTERM)
    wait_until(lambda: not pid_alive(pid3) and not os.path.exists(d3.pidfile), 20, 'a clean exit')


# ---------------------------------------------------------------- SIGUSR1, SIGHUP

STATUS_RE = re.compile(r'\bstatus\b\s*:?\s*(reader|worker\s*(\d+))\b(.*)$')


def _figure(text, key):
    m = re.search(r'\b%s\b\s*[=:]?\s*(\d+)' % key, text)
    return int(m.group(1)) if m else None


def _phase(text):
    m = re.search(r'\bphase\b\s*[=:]?\s*([A-Za-z_-]+)', text)
    return m.group(1) if m else None


def status_lines(d, offset, w):
    """Wait for the SIGUSR1 lines after stderr offset: {name: [rest of line]}."""
    def collect():
        out = {}
        for ln in lines_after(d, offset):
            m = STATUS_RE.search(ln)
            if m:
                name = 'reader' if m.group(1) == 'reader' else 'worker%d' % int(m.group(2))
                out.setdefault(name, []).append(m.group(3))
        return out if len(out) >= 1 + w else None
    return wait_until(collect, 5, 'a status line for the reader and each of %d workers' % w)


@test
def sigusr1_status_lines(tmp):
    # Scenario: SIGUSR1 to a foreground supervisor logs exactly one line per process (reader, each worker)
    # on stderr with events by type, queue depth, reconnects and phase; once the consumer holds every event
    # the reader's add count equals the adds made, each worker's the adds sent on its connection, and every
    # queue is empty; after more adds a second SIGUSR1 shows the new counts; SIGHUP is no shutdown.
    s = Slapd(tmp)
    con = Consumer(tmp)
    w = expected_workers(4)
    d = Daemon(tmp, s, con, processes=4)
    con.wait_refresh_done()
    pids = con.worker_pids()
    problems = []
    for round_, more in ((1, 25), (2, 7)):
        s.add_people(more, start=round_ * 1000)
        total = len(s.search())
        wait_until(lambda: len(con.messages('add')) == total, 10, '%d adds at the consumer' % total)
        offset = len(d.stderr())
        d.signal(signal.SIGUSR1)
        lines = status_lines(d, offset, w)
        per_conn = con.per_connection()
        for name in ['reader'] + ['worker%d' % i for i in range(w)]:
            got = lines.get(name)
            if not got:
                problems.append('round %d: no status line for %s' % (round_, name))
                continue
            if len(got) != 1:
                problems.append('round %d: %d status lines for %s' % (round_, len(got), name))
            text = got[0]
            add, queue, rec, phase = _figure(text, 'add'), _figure(text, 'queue'), _figure(text, 'reconnects'), \
                _phase(text)
            if None in (add, queue, rec, phase):
                problems.append('round %d: %s line lacks add/queue/reconnects/phase: %r' % (round_, name, text))
                continue
            if name == 'reader':
                expect = total
                if 'persist' not in phase:
                    problems.append('round %d: reader phase %r after the refresh' % (round_, phase))
            else:
                i = int(name[6:])
                expect = sum(1 for m in per_conn[worker_connection(con, i)] if m.get('type') == 'add')
                pid = _figure(text, 'pid')
                if pid is not None and pid != pids[i]:
                    problems.append('round %d: %s line says pid %d, its pid is %d' % (round_, name, pid, pids[i]))
            if add != expect:
                problems.append('round %d: %s add count %d, expected %d' % (round_, name, add, expect))
            if queue != 0:
                problems.append('round %d: %s queue depth %d once the consumer holds every event: %r'
                                % (round_, name, queue, text))
            if rec != 0:
                problems.append('round %d: %s reconnects %d' % (round_, name, rec))
        note('round %d status: %s' % (round_, ' || '.join('%s: %s' % (k, v[0].strip())
                                                          for k, v in sorted(lines.items()))))
        assert d.alive(), 'SIGUSR1 stopped the daemon'
    d.signal(signal.SIGHUP)
    s.add_people(1, start=5000)
    wait_until(lambda: len(con.messages('add')) == len(s.search()), 10, 'an add after SIGHUP')
    assert d.alive(), 'SIGHUP stopped the daemon'
    assert d.stop() == 0 and d.marker_exists(), d.stderr()
    assert not problems, '\n'.join(problems)


# ---------------------------------------------------------------- --status-file

SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?[ \t]+(\S+)([ \t]+-?\d+)?$')
LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\\n]|\\[\\"n])*)"\s*(,|$)')


def parse_prometheus(text):
    """Parse the text exposition format (0.0.4) strictly enough for a textfile
    collector: returns ({(name, ((label, value), ...)): float}, {family: type}).
    Raises AssertionError naming the first bad line."""
    assert text, 'empty status file'
    assert text.endswith('\n'), 'status file does not end with a newline: %r' % text[-80:]
    types, helps, samples, order = {}, {}, {}, []
    for n, line in enumerate(text.split('\n')[:-1], 1):
        where = 'line %d %r' % (n, line)
        if not line.strip():
            continue
        if line.startswith('#'):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] == 'HELP':
                assert parts[2] not in helps, 'second HELP for %s (%s)' % (parts[2], where)
                helps[parts[2]] = parts[3] if len(parts) > 3 else ''
            elif len(parts) >= 3 and parts[1] == 'TYPE':
                assert len(parts) == 4 and parts[3] in ('counter', 'gauge', 'histogram', 'summary', 'untyped'), \
                    'bad TYPE (%s)' % where
                assert parts[2] not in types, 'second TYPE for %s (%s)' % (parts[2], where)
                assert parts[2] not in order, 'TYPE after samples of %s (%s)' % (parts[2], where)
                types[parts[2]] = parts[3]
            continue
        m = SAMPLE_RE.match(line)
        assert m, 'not a sample (%s)' % where
        name, labels_text, value = m.group(1), m.group(3), m.group(4)
        labels = []
        if labels_text:
            pos = 0
            while pos < len(labels_text):
                lm = LABEL_RE.match(labels_text, pos)
                assert lm and lm.end() > pos, 'bad labels (%s)' % where
                labels.append((lm.group(1), lm.group(2)))
                pos = lm.end()
            assert len({k for k, _ in labels}) == len(labels), 'repeated label (%s)' % where
        try:
            v = float(value)
        except ValueError:
            raise AssertionError('value is not a number (%s)' % where) from None
        assert value.lower() in ('nan', '+inf', '-inf') or not math.isnan(v), where
        family = name
        for suffix in ('_bucket', '_sum', '_count'):
            if name not in types and name.endswith(suffix) and name[:-len(suffix)] in types:
                family = name[:-len(suffix)]
        assert family in types, 'no TYPE for %s (%s)' % (name, where)
        if order and order[-1] != family:
            assert family not in order, 'samples of %s are not grouped together (%s)' % (family, where)
        if not order or order[-1] != family:
            order.append(family)
        key = (name, tuple(sorted(labels)))
        assert key not in samples, 'duplicate sample (%s)' % where
        samples[key] = v
    assert samples, 'no samples at all'
    return samples, types


def metric(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


@test(timeout=90)
def status_file_prometheus(tmp):
    # Scenario: --status-file: the file appears within a few seconds and parses as Prometheus text format
    # (HELP/TYPE, every sample typed, labelled samples, numeric values) with figures for the reader and every
    # worker; after 40 adds ldapfeed_events_total{process="reader",type="add"} grows by 40 within a
    # rewrite period or two; a reader polling the file while changes flow never sees it empty, truncated or
    # unparsable (atomic replacement), and sees it change.
    s = Slapd(tmp)
    con = Consumer(tmp)
    w = expected_workers(4)
    path = os.path.join(tmp, 'ldapfeed.prom')
    d = Daemon(tmp, s, con, processes=4, extra=['--status-file', path])
    con.wait_refresh_done()
    wait_until(lambda: os.path.exists(path), 5, 'the status file to appear')
    samples, types = parse_prometheus(open(path).read())
    assert types.get('ldapfeed_events_total') == 'counter', types
    procs = {dict(k[1]).get('process') for k in samples}
    for p in ['reader'] + ['worker%d' % i for i in range(w)]:
        assert p in procs, 'no figures for process=%r: %r' % (p, sorted(p for p in procs if p))

    def reader_adds():
        try:
            with open(path) as f:
                smp, _ = parse_prometheus(f.read())
        except (OSError, AssertionError):
            return None
        return metric(smp, 'ldapfeed_events_total', process='reader', type='add')
    wait_until(lambda: reader_adds() == len(s.search()), 12, 'the status file to count the initial load')
    before = reader_adds()

    seen, bad, reads = set(), [], [0]
    stop = threading.Event()

    def poll_file():
        while not stop.is_set():
            try:
                with open(path, 'rb') as f:
                    data = f.read()
            except FileNotFoundError:
                bad.append('the status file vanished')
                continue
            reads[0] += 1
            try:
                parse_prometheus(data.decode())
                seen.add(data)
            except AssertionError as e:
                bad.append('%s (%d bytes)' % (e, len(data)))
            time.sleep(0.001)
    t = threading.Thread(target=poll_file, daemon=True)
    t.start()
    try:
        for i in range(8):
            s.add_people(5, start=100 + 5 * i)
        wait_until(lambda: reader_adds() == before + 40, 12,
                   'ldapfeed_events_total{process="reader",type="add"} to reach %d' % (before + 40))
        wait_until(lambda: len(seen) >= 2, 12, 'the poller to see the file rewritten')
    finally:
        stop.set()
        t.join(5)
    note('%d reads, %d distinct versions, %d bad' % (reads[0], len(seen), len(bad)))
    assert not bad, 'the status file was seen half-written or invalid: %r' % bad[:3]
    final, _ = parse_prometheus(open(path).read())
    sent = sum(v for (n, lab), v in final.items()
               if n == 'ldapfeed_events_total' and dict(lab).get('type') == 'add' and
               dict(lab).get('process', '').startswith('worker'))
    assert sent == before + 40, 'the workers sent %s adds, the reader made %d' % (sent, before + 40)
    assert d.stop() == 0


# ---------------------------------------------------------------- logging

@test
def logging_no_secrets(tmp):
    # Scenario: a run at -v with a distinctive password and key, then a resumed run and a refused bind: the
    # startup line names the server URL, W and the format; the logs say full reload, then resumed; neither
    # the password, the wrong password, nor the key bytes ever appear on stderr.
    s = Slapd(tmp)
    password = 'Pw-' + secrets.token_hex(12)
    feeder = 'cn=feeder,' + s.suffix
    s.add_entry(feeder, {'objectClass': ['organizationalRole', 'simpleSecurityObject'], 'cn': 'feeder',
                         'userPassword': password})
    s.add_people(3)
    key = b'Key-' + secrets.token_hex(16).encode()
    con = Consumer(tmp, key=key)
    url = ldap_url(s, s.suffix, exts=['bindname=' + feeder])
    w = expected_workers(4)
    d = Daemon(tmp, s, con, processes=4, url=url, password=password, extra=['-v'])
    con.wait_refresh_done()
    s.replace('uid=user00001,ou=people,' + s.suffix, 'description', 'changed')
    wait_until(lambda: con.messages('modify'), 10, 'the modify')
    assert d.stop() == 0
    con2 = Consumer(tmp, key=key, name='c2')
    d2 = Daemon(tmp, s, con2, processes=4, url=url, password=password, extra=['-v'])
    con2.wait_refresh_done()
    assert d2.stop() == 0
    wrong = 'Wrong-' + secrets.token_hex(12)
    d3 = Daemon(tmp, s, con2, processes=4, url=url, password=wrong, extra=['-v'])
    assert d3.wait(15) == 77, d3.stderr()

    server = 'ldap://127.0.0.1:%d' % s.port
    first, second = d.stderr(), d2.stderr()
    start = [ln for ln in first.splitlines() if server in ln]
    assert start, 'no log line names the server %s:\n%s' % (server, first)
    assert any(re.search(r'\b%d\b' % w, ln) and 'pickle' in ln for ln in start), \
        'no startup line with the URL, W=%d and the format:\n%s' % (w, '\n'.join(start))
    assert re.search(r'full (re)?load|wip', first, re.I), 'the first run does not say it reloads'
    assert re.search(r'resum', second, re.I), 'the second run does not say it resumes:\n%s' % second
    for name, text in (('first run', first), ('resumed run', second), ('refused bind', d3.stderr())):
        for secret, what in ((password, 'password'), (wrong, 'wrong password'), (key.decode(), 'auth key'),
                             (key.hex(), 'auth key (hex)'), (password.encode().hex(), 'password (hex)')):
            assert secret not in text, '%s: the %s appears on stderr' % (name, what)
    assert feeder in d3.stderr(), 'the refused bind does not name the bind DN'


@test
def logging_quiet(tmp):
    # Scenario: -q on clean runs: a first run (full load, an add, a modify, SIGTERM), then changes made while
    # the daemon is down (adds, a modify, a delete) and a second run resuming from the cookie: exit 0 both
    # times, the changes arrive, and not one line on stderr (-q shows warnings only; nothing here is one).
    s = Slapd(tmp)
    dns = s.add_people(3)
    con = Consumer(tmp)
    d = Daemon(tmp, s, con, processes=4, extra=['-q'])
    con.wait_refresh_done()
    s.add_people(1, start=10)
    s.replace(dns[1], 'description', 'changed')
    wait_until(lambda: con.messages('modify'), 10, 'the modify')
    assert d.stop() == 0 and d.marker_exists()
    assert d.stderr() == '', '-q printed on the first run:\n%s' % d.stderr()
    s.add_people(5, start=100)
    s.replace(dns[0], 'description', 'changed while down')
    s.delete(dns[2])
    con2 = Consumer(tmp, name='c2')
    d2 = Daemon(tmp, s, con2, processes=4, extra=['-q'])
    con2.wait_refresh_done()
    m = Model()
    m.apply_records(con.records())
    m.apply_records(con2.records())
    assert_model_equals_server(m, s, bind='reader')
    assert d2.stop() == 0 and d2.marker_exists()
    assert d2.stderr() == '', '-q printed on a resumed run after changes made while it was down:\n%s' % \
        d2.stderr()


@test
def logging_verbose(tmp):
    # Scenario: -v logs a line per entry: every DN of the full load, and an added, a modified and a deleted
    # entry while persisting each appear in some stderr line.
    s = Slapd(tmp)
    dns = s.add_people(3)
    con = Consumer(tmp)
    d = Daemon(tmp, s, con, processes=4, extra=['-v'])
    con.wait_refresh_done()
    for dn in s.base_dns() + dns:
        d.wait_stderr(dn, 5)
    offset = len(d.stderr())
    new = s.add_people(1, start=42)[0]
    s.replace(dns[0], 'description', 'changed')
    s.delete(dns[1])
    wait_until(lambda: con.messages('delete'), 10, 'the delete')
    for dn in (new, dns[0], dns[1]):
        wait_until(lambda: any(dn in ln for ln in lines_after(d, offset)), 5, 'a -v line naming %s' % dn)
    assert d.stop() == 0


# ---------------------------------------------------------------- consumer gone

@test
def consumer_drops_worker_midrun(tmp):
    # Scenario: the consumer shuts one worker's connection mid-run: the daemon stops everything and exits 70,
    # no marker, no process left, a worker's log line says the consumer went away and the supervisor's names
    # the worker.
    s, datadir, marker = prepared_store(tmp)
    con = Consumer(tmp, listener_factory=roomy)
    w = expected_workers(5)
    d = Daemon(tmp, s, con, processes=5, datadir=datadir, marker=marker)
    con.wait_refresh_done()
    # mid-run: the supervisor has seen startup succeed (it deleted the marker)
    wait_until(lambda: not d.marker_exists(), 10, 'the marker to go')
    pids = con.worker_pids()
    victim = 1 % w
    con.close_connection(worker_connection(con, victim))
    rc = d.wait(15)
    assert rc == 70, 'exit %s after the consumer dropped a worker\n%s' % (rc, d.stderr())
    assert not d.marker_exists()
    assert group_members(d.pid) == [] and not [p for p in pids.values() if pid_alive(p)]
    err = d.stderr().splitlines()
    mine = [ln for ln in err if re.search(r'\bworker ?%d\b' % victim, ln)]
    assert any('consumer' in ln.lower() for ln in mine), 'no worker %d line about the consumer:\n%s' % (
        victim, '\n'.join(err))
    assert any('supervisor' in ln and re.search(r'\bworker ?%d\b' % victim, ln) for ln in err), \
        'the supervisor does not name worker %d:\n%s' % (victim, '\n'.join(err))
    con.wait_closed()


if __name__ == '__main__':
    main()
