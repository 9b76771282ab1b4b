#!/usr/bin/env python3
"""ldapfeed against a 389 Directory Server (tests/e2e/ds389.py): what the
lookups and the listing that 389-ds needs (doc/providers.md) cost.

    python3 bench/389ds.py [--n 10000] [--reps 3] [--latency-n 200] [--burst 2000]

* full load: N people under ou=people (one ldapadd), the whole suffix read
  by ldapfeed (--mode refresh, W=1, pickle, the harness's Python Listener)
  from an empty store to its exit, against `ldapsearch -x -LLL` of the
  same search bound as the same identity to /dev/null; the two alternated,
  --reps runs, the median of the per-run ratios;
* resume: after each full load, 1% of the people modified, then ldapfeed
  --mode refresh again from the stored cookie (the changed entries, their
  lookups, the listing of the whole search, the catch-up search): its
  time against the full load's in the same run;
* a restart with nothing changed, after the resume: its time against the
  full load's;
* persist latency: --latency-n modifies one after the other, each from
  ldapmodify's exit to the event's arrival at the consumer (one lookup
  search per change on 389-ds), with the server's own answer (ldapmodify's
  run) alongside;
* persist throughput: --burst modifies from 4 ldapmodify clients at once:
  the events' rate at the consumer (to the last one) against the rate the
  server applied them.

Writes bench/results/389ds.json and prints it.  Needs root and the 389-ds
packages (sh scripts/deps 389ds).
"""
import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(TOP, 'tests', 'e2e'))
import harness  # noqa: E402
from lab import finish  # noqa: E402
from harness import Consumer, Daemon, ldap_url, ldif_entry, ldif_modify  # noqa: E402
from ds389 import DS389  # noqa: E402

SUFFIX = 'dc=example,dc=com'
PEOPLE = 'ou=people,' + SUFFIX


def log(*a):
    print('[%s] %s' % (time.strftime('%H:%M:%S'), ' '.join(str(x) for x in a)), file=sys.stderr, flush=True)


def person(i):
    return ldif_entry('uid=p%06d,%s' % (i, PEOPLE), {
        'objectClass': ['top', 'person', 'organizationalPerson', 'inetOrgPerson'], 'uid': 'p%06d' % i,
        'cn': 'Person %d' % i, 'sn': 'Number %d' % i, 'givenName': 'Person',
        'mail': 'p%06d@example.com' % i, 'telephoneNumber': '+1 555 %04d' % (i % 10000),
        'description': 'a benchmark person'})


def modifies(ids, tag):
    return b''.join(ldif_modify('uid=p%06d,%s' % (i, PEOPLE), [('replace', 'description', ['%s %d' % (tag, i)])])
                    for i in ids)


def feed(ds, d0, con, mode, **kw):
    url = ldap_url(ds.url, SUFFIX, exts=['bindname=' + ds.feed_dn])
    return Daemon(d0, ds, con, url=url, password=ds.feed_pw, processes=3, mode=mode, bind='feed', **kw)


def refresh_run(ds, d0, con):
    """ldapfeed --mode refresh on d0's store: (seconds to its exit, events)."""
    before = len(con.events())
    t0 = time.monotonic()
    d = feed(ds, d0, con, 'refresh')
    rc = d.wait(1200)
    took = time.monotonic() - t0
    if rc != 0:
        raise RuntimeError('ldapfeed exited %s:\n%s' % (rc, d.stderr()[-2000:]))
    return took, con.events()[before:]


def ldapsearch(ds):
    t0 = time.monotonic()
    ds.tool('ldapsearch', ['-LLL', '-b', SUFFIX, '(objectClass=*)'], bind='feed', timeout=600)
    return time.monotonic() - t0


def full_and_resume(ds, tmp, k, n):
    d0 = os.path.join(tmp, 'full%d' % k)
    os.makedirs(d0)
    con = Consumer(d0)
    ref = ldapsearch(ds)
    full, evs = refresh_run(ds, d0, con)
    adds = sum(1 for m in evs if m.get('type') == 'add')
    changed = range(k, n, 100)
    ds.modify(modifies(changed, 'resume %d' % k))
    resume, evs = refresh_run(ds, d0, con)
    mods = sum(1 for m in evs if m.get('type') == 'modify')
    if mods != len(changed):
        raise RuntimeError('resume %d: %d modify events for %d changes' % (k, mods, len(changed)))
    idle, evs = refresh_run(ds, d0, con)
    con.close()
    if any(m.get('type') != 'refresh_done' for m in evs):
        raise RuntimeError('idle restart %d: events %r' % (k, evs[:3]))
    return {'ldapfeed_s': round(full, 3), 'ldapsearch_s': round(ref, 3), 'ratio': round(full / ref, 3),
            'entries': adds, 'resume_s': round(resume, 3), 'resume_changes': len(changed),
            'resume_ratio': round(resume / full, 4), 'idle_s': round(idle, 3),
            'idle_ratio': round(idle / full, 4), 'load1': round(os.getloadavg()[0], 2)}


def arrival(con, start, pred, timeout=30):
    """The time the first message from record `start` on that satisfies
    pred arrived, within a thread wake-up: woken by the consumer's own
    condition, without copying its records (a scan of every record per
    poll would cost more than what is measured).  Returns (time, index
    after it)."""
    deadline = time.monotonic() + timeout
    with con._cond:
        i = start
        while True:
            while i < len(con._records):
                i += 1
                if pred(con._records[i - 1][1]):
                    return time.monotonic(), i
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError('timed out waiting for an event')
            con._cond.wait(left)


def persist(ds, tmp, latency_n, burst):
    d0 = os.path.join(tmp, 'persist')
    os.makedirs(d0)
    con = Consumer(d0)
    d = feed(ds, d0, con, 'persist')
    con.wait_refresh_done(timeout=600)
    # latency: one modify at a time, from ldapmodify's exit to the event
    lat, answer = [], []
    at = len(con.records())
    for i in range(latency_n):
        want = [('latency %d' % i).encode()]
        t0 = time.monotonic()
        ds.modify(modifies([i], 'latency'))
        t1 = time.monotonic()
        t2, at = arrival(con, at, lambda m: m.get('type') == 'modify' and m['new'].get('description') == want)
        lat.append(t2 - t1)
        answer.append(t1 - t0)
    # throughput: 4 clients at once
    parts = [range(c, burst, 4) for c in range(4)]
    files = []
    for c, ids in enumerate(parts):
        path = os.path.join(d0, 'burst%d.ldif' % c)
        with open(path, 'wb') as f:
            f.write(modifies([i % 10000 for i in ids], 'burst'))
        files.append(path)
    t0 = time.monotonic()
    procs = [subprocess.Popen(['ldapmodify', '-x', '-H', ds.url, '-D', ds.rootdn, '-w', ds.rootpw, '-f', path],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ, LDAPNOINIT='1'))
             for path in files]
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError('ldapmodify: %s' % p.stderr.read().decode())
    server_s = time.monotonic() - t0
    got = [0]

    def counted(m):
        if m.get('type') == 'modify' and m['new'].get('description', [b''])[0].startswith(b'burst '):
            got[0] += 1
        return got[0] == burst
    t_end, at = arrival(con, at, counted, 600)
    feed_s = t_end - t0
    got = got[0]
    d.stop(60)
    con.close()
    lat.sort()
    answer.sort()

    def pct(xs, q):
        return round(xs[min(len(xs) - 1, int(len(xs) * q))] * 1000, 2)
    return {'latency_ms': {'p50': pct(lat, .5), 'p99': pct(lat, .99), 'max': round(lat[-1] * 1000, 2),
                           'n': len(lat), 'server_answer_p50': pct(answer, .5)},
            'throughput': {'modifies': burst, 'events': got, 'server_per_s': round(burst / server_s),
                           'feed_per_s': round(got / feed_s), 'ratio': round(server_s / feed_s, 3)}}


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--n', type=int, default=10000)
    p.add_argument('--reps', type=int, default=3)
    p.add_argument('--latency-n', type=int, default=200)
    p.add_argument('--burst', type=int, default=2000)
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix='bench-389ds-')
    harness._watchdog_send('d+ ' + tmp)
    ds = DS389(SUFFIX, lazy=True)
    t0 = time.monotonic()
    ds.reset()
    log('389-ds instance ready in %.1f s' % (time.monotonic() - t0))
    t1 = time.monotonic()
    ds.add(ldif_entry(PEOPLE, {'objectClass': ['top', 'organizationalUnit'], 'ou': 'people'}) +
           b''.join(person(i) for i in range(args.n)))
    log('%d people added in %.1f s' % (args.n, time.monotonic() - t1))
    runs = []
    for k in range(args.reps):
        r = full_and_resume(ds, tmp, k, args.n)
        runs.append(r)
        log('run %d: full load %.2f s (%d adds) against ldapsearch %.2f s, ratio %.2f; resume after %d changes '
            '%.2f s, %.1f%% of the full load; restart with nothing changed %.2f s, %.1f%%' % (
                k, r['ldapfeed_s'], r['entries'], r['ldapsearch_s'], r['ratio'], r['resume_changes'],
                r['resume_s'], 100 * r['resume_ratio'], r['idle_s'], 100 * r['idle_ratio']))
    per = persist(ds, tmp, args.latency_n, args.burst)
    log('persist: %r' % per)
    version = subprocess.run(['dpkg-query', '-W', '-f', '${Version}', '389-ds-base'], capture_output=True,
                             text=True).stdout.strip()
    res = {'n': args.n, 'reps': args.reps, 'full': runs,
           'full_ratio_median': round(statistics.median(r['ratio'] for r in runs), 3),
           'resume_ratio_median': round(statistics.median(r['resume_ratio'] for r in runs), 4),
           'idle_ratio_median': round(statistics.median(r['idle_ratio'] for r in runs), 4),
           'persist': per, '389-ds-base': version, 'python': platform.python_version(), 'cpus': os.cpu_count(),
           'commit': subprocess.run(['git', '-C', TOP, 'rev-parse', '--short', 'HEAD'], capture_output=True,
                                    text=True).stdout.strip(),
           'total_s': round(time.monotonic() - t0, 1)}
    finish('389ds', res, ds)


if __name__ == '__main__':
    main()
