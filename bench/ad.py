#!/usr/bin/env python3
"""ldapfeed against a Samba AD domain controller (tests/e2e/samba_dc.py):
the DirSync reader's figures.

    python3 bench/ad.py [--n 10000] [--reps 3] [--latency-n 20]

* full load: N users (under OU=Bench, made with samba's Python bindings in
  one transaction, as fast as the DC takes them), the whole domain read by
  ldapfeed (--mode refresh, W=1, pickle, the harness's Python Listener) from
  an empty store to its exit, against `ldapsearch -x -LLL -E pr=500/noprompt`
  of the same search (all attributes, bound as Administrator, over the same
  ldapi socket) to /dev/null; the two alternated, --reps runs, the median
  of the per-run ratios;
* persist latency: --latency-n modifies one after the other, from
  ldapmodify's exit to the event's arrival at the consumer, with
  --poll-interval 60 (change notification alone wakes ldapfeed) and with
  --poll-interval 1.

Writes bench/results/ad.json and prints a summary.  Needs root and the
samba packages (sh scripts/deps samba).
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
from harness import Consumer, Daemon, ldap_url  # noqa: E402
from samba_dc import BASE, PYTHON, SambaDC  # noqa: E402

_BULK = r'''
import sys
from samba.auth import system_session
from samba.param import LoadParm
from samba.samdb import SamDB
import ldb
conf, n = sys.argv[1], int(sys.argv[2])
lp = LoadParm()
lp.load(conf)
db = SamDB(url=lp.private_path('sam.ldb'), session_info=system_session(), lp=lp)
root = str(db.domain_dn())
ou = 'OU=Bench,' + root
db.transaction_start()
db.add({'dn': ou, 'objectClass': 'organizationalUnit'})
for i in range(n):
    db.add({'dn': 'CN=user%06d,%s' % (i, ou), 'objectClass': 'user', 'sAMAccountName': 'user%06d' % i,
            'givenName': 'User', 'sn': 'Number %d' % i, 'mail': 'user%06d@example.test' % i,
            'description': 'a benchmark user', 'telephoneNumber': '+1 555 %04d' % (i % 10000)})
db.transaction_commit()
'''


def log(*a):
    print('[%s] %s' % (time.strftime('%H:%M:%S'), ' '.join(str(x) for x in a)), file=sys.stderr, flush=True)


def full_load(dc, tmp, k):
    d0 = os.path.join(tmp, 'full%d' % k)
    os.makedirs(d0)
    con = Consumer(d0)
    url = ldap_url(dc.url, BASE, exts=['bindname=' + dc.admin_dn])
    t0 = time.monotonic()
    d = Daemon(d0, None, con, url=url, password=dc.admin_pw, processes=3, mode='refresh')
    rc = d.wait(600)
    took = time.monotonic() - t0
    if rc != 0:
        raise RuntimeError('ldapfeed exited %s:\n%s' % (rc, d.stderr()[-2000:]))
    n = sum(1 for m in con.events() if m.get('type') == 'add')
    con.close()
    return took, n


def ldapsearch(dc):
    t0 = time.monotonic()
    r = subprocess.run(['ldapsearch', '-x', '-LLL', '-H', dc.url, '-D', dc.admin_dn, '-w', dc.admin_pw,
                        '-b', BASE, '-E', 'pr=500/noprompt', '(objectClass=*)'],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ, LDAPNOINIT='1'))
    took = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError('ldapsearch: %s' % r.stderr.decode())
    return took


def latency(dc, tmp, n, poll):
    d0 = os.path.join(tmp, 'lat%d' % poll)
    os.makedirs(d0)
    con = Consumer(d0)
    url = ldap_url(dc.url, BASE, exts=['bindname=' + dc.admin_dn])
    d = Daemon(d0, None, con, url=url, password=dc.admin_pw, processes=3,
               extra=['--poll-interval', str(poll)])
    con.wait_refresh_done(timeout=600)
    target = 'CN=user000001,OU=Bench,' + BASE
    dc.replace(target, 'description', 'arming')
    harness.wait_until(lambda: any(m.get('type') == 'modify' for m in con.events()), 30, 'a first change')
    out = []
    for i in range(n):
        val = 'latency %d %d' % (poll, i)
        t0 = time.monotonic()
        dc.replace(target, 'description', val)
        want = [val.encode()]
        harness.wait_until(lambda: any(m.get('type') == 'modify' and m['new'].get('description') == want
                                       for m in con.events()), 60, 'modify %d' % i, interval=0.002)
        out.append(time.monotonic() - t0)
    d.stop(60)
    con.close()
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--n', type=int, default=10000)
    p.add_argument('--reps', type=int, default=3)
    p.add_argument('--latency-n', type=int, default=20)
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix='bench-ad-')
    harness._watchdog_send('d+ ' + tmp)
    dc = SambaDC(lazy=True)
    t0 = time.monotonic()
    dc.reset()
    log('DC provisioned in %.1f s' % dc.create_seconds)
    t1 = time.monotonic()
    subprocess.run([PYTHON, '-c', _BULK, dc.conf, str(args.n)], check=True)
    load_s = time.monotonic() - t1
    log('%d users added in %.1f s' % (args.n, load_s))
    runs = []
    for k in range(args.reps):
        ref = ldapsearch(dc)
        took, n = full_load(dc, tmp, k)
        runs.append({'ldapfeed_s': round(took, 3), 'ldapsearch_s': round(ref, 3), 'ratio': round(took / ref, 3),
                     'entries': n, 'load1': round(os.getloadavg()[0], 2)})
        log('run %d: ldapfeed %.2f s (%d adds), ldapsearch %.2f s, ratio %.2f' % (k, took, n, ref, took / ref))
    lat = {}
    for poll in (60, 1):
        xs = sorted(latency(dc, tmp, args.latency_n, poll))
        lat[str(poll)] = {'p50': round(statistics.median(xs), 3), 'p99': round(xs[-1] if len(xs) < 100 else
                                                                                  xs[int(len(xs) * .99)], 3),
                          'max': round(xs[-1], 3), 'n': len(xs)}
        log('latency, --poll-interval %d: p50 %.2f s, max %.2f s' % (poll, lat[str(poll)]['p50'], xs[-1]))
    res = {'n': args.n, 'reps': args.reps, 'full': runs,
           'full_ratio_median': round(statistics.median(r['ratio'] for r in runs), 3),
           'latency': lat, 'provision_s': round(dc.create_seconds, 1), 'bulk_add_s': round(load_s, 1),
           'samba': subprocess.run(['samba', '-V'], capture_output=True, text=True).stdout.strip(),
           'python': platform.python_version(), 'cpus': os.cpu_count(),
           'total_s': round(time.monotonic() - t0, 1)}
    finish('ad', res, dc)


if __name__ == '__main__':
    main()
