#!/usr/bin/env python3
"""Hostile and broken peers, end to end (doc/processes.md, "Failure";
doc/syncrepl.md, "The controls on the wire"): a consumer that accepts and
never reads (backpressure: bounded memory, nothing lost once it reads), a
consumer that hangs up mid-stream, listeners that send garbage during the
handshake, and an LDAP "server" (tests/tools/fake_ldap.py, BER on loopback)
that sends malformed sync controls and messages.  Each must give a clear log
line and the documented exit status (doc/processes.md, "Exit status": 69/77
at startup, 70 after it), or a reconnect where doc/syncrepl.md, "Connection
loss and backoff" (and "Result codes"), says so; never a hang, a crash or a
wiped store.

(A wrong key, refused in both directions of the handshake, is proved by
test_daemon.py startup_fail_consumer and test_wire_handshake.py.)
"""

import array
import fcntl
import hmac
import os
import shutil
import signal
import socket
import sys
import termios
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'tools'))
from harness import *  # noqa: E402,F403
import harness  # noqa: E402
import fake_ldap as F  # noqa: E402

RSS_LIMIT = 64 << 20


# ---------------------------------------------------------------- helpers


def proc_mem(pid):
    """(VmRSS, RssAnon) in bytes of a live pid, or None."""
    try:
        with open('/proc/%d/status' % pid) as f:
            data = f.read()
    except OSError:
        return None
    vals = {}
    for ln in data.splitlines():
        k, _, v = ln.partition(':')
        if k in ('VmRSS', 'RssAnon'):
            vals[k] = int(v.split()[0]) * 1024
    return vals.get('VmRSS', 0), vals.get('RssAnon', 0)


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open('/proc/%d/stat' % pid, 'rb') as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b')') + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total


def unread_bytes(con):
    """Bytes waiting in each open consumer connection (FIONREAD)."""
    with con._cond:
        conns = [c['conn'] for c in con._conns if c['closed'] is None]
    out = []
    for c in conns:
        buf = array.array('i', [0])
        fcntl.ioctl(c.fileno(), termios.FIONREAD, buf)
        out.append(buf[0])
    return out


# ---------------------------------------------------------------- backpressure

@test(timeout=400)
def consumer_never_reads_memory_bounded(tmp):
    # Scenario: the consumer completes the handshake and then reads nothing while ~100 MB of entries (1600
    # entries with a 64 KiB binary value each) flow from slapd; once the daemon has stalled (no CPU used for
    # 2 s), every ldapfeed process's RssAnon stayed under 64 MiB the whole time and the daemon is alive; then
    # the consumer reads again: every entry arrives, the model equals the server, SIGTERM -> exit 0.
    s = Slapd(tmp)
    n, size = 1600, 64 << 10
    s.add_people(n, extra=lambda i: {'audio': os.urandom(size)})
    total_bytes = n * size
    con = Consumer(tmp, name='slow')
    con.pause()
    d = Daemon(tmp, s, con, processes=4)
    w = 2
    wait_until(lambda: con.connections >= w, 30, 'the workers to connect')
    peak = {}
    samples = []

    def sample():
        pids = d.group()
        for pid in pids:
            m = proc_mem(pid)
            if m:
                old = peak.get(pid, (0, 0))
                peak[pid] = (max(old[0], m[0]), max(old[1], m[1]))
        ticks = cpu_ticks(pids)
        samples.append((time.monotonic(), ticks))
        return pids

    def stalled():
        sample()
        if not d.alive():
            raise AssertionError('ldapfeed exited (%s) with the consumer paused:\n%s' % (d.returncode, d.stderr()))
        recent = [t for t in samples if t[0] >= samples[-1][0] - 2.0]
        return samples[-1][0] - samples[0][0] > 3 and len(recent) > 4 and recent[0][1] == recent[-1][1]
    wait_until(stalled, 120, 'the daemon to stall behind the paused consumer', interval=0.2)
    t_stall = time.monotonic()
    wait_until(lambda: sample() and time.monotonic() - t_stall > 2, 10, 'two more seconds of samples',
               interval=0.2)
    assert d.alive(), d.stderr()
    unread = unread_bytes(con)
    worst = max(peak.values(), key=lambda m: m[1])
    note('stalled after %.1fs with %r bytes unread in the consumer\'s sockets; peak VmRSS/RssAnon per process '
         '(MiB): %s; %d MB to send' % (t_stall - samples[0][0], unread,
        ', '.join('%d: %.1f/%.1f' % (p, m[0] / 2 ** 20, m[1] / 2 ** 20) for p, m in sorted(peak.items())),
        total_bytes // 10 ** 6))
    wrapped = bool(os.environ.get('TEST_WRAP'))     # then the memory measured is the wrapper's
    assert wrapped or worst[1] < RSS_LIMIT, 'a process reached RssAnon %.1f MiB (limit %d MiB) with the ' \
        'consumer paused' % (worst[1] / 2 ** 20, RSS_LIMIT >> 20)
    assert len(con.messages()) == 0
    assert unread and min(unread) > 0, 'a stall without a backlog in the consumer sockets: %r' % unread
    con.resume()
    con.wait_refresh_done(timeout=300)
    sample()
    m = Model.from_consumer(con)
    assert m.anomalies == [], m.anomalies[:5]
    assert len(con.messages('add')) == len(s.base_dns()) + n, len(con.messages('add'))
    assert_model_equals_server(m, s, bind='reader')
    assert d.stop(60) == 0, d.stderr()
    assert crash_lines(d.stderr()) == []
    if wrapped:
        raise Skip('under TEST_WRAP the memory bound is not checked (the rest held)')


# ---------------------------------------------------------------- consumer hangs up

def _hangup_case(tmp, s, datadir, marker, what, busy, min_entries):
    con = Consumer(tmp, name='hangup-%s' % ('busy' if busy else 'idle'))
    d = Daemon(tmp, s, con, processes=4, datadir=datadir, marker=marker)
    con.wait_hellos(2, timeout=30)
    if busy:
        # the resumed refresh's adds flowing, and the consumer gone in the middle of them
        wait_until(lambda: len(con.messages('add')) >= 50, 60, 'events to flow')
        con.close()
    else:
        con.wait_refresh_done(timeout=60)
        con.close_connection(con.runs()[-1][0])
    t0 = time.monotonic()
    rc = d.wait(30)
    took = time.monotonic() - t0
    err = d.stderr()
    problems = []
    if rc != 70:
        problems.append('exit %s, expected 70' % rc)
    if d.marker_exists():
        problems.append('the marker exists after a failure')
    if not any('consumer' in ln and ('closed' in ln or 'gone' in ln or 'lost' in ln) for ln in err.splitlines()):
        problems.append('no line says the consumer closed the connection')
    if crash_lines(err):
        problems.append('crash: %r' % crash_lines(err))
    wait_until(lambda: not instance_procs(datadir), 15, 'every process of the instance to exit')
    info = store_info(datadir)
    if info is not None and (info['entries'] is None or info['entries'] < min_entries or not info['cookie']):
        problems.append('store wiped: %r' % info)
    note('%s: exit %s %.2fs after the hang-up, %d adds received; store %r; stderr: %s' % (
        what, rc, took, len(con.messages('add')), info,
        ' | '.join(ln for ln in err.splitlines() if 'consumer' in ln)))
    assert not problems, '%s: %s\n%s' % (what, '; '.join(problems), err)


@test(timeout=300)
def consumer_hangs_up(tmp):
    # Scenario: a clean run loads 2000 entries (marker written); 2000 more are added; (1) the resumed run
    # streams them and the consumer closes its listener and every connection in the middle; (2) the next run
    # (no marker: a full reload) completes its refresh and, idle, loses one connection.  Each: exit 70
    # within 30 s, a line saying the consumer closed the connection, no marker, every process gone, and the
    # store kept: its cookie and at least the entries of the last completed refresh.
    s = Slapd(tmp)
    s.add_people(2000, extra=lambda i: {'description': 'y' * 500})
    con0 = Consumer(tmp, name='clean')
    d0 = Daemon(tmp, s, con0, processes=4)
    con0.wait_refresh_done(timeout=120)
    assert d0.stop(60) == 0 and d0.marker_exists(), d0.stderr()
    con0.close()
    s.add_people(2000, start=5000, extra=lambda i: {'description': 'z' * 500})
    _hangup_case(tmp, s, d0.datadir, d0.marker, 'consumer gone mid-stream', True, 2000)
    _hangup_case(tmp, s, d0.datadir, d0.marker, 'consumer closes one connection when idle', False, 4000)


# ---------------------------------------------------------------- handshake garbage

CHALLENGE, WELCOME, FAILURE = b'#CHALLENGE#', b'#WELCOME#', b'#FAILURE#'


def _send_frame(sock, data):
    sock.sendall(len(data).to_bytes(4, 'big') + data)


def _recv_exact(sock, n):
    out = b''
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError('peer closed')
        out += chunk
    return out


def _recv_frame(sock):
    n = int.from_bytes(_recv_exact(sock, 4), 'big', signed=True)
    if n < 0 or n > 1024:
        raise ValueError('bad frame length %d' % n)
    return _recv_exact(sock, n)


def _challenge(sock, key):
    """Deliver a right {sha256} challenge; return whether the answer was right."""
    msg = b'{sha256}' + os.urandom(40)
    _send_frame(sock, CHALLENGE + msg)
    resp = _recv_frame(sock)
    return resp == b'{sha256}' + hmac.new(key, msg, 'sha256').digest()


def _hold(sock, seconds=30):
    """Keep the connection open until the peer goes (or `seconds` pass)."""
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass


class RawListener:
    """A unix-socket listener that runs behave(sock, key, record) on every
    connection in its own thread; record(text) notes what happened."""

    def __init__(self, path, key, behave):
        self.path, self.key, self.behave = path, key, behave
        self.notes, self.errors = [], []
        self.acceptor = Acceptor(socket.AF_UNIX, path, self._accepted)

    def _accepted(self, c):
        threading.Thread(target=self._one, args=(c,), daemon=True).start()

    def _one(self, c):
        try:
            self.behave(c, self.key, lambda t: self.notes.append(t))
        except (EOFError, OSError):
            pass
        except Exception as e:      # noqa: BLE001
            self.errors.append(repr(e))

    def _teardown(self):
        self.acceptor._teardown()


def b_no_challenge(c, key, rec):
    _send_frame(c, b'HELLO there, I am no Listener')
    _hold(c)


def b_negative_length(c, key, rec):
    c.sendall(b'\x80\x00\x00\x10' + b'x' * 16)
    _hold(c)


def b_sha512(c, key, rec):
    _send_frame(c, CHALLENGE + b'{sha512}' + os.urandom(40))
    _hold(c)


def b_huge_length(c, key, rec):
    c.sendall(b'\x7f\xff\xff\xf0' + b'#CHALLENGE#')
    _hold(c)


def b_huge_long_form(c, key, rec):
    c.sendall(b'\xff\xff\xff\xff' + (1 << 40).to_bytes(8, 'big') + b'#CHALLENGE#')
    _hold(c)


def b_failure_after_right_answer(c, key, rec):
    rec('answer right: %s' % _challenge(c, key))
    _send_frame(c, FAILURE)
    _hold(c)


def b_odd_verdict(c, key, rec):
    rec('answer right: %s' % _challenge(c, key))
    _send_frame(c, b'#WELCOME!')
    _hold(c)


def b_huge_verdict(c, key, rec):
    rec('answer right: %s' % _challenge(c, key))
    c.sendall(b'\x7f\xff\xff\xff')
    _hold(c)


def b_garbage_response(c, key, rec):
    rec('answer right: %s' % _challenge(c, key))
    _send_frame(c, WELCOME)
    theirs = _recv_frame(c)
    rec('their challenge: %r' % theirs[:20])
    _send_frame(c, b'{sha256}' + b'\0' * 32)
    rec('verdict: %r' % _recv_frame(c))
    _hold(c)


def b_close_at_once(c, key, rec):
    c.close()


def b_silence(c, key, rec):
    _hold(c, 60)


HANDSHAKE_CASES = [
    # (name, behaviour, exit status, words the error line must hold)
    ('a frame that is no #CHALLENGE#', b_no_challenge, 77, ['no #CHALLENGE#']),
    ('a negative frame length', b_negative_length, 77, ['bad length']),
    ('an unsupported {sha512} challenge', b_sha512, 77, ['{digest}']),
    ('a 2 GiB frame length', b_huge_length, 77, ['bad length']),
    ('a 1 TiB long-form frame length', b_huge_long_form, 77, ['bad length']),
    ('#FAILURE# after a right answer', b_failure_after_right_answer, 77, ['refused our key']),
    ('a verdict that is neither #WELCOME# nor #FAILURE#', b_odd_verdict, 77, ['not #WELCOME#']),
    ('a 2 GiB verdict frame', b_huge_verdict, 77, ['bad length']),
    ('a wrong answer to our challenge', b_garbage_response, 77, ['failed our challenge']),
    ('hang-up right after accept', b_close_at_once, 69, []),
    ('silence until the handshake times out', b_silence, 69, []),
]


@test(timeout=400)
def handshake_garbage(tmp):
    # Scenario: with a store built by one clean run, W=2 workers meet listeners that send garbage during the
    # handshake: no #CHALLENGE#, a negative or huge (2 GiB, 1 TiB long form) frame length, a {sha512}
    # challenge, #FAILURE# or an odd verdict after a right answer, a huge verdict frame, a wrong answer to
    # our challenge (77 each: "the consumer is not one we can authenticate with"); a hang-up right after
    # accept and a listener that never speaks (69: unreachable).  Each: the status within 15 s, exactly one
    # error line naming the consumer and the reason, store and marker byte-identical, no process left.
    s, datadir, marker = prepared_store(tmp)
    key = b'hostile-key-' + os.urandom(8).hex().encode()
    keyfile = write_secret(os.path.join(tmp, 'hostile.key'), key)
    problems = []
    for n, (what, behave, code, words) in enumerate(HANDSHAKE_CASES):
        path = os.path.join(tmp, 'h%d.sock' % n)
        lst = RawListener(path, key, behave)
        before = store_snapshot(datadir, marker)
        t0 = time.monotonic()
        d = Daemon(tmp, s, processes=4, output=path, keyfile=keyfile, datadir=datadir, marker=marker,
                   fmt='pickle')
        try:
            rc = d.wait(15)
        except AssertionError as e:
            problems.append('%s: no exit within 15 s: %s' % (what, e))
            d.kill_group()
            continue
        took = time.monotonic() - t0
        err = d.stderr()
        lines = [ln for ln in err.splitlines() if ln.strip()]
        out = []
        if rc != code:
            out.append('exit %s, expected %d' % (rc, code))
        if len(lines) != 1:
            out.append('%d error lines, expected one' % len(lines))
        if not any(path in ln and all(w.lower() in ln.lower() for w in words) for ln in lines):
            out.append('no line names %r and %r' % (path, words))
        if crash_lines(err):
            out.append('crash: %r' % crash_lines(err))
        if store_snapshot(datadir, marker) != before:
            out.append('store or marker changed')
        try:
            wait_until(lambda: not instance_procs(datadir) and not group_members(d.pid), 5, 'no process left')
        except AssertionError:
            out.append('processes left: %r' % instance_procs(datadir))
        if lst.errors:
            out.append('listener errors: %r' % lst.errors)
        if out:
            problems.append('%s (%.1fs): %s\n    stderr: %s' % (what, took, '; '.join(out),
                                                              '\n            '.join(lines[:5])))
        else:
            note('%s: exit %d in %.1fs: %s%s' % (what, rc, took, lines[0],
                                                 ' [listener: %s]' % '; '.join(lst.notes[:2]) if lst.notes else ''))
        lst._teardown()
    assert not problems, '%d case(s) failed:\n  %s' % (len(problems), '\n  '.join(problems))


# ---------------------------------------------------------------- a hostile LDAP server

SUFFIX = 'dc=example,dc=com'
U1 = F.uuid_bytes('11111111-2222-4333-8444-555555555501')
U2 = F.uuid_bytes('11111111-2222-4333-8444-555555555502')
U3 = F.uuid_bytes('11111111-2222-4333-8444-555555555503')
PREP_COOKIE = b'rid=000,csn=20240101000000.000000Z#000000#000#000000'
NEXT_COOKIE = b'rid=000,csn=20240101000001.000000Z#000000#000#000000'
LATER_COOKIE = b'rid=000,csn=20240101000002.000000Z#000000#000#000000'


def _dev(cn):
    return {'objectClass': [b'device'], 'cn': [cn.encode()]}


def _prep_script(s, n):
    req = s.serve_until_sync()
    assert req.mode == 1, 'the preparing run asked for mode %r' % req.mode
    s.send(F.entry(req.msgid, 'cn=one,' + SUFFIX, _dev('one'), [F.sync_state(F.ADD, U1)]))
    s.send(F.entry(req.msgid, 'cn=two,' + SUFFIX, _dev('two'), [F.sync_state(F.ADD, U2)]))
    s.send(F.search_done(req.msgid, controls=[F.sync_done(PREP_COOKIE, True)]))
    s.serve_rest()


class FakeCase:
    """One run against a fake server: a copy of the prepared store, a
    consumer, ldapfeed (persist mode unless told)."""

    def __init__(self, tmp, template, name, script, mode='persist', env=None):
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        self.datadir = os.path.join(self.dir, 'data')
        self.marker = os.path.join(self.dir, 'marker')
        shutil.copytree(template[0], self.datadir)
        shutil.copy2(template[1], self.marker)
        self.fake = F.FakeLdap(script)
        harness._register(_Closer(self.fake))
        self.con = Consumer(self.dir)
        self.d = Daemon(self.dir, None, self.con, processes=3, url=ldap_url(self.fake.url, SUFFIX),
                        datadir=self.datadir, marker=self.marker, mode=mode, env=env)

    def backoff(self):
        """Seconds between the first two connections to the fake server."""
        t = self.fake.accept_times()
        return t[1] - t[0] if len(t) > 1 else None


class _Closer:
    def __init__(self, obj):
        self.obj = obj

    def _teardown(self):
        self.obj.close()


def fake_template(tmp):
    """A store built by one clean refreshOnly run against the fake server:
    entries one and two, PREP_COOKIE; (datadir, marker)."""
    d0 = os.path.join(tmp, 'template')
    os.makedirs(d0)
    fake = F.FakeLdap(_prep_script)
    harness._register(_Closer(fake))
    con = Consumer(d0)
    d = Daemon(d0, None, con, processes=3, mode='refresh', url=ldap_url(fake.url, SUFFIX))
    rc = d.wait(30)
    assert rc == 0 and d.marker_exists(), 'preparing run: exit %s\n%s\n%s' % (rc, d.stderr(), fake.errors)
    assert fake.errors == [], fake.errors
    info = store_info(d.datadir)
    assert info is None or (info['entries'] == 2 and info['cookie'] == PREP_COOKIE), info
    fake.close()
    con.close()
    return d.datadir, d.marker


def _end_refresh(s, req, cookie=NEXT_COOKIE):
    s.send(F.intermediate(req.msgid, value=F.info_refresh('delete', cookie)))


def _hostile_script(payload, phase):
    """Connection 0: answer the sync search, end the refresh first if phase
    is 'persist', send payload(msgid), then serve the rest.  Later
    connections (a reconnect): an uneventful refresh, then serve."""
    def script(s, n):
        req = s.serve_until_sync()
        if n == 0:
            if phase == 'persist':
                _end_refresh(s, req)
            data = payload(req.msgid)
            if data is None:
                return                  # hang up
            if isinstance(data, tuple):     # (bytes, then close)
                s.send(data[0])
                return
            s.send(data)
        else:
            _end_refresh(s, req, None)
        s.serve_rest()
    return script


def _e(state_controls, dn='cn=three,' + SUFFIX):
    return lambda m: F.entry(m, dn, _dev('three'), state_controls)


def _info(value):
    return lambda m: F.intermediate(m, value=value)


HUGE = b'\x84\x7f\xff\xff\xff'
FATAL_CASES = [
    # (name, phase, payload, words of the log line)
    ('Sync State with a 15-byte entryUUID', 'persist', _e([F.sync_state(F.ADD, U3[:15])]), 'shorter than 16'),
    ('Sync State with a 17-byte entryUUID', 'refresh', _e([F.sync_state(F.MODIFY, U3 + b'!')]), 'longer than 16'),
    ('Sync State value that is a SET, not a SEQUENCE', 'persist',
     _e([F.control(F.SYNC_STATE, F.set_of(F.enum(1), F.octets(U3)))]), 'not a SEQUENCE'),
    ('Sync State whose state is an INTEGER', 'persist',
     _e([F.control(F.SYNC_STATE, F.seq(F.integer(1), F.octets(U3)))]), 'ENUMERATED'),
    ('Sync State whose state is 7', 'refresh', _e([F.sync_state(7, U3)]), 'not 0..3'),
    ('Sync State with a huge declared length', 'persist',
     _e([F.control(F.SYNC_STATE, b'\x30' + HUGE + F.enum(1) + F.octets(U3))]), 'length beyond'),
    ('Sync State with an empty value', 'persist', _e([F.control(F.SYNC_STATE, b'')]), 'empty'),
    ('an entry without a Sync State control', 'persist', _e(None), 'Sync State'),
    ('an entry with two Sync State controls', 'refresh',
     _e([F.sync_state(F.ADD, U3), F.sync_state(F.ADD, U3)]), 'Sync State'),
    ('a syncIdSet with an INTEGER member', 'refresh',
     _info(F.info_id_set(None, members=[F.octets(U1), F.integer(5)])), 'non-OCTET STRING'),
    ('a syncIdSet with a 15-byte member', 'persist',
     _info(F.info_id_set(None, refresh_deletes=True, members=[F.octets(U1[:15])])), 'shorter than 16'),
    ('a syncIdSet without its SET', 'persist', _info(F.seq(F.octets(NEXT_COOKIE), tag=0xa3)), 'SET'),
    ('a Sync Info with an unknown CHOICE tag [4]', 'persist', _info(F.seq(F.octets(LATER_COOKIE), tag=0xa4)),
     'unknown CHOICE'),
    ('a Sync Info with a huge declared length', 'persist',
     _info(b'\xa3' + HUGE + F.octets(LATER_COOKIE)), 'length beyond'),
    ('a Sync Info with trailing garbage', 'persist', _info(F.info_new_cookie(LATER_COOKIE) + b'\x00\x00'),
     'trailing'),
    ('a second refreshDone (persist)', 'persist', _info(F.info_refresh('present', LATER_COOKIE)), 'refresh'),
    ('a Sync Done control with a cookie that is an INTEGER (refreshOnly)', 'refresh-only',
     lambda m: F.search_done(m, controls=[F.control(F.SYNC_DONE, F.seq(F.integer(5)))]), 'sync done'),
    ('SearchResultDone without a Sync Done control (refreshOnly)', 'refresh-only',
     lambda m: F.search_done(m), 'Sync Done'),
    ('SearchResultDone with result 2 (protocolError)', 'persist', lambda m: F.search_done(m, 2, 'bad'),
     '(2)'),
    ('SearchResultDone with result 12 (unavailableCriticalExtension)', 'refresh',
     lambda m: F.search_done(m, 12, 'no syncprov'), '(12)'),
    ('refreshOnly-style Done without a Sync Done control in persist', 'refresh',
     lambda m: F.search_done(m, 0), None),
]


def _check_common(case, what, out):
    err = case.d.stderr()
    rc = case.d.returncode
    if rc is not None and rc < 0 and not getattr(case, 'killed', False):
        out.append('killed by signal %d' % -rc)
    if crash_lines(err):
        out.append('crash: %r' % crash_lines(err))
    if case.fake.errors:
        out.append('fake server: %s' % case.fake.errors[0])
    first = case.fake.sync_requests()[:1]
    if first and first[0].cookie != PREP_COOKIE:
        out.append('the first sync search sent cookie %r, not the stored %r' % (first[0].cookie, PREP_COOKIE))
    hellos = case.con.hellos()
    if hellos and any(h.get('reload') for h in hellos):
        out.append('hello says reload: the prepared store was not trusted')
    try:
        wait_until(lambda: not instance_procs(case.datadir), 15, 'no process left')
    except AssertionError:
        out.append('processes left: %r' % instance_procs(case.datadir))
    if case.d.returncode is not None:
        info = store_info(case.datadir)
        if info is not None and (info['entries'] is None or info['entries'] < 1 or not info['cookie']):
            out.append('store wiped or emptied: %r' % info)
        return info


@test(timeout=300)
def fake_ldap_protocol_violations(tmp):
    # Scenario: with a store built by one clean run against the fake server, ldapfeed resumes (persist mode,
    # or refreshOnly where marked) and the fake server, during the refresh or in the persist stage, sends one
    # malformed thing: Sync State controls with a 15- or 17-byte UUID, a SET instead of a SEQUENCE, an
    # INTEGER state, state 7, a huge declared length, an empty value; an entry with no or two Sync State
    # controls; syncIdSets with an INTEGER or a 15-byte member or no SET; a Sync Info with CHOICE [4], a huge
    # length, trailing bytes; a second refreshDone; a Sync Done whose cookie is an INTEGER, a refreshOnly
    # Done without Sync Done; SearchResultDone 2 or 12.  Each: exit 70 within 20 s (a protocol violation
    # after startup), one line saying what was wrong, no crash, no marker, the store still holds its entries
    # and cookie.  (A Done with result 0 in persist is not fatal: slapd's consumer searches again; checked
    # as "searches again or exits 70".)
    template = fake_template(tmp)
    problems = []
    for n, (what, phase, payload, words) in enumerate(FATAL_CASES):
        case = FakeCase(tmp, template, 'v%d' % n, _hostile_script(payload, phase),
                        mode='refresh' if phase == 'refresh-only' else 'persist')
        out = []
        try:
            if words is None:
                # either searches again (a second sync search) or exits 70
                wait_until(lambda: case.d.returncode is not None or len(case.fake.sync_requests()) >= 2, 20,
                           'ldapfeed to search again or exit')
                rc = case.d.returncode
                if rc is None:
                    rc = case.d.stop(30)
                    if rc != 0:
                        out.append('searched again, but SIGTERM gave exit %s' % rc)
                elif rc != 70:
                    out.append('exit %s' % rc)
            else:
                rc = case.d.wait(20)
                if rc != 70:
                    out.append('exit %s, expected 70' % rc)
                err = case.d.stderr()
                if not any(words.lower() in ln.lower() for ln in err.splitlines()):
                    out.append('no log line says %r' % words)
                if case.d.marker_exists():
                    out.append('marker written after a failure')
        except AssertionError as e:
            out.append(str(e).splitlines()[0])
            case.killed = True
            case.d.kill_group()
        info = _check_common(case, what, out)
        said = [ln.split(': ', 1)[-1] for ln in case.d.stderr().splitlines()
                if words and words.lower() in ln.lower() or not words and 'search' in ln]
        if out:
            problems.append('%s (%s): %s\n    stderr: %s' % (what, phase, '; '.join(out),
                                                            '\n            '.join(case.d.stderr().splitlines()[-6:])))
        else:
            note('%s (%s): exit %s: %s' % (what, phase, case.d.returncode, said[-1] if said else '?'))
        case.fake.close()
        case.con.close()
    assert not problems, '%d case(s) failed:\n  %s' % (len(problems), '\n  '.join(problems))


def _cut(data, k=None):
    return data[:k if k is not None else len(data) // 2]


RECONNECT_CASES = [
    # (name, phase, payload, cookie the reconnect must send)
    ('connection closed in the middle of an entry (refresh)', 'refresh',
     lambda m: (_cut(F.entry(m, 'cn=three,' + SUFFIX, _dev('three'), [F.sync_state(F.ADD, U3)])),),
     PREP_COOKIE),
    ('connection closed in the middle of an entry (persist)', 'persist',
     lambda m: (_cut(F.entry(m, 'cn=three,' + SUFFIX, _dev('three'), [F.sync_state(F.ADD, U3, LATER_COOKIE)])),),
     NEXT_COOKIE),
    ('connection closed inside a length', 'persist', lambda m: (b'\x30\x84\x00',), NEXT_COOKIE),
    ('a message declaring a 2 GiB length, then a hang-up', 'persist',
     lambda m: (b'\x30\x84\x7f\xff\xff\xff\x02\x01' + bytes([m]) + b'\x64\x00',), NEXT_COOKIE),
    ('connection closed with no message', 'persist', lambda m: None, NEXT_COOKIE),
    ('a Notice of Disconnection, the connection left open', 'persist',
     lambda m: F.extended_response(0, 52, '1.3.6.1.4.1.1466.20036'), NEXT_COOKIE),
    ('a Notice of Disconnection during the refresh, then a hang-up', 'refresh',
     lambda m: (F.extended_response(0, 52, '1.3.6.1.4.1.1466.20036'),), PREP_COOKIE),
]


@test(timeout=300)
def fake_ldap_connection_lost(tmp):
    # Scenario: the fake server hangs up mid-message (during the refresh and in persist), inside a BER
    # length, after declaring a 2 GiB LDAPMessage, or between messages, or sends a Notice of Disconnection
    # (unsolicited, messageID 0; with and without hanging up): doc/syncrepl.md, "Connection loss and backoff",
    # says reconnect with backoff and resume from the last cookie: a line says the connection was lost, ldapfeed
    # connects again within 10 s and its new sync search carries the cookie committed before the cut (the old one if
    # the cut came during the refresh), no crash; SIGTERM then gives exit 0 with the marker.
    template = fake_template(tmp)
    problems = []
    for n, (what, phase, payload, cookie) in enumerate(RECONNECT_CASES):
        env = None
        if 'Notice of Disconnection' in what:
            # libldap itself leaks the notice's BerElement (see the file).
            env = dict(os.environ, LSAN_OPTIONS='suppressions=%s' % os.path.join(TOP, 'tests',
                                                                                 'lsan-libldap-nod.supp'))
        case = FakeCase(tmp, template, 'c%d' % n, _hostile_script(payload, phase), env=env)
        out = []
        try:
            reqs = wait_until(lambda: len(case.fake.sync_requests()) >= 2 and case.fake.sync_requests(), 20,
                              'a second sync search (a reconnect)')
            if reqs[1].cookie != cookie:
                out.append('the reconnect sent cookie %r, expected %r' % (reqs[1].cookie, cookie))
            err = case.d.stderr()
            if not any('lost' in ln.lower() or 'closed' in ln.lower() for ln in err.splitlines()):
                out.append('no line says the connection was lost')
            if not any('reconnect' in ln.lower() for ln in err.splitlines()):
                out.append('no line says it reconnects')
            if case.backoff() < 0.9:
                out.append('reconnected %.2fs after the cut: no backoff' % case.backoff())
            rc = case.d.stop(30)
            if rc != 0 or not case.d.marker_exists():
                out.append('SIGTERM after the reconnect: exit %s, marker %s' % (rc, case.d.marker_exists()))
        except AssertionError as e:
            out.append(str(e).splitlines()[0])
            case.killed = True
            case.d.kill_group()
        _check_common(case, what, out)
        if out:
            problems.append('%s: %s\n    stderr: %s' % (what, '; '.join(out),
                                                        '\n            '.join(case.d.stderr().splitlines()[-6:])))
        else:
            note('%s: reconnected: %s' % (what, ' | '.join(
                ln.split(': ', 1)[-1] for ln in case.d.stderr().splitlines() if 'lost' in ln or 'reconnect' in ln)))
        case.fake.close()
        case.con.close()
    assert not problems, '%d case(s) failed:\n  %s' % (len(problems), '\n  '.join(problems))


@test(timeout=120)
def fake_ldap_garbage_bytes(tmp):
    # Scenario: in the persist stage the fake server sends bytes that are no LDAPMessage at all.  This is a
    # protocol violation (permanent, exit 70: doc/syncrepl.md, "The controls on the wire") or, as libldap can report
    # it, a broken connection (reconnect, resume from the last cookie: "Connection loss and backoff"); either way: a
    # line saying so, no crash, the store intact, and no busy loop: a reconnect must back off.
    template = fake_template(tmp)
    garbage = b'\x00\x01\x02 this is not BER \xff\xfe' * 20
    case = FakeCase(tmp, template, 'garbage', _hostile_script(lambda m: garbage, 'persist'))
    out = []
    wait_until(lambda: case.d.returncode is not None or len(case.fake.sync_requests()) >= 2, 20,
               'ldapfeed to exit or reconnect')
    err = case.d.stderr()
    if case.d.returncode is None:
        reqs = case.fake.sync_requests()
        if reqs[1].cookie != NEXT_COOKIE:
            out.append('the reconnect sent cookie %r' % reqs[1].cookie)
        if not any('reconnect' in ln for ln in err.splitlines()):
            out.append('no line says it reconnects')
        if case.backoff() < 0.9:
            out.append('reconnected %.2fs after the garbage: no backoff' % case.backoff())
        rc = case.d.stop(30)
        if rc != 0:
            out.append('SIGTERM after the reconnect: exit %s' % rc)
        outcome = 'reconnected'
    else:
        rc = case.d.returncode
        if rc != 70:
            out.append('exit %s, expected 70' % rc)
        outcome = 'exit %s' % rc
    _check_common(case, 'garbage', out)
    err = case.d.stderr()
    note('garbage bytes: %s: %s' % (outcome, ' | '.join(ln.split(': ', 1)[-1] for ln in err.splitlines()[:8])))
    assert not out, '; '.join(out) + '\n' + err


@test(timeout=120)
def fake_ldap_refresh_only_two_refresh_dones(tmp):
    # Scenario: in refreshOnly mode the fake server ends the refresh twice: a Sync Info refreshDelete with
    # refreshDone TRUE, then the SearchResultDone (result 0) with its Sync Done control.  The refresh was
    # complete at the first; the second is either a protocol violation (exit 70, a line saying a second
    # refreshDone came: what reader.c's end_refresh means to say) or the expected end of a refreshOnly
    # search (exit 0, marker).  Never "the server ended the search; searching again": a refreshOnly run
    # that reconnects and searches forever never ends.
    template = fake_template(tmp)

    def script(s, n):
        req = s.serve_until_sync()
        s.send(F.intermediate(req.msgid, value=F.info_refresh('delete', NEXT_COOKIE)))
        s.send(F.search_done(req.msgid, controls=[F.sync_done(LATER_COOKIE, True)]))
        s.serve_rest()
    case = FakeCase(tmp, template, 'twodone', script, mode='refresh')
    try:
        rc = case.d.wait(15)
    except AssertionError:
        rc = None
    err = case.d.stderr()
    searches = len(case.fake.sync_requests())
    out = []
    if rc is None:
        case.killed = True
        case.d.kill_group()
        out.append('still running after 15 s, %d sync searches' % searches)
    elif rc == 70:
        if not any('refreshdone' in ln.lower() for ln in err.splitlines()):
            out.append('exit 70 without a line about the second refreshDone')
    elif rc == 0:
        if not case.d.marker_exists():
            out.append('exit 0 without the marker')
    else:
        out.append('exit %s' % rc)
    if searches != 1:
        out.append('%d sync searches: it searched again after a complete refreshOnly search' % searches)
    _check_common(case, 'twodone', out)
    assert not out, '; '.join(out) + '\n' + err
    note('two refreshDones: exit %s: %s' % (rc, err.splitlines()[-2:]))


@test(timeout=120)
def fake_ldap_refresh_required(tmp):
    # Scenario: the fake server answers the resumed sync search with SearchResultDone 4096
    # (e-syncRefreshRequired, no cookie, as slapd does): doc/syncrepl.md, "e-syncRefreshRequired", says redo a full
    # refresh against the store.  ldapfeed must search again at once without a cookie; the fake server then returns
    # entry one only and ends the refresh: the consumer gets a delete for entry two (no longer returned), nothing
    # for entry one (unchanged), refresh_done; SIGTERM -> exit 0, marker; the store then holds one entry and the new
    # cookie.
    template = fake_template(tmp)

    def script(s, n):
        req = s.serve_until_sync()
        s.send(F.search_done(req.msgid, 4096, 'sync cookie is stale'))
        req = s.serve_until_sync()
        s.send(F.entry(req.msgid, 'cn=one,' + SUFFIX, _dev('one'), [F.sync_state(F.ADD, U1)]))
        s.send(F.intermediate(req.msgid, value=F.info_refresh('delete', LATER_COOKIE)))
        s.serve_rest()
    case = FakeCase(tmp, template, 'reload', script)
    reqs = wait_until(lambda: len(case.fake.sync_requests()) >= 2 and case.fake.sync_requests(), 20,
                      'a second sync search')
    assert reqs[1].cookie is None, 'the search after 4096 sent cookie %r' % reqs[1].cookie
    assert case.fake.connections == 1, 'ldapfeed reconnected (%d connections) instead of searching again' % \
        case.fake.connections
    case.con.wait_refresh_done(timeout=20)
    ev = case.con.events()
    assert [(m['type'], m['dn']) for m in ev] == [('delete', 'cn=two,' + SUFFIX)], ev
    assert case.d.stop(30) == 0 and case.d.marker_exists(), case.d.stderr()
    out = []
    info = _check_common(case, 'reload', out)
    assert not out, out
    assert info is None or (info['entries'] == 1 and info['cookie'] == LATER_COOKIE), info
    note('4096: %s' % ' | '.join(ln.split(': ', 1)[-1] for ln in case.d.stderr().splitlines() if '4096' in ln
                                  or 'full' in ln or 'refresh' in ln))


@test(timeout=120)
def fake_ldap_cookie_without_csn(tmp):
    # Scenario: in the persist stage the fake server sends a newcookie "rid=000" and a modify of entry one
    # whose cookie is "rid=000" (no csn=, as slapd does under load), then hangs up.  doc/syncrepl.md, "Cookies"
    # ("Never a cookie without a CSN"): such a cookie never replaces a stored one: the modify reaches the consumer,
    # and the reconnect's sync search carries the last cookie with a CSN (NEXT), not "rid=000"; SIGTERM -> exit 0.
    template = fake_template(tmp)

    def script(s, n):
        req = s.serve_until_sync()
        if n == 0:
            _end_refresh(s, req)
            s.send(F.intermediate(req.msgid, value=F.info_new_cookie(b'rid=000')))
            s.send(F.entry(req.msgid, 'cn=one,' + SUFFIX, {'objectClass': [b'device'], 'cn': [b'one'],
                                                            'description': [b'changed']},
                           [F.sync_state(F.MODIFY, U1, b'rid=000')]))
            s.send(F.intermediate(req.msgid, value=F.info_new_cookie(b'')))
            return
        _end_refresh(s, req, None)
        s.serve_rest()
    case = FakeCase(tmp, template, 'nocsn', script)
    reqs = wait_until(lambda: len(case.fake.sync_requests()) >= 2 and case.fake.sync_requests(), 20,
                      'a reconnect')
    assert reqs[1].cookie == NEXT_COOKIE, 'the reconnect sent cookie %r, expected %r' % (reqs[1].cookie,
                                                                                         NEXT_COOKIE)
    mods = case.con.messages('modify')
    assert len(mods) == 1 and mods[0]['changed'] == ['description'], case.con.events()
    assert case.d.stop(30) == 0, case.d.stderr()
    out = []
    info = _check_common(case, 'nocsn', out)
    assert not out, out
    assert info is None or info['cookie'] == NEXT_COOKIE, info


@test(timeout=120)
def fake_ldap_present_phase(tmp):
    # Scenario: a resumed refresh as slapd sends it without a session log (the "present phase" shape of
    # doc/syncrepl.md, "Refresh shapes"): a syncIdSet (present) naming every entry in scope, entries one and two and
    # a new entry three, then entry three as E(add), then refreshPresent{refreshDone, cookie}.  The consumer gets
    # one add (three) and nothing else, and no line claims that entries listed as present are missing from the store
    # (three arrived); a second run whose present set names an entry that never arrives must say so (that is what
    # the warning is for).
    template = fake_template(tmp)
    U4 = F.uuid_bytes('11111111-2222-4333-8444-555555555504')

    def script_for(extra):
        def script(s, n):
            req = s.serve_until_sync()
            s.send(F.intermediate(req.msgid, value=F.info_id_set([U1, U2, U3] + extra)))
            s.send(F.entry(req.msgid, 'cn=three,' + SUFFIX, _dev('three'), [F.sync_state(F.ADD, U3)]))
            s.send(F.intermediate(req.msgid, value=F.info_refresh('present', NEXT_COOKIE)))
            s.serve_rest()
        return script
    out = []
    for name, extra in (('present', []), ('present-unknown', [U4])):
        case = FakeCase(tmp, template, name, script_for(extra))
        case.con.wait_refresh_done(timeout=20)
        ev = [(m['type'], m['dn']) for m in case.con.events()]
        if ev != [('add', 'cn=three,' + SUFFIX)]:
            out.append('%s: events %r' % (name, ev))
        assert case.d.stop(30) == 0, case.d.stderr()
        warned = [ln for ln in case.d.stderr().splitlines() if 'not in the store' in ln]
        if extra and not warned:
            out.append('%s: no line says that an entry listed as present is not in the store' % name)
        if not extra and warned:
            out.append('%s: a false warning after a normal present phase with a new entry: %s' % (name, warned[0]))
        _check_common(case, name, out)
        note('%s: %s' % (name, warned[0].split(': ', 1)[-1] if warned else 'no warning'))
    assert not out, '\n'.join(out)


@test(timeout=120)
def second_sigterm_gives_up_the_drain(tmp):
    # Scenario: a consumer that never reads holds the workers; SIGTERM starts
    # an orderly shutdown, which waits to deliver everything (the daemon is
    # still alive seconds later); a second SIGTERM gives up: exit 70 at once,
    # no marker, no process left.  A SIGTERM a child passes on (here: the
    # reader's, sent to the whole group first) does not count as a second.
    s = Slapd(tmp)
    s.add_people(300, extra=lambda i: {'audio': os.urandom(32 << 10)})
    con = Consumer(tmp, name='stuck')
    con.pause()
    d = Daemon(tmp, s, con, processes=4, extra=['-v'])
    wait_until(lambda: con.connections >= 2, 30, 'the workers to connect')
    wait_until(lambda: d.stderr().count('reader: add ') >= 50, 30, 'events queued behind the consumer')
    d.kill_group(signal.SIGTERM)          # every process, as systemd's control-group kill
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3:      # the scenario: it must keep waiting
        assert d.alive(), 'gave up the drain without a second SIGTERM:\n' + d.stderr()
        time.sleep(0.1)
    d.signal(signal.SIGTERM)
    rc = d.wait(10)
    assert rc == 70, 'exit %s after a second SIGTERM:\n%s' % (rc, d.stderr())
    assert not d.marker_exists(), 'a marker after an abandoned drain'
    assert 'asked again to stop' in d.stderr(), d.stderr()
    wait_until(lambda: not d.group(), 10, 'every ldapfeed process to be gone')
    con.resume()

if __name__ == '__main__':
    main()
