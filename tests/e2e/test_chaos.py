#!/usr/bin/env python3
"""Chaos trials (issue 5, item 1): ldapfeed in persist mode follows a V1
slapd (in-memory session log) that a writer thread keeps changing at random
(adds, multi-valued modifies, renames, moves between OUs, subtree renames and
moves of non-leaf OUs, deletes), and at a random moment one fault strikes:
SIGTERM or SIGKILL to the supervisor, the reader or a worker, slapd
restarted, slapd stopped for a few seconds, or the consumer closing one
connection.  ldapfeed is restarted if it exited, the writer stops, and once
the consumer has caught up its model (Model: rebuilt from the snapshot when
hello.reload is true, incremental otherwise) is compared, entry by entry
(entryUUID), with an ldapsearch of the server.

Prints `chaos: K trials, L lost, P phantom, D wrong` (lost: on the server,
missing in the model; phantom: in the model, not on the server; wrong: in
both with another DN or other attributes, plus every Model anomaly and every
seq missing from a run that ended cleanly) and fails if any is non-zero, or
if a fault ends in an exit status SPEC does not document.  The one anomaly
not counted: in a run cut by a crash (a SIGKILLed worker takes the events
it held along), events after the first missing seq may not fit the model
(a rename of an entry whose add was lost); SPEC 2 answers that with a full
reload at the next start, and the reload's snapshot is checked like any
other run.

Environment: CHAOS_TRIALS (default 6), CHAOS_SEED (default: random; printed
so that a run can be replayed), CHAOS_FAULT (only this fault, e.g.
kill-reader; for replaying one kind).
"""

import base64
import os
import random
import signal
import subprocess
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F403
import harness  # noqa: E402

TRIALS = int(os.environ.get('CHAOS_TRIALS', '6') or 6)
SEED = int(os.environ.get('CHAOS_SEED') or random.SystemRandom().randrange(1, 2 ** 31))
FAULTS = ('term-supervisor', 'term-reader', 'term-worker', 'kill-supervisor', 'kill-reader', 'kill-worker',
          'slapd-restart', 'slapd-down', 'close-connection')
ONLY_FAULT = os.environ.get('CHAOS_FAULT') or None
CATCH_UP_SECS = 120
CRASH_WORDS = ('Segmentation', 'AddressSanitizer', 'runtime error:', 'LeakSanitizer', 'stack smashing',
               'double free')

if ONLY_FAULT and ONLY_FAULT not in FAULTS:
    sys.exit('CHAOS_FAULT must be one of: %s' % ', '.join(FAULTS))

tally = {'trials': 0, 'lost': 0, 'phantom': 0, 'wrong': 0, 'excused': 0, 'problems': [], 'failed': []}


# ---------------------------------------------------------------- LDIF records

def _safe(v):
    return v and v[0] not in b' :<' and v[-1:] != b' ' and all(0x20 <= c < 0x7f for c in v)


def line(attr, value):
    v = value if isinstance(value, bytes) else str(value).encode('utf-8')
    if _safe(v):
        return b'%s: %s' % (attr.encode(), v)
    return b'%s:: %s' % (attr.encode(), base64.b64encode(v))


def rec_add(dn, attrs):
    out = [line('dn', dn), b'changetype: add']
    for k, vals in attrs.items():
        out += [line(k, v) for v in (vals if isinstance(vals, list) else [vals])]
    return b'\n'.join(out) + b'\n\n'


def rec_modrdn(dn, newrdn, newsuperior=None):
    out = [line('dn', dn), b'changetype: modrdn', line('newrdn', newrdn), b'deleteoldrdn: 1']
    if newsuperior:
        out.append(line('newsuperior', newsuperior))
    return b'\n'.join(out) + b'\n\n'


def rec_delete(dn):
    return line('dn', dn) + b'\nchangetype: delete\n\n'


# ---------------------------------------------------------------- the writer

WORDS = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel', 'india', 'juliett',
         'Jörg Müller', 'naïve café', '☃ snow', 'x' * 300]


class Writer(threading.Thread):
    """Feeds random changes to one long-lived `ldapmodify -c` through its
    stdin, keeping its own idea of the tree (people under OUs, team OUs
    under the suffix or a fixed OU) to make mostly valid requests; a failed
    one is simply counted.  suspend() kills ldapmodify and idles (around a
    slapd stop); resume() re-reads the tree and starts a new one."""

    def __init__(self, slapd, rng, pace):
        super().__init__(daemon=True, name='chaos-writer')
        self.s, self.rng, self.pace = slapd, rng, pace
        self.suffix = slapd.suffix
        self.fixed = ['ou=people,' + self.suffix, 'ou=groups,' + self.suffix]
        self.people, self.teams = set(), []
        self.n = 100000
        self.proc = None
        self.ops = self.errors = self.starts = 0
        self.kinds = {}
        self.error = None
        self._halt = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._idle = threading.Event()
        self._lock = threading.Lock()

    # -- the tree
    def resync(self):
        dns = self.s.search(attrs=['1.1'])
        self.people = {dn for dn in dns if dn.startswith('uid=')}
        self.teams = [dn for dn in dns if dn.startswith('ou=team')]

    def next(self):
        self.n += 1
        return self.n

    def parents(self):
        return self.fixed + self.teams

    # -- ldapmodify
    def _start_proc(self):
        argv = ['ldapmodify', '-c', '-x', '-H', self.s.url, '-D', self.s.rootdn, '-w', self.s.rootpw]
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env=dict(os.environ, LDAPNOINIT='1'), start_new_session=True)
        register_process(p, group=True, name='ldapmodify')
        t = threading.Thread(target=self._errors, args=(p,), daemon=True)
        t.start()
        self.proc = p
        self.starts += 1

    def _errors(self, p):
        for ln in p.stderr:
            if ln.startswith(b'ldap_'):
                with self._lock:
                    self.errors += 1

    def _kill_proc(self):
        if self.proc is not None:
            terminate_pid(self.proc, group=True, term_timeout=0.5, sig=signal.SIGKILL)
            self.proc = None

    def _drain_proc(self, timeout):
        """Close stdin and let ldapmodify finish what it was given."""
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            raise AssertionError('ldapmodify still busy %gs after its input ended' % scaled(timeout))
        finally:
            self._kill_proc()

    # -- control
    def suspend(self, timeout=30):
        self._idle.clear()
        self._running.clear()
        wait_until(self._idle.is_set, timeout, 'the writer to pause')

    def resume(self):
        self._running.set()

    def finish(self, timeout=120):
        """Stop generating, let ldapmodify apply everything, join."""
        self._halt.set()
        self._running.set()
        self.join(scaled(timeout))
        if self.is_alive():
            raise AssertionError('the writer did not finish within %gs' % scaled(timeout))
        if self.error:
            raise AssertionError('the writer failed:\n' + self.error)

    # -- the loop
    def run(self):
        try:
            while not self._halt.is_set():
                if not self._running.is_set():
                    self._kill_proc()
                    self._idle.set()
                    self._running.wait(0.2)
                    continue
                if self.proc is None:
                    try:
                        self.resync()
                    except LdapError:
                        self._halt.wait(0.2)     # slapd coming back: try again
                        continue
                    self._start_proc()
                kind, rec = self.op()
                if rec is None:
                    continue
                try:
                    self.proc.stdin.write(rec)
                    self.proc.stdin.flush()
                except (BrokenPipeError, OSError):
                    self._kill_proc()
                    continue
                self.ops += 1
                self.kinds[kind] = self.kinds.get(kind, 0) + 1
                self._halt.wait(self.rng.uniform(0, 2 * self.pace))
            self._drain_proc(90)
        except BaseException:
            self.error = traceback.format_exc()
            self._kill_proc()

    def person_attrs(self, uid):
        r = self.rng
        a = {'objectClass': ['top', 'person', 'organizationalPerson', 'inetOrgPerson'], 'uid': uid,
             'cn': 'Person %s' % uid, 'sn': 'S%d' % r.randrange(1000),
             'description': r.sample(WORDS, r.randint(1, 3))}
        if r.random() < 0.5:
            a['mail'] = ['%s.%d@example.com' % (uid, i) for i in range(r.randint(1, 3))]
        if r.random() < 0.05:
            a['jpegPhoto'] = os.urandom(r.randint(1, 30000))
        return a

    def op(self):
        r = self.rng
        kinds = [('add', 28), ('modify', 30), ('rename', 10), ('move', 8), ('delete', 16),
                 ('ou-rename', 3), ('ou-move', 2), ('ou-add', 2), ('ou-modify', 1)]
        kind = r.choices([k for k, _ in kinds], [w for _, w in kinds])[0]
        people = sorted(self.people)
        if kind != 'add' and kind.startswith(('modify', 'rename', 'move', 'delete')) and not people:
            kind = 'add'
        if kind in ('ou-rename', 'ou-move', 'ou-modify') and not self.teams:
            kind = 'ou-add'
        if kind == 'ou-add' and len(self.teams) >= 5:
            kind = 'add'
        if kind == 'add':
            uid = 'p%d' % self.next()
            dn = 'uid=%s,%s' % (uid, r.choice(self.parents()))
            self.people.add(dn)
            return kind, rec_add(dn, self.person_attrs(uid))
        if kind == 'modify':
            dn = r.choice(people)
            n = self.next()
            changes = r.choice([
                [('replace', 'description', r.sample(WORDS, r.randint(0, 3)))],
                [('add', 'telephoneNumber', ['+1 555 %07d' % n, '+1 556 %07d' % n][:r.randint(1, 2)])],
                [('replace', 'telephoneNumber', [])],
                [('replace', 'mail', ['m%d.%d@example.com' % (n, i) for i in range(r.randint(0, 3))])],
                [('replace', 'sn', ['S%d' % n]), ('add', 'description', ['d%d' % n]),
                 ('replace', 'title', ['t%d' % n] if r.random() < 0.7 else [])],
                [('replace', 'jpegPhoto', [os.urandom(r.randint(1, 20000))] if r.random() < 0.5 else [])],
            ])
            return kind, ldif_modify(dn, changes)
        if kind == 'rename':
            dn = r.choice(people)
            parent = dn.split(',', 1)[1]
            newrdn = 'uid=p%d' % self.next()
            self.people.discard(dn)
            self.people.add(newrdn + ',' + parent)
            return kind, rec_modrdn(dn, newrdn)
        if kind == 'move':
            dn = r.choice(people)
            rdn, parent = dn.split(',', 1)
            others = [p for p in self.parents() if p != parent]
            if not others:
                return kind, None
            sup = r.choice(others)
            newrdn = rdn if r.random() < 0.6 else 'uid=p%d' % self.next()
            self.people.discard(dn)
            self.people.add(newrdn + ',' + sup)
            return kind, rec_modrdn(dn, newrdn, sup)
        if kind == 'delete':
            dn = r.choice(people)
            self.people.discard(dn)
            return kind, rec_delete(dn)
        if kind == 'ou-add':
            dn = 'ou=team%d,%s' % (self.next(), r.choice([self.suffix] + self.fixed))
            self.teams.append(dn)
            return kind, rec_add(dn, {'objectClass': 'organizationalUnit', 'ou': dn.split(',', 1)[0][3:],
                                      'description': r.choice(WORDS)})
        team = r.choice(self.teams)
        rdn, parent = team.split(',', 1)
        if kind == 'ou-modify':
            return kind, ldif_modify(team, [('replace', 'description', r.sample(WORDS, r.randint(0, 2)))])
        if kind == 'ou-rename':
            new, sup = 'ou=team%d' % self.next(), None
        else:
            new = rdn
            sup = r.choice([p for p in [self.suffix] + self.fixed if p != parent])
        newdn = new + ',' + (sup or parent)
        self.teams[self.teams.index(team)] = newdn
        tail = ',' + team
        self.people = {p[:-len(tail)] + ',' + newdn if p.endswith(tail) else p for p in self.people}
        return kind, rec_modrdn(team, new, sup)


# ---------------------------------------------------------------- comparing

def server_view(slapd):
    """{uuid: (dn, attrs)} of the server, as the daemon's identity sees it."""
    res = slapd.search(attrs=['*', 'entryUUID'], bind='reader')
    out = {}
    for dn, attrs in res.items():
        attrs = dict(attrs)
        uu = [v for k, v in attrs.items() if k.lower() == 'entryuuid']
        attrs = {k: v for k, v in attrs.items() if k.lower() != 'entryuuid'}
        out[uu[0][0].decode()] = (dn, normalize_attrs(attrs, fold_names=True))
    return out


def replay(con, crashed=()):
    """Model the consumer's copy from everything it received, run by run, as
    Model.apply_records does (hellos, then events in seq order), noting
    which event produced each anomaly.  Returns (model, counted, excused,
    gaps): anomalies a correct feed never produces; anomalies excused
    because they follow a gap in the seqs of a run that ended in a crash
    (runs whose index is in `crashed`: a SIGKILLed worker takes the events
    it held with it, and the other connections go on without them, which
    is why SPEC 2 makes the next start a full reload); and the seqs missing
    in runs that ended cleanly (lost events)."""
    records = con.records()
    runs = harness._group_runs(records)
    conn_run = {c: n for n, run in enumerate(runs) for c in run['conns']}
    m = Model()
    counted, excused, gaps = [], [], []
    per_run = [[] for _ in runs]
    for order, (idx, msg) in enumerate(records):
        if idx not in conn_run:
            counted.append('message on a connection without a hello: %s' % _short(msg))
        elif not (isinstance(msg, dict) and msg.get('type') == 'hello'):
            per_run[conn_run[idx]].append((order, idx, msg))
    for n, (run, evs) in enumerate(zip(runs, per_run)):
        for h in run['hellos']:
            m.apply(h)
        last = {}
        for _, idx, msg in evs:
            sq = msg.get('seq') if isinstance(msg, dict) else None
            if isinstance(sq, int):
                if idx in last and sq <= last[idx]:
                    counted.append('run %d: seq not increasing on connection %d: %s' % (n, idx, _short(msg)))
                last[idx] = sq
        seqs = {msg['seq'] for _, _, msg in evs if isinstance(msg, dict) and isinstance(msg.get('seq'), int)}
        missing = sorted(set(range(min(seqs), max(seqs) + 1)) - seqs) if seqs else []
        if missing and n not in crashed:
            gaps.append('run %d: %d seqs never arrived, from %d' % (n, len(missing), missing[0]))

        def key(e):
            msg = e[2]
            sq = msg.get('seq') if isinstance(msg, dict) else None
            rd = isinstance(msg, dict) and msg.get('type') == 'refresh_done'
            return (sq if isinstance(sq, int) else float('inf'), rd, e[0])
        for _, _, msg in sorted(evs, key=key):
            k = len(m.anomalies)
            m.apply(msg, check_seq=False)
            sq = msg.get('seq') if isinstance(msg, dict) else None
            for a in m.anomalies[k:]:
                text = 'run %d: %s' % (n, a)
                if n in crashed and missing and isinstance(sq, int) and sq > missing[0]:
                    excused.append(text)
                else:
                    counted.append(text)
    return m, counted, excused, gaps


def compare(con, slapd, crashed=()):
    """(lost, phantom, wrong, details, server entries, excused anomalies):
    the model of everything the consumer received against the server, by
    entryUUID; wrong also counts anomalies and lost events (replay())."""
    m, anomalies, excused, gaps = replay(con, crashed)
    mine = {u: (e['dn'], normalize_attrs(e['attrs'], fold_names=True)) for u, e in m.entries.items()}
    theirs = server_view(slapd)
    lost = sorted(set(theirs) - set(mine))
    phantom = sorted(set(mine) - set(theirs))
    wrong = sorted(u for u in set(mine) & set(theirs) if mine[u] != theirs[u])
    details = []
    for u in lost[:10]:
        details.append('lost     %s %s' % (u, theirs[u][0]))
    for u in phantom[:10]:
        details.append('phantom  %s %s' % (u, mine[u][0]))
    for u in wrong[:10]:
        (dn1, a1), (dn2, a2) = mine[u], theirs[u]
        if dn1 != dn2:
            details.append('wrong    %s dn: model %r, server %r' % (u, dn1, dn2))
        for k in sorted(set(a1) | set(a2)):
            if a1.get(k) != a2.get(k):
                details.append('wrong    %s %s: model %s, server %s' % (u, k, _short(a1.get(k)), _short(a2.get(k))))
    details += ['anomaly  %s' % a for a in anomalies[:10]]
    details += ['gap      %s' % g for g in gaps]
    return len(lost), len(phantom), len(wrong) + len(anomalies) + len(gaps), details, len(theirs), len(excused)


def _short(v):
    s = repr(v)
    return s if len(s) < 120 else s[:117] + '...'


# ---------------------------------------------------------------- one trial

def wait_exit(d, what, timeout=60):
    try:
        return d.wait(timeout)
    except AssertionError as e:
        raise AssertionError('%s: %s' % (what, e)) from None


def run_trial(tmp, n, seed):
    r = random.Random(seed)
    fault = ONLY_FAULT or r.choice(FAULTS)
    procs = r.choice([3, 4])
    fmt = r.choice(['pickle', 'json'])
    sessionlog = r.choice([20, 100, 1000])
    initial = r.randint(1000, 2500) if r.random() < 0.2 else r.randint(20, 300)
    pace = r.uniform(0.002, 0.012)
    before = r.uniform(0.2, 6.0)
    after = r.uniform(1.0, 4.0)
    # sometimes the consumer stops reading for a while around the fault, so that it strikes with
    # events queued in pipes, workers and sockets
    stall = (min(before, r.uniform(0.2, 1.5)), r.uniform(0.0, 2.0)) if r.random() < 0.3 else None
    desc = ('trial %d seed %d: %s, --processes %d, %s, sessionlog %d, %d initial people, pace %.1f ms, '
            'fault after %.1fs, %.1fs of writes after it%s' % (
                n, seed, fault, procs, fmt, sessionlog, initial, pace * 1000, before, after,
                ', consumer not reading from %.1fs before to %.1fs after it' % stall if stall else ''))
    note(desc)
    problems = []
    crashed = set()     # runs (by index) that ended otherwise than cleanly

    s = Slapd(tmp, variant='V1', sessionlog=sessionlog)
    ldif = b''
    teams = ['ou=team1,' + s.suffix, 'ou=team2,ou=groups,' + s.suffix]
    for t in teams:
        ldif += rec_add(t, {'objectClass': 'organizationalUnit', 'ou': t.split(',')[0][3:]})
    parents = ['ou=people,' + s.suffix, 'ou=groups,' + s.suffix] + teams
    w0 = Writer(s, r, pace)
    for i in range(initial):
        uid = 'u%d' % i
        ldif += rec_add('uid=%s,%s' % (uid, r.choice(parents)), w0.person_attrs(uid))
    s.tool('ldapmodify', [], input=ldif)
    con = Consumer(tmp, fmt=fmt)
    d = Daemon(tmp, s, con, processes=procs)
    daemons = [d]
    workers = max(1, procs - 2)
    writer = Writer(s, r, pace)
    writer.start()
    t_start = time.monotonic()

    # the fault, at a random moment (for faults aimed at a process: once startup is over)
    if stall:
        time.sleep(before - stall[0])
        con.pause()
        time.sleep(stall[0])
    else:
        time.sleep(before)

    def end_stall():
        if stall:
            time.sleep(stall[1])
            con.resume()
    if fault in ('slapd-restart', 'slapd-down'):
        writer.suspend()
        s.stop()
        if fault == 'slapd-down':
            time.sleep(r.uniform(1.0, 5.0))
        s.start()
        writer.resume()
        end_stall()
        if not d.alive():
            problems.append('%s: ldapfeed exited (%s); it must reconnect' % (fault, d.returncode))
    else:
        # startup over (hellos may sit unread in a stalled consumer's sockets)
        wait_until(lambda: 'supervisor: started' in d.stderr() and len(list(con.connection_pids().values())) >= workers, 30,
                   'ldapfeed to start (%d workers connected)' % workers)
        wpids = list(con.connection_pids().values())
        if fault == 'close-connection':
            con.close_connection(r.choice(con.open_connections()))
            expect = 70
        else:
            sig = signal.SIGTERM if fault.startswith('term') else signal.SIGKILL
            target = fault.split('-', 1)[1]
            if target == 'supervisor':
                pid = d.pid
            elif target == 'worker':
                pid = r.choice(wpids)
            else:
                rest = [p for p in d.children() if p not in wpids]
                if len(rest) != 1:
                    raise AssertionError('cannot tell the reader: children %r, workers %r' % (d.children(), wpids))
                pid = rest[0]
            os.kill(pid, sig)
            expect = 0 if sig == signal.SIGTERM else (-9 if target == 'supervisor' else 70)
        end_stall()
        rc = wait_exit(d, fault)
        try:
            wait_until(lambda: not instance_procs(d.datadir), 30, 'every ldapfeed process to exit')
        except AssertionError as e:
            problems.append('%s: %s: %r' % (fault, e, instance_procs(d.datadir)))
        if rc != 0:
            crashed.add(0)
        if rc != expect:
            problems.append('%s: exit status %s, expected %s' % (fault, rc, expect))
        if d.marker_exists() != (expect == 0):
            problems.append('%s: marker %s after exit %s' % (fault, 'present' if d.marker_exists() else 'absent', rc))
        d = Daemon(tmp, s, con, processes=procs)
        daemons.append(d)

    time.sleep(after)
    writer.finish()
    note('writer: %d requests (%s), %d refused by slapd, %d ldapmodify processes; %.1fs of writes'
         % (writer.ops, ', '.join('%s %d' % kv for kv in sorted(writer.kinds.items())), writer.errors,
            writer.starts, time.monotonic() - t_start))

    # catch up: poll until the model equals the server, or the deadline
    deadline = time.monotonic() + scaled(CATCH_UP_SECS)
    t0 = time.monotonic()
    while True:
        lost, phantom, wrong, details, total, excused = compare(con, s, crashed)
        if (lost, phantom, wrong) == (0, 0, 0) or time.monotonic() > deadline:
            break
        if not d.alive():
            problems.append('ldapfeed exited (%s) while catching up' % d.returncode)
            break
        time.sleep(0.5)
    took = time.monotonic() - t0
    # then a clean stop, which delivers whatever was still on its way, and the final count
    if d.alive():
        rc = d.stop(60)
        if rc != 0 or not d.marker_exists():
            problems.append('final SIGTERM: exit %s, marker %s' % (rc, d.marker_exists()))
    lost, phantom, wrong, details, total, excused = compare(con, s, crashed)
    for x in daemons:
        bad = [ln for ln in x.stderr().splitlines() if any(w in ln for w in CRASH_WORDS)]
        if bad:
            problems.append('ldapfeed crashed: %s' % ' | '.join(bad[:3]))
    runs = harness._group_runs(con.records())
    note('caught up in %.1fs: %d entries, %d messages in %d runs (reload: %s); lost %d, phantom %d, wrong %d%s'
         % (took, total, len(con.messages()), len(runs), ', '.join(str(rn['reload']).lower() for rn in runs),
            lost, phantom, wrong, '; %d anomalies after the crash excused' % excused if excused else ''))
    for ln in details:
        note(ln)
    tally['trials'] += 1
    tally['lost'] += lost
    tally['phantom'] += phantom
    tally['wrong'] += wrong
    tally['excused'] += excused
    for p in problems:
        tally['problems'].append('trial %d (seed %d): %s' % (n, seed, p))
    if problems or lost or phantom or wrong:
        tally['failed'].append('%d (seed %d, %s)' % (n, seed, fault))
        raise AssertionError('%s\nlost %d, phantom %d, wrong %d\n%s\n%s' % (
            desc, lost, phantom, wrong, '\n'.join(problems), '\n'.join(details)))


def _make_trial(n, seed):
    def trial(tmp):
        # Scenario: one chaos trial (see the module docstring): a fresh V1 slapd, a consumer, ldapfeed in
        # persist mode, the writer, one fault at a random moment, a restart if ldapfeed exited, catch-up,
        # and the model compared with the server by entryUUID; its parameters derive from `seed`.
        try:
            run_trial(tmp, n, seed)
        except BaseException:
            if not any(f.startswith('%d ' % n) for f in tally['failed']):
                tally['failed'].append('%d (seed %d, aborted)' % (n, seed))
            raise
    return trial


_master = random.Random(SEED)
for _n in range(1, TRIALS + 1):
    test(name='trial_%d' % _n, timeout=CATCH_UP_SECS + 180)(_make_trial(_n, _master.randrange(1, 2 ** 31)))


@test
def summary():
    # Scenario: the trials above, summed: `chaos: K trials, L lost, P phantom, D wrong`; fails if any count
    # is non-zero, a trial failed, or a fault ended in an undocumented way.
    line = 'chaos: %d trials, %d lost, %d phantom, %d wrong' % (
        tally['trials'], tally['lost'], tally['phantom'], tally['wrong'])
    print(line + ' (CHAOS_SEED=%d; %d anomalies excused after crashes)' % (SEED, tally['excused']))
    sys.stdout.flush()
    for p in tally['problems']:
        note(p)
    assert tally['trials'] == TRIALS, '%d of %d trials completed; failed: %s' % (
        tally['trials'], TRIALS, ', '.join(tally['failed']))
    assert not tally['failed'] and not tally['problems'] and \
        tally['lost'] == tally['phantom'] == tally['wrong'] == 0, \
        '%s; failed trials: %s' % (line, ', '.join(tally['failed']))


if __name__ == '__main__':
    print('# chaos: CHAOS_SEED=%d CHAOS_TRIALS=%d' % (SEED, TRIALS))
    main()
