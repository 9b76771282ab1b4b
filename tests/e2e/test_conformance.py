"""The conformance rows T01-T17, end to end: a lab slapd, ldapfeed, a Python
Listener.  The numbering is this suite's own, each row defined by its
Scenario comment; the rules they check are doc/syncrepl.md's ("Messages and
what the reader does", "Refresh shapes", "When to sweep", "Cookies") and
doc/subtrees.md's ("The cases").  Rows T18-T34, the edge cases, are in
test_conformance_edge_cases.py, which imports the helpers below (the two
files run in parallel).

Every row checks the exact events of each daemon run (type, dn, uuid and
attrs / old / new / changed), that the consumer's copy (Model) equals an
ldapsearch of the server with the daemon's base, filter, attributes and
identity, that the Model saw no anomaly, and, where the row says so, the
cookie in the store (read with mdb_dump from lmdb-utils, after the daemon
stopped, or live while it runs: LMDB readers need no lock).

Helpers that the harness (tests/e2e/harness/) lacks live here: LdapProxy
(a TCP proxy that reads the LDAP messages both ways, can rewrite the Sync
Request's reloadHint and can hold the stream mid-refresh), store_meta
(mdb_dump of the store's meta table), StrictModel (a Model that also flags
re-adds and empty modifies), Run (one daemon run's events in seq order),
parse_metrics/read_status (the status file, checked for its format) and
guard_stop/entries_dump/deletes_of (what a refusal of the mass-delete guard
leaves), shared with test_health.py, test_guard.py, test_disk_full.py and
test_ad.py.
"""

import os
import re
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F403
import harness  # noqa: E402

# Run as a script, this file registers its rows; imported by
# test_conformance_edge_cases.py for the helpers, it must not register them
# again.
def _unregistered(arg=None, **kw):
    return arg if callable(arg) else (lambda fn: fn)


row = test if __name__ == '__main__' else _unregistered

SUFFIX = 'dc=example,dc=com'
PEOPLE = 'ou=people,' + SUFFIX
GROUPS = 'ou=groups,' + SUFFIX
OTHER = 'ou=other,' + SUFFIX


# ---------------------------------------------------------------- the lab

def person(name, ou=PEOPLE, **extra):
    """(dn, attrs) of a test person uid=NAME under ou."""
    attrs = {'objectClass': ['top', 'person', 'organizationalPerson', 'inetOrgPerson'], 'uid': name,
             'cn': name.capitalize(), 'sn': name.capitalize() + 'son', 'mail': name + '@example.com',
             'description': name + ' the tester'}
    attrs.update(extra)
    return 'uid=%s,%s' % (name, ou), attrs


def ou_entry(dn):
    return ldif_entry(dn, {'objectClass': 'organizationalUnit', 'ou': dn.split(',')[0].split('=')[1]})


def lab(tmp, variant='V0', people=('alice', 'bob', 'carol'), ous=(), **kw):
    """A lab slapd (harness base entries) plus the organizational units `ous`
    (full DNs) and the people (uid=NAME,ou=people)."""
    s = Slapd(tmp, variant=variant, **kw)
    ldif = b''.join(ou_entry(dn) for dn in ous)
    ldif += b''.join(ldif_entry(*person(p)) for p in people)
    if ldif:
        s.add(ldif)
    return s


def feed(tmp, s, con, base=None, attrs=None, filt=None, server=None, processes=3, bind='reader', **kw):
    """ldapfeed on s bound as cn=reader (bind='root': the rootdn), following
    base/attrs/filt; server: a URL prefix to connect to instead of s (an
    LdapProxy's).  The search is kept on the Daemon as .search for
    view()/check_model()."""
    dn, pw = (s.rootdn, s.rootpw) if bind == 'root' else (s.reader_dn, s.reader_pw)
    url = ldap_url(server or s, base or s.suffix, attrs=attrs, filt=filt, exts=['bindname=' + dn])
    d = Daemon(tmp, s, con, url=url, password=pw, processes=processes, bind=bind, **kw)
    d.search = {'base': base or s.suffix, 'attrs': attrs, 'filt': filt or '(objectClass=*)'}
    return d


def view(s, d, bind=None):
    """The server's answer to the daemon's search, as the daemon's identity."""
    q = d.search
    return s.search(q['base'], 'sub', q['filt'], q['attrs'], bind=bind or d.bind)


def reader_pid(d):
    """The reader's pid, from its log lines (ldapfeed[PID] reader: ...)."""
    pids = re.findall(r'ldapfeed\[(\d+)\] reader:', d.stderr())
    return int(pids[-1]) if pids else None


def refresh_line(d, n=-1):
    """(adds, modifies, renames, deletes, swept) of the reader's n-th
    'refresh done' log line."""
    lines = re.findall(r'refresh done in [\d.]+ s: (\d+) adds, (\d+) modifies, (\d+) renames, (\d+) deletes '
                       r'\((\d+) swept\)', d.stderr())
    assert lines, 'no "refresh done" line in the daemon log:\n' + d.stderr()
    return tuple(int(x) for x in lines[n])


# ---------------------------------------------------------------- the store

def store_meta(datadir):
    """The store's meta table {key: value} (bytes), read with mdb_dump (a
    read-only LMDB transaction: safe while the daemon runs)."""
    try:
        r = subprocess.run(['mdb_dump', '-s', 'meta', datadir], capture_output=True, timeout=30)
    except FileNotFoundError:
        raise Skip('mdb_dump not installed (apt-get install lmdb-utils)')
    if r.returncode != 0:
        raise AssertionError('mdb_dump -s meta %s: %s' % (datadir, r.stderr.decode(errors='replace')))
    lines = r.stdout.decode().splitlines()
    data = lines[lines.index('HEADER=END') + 1:lines.index('DATA=END')]
    vals = [bytes.fromhex(x.strip()) for x in data]
    return dict(zip(vals[0::2], vals[1::2]))


def stored_cookie(d):
    return store_meta(d.datadir).get(b'cookie')


def csns(cookie):
    """The CSN vector of a cookie (list of str), [] without csn=."""
    m = re.search(rb'(?:^|,)csn=([^,]*)', cookie or b'')
    return [c for c in m.group(1).decode().split(';') if c] if m else []


def assert_cookie_current(s, cookie, what='stored cookie'):
    """The cookie has a CSN and it is the provider's contextCSN (single SID)."""
    assert cookie and b'csn=' in cookie, '%s without csn=: %r' % (what, cookie)
    assert csns(cookie) == s.context_csn(), '%s %r, provider contextCSN %r' % (what, cookie, s.context_csn())


def wait_cookie_current(s, d, timeout=10):
    """Poll the live store until its cookie is the provider's contextCSN."""
    return wait_until(lambda: csns(stored_cookie(d)) == s.context_csn(), timeout,
                      'the stored cookie to reach contextCSN %s' % s.context_csn())


def csn_time(csn):
    """Seconds since the epoch of a CSN's timestamp."""
    import calendar
    t = time.strptime(csn[:14], '%Y%m%d%H%M%S')
    return calendar.timegm(t) + float('0.' + csn[15:21])


# ---------------------------------------------------------------- events

def _sorted_names(names):
    return list(names) in (sorted(names), sorted(names, key=str.lower))


def summary(m):
    """A comparable tuple for one event: its type, DNs, uuid and attributes."""
    t = m.get('type')
    if t == 'add':
        return ('add', m['dn'], m['uuid'], normalize_attrs(m['attrs']))
    if t == 'modify':
        assert _sorted_names(m['changed']), 'changed is not sorted: %r' % (m,)
        return ('modify', m['dn'], m['uuid'], normalize_attrs(m['old']), normalize_attrs(m['new']),
                tuple(sorted(m['changed'])))
    if t == 'rename':
        return ('rename', m['old_dn'], m['dn'], m['uuid'])
    if t == 'delete':
        return ('delete', m['dn'], m['uuid'], normalize_attrs(m['old']))
    if t == 'refresh_done':
        return ('refresh_done',)
    return ('?', repr(m)[:200])


def A(dn, uuid, attrs):
    return ('add', dn, uuid, normalize_attrs(attrs))


def M(dn, uuid, old, new):
    old, new = normalize_attrs(old), normalize_attrs(new)
    changed = tuple(sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)))
    assert changed, 'expected modify of %s changes nothing' % dn
    return ('modify', dn, uuid, old, new, changed)


def R(old_dn, dn, uuid):
    return ('rename', old_dn, dn, uuid)


def D(dn, uuid, old):
    return ('delete', dn, uuid, normalize_attrs(old))


RD = ('refresh_done',)


def _fmt(ev):
    def short(a):
        return '{%s}' % ', '.join('%s:%s' % (k, [harness._short(x, 40) for x in v][:3]) for k, v in a.items())
    if ev[0] == 'add':
        return 'A %s %s %s' % (ev[1], ev[2], short(ev[3]))
    if ev[0] == 'modify':
        return 'M %s %s changed=%s new=%s' % (ev[1], ev[2], list(ev[5]), short(ev[4]))
    if ev[0] == 'delete':
        return 'D %s %s old=%s' % (ev[1], ev[2], short(ev[3]))
    return ' '.join(str(x) for x in ev)


def assert_events(actual, expected, ordered=True, what='events'):
    """actual (summaries) == expected; ordered=False compares multisets."""
    a, e = list(actual), list(expected)
    if not ordered:
        a, e = sorted(a, key=repr), sorted(e, key=repr)
    if a == e:
        return
    lines = ['%s differ: got %d, expected %d' % (what, len(a), len(e))]
    for i in range(max(len(a), len(e))):
        x = a[i] if i < len(a) else None
        y = e[i] if i < len(e) else None
        if x != y:
            lines.append('  [%d] got      %s' % (i, _fmt(x) if x else '-'))
            lines.append('  [%d] expected %s' % (i, _fmt(y) if y else '-'))
    if len(lines) > 41:
        lines = lines[:41] + ['  ...']
    raise AssertionError('\n'.join(lines))


class Run:
    """One daemon run as the consumer saw it (connections grouped by their
    hellos): .reload, .workers, .events (every message but hello, in seq
    order, refresh_done once) and .timeline (their summaries).  Checks that
    each connection got at most one refresh_done and that they share a seq."""

    def __init__(self, con, k):
        runs = harness._group_runs(con.records())
        assert len(runs) > k, 'run %d not seen (%d runs)' % (k, len(runs))
        r = runs[k]
        self.conns, self.workers, self.hellos = r['conns'], r['workers'], r['hellos']
        self.reload = [h.get('reload') for h in r['hellos']]
        per = con.per_connection()
        msgs = [m for c in r['conns'] for m in per[c] if m.get('type') != 'hello']
        rds = {c: [m for m in per[c] if m.get('type') == 'refresh_done'] for c in r['conns']}
        assert all(len(v) <= 1 for v in rds.values()), 'several refresh_done on one connection: %r' % rds
        rd_seqs = {m['seq'] for v in rds.values() for m in v}
        assert len(rd_seqs) <= 1, 'refresh_done seqs differ: %r' % rd_seqs
        self.rd_count = sum(len(v) for v in rds.values())
        self.seqs = [m['seq'] for m in msgs if m.get('type') != 'refresh_done']
        assert len(set(self.seqs)) == len(self.seqs), 'a seq used twice: %r' % sorted(self.seqs)
        evs = [m for m in msgs if m.get('type') != 'refresh_done']
        if rd_seqs:
            evs.append({'type': 'refresh_done', 'seq': rd_seqs.pop()})
        self.events = sorted(evs, key=lambda m: (m.get('seq', 0), m.get('type') == 'refresh_done'))
        self.timeline = [summary(m) for m in self.events]


def wait_run(con, k, timeout=30):
    """Wait until run k has all its workers connected and a refresh_done on
    each connection; returns Run(con, k)."""
    def done():
        runs = harness._group_runs(con.records())
        if len(runs) <= k:
            return False
        r = runs[k]
        if len(r['conns']) < r['workers']:
            return False
        per = con.per_connection()
        return all(any(m.get('type') == 'refresh_done' for m in per[c]) for c in r['conns'])
    try:
        wait_until(done, timeout, 'run %d to connect every worker and get refresh_done' % k)
    except AssertionError as e:
        raise AssertionError('%s (consumer accept errors %r, %d auth failures)'
                             % (e, con.accept_errors, con.auth_failures)) from None
    return Run(con, k)


def check_run(con, k, expected, reload=False, ordered=True):
    """Run k (complete: its daemon has stopped) is `expected` exactly, its
    hellos say reload=`reload`, every worker got one refresh_done, and its
    seqs continue (or restart at 1 after a wipe)."""
    r = Run(con, k)
    assert r.reload == [reload] * r.workers, 'run %d hello reload flags %r, expected %r' % (k, r.reload, reload)
    assert len(r.conns) == r.workers, 'run %d: %d connections for %d workers' % (k, len(r.conns), r.workers)
    if RD in expected:
        assert r.rd_count == r.workers, 'run %d: %d refresh_done for %d workers' % (k, r.rd_count, r.workers)
    assert_events(r.timeline, expected, ordered, 'run %d events' % k)
    if k > 0 and r.seqs:
        prev = [s for j in range(k) for s in Run(con, j).seqs + [m['seq'] for m in Run(con, j).events]]
        if reload:
            assert min(r.seqs) == 1, 'run %d after a wipe starts at seq %d, not 1' % (k, min(r.seqs))
        elif prev:
            assert min(r.seqs) > max(prev), 'run %d seq %d does not continue after %d' % (k, min(r.seqs), max(prev))
    return r


class StrictModel(Model):
    """A Model that also flags an add of a uuid the consumer already holds
    (outside a reload snapshot), a modify that changes nothing and a rename
    to the same DN."""

    def _on_add(self, m):
        u = m.get('uuid')
        if u in self.entries and (self._snap is None or u in self._snap['seen']):
            self._anomaly('add of a uuid the consumer already has', m)
        super()._on_add(m)

    def _on_modify(self, m):
        if normalize_attrs(m.get('old')) == normalize_attrs(m.get('new')):
            self._anomaly('modify that changes nothing', m)
        super()._on_modify(m)

    def _on_rename(self, m):
        if m.get('old_dn') == m.get('dn'):
            self._anomaly('rename to the same DN', m)
        super()._on_rename(m)


def check_model(con, s, d, bind=None, drop_attrs=()):
    """The consumer's copy equals the server's answer to the daemon's search,
    and nothing anomalous was received.  drop_attrs: names ignored on both
    sides (case-insensitive)."""
    m = StrictModel.from_consumer(con)
    assert m.anomalies == [], 'model anomalies:\n  ' + '\n  '.join(m.anomalies[:20])
    q = d.search
    if drop_attrs:
        drop = {a.lower() for a in drop_attrs}
        mine = {dn: {k: v for k, v in a.items() if k.lower() not in drop} for dn, a in m.as_dict().items()}
        theirs = {dn: {k: v for k, v in a.items() if k.lower() not in drop} for dn, a in view(s, d, bind).items()}

        class _Fixed:
            def search(self, *a, **k):
                return theirs
        assert_model_equals_server(mine, _Fixed(), q['base'], q['filt'], q['attrs'])
    else:
        assert_model_equals_server(m, s, q['base'], q['filt'], q['attrs'], bind=bind or d.bind)
    assert m.anomalies == [], 'model anomalies:\n  ' + '\n  '.join(m.anomalies[:20])
    return m


def stop_clean(d):
    """SIGTERM; the daemon exits 0 and writes the marker."""
    rc = d.stop()
    assert rc == 0, 'ldapfeed exited %s; stderr:\n%s' % (rc, d.stderr()[-3000:])
    assert d.marker_exists(), 'no marker after a clean stop'
    return rc


# ---------------------------------------------------------------- LDAP proxy

SYNC_REQUEST = '1.3.6.1.4.1.4203.1.9.1.1'
SYNC_STATE = '1.3.6.1.4.1.4203.1.9.1.2'
SYNC_DONE = '1.3.6.1.4.1.4203.1.9.1.3'
SYNC_INFO = '1.3.6.1.4.1.4203.1.9.1.4'
CANCEL = '1.3.6.1.1.8'


def _tlv(b, i):
    """(tag, content start, content end) of the BER element at b[i]."""
    tag, n, j = b[i], b[i + 1], i + 2
    if n & 0x80:
        k = n & 0x7f
        n, j = int.from_bytes(b[j:j + k], 'big'), j + k
    return tag, j, j + n


def _children(b, start, end):
    i = start
    while i < end:
        t, s, e = _tlv(b, i)
        yield t, s, e
        i = e


def _frame_len(buf):
    """Length of the first complete LDAPMessage in buf, or None."""
    if len(buf) < 2:
        return None
    n, hdr = buf[1], 2
    if n & 0x80:
        k = n & 0x7f
        if len(buf) < 2 + k:
            return None
        n, hdr = int.from_bytes(buf[2:2 + k], 'big'), 2 + k
    return hdr + n if len(buf) >= hdr + n else None


def _controls(b, parts):
    out = {}
    for t, s, e in parts[2:]:
        if t != 0xa0:
            continue
        for _, cs, ce in _children(b, s, e):
            f = list(_children(b, cs, ce))
            oid = bytes(b[f[0][1]:f[0][2]]).decode()
            vals = [x for x in f[1:] if x[0] == 0x04]
            out[oid] = (vals[0][1], vals[0][2]) if vals else None
    return out


def _int(b, s, e):
    return int.from_bytes(b[s:e], 'big', signed=True)


class _Pair:
    """One proxied connection.  Sockets are only shut down while its pump
    threads may use them, and closed by the last pump to leave: closing an
    fd another thread is about to use lets the kernel hand that number to a
    new socket (another test's listener) and the thread would use that one."""

    def __init__(self, client, server):
        self.client, self.server, self.dead = client, server, False
        self.threads = []
        self._left = 0
        self._lock = threading.Lock()

    def shutdown(self):
        self.dead = True
        for so in (self.client, self.server):
            try:
                so.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def leave(self):
        self.shutdown()
        with self._lock:
            self._left += 1
            last = self._left == 2
        if last:
            self.client.close()
            self.server.close()


class LdapProxy:
    """A TCP proxy in front of a Slapd that decodes the LDAP messages both
    ways.  .url is the address to give ldapfeed.

    Records: .requests (Sync Request controls: {'mode', 'cookie', 'hint'}),
    .exops (extended request OIDs), .server (from slapd: dicts with kind
    'entry' {state, uuid, dn, cookie}, 'done' {code, text, sync_done, cookie,
    refresh_deletes}, 'ext' {code}, 'newcookie', 'refreshDelete',
    'refreshPresent' {cookie, refresh_done}, 'idset' {deletes, uuids,
    cookie}).  force_hint_false rewrites a TRUE reloadHint to FALSE in place.
    hold(n, partial) stops forwarding slapd's messages once n entries went
    with a Sync State control went through (partial: after sending half of
    the next message); drop() closes every connection (as a dead server
    would); release() lets it go on.  gate_after_53: once slapd answers 53,
    the next SearchRequest waits until open_gate()."""

    def __init__(self, slapd, force_hint_false=False):
        self.slapd = slapd
        self.force_hint_false = force_hint_false
        self.requests, self.exops, self.server = [], [], []
        self.entries_sent = 0
        self._cond = threading.Condition()
        self._hold = None
        self._partial = False
        self._pairs = []
        self._closing = False
        self.gate_after_53 = False
        self._gate = False
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(('127.0.0.1', 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self.url = 'ldap://127.0.0.1:%d' % self.port
        self._thread = threading.Thread(target=self._accept, daemon=True, name='ldap-proxy')
        self._thread.start()
        harness._register(self)

    # -- control
    def hold(self, n, partial=True):
        with self._cond:
            self._hold, self._partial = n, partial
            self._cond.notify_all()

    def release(self):
        with self._cond:
            self._hold = None
            self._cond.notify_all()

    def open_gate(self):
        with self._cond:
            self.gate_after_53, self._gate = False, False
            self._cond.notify_all()

    def drop(self):
        with self._cond:
            pairs, self._pairs = self._pairs, []
            for p in pairs:
                p.dead = True
            self._cond.notify_all()
        for p in pairs:
            p.shutdown()
        return pairs

    def held(self):
        """True while the slapd->ldapfeed direction is stopped by hold()."""
        with self._cond:
            return self._hold is not None and self.entries_sent >= self._hold

    def results(self, kind='done'):
        with self._cond:
            return [x for x in self.server if x['kind'] == kind]

    def _teardown(self):
        # Wake the accept thread with shutdown() and wait for it (and the
        # pumps) to leave before the fds are closed: see _Pair.
        self._closing = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._thread.join(10)
        self._sock.close()
        for p in self.drop():
            for t in p.threads:
                t.join(10)

    # -- plumbing
    def _accept(self):
        while not self._closing:
            try:
                c, _ = self._sock.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(('127.0.0.1', self.slapd.port), timeout=5)
                s.settimeout(None)
            except OSError:
                c.close()
                continue
            p = _Pair(c, s)
            p.threads = [threading.Thread(target=self._pump, args=(p, c, s, True), daemon=True),
                         threading.Thread(target=self._pump, args=(p, s, c, False), daemon=True)]
            with self._cond:
                if self._closing:
                    c.close()
                    s.close()
                    return
                self._pairs.append(p)
            for t in p.threads:
                t.start()

    def _pump(self, pair, src, dst, from_client):
        buf = bytearray()
        try:
            while not pair.dead:
                data = src.recv(262144)
                if not data:
                    break
                buf += data
                while True:
                    n = _frame_len(buf)
                    if n is None:
                        break
                    msg, buf = bytearray(buf[:n]), buf[n:]
                    if from_client:
                        if self._client_msg(msg) == 0x63:
                            with self._cond:
                                while self._gate and not pair.dead:
                                    self._cond.wait(0.05)
                        dst.sendall(msg)
                    else:
                        is_entry = self._server_msg(msg)
                        if not self._send_held(pair, dst, msg):
                            return
                        if is_entry:
                            with self._cond:
                                self.entries_sent += 1
        except (OSError, ValueError, IndexError):
            pass
        finally:
            pair.leave()

    def _send_held(self, pair, dst, msg):
        sent = 0
        with self._cond:
            while self._hold is not None and self.entries_sent >= self._hold:
                if pair.dead:
                    return False
                if self._partial and sent == 0 and len(msg) > 2:
                    sent = len(msg) // 2
                    dst.sendall(msg[:sent])
                self._cond.wait(0.05)
            if pair.dead:
                return False
        dst.sendall(msg[sent:])
        return True

    def _client_msg(self, b):
        op = None
        try:
            _, s, e = _tlv(b, 0)
            parts = list(_children(b, s, e))
            op = parts[1][0]
            if op == 0x63:
                ctrls = _controls(b, parts)
                if SYNC_REQUEST in ctrls and ctrls[SYNC_REQUEST]:
                    vs, ve = ctrls[SYNC_REQUEST]
                    _, ss, se = _tlv(b, vs)
                    req = {'mode': None, 'cookie': None, 'hint': False}
                    for t, x, y in _children(b, ss, se):
                        if t == 0x0a:
                            req['mode'] = _int(b, x, y)
                        elif t == 0x04:
                            req['cookie'] = bytes(b[x:y])
                        elif t == 0x01:
                            req['hint'] = b[x] != 0
                            if self.force_hint_false and b[x]:
                                b[x] = 0
                    with self._cond:
                        self.requests.append(req)
            elif op == 0x77:
                for t, x, y in _children(b, parts[1][1], parts[1][2]):
                    if t == 0x80:
                        with self._cond:
                            self.exops.append(bytes(b[x:y]).decode())
        except (IndexError, ValueError):
            pass
        return op

    def _server_msg(self, b):
        rec = None
        try:
            _, s, e = _tlv(b, 0)
            parts = list(_children(b, s, e))
            op, os_, oe = parts[1]
            ctrls = _controls(b, parts)
            if op == 0x64:
                dn_t, dn_s, dn_e = next(_children(b, os_, oe))
                rec = {'kind': 'entry', 'dn': bytes(b[dn_s:dn_e]).decode('utf-8', 'replace'), 'state': None,
                       'uuid': None, 'cookie': None}
                if ctrls.get(SYNC_STATE):
                    vs, _ = ctrls[SYNC_STATE]
                    _, ss, se = _tlv(b, vs)
                    f = list(_children(b, ss, se))
                    rec['state'] = _int(b, f[0][1], f[0][2])
                    rec['uuid'] = bytes(b[f[1][1]:f[1][2]]).hex()
                    if len(f) > 2:
                        rec['cookie'] = bytes(b[f[2][1]:f[2][2]])
            elif op in (0x65, 0x78):
                f = list(_children(b, os_, oe))
                rec = {'kind': 'done' if op == 0x65 else 'ext', 'code': _int(b, f[0][1], f[0][2]),
                       'text': bytes(b[f[2][1]:f[2][2]]).decode('utf-8', 'replace'),
                       'sync_done': SYNC_DONE in ctrls, 'cookie': None, 'refresh_deletes': False}
                if ctrls.get(SYNC_DONE):
                    vs, _ = ctrls[SYNC_DONE]
                    _, ss, se = _tlv(b, vs)
                    for t, x, y in _children(b, ss, se):
                        if t == 0x04:
                            rec['cookie'] = bytes(b[x:y])
                        elif t == 0x01:
                            rec['refresh_deletes'] = b[x] != 0
            elif op == 0x79:
                name, value = None, None
                for t, x, y in _children(b, os_, oe):
                    if t == 0x80:
                        name = bytes(b[x:y]).decode()
                    elif t == 0x81:
                        value = (x, y)
                if name == SYNC_INFO and value:
                    t, x, y = _tlv(b, value[0])
                    if t == 0x80:
                        rec = {'kind': 'newcookie', 'cookie': bytes(b[x:y])}
                    elif t in (0xa1, 0xa2):
                        rec = {'kind': 'refreshDelete' if t == 0xa1 else 'refreshPresent', 'cookie': None,
                               'refresh_done': True}
                        for t2, x2, y2 in _children(b, x, y):
                            if t2 == 0x04:
                                rec['cookie'] = bytes(b[x2:y2])
                            elif t2 == 0x01:
                                rec['refresh_done'] = b[x2] != 0
                    elif t == 0xa3:
                        rec = {'kind': 'idset', 'cookie': None, 'deletes': False, 'uuids': []}
                        for t2, x2, y2 in _children(b, x, y):
                            if t2 == 0x04:
                                rec['cookie'] = bytes(b[x2:y2])
                            elif t2 == 0x01:
                                rec['deletes'] = b[x2] != 0
                            elif t2 == 0x31:
                                rec['uuids'] = [bytes(b[x3:y3]).hex() for _, x3, y3 in _children(b, x2, y2)]
        except (IndexError, ValueError, StopIteration):
            rec = {'kind': 'undecoded', 'bytes': bytes(b[:64])}
        if rec is not None:
            with self._cond:
                self.server.append(rec)
                if rec['kind'] == 'done' and rec['code'] == 53 and self.gate_after_53:
                    self._gate = True
        return rec is not None and rec['kind'] == 'entry' and rec['state'] is not None


def hexuuid(u):
    return u.replace('-', '')



# ---------------------------------------------------------------- the status file

METRIC = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"(,|$)')


def parse_metrics(text):
    """{(name, frozenset(labels)): float}; asserts the text format: every
    sample's family has one HELP and one TYPE line before it, counters end
    in _total, label values are well escaped."""
    samples, types, helps = {}, {}, set()
    for line in text.splitlines():
        if line.startswith('# HELP '):
            name = line.split()[2]
            assert name not in helps, 'two HELP lines for %s' % name
            helps.add(name)
            continue
        if line.startswith('# TYPE '):
            _, _, name, typ = line.split()
            assert name not in types and name in helps, 'TYPE of %s without its HELP first' % name
            types[name] = typ
            continue
        m = METRIC.match(line)
        assert m, 'not a sample line: %r' % line
        name, labels = m.group(1), {}
        assert name in types, '%s without its TYPE line' % name
        if types[name] == 'counter':
            assert name.endswith('_total'), 'counter %s without _total' % name
        if m.group(3):
            rest = m.group(3)
            while rest:
                lm = LABEL.match(rest)
                assert lm, 'bad labels in %r' % line
                labels[lm.group(1)] = lm.group(2)
                rest = rest[lm.end():]
        samples[(name, frozenset(labels.items()))] = float(m.group(4))
    return samples


def metric(samples, name, **labels):
    key = (name, frozenset(labels.items()))
    assert key in samples, '%s%r not in the status file' % (name, labels)
    return samples[key]


def read_status(path, pred, timeout=20):
    """Wait until the status file parses and pred(samples) holds."""
    box = {}

    def ok():
        try:
            with open(path) as f:
                box['s'] = parse_metrics(f.read())
        except FileNotFoundError:
            return False
        return pred(box['s'])
    wait_until(ok, timeout, 'the status file to show it', interval=0.5)
    return box['s']


# ---------------------------------------------------------------- the mass-delete guard

GUARD_EXIT = 65


def entries_dump(datadir):
    """The store's entries table (mdb_dump, read-only), as bytes."""
    r = subprocess.run(['mdb_dump', '-s', 'entries', datadir], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def deletes_of(con, k):
    r = Run(con, k)
    return sorted(m['uuid'] for m in r.events if m.get('type') == 'delete')


def guard_stop(d, n, stored, what):
    """d exits GUARD_EXIT with one guard message naming n, stored and the
    limit, and writes the marker (a clean stop)."""
    rc = d.wait(60)
    err = d.stderr()
    assert rc == GUARD_EXIT, 'ldapfeed exited %s, expected %d:\n%s' % (rc, GUARD_EXIT, err[-3000:])
    lines = [ln for ln in err.splitlines() if 'mass-delete guard:' in ln]
    assert len(lines) == 1, 'guard lines: %r' % lines
    m = re.search(r'(.*) would delete (\d+) of the (\d+) entries .* \(([^)]*)\)', lines[0])
    assert m, lines[0]
    assert what in m.group(1), (what, lines[0])
    assert (int(m.group(2)), int(m.group(3))) == (n, stored), (n, stored, lines[0])
    assert d.marker_exists(), 'no marker after the guard stopped the run'
    note(lines[0].split(': ', 1)[1][:300])
    return lines[0]


# ---------------------------------------------------------------- common steps

def load_expected(s, d):
    """The initial load of the daemon's view: A per entry, then refresh_done."""
    u = s.uuids()
    return [A(dn, u[dn], a) for dn, a in view(s, d).items()] + [RD]


def synced(tmp, variant='V0', people=('alice', 'bob', 'carol'), ous=(), base=None, attrs=None, filt=None,
           processes=3, server=None, **slapd_kw):
    """A lab slapd and a store in sync with it, the daemon stopped cleanly
    (the state every "down" row starts from); run 0 is checked as a full
    load.  Returns (slapd, consumer, stopped daemon)."""
    s = lab(tmp, variant, people, ous, **slapd_kw)
    con = Consumer(tmp)
    d = feed(tmp, s, con, base, attrs, filt, server=server, processes=processes)
    wait_run(con, 0)
    stop_clean(d)
    check_run(con, 0, load_expected(s, d), reload=True, ordered=False)
    assert_cookie_current(s, stored_cookie(d))
    return s, con, d


def resume(tmp, s, con, d, k, server=None, processes=3, extra=()):
    """Start ldapfeed again on d's store and search; wait for run k's
    refresh_done, stop it cleanly.  Returns the new (stopped) Daemon."""
    q = d.search
    d2 = feed(tmp, s, con, q['base'], q['attrs'], q['filt'], server=server, processes=processes, extra=extra)
    wait_run(con, k)
    stop_clean(d2)
    return d2


def assert_advanced(s, before, after):
    """The cookie moved forward, to the provider's contextCSN."""
    assert_cookie_current(s, after)
    assert csns(after) > csns(before), 'cookie did not advance: %r -> %r' % (before, after)


def wait_events(con, n, what='events'):
    return wait_until(lambda: len(con.events()) >= n and con.events(), 15,
                      '%d %s (have %d)' % (n, what, len(con.events())))


def deletes_seen(proxy):
    """UUIDs (hex, no dashes) slapd sent in syncIdSets with refreshDeletes."""
    return [u for x in proxy.results('idset') if x['deletes'] for u in x['uuids']]


# ---------------------------------------------------------------- rows

@row
def t01_initial_load(tmp):
    # Scenario (T01): V0 holding 6 entries (suffix, ou=people, ou=groups, cn=reader, alice, bob), an empty store,
    # persist mode.  Start: A x6 and refresh_done on every connection, hello.reload true; once stopped, the store
    # holds a new cookie, the provider's contextCSN.
    s = lab(tmp, people=('alice', 'bob'))
    con = Consumer(tmp)
    d = feed(tmp, s, con)
    wait_run(con, 0)
    stop_clean(d)
    exp = load_expected(s, d)
    assert len(exp) == 7, exp
    check_run(con, 0, exp, reload=True, ordered=False)
    assert_cookie_current(s, stored_cookie(d))
    check_model(con, s, d)


@row
def t02_restart_nothing_changed(tmp):
    # Scenario (T02): after T01, stop cleanly and start again with nothing changed: refresh_done only,
    # hello.reload false, the stored cookie byte for byte unchanged (slapd's "nothing changed" refresh carries no
    # cookie: doc/syncrepl.md, "Refresh shapes").
    s, con, d = synced(tmp, people=('alice', 'bob'))
    c0 = stored_cookie(d)
    d2 = resume(tmp, s, con, d, 1)
    check_run(con, 1, [RD])
    assert stored_cookie(d2) == c0, (c0, stored_cookie(d2))
    check_model(con, s, d2)


@row
def t03_modify_while_down(tmp):
    # Scenario (T03): V0, store in sync, ldapfeed down; alice's description is modified.  Resume:
    # M(description) for alice with the old and new attributes, then refresh_done; the cookie advanced.
    s, con, d = synced(tmp)
    c0, before, u = stored_cookie(d), view(s, d), s.uuids()
    dn = 'uid=alice,' + PEOPLE
    s.replace(dn, 'description', 'alice, modified while ldapfeed was down')
    after = view(s, d)
    d2 = resume(tmp, s, con, d, 1)
    check_run(con, 1, [M(dn, u[dn], before[dn], after[dn]), RD])
    assert_advanced(s, c0, stored_cookie(d2))
    check_model(con, s, d2)


@row
def t04_unrequested_attribute(tmp):
    # Scenario (T04): V0, the search asks for cn and uid only; while down, alice's sn (not requested) changes.
    # Resume: nothing but refresh_done (slapd resends alice with identical cn/uid: no event); the cookie
    # advanced past the sn change.
    s, con, d = synced(tmp, attrs=['cn', 'uid'])
    c0 = stored_cookie(d)
    s.replace('uid=alice,' + PEOPLE, 'sn', 'Changed-Surname')
    d2 = resume(tmp, s, con, d, 1)
    check_run(con, 1, [RD])
    assert_advanced(s, c0, stored_cookie(d2))
    check_model(con, s, d2)


@row
def t05_add_while_down(tmp):
    # Scenario (T05): V0, down; dave is added.  Resume: A(dave) with his attributes, refresh_done; cookie advanced.
    s, con, d = synced(tmp)
    c0 = stored_cookie(d)
    dn, attrs = person('dave')
    s.add_entry(dn, attrs)
    u, after = s.uuids(), view(s, d)
    d2 = resume(tmp, s, con, d, 1)
    check_run(con, 1, [A(dn, u[dn], after[dn]), RD])
    assert_advanced(s, c0, stored_cookie(d2))
    check_model(con, s, d2)


@row
def t06_delete_while_down(tmp):
    # Scenario (T06): V0 (no session log), down; bob is deleted.  Resume: slapd's present phase leaves bob out,
    # the sweep sends D(bob) with his stored DN and last attributes, then refresh_done; cookie advanced.
    s, con, d = synced(tmp)
    c0, before, u = stored_cookie(d), view(s, d), s.uuids()
    dn = 'uid=bob,' + PEOPLE
    s.delete(dn)
    p = LdapProxy(s)
    d2 = resume(tmp, s, con, d, 1, server=p.url)
    check_run(con, 1, [D(dn, u[dn], before[dn]), RD])
    assert p.results('refreshPresent'), 'slapd did not answer with a present phase: %r' % p.server
    assert refresh_line(d2)[3:] == (1, 1), refresh_line(d2)
    assert_advanced(s, c0, stored_cookie(d2))
    check_model(con, s, d2)


@row
def t07_delete_session_log(tmp):
    # Scenario (T07): V1 (session log), sync, stop ldapfeed, restart slapd (its in-memory log is reseeded at our
    # cookie), delete bob.  Resume: slapd names bob in a syncIdSet with refreshDeletes (a delete phase,
    # doc/syncrepl.md, "Refresh shapes") and ldapfeed sends D(bob) from the store (no sweep), refresh_done;
    # cookie advanced.
    s, con, d = synced(tmp, 'V1')
    c0, before, u = stored_cookie(d), view(s, d), s.uuids()
    s.restart()
    dn = 'uid=bob,' + PEOPLE
    s.delete(dn)
    p = LdapProxy(s)
    d2 = resume(tmp, s, con, d, 1, server=p.url)
    assert hexuuid(u[dn]) in deletes_seen(p), 'no IdSet(D) for bob: %r' % p.server
    check_run(con, 1, [D(dn, u[dn], before[dn]), RD])
    assert refresh_line(d2)[3:] == (1, 0), refresh_line(d2)
    assert_advanced(s, c0, stored_cookie(d2))
    check_model(con, s, d2)


@row
def t08_session_log_overflow(tmp):
    # Scenario (T08): V1 with a session log of 100 entries; 150 people deleted while down overflow it, so slapd
    # falls back to a present phase: D x150 (each with its stored DN and attributes) come from the sweep, then
    # refresh_done; cookie advanced.  (150 of 156 entries is a mass delete: --max-delete 100% lets it through,
    # test_guard.py has the guard itself.)
    s = lab(tmp, 'V1', sessionlog=100)
    victims = s.add_people(150)
    con = Consumer(tmp)
    d = feed(tmp, s, con)
    wait_run(con, 0)
    stop_clean(d)
    check_run(con, 0, load_expected(s, d), reload=True, ordered=False)
    c0, before, u = stored_cookie(d), view(s, d), s.uuids()
    s.tool('ldapdelete', victims)
    p = LdapProxy(s)
    d2 = resume(tmp, s, con, d, 1, server=p.url, extra=['--max-delete', '100%'])
    assert p.results('refreshPresent') and not deletes_seen(p), 'expected a present phase: %r' % p.server[:5]
    r = check_run(con, 1, [D(dn, u[dn], before[dn]) for dn in victims] + [RD], ordered=False)
    assert r.timeline[-1] == RD
    assert refresh_line(d2)[3:] == (150, 150), refresh_line(d2)
    assert_advanced(s, c0, stored_cookie(d2))
    check_model(con, s, d2)


@row
def t09_delete_accesslog_restarts(tmp):
    # Scenario (T09): V2 (accesslog-backed session log), sync, stop ldapfeed; restart slapd, delete bob, restart
    # slapd again.  Resume: the persistent log still covers our cookie, so slapd sends bob's UUID in a syncIdSet
    # with refreshDeletes and ldapfeed sends D(bob) (no sweep), refresh_done; cookie advanced.
    s, con, d = synced(tmp, 'V2')
    c0, before, u = stored_cookie(d), view(s, d), s.uuids()
    dn = 'uid=bob,' + PEOPLE
    s.restart()
    s.delete(dn)
    s.restart()
    p = LdapProxy(s)
    d2 = resume(tmp, s, con, d, 1, server=p.url)
    assert hexuuid(u[dn]) in deletes_seen(p), 'no IdSet(D) for bob: %r' % p.server
    check_run(con, 1, [D(dn, u[dn], before[dn]), RD])
    assert refresh_line(d2)[3:] == (1, 0), refresh_line(d2)
    assert_advanced(s, c0, stored_cookie(d2))
    check_model(con, s, d2)


@row
def t10_modrdn_while_down(tmp):
    # Scenario (T10): V0, down; carol is renamed to carla with deleteoldrdn.  Resume: R(uid=carol -> uid=carla),
    # then M(uid) on the new DN (uid carol -> carla), then refresh_done; cookie advanced.
    s, con, d = synced(tmp)
    c0, before, u = stored_cookie(d), view(s, d), s.uuids()
    old, new = 'uid=carol,' + PEOPLE, 'uid=carla,' + PEOPLE
    s.modrdn(old, 'uid=carla', deleteoldrdn=True)
    after = view(s, d)
    d2 = resume(tmp, s, con, d, 1)
    ev = M(new, u[old], before[old], after[new])
    assert ev[5] == ('uid',), ev[5]
    check_run(con, 1, [R(old, new, u[old]), ev, RD])
    assert_advanced(s, c0, stored_cookie(d2))
    check_model(con, s, d2)


@row
def t11_move_within_scope(tmp):
    # Scenario (T11): V0, the search covers the whole tree, down; carol moves from ou=people to ou=other (same
    # RDN).  Resume: R(uid=carol,ou=people -> uid=carol,ou=other) and no modify, refresh_done; cookie advanced.
    s, con, d = synced(tmp, ous=(OTHER,))
    c0, u = stored_cookie(d), s.uuids()
    old, new = 'uid=carol,' + PEOPLE, 'uid=carol,' + OTHER
    s.modrdn(old, 'uid=carol', newsuperior=OTHER)
    d2 = resume(tmp, s, con, d, 1)
    check_run(con, 1, [R(old, new, u[old]), RD])
    assert_advanced(s, c0, stored_cookie(d2))
    check_model(con, s, d2)


@row
def t12_move_out_of_base(tmp):
    # Scenario (T12): the search's base is ou=people; while down, carol moves to ou=other, out of the base.
    # Resume: D(carol) with her stored (ou=people) DN and attributes, refresh_done; cookie advanced.  Done twice:
    # V0 (slapd leaves her out of the present list: sweep) and V1 (the session log's modrdn record, checked
    # against the scope, gives an IdSet(D)).
    for variant in ('V0', 'V1'):
        sub = os.path.join(tmp, variant)
        os.makedirs(sub)
        s, con, d = synced(sub, variant, ous=(OTHER,), base=PEOPLE)
        c0, before, u = stored_cookie(d), view(s, d), s.uuids()
        dn = 'uid=carol,' + PEOPLE
        s.modrdn(dn, 'uid=carol', newsuperior=OTHER)
        p = LdapProxy(s)
        d2 = resume(sub, s, con, d, 1, server=p.url)
        check_run(con, 1, [D(dn, u[dn], before[dn]), RD])
        note('%s: %s' % (variant, 'IdSet(D)' if deletes_seen(p) else 'present phase + sweep'))
        assert_advanced(s, c0, stored_cookie(d2))
        check_model(con, s, d2)
        s.stop()


@row
def t13_persist_sequence(tmp):
    # Scenario (T13): persist over 2 workers, base ou=people, one change at a time: modify alice, rename bob to
    # bobby (deleteoldrdn), move carol out to ou=other, move erin in from ou=other, add dave, delete alice.
    # Expected, in seq order: M(alice), R(bob->bobby) + M(uid), D(carol, her ou=people DN), A(erin), A(dave),
    # D(alice); the stored cookie follows every change (live, contextCSN).
    s = lab(tmp, ous=(OTHER,))
    s.add_entry(*person('erin', OTHER))
    con = Consumer(tmp)
    d = feed(tmp, s, con, base=PEOPLE, processes=4)
    wait_run(con, 0)
    u = s.uuids()
    alice, bob, bobby, carol = ('uid=%s,%s' % (n, PEOPLE) for n in ('alice', 'bob', 'bobby', 'carol'))
    erin_out, erin_in, dave = 'uid=erin,' + OTHER, 'uid=erin,' + PEOPLE, 'uid=dave,' + PEOPLE
    exp, snap, n0 = [], view(s, d), len(con.events())
    steps = [
        (lambda: s.replace(alice, 'description', 'alice modified in persist'),
         lambda b, a: [M(alice, u[alice], b[alice], a[alice])]),
        (lambda: s.modrdn(bob, 'uid=bobby'),
         lambda b, a: [R(bob, bobby, u[bob]), M(bobby, u[bob], b[bob], a[bobby])]),
        (lambda: s.modrdn(carol, 'uid=carol', newsuperior=OTHER),
         lambda b, a: [D(carol, u[carol], b[carol])]),
        (lambda: s.modrdn(erin_out, 'uid=erin', newsuperior=PEOPLE),
         lambda b, a: [A(erin_in, u[erin_out], a[erin_in])]),
        (lambda: s.add_entry(*person('dave')),
         lambda b, a: [A(dave, s.uuids()[dave], a[dave])]),
        (lambda: s.delete(alice),
         lambda b, a: [D(alice, u[alice], b[alice])]),
    ]
    for change, expect in steps:
        change()
        after = view(s, d)
        exp += expect(snap, after)
        snap = after
        wait_events(con, n0 + len(exp))
        wait_cookie_current(s, d)
    stop_clean(d)
    r = Run(con, 0)
    rd = r.timeline.index(RD)
    assert_events(r.timeline[rd + 1:], exp, what='persist events')
    assert_cookie_current(s, stored_cookie(d))
    check_model(con, s, d)


@row
def t14_filter_exit_and_entry(tmp):
    # Scenario (T14): persist with filter (description=*) over the whole tree: removing alice's description makes
    # her leave the filter -> D(alice, attributes before); adding one back -> A(alice, new attributes).
    s = lab(tmp)
    con = Consumer(tmp)
    d = feed(tmp, s, con, filt='(description=*)')
    wait_run(con, 0)
    u, before = s.uuids(), view(s, d)
    dn = 'uid=alice,' + PEOPLE
    n0 = len(con.events())
    s.modify_entry(dn, [('delete', 'description', None)])
    wait_events(con, n0 + 1)
    s.modify_entry(dn, [('add', 'description', 'alice is back')])
    after = view(s, d)
    wait_events(con, n0 + 2)
    wait_cookie_current(s, d)
    stop_clean(d)
    r = Run(con, 0)
    rd = r.timeline.index(RD)
    assert_events(r.timeline[:rd], [A(x, u[x], before[x]) for x in before], False)
    assert_events(r.timeline[rd + 1:], [D(dn, u[dn], before[dn]), A(dn, u[dn], after[dn])])
    assert_cookie_current(s, stored_cookie(d))
    check_model(con, s, d)


@row
def t15_out_of_scope_change(tmp):
    # Scenario (T15): persist, base ou=people; ou=groups (outside the base) is modified.  slapd sends only a
    # newcookie: no event reaches the consumer, and the stored cookie (read live) moves to the new contextCSN.
    s = lab(tmp)
    con = Consumer(tmp)
    p = LdapProxy(s)
    d = feed(tmp, s, con, base=PEOPLE, server=p.url)
    wait_run(con, 0)
    c0 = stored_cookie(d)
    s.replace(GROUPS, 'description', 'out of scope')
    wait_cookie_current(s, d)
    assert p.results('newcookie'), 'slapd sent no newcookie: %r' % p.server[-3:]
    assert csns(stored_cookie(d)) > csns(c0)
    assert len(con.events()) == len(load_expected(s, d)) - 1, con.events()
    stop_clean(d)
    check_run(con, 0, load_expected(s, d), reload=True, ordered=False)
    assert_cookie_current(s, stored_cookie(d))
    check_model(con, s, d)


@row
def t16_subtree_rename(tmp):
    # Scenario (T16): whole-tree search; ou=people (alice, bob, carol) is renamed to ou=staff.  In persist, slapd
    # sends one message for ou=people: the consumer gets R(ou=people -> ou=staff), R for each of the 3
    # descendants (suffix rewritten), and M(ou) for the root (deleteoldrdn).  Then, with ldapfeed down, ou=staff
    # is renamed back: the resumed refresh gives the same events the other way, and refresh_done.
    s = lab(tmp)
    con = Consumer(tmp)
    d = feed(tmp, s, con, processes=4)
    wait_run(con, 0)
    u, before = s.uuids(), view(s, d)
    staff = 'ou=staff,' + SUFFIX
    kids = ('alice', 'bob', 'carol')

    def expected(frm, to, b, a):
        kids_r = [R('uid=%s,%s' % (k, frm), 'uid=%s,%s' % (k, to), u['uid=%s,%s' % (k, PEOPLE)]) for k in kids]
        return [R(frm, to, u[PEOPLE])] + kids_r + [M(to, u[PEOPLE], b[frm], a[to])]

    def check_order(events, root_new):
        seqs = {(e['type'], e['dn']): e['seq'] for e in events if 'dn' in e}
        assert seqs[('rename', root_new)] < seqs[('modify', root_new)], events
    n0 = len(con.events())
    s.modrdn(PEOPLE, 'ou=staff')
    mid = view(s, d)
    wait_events(con, n0 + 5)
    wait_cookie_current(s, d)
    stop_clean(d)
    r = Run(con, 0)
    rd = r.timeline.index(RD)
    assert_events(r.timeline[rd + 1:], expected(PEOPLE, staff, before, mid), ordered=False, what='persist events')
    check_order(r.events[rd + 1:], staff)
    check_model(con, s, d)
    s.modrdn(staff, 'ou=people')
    after = view(s, d)
    d2 = resume(tmp, s, con, d, 1, processes=4)
    r = check_run(con, 1, expected(staff, PEOPLE, mid, after) + [RD], ordered=False)
    assert r.timeline[-1] == RD
    check_order(r.events, PEOPLE)
    assert_cookie_current(s, stored_cookie(d2))
    check_model(con, s, d2)


@row
def t17_subtree_out_of_scope(tmp):
    # Scenario (T17): persist, base ou=staff holding ou=team (2 people) and one person directly; ou=team moves
    # under ou=groups, out of the base.  slapd sends one delete (with the new, outside DN): the consumer gets
    # D(ou=team) and D for both stored descendants, each with its stored DN and attributes.
    staff, team = 'ou=staff,' + SUFFIX, 'ou=team,ou=staff,' + SUFFIX
    s = lab(tmp, people=(), ous=(staff, team))
    s.add(ldif_entry(*person('sam', staff)) + ldif_entry(*person('tim', team)) + ldif_entry(*person('tom', team)))
    con = Consumer(tmp)
    d = feed(tmp, s, con, base=staff)
    wait_run(con, 0)
    u, before = s.uuids(), view(s, d)
    n0 = len(con.events())
    s.modrdn(team, 'ou=team', newsuperior=GROUPS)
    wait_events(con, n0 + 3)
    wait_cookie_current(s, d)
    stop_clean(d)
    r = Run(con, 0)
    rd = r.timeline.index(RD)
    exp = [D(dn, u[dn], before[dn]) for dn in (team, 'uid=tim,' + team, 'uid=tom,' + team)]
    assert_events(r.timeline[rd + 1:], exp, ordered=False, what='persist events')
    check_model(con, s, d)


if __name__ == '__main__':
    main()
