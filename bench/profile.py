#!/usr/bin/env python3
"""Where ldapfeed's time goes: the full load (and big-group modifies) under
strace, perf (software cpu-clock sampling) or callgrind, per process.

    python3 bench/profile.py [--n N] [--fmt F] [--workers W] syscalls|perf|callgrind|store|group|persist ...

Reports go to bench/results/profile-<what>.txt.  Needs strace, perf and
valgrind (Debian: strace linux-perf valgrind).
"""
import argparse
import collections
import glob
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402
import lab  # noqa: E402


def roles_of(sup):
    kids = bench.proc_children(sup)
    roles = {sup: 'supervisor'}
    for i, k in enumerate(kids):
        roles[k] = 'reader' if i == 0 else 'worker%d' % (i - 1)
    return roles


def supervisor_pid(feed):
    for _ in range(500):
        try:
            with open(feed.pidfile) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            time.sleep(0.02)
    raise RuntimeError('no pidfile')


def run_wrapped(ctx, s, a, wrap, after_refresh=None):
    f = bench.Feed(ctx, s, a.fmt, a.workers + 2, 'c', wrap=wrap).start()
    r = f.wait_refresh(timeout=3600)
    sup = supervisor_pid(f)
    roles = roles_of(sup)
    if after_refresh:
        after_refresh(f)
    f.stop()
    return r, roles, f


def do_syscalls(ctx, s, a, out):
    trace = ctx.tmp('strace')
    r, roles, f = run_wrapped(ctx, s, a, ['strace', '-f', '-qq', '-o', trace])
    counts = collections.defaultdict(collections.Counter)
    sizes = collections.defaultdict(list)
    pat = re.compile(r'^(\d+)\s+(\w+)\((.*)\)\s+=\s+(-?\d+)')
    with open(trace, errors='replace') as fp:
        for line in fp:
            m = pat.match(line)
            if not m:
                mm = re.match(r'^(\d+)\s+(\w+)\(', line)
                if mm:
                    counts[int(mm.group(1))][mm.group(2)] += 1
                continue
            pid, name = int(m.group(1)), m.group(2)
            counts[pid][name] += 1
            if name in ('write', 'read', 'sendmsg', 'sendto', 'recvfrom', 'writev', 'pwrite64'):
                sizes[(pid, name)].append(int(m.group(4)))
    os.unlink(trace)
    n = s.n
    out.write('Syscalls during a full load of N=%d (%s, W=%d) and a clean stop, per process.\n'
              'ldapfeed %.2f s under strace.\n\n' % (n, a.fmt, a.workers, r['time']))
    for pid, role in sorted(roles.items(), key=lambda x: x[1]):
        c = counts.get(pid, {})
        total = sum(c.values())
        out.write('%s (pid %d): %d syscalls, %.2f per entry\n' % (role, pid, total, total / n))
        for name, k in sorted(c.items(), key=lambda x: -x[1])[:12]:
            sz = sizes.get((pid, name))
            extra = ''
            if sz:
                pos = [x for x in sz if x > 0]
                extra = '  mean %d bytes' % (sum(pos) / len(pos)) if pos else ''
            out.write('  %-16s %9d  %6.3f/entry%s\n' % (name, k, k / n, extra))
        out.write('\n')


def do_perf(ctx, s, a, out, after=None, label='full load'):
    data = ctx.tmp('perf.data')
    r, roles, f = run_wrapped(ctx, s, a, ['perf', 'record', '-q', '-e', 'cpu-clock', '-F', str(a.freq),
                                          '--call-graph', 'dwarf,16384', '-o', data], after_refresh=after)
    time.sleep(1)
    out.write('perf (cpu-clock, %d Hz, dwarf call graphs) over %s, N=%d, %s, W=%d; ldapfeed %.2f s '
              '(slowed by perf)\n\n' % (a.freq, label, s.n, a.fmt, a.workers, r['time']))
    rep = subprocess.run(['perf', 'report', '-i', data, '--stdio', '--no-children', '--sort', 'pid',
                          '-g', 'none'], capture_output=True, text=True).stdout
    out.write('Samples per process (slapd is not recorded):\n%s\n\n'
              % '\n'.join(ln for ln in rep.splitlines() if ln.strip() and not ln.startswith('#')))
    for pid, role in sorted(roles.items(), key=lambda x: x[1]):
        if role == 'supervisor':
            continue
        rep = subprocess.run(['perf', 'report', '-i', data, '--stdio', '--no-children', '--pid', str(pid),
                              '--sort', 'dso,sym', '-g', 'none', '--percent-limit', '0.7',
                              '--percentage', 'relative'],
                             capture_output=True, text=True).stdout
        lines = [ln for ln in rep.splitlines() if ln.strip() and not ln.startswith('#')]
        samples = re.search(r'# Samples: (\S+)', rep)
        out.write('== %s (pid %d), %s samples\n' % (role, pid, samples.group(1) if samples else '?'))
        out.write('\n'.join(lines[:40]) + '\n\n')
        rep = subprocess.run(['perf', 'report', '-i', data, '--stdio', '--children', '--pid', str(pid),
                              '--sort', 'sym', '-g', 'none', '--percent-limit', '3',
                              '--percentage', 'relative'],
                             capture_output=True, text=True).stdout
        lines = [ln for ln in rep.splitlines() if ln.strip() and not ln.startswith('#')]
        out.write('-- %s inclusive (children)\n' % role)
        out.write('\n'.join(lines[:45]) + '\n\n')
    if a.keep:
        bench.log('perf data kept: %s (roles %s)' % (data, roles))
    else:
        os.unlink(data)


def do_callgrind(ctx, s, a, out):
    d = ctx.tmp('callgrind')
    os.makedirs(d)
    r, roles, f = run_wrapped(ctx, s, a, ['valgrind', '--tool=callgrind', '-q',
                                          '--callgrind-out-file=%s/callgrind.out.%%p' % d])
    out.write('callgrind (instructions) over a full load of N=%d (%s, W=%d)\n\n' % (s.n, a.fmt, a.workers))
    for pid, role in sorted(roles.items(), key=lambda x: x[1]):
        path = os.path.join(d, 'callgrind.out.%d' % pid)
        if role == 'supervisor' or not os.path.exists(path):
            continue
        ann = subprocess.run(['callgrind_annotate', '--inclusive=no', path], capture_output=True,
                             text=True).stdout
        out.write('== %s self (top)\n' % role)
        out.write('\n'.join(ann.splitlines()[:45]) + '\n\n')
        ann = subprocess.run(['callgrind_annotate', '--inclusive=yes', path], capture_output=True,
                             text=True).stdout
        out.write('== %s inclusive (top)\n' % role)
        out.write('\n'.join(ann.splitlines()[:60]) + '\n\n')
    keep = os.path.join(bench.RESULTS, 'callgrind')
    os.makedirs(keep, exist_ok=True)
    for pid, role in roles.items():
        for p in glob.glob(os.path.join(d, 'callgrind.out.%d' % pid)):
            os.replace(p, os.path.join(keep, 'callgrind.out.%s' % role))


def do_store(ctx, s, a, out):
    f = bench.Feed(ctx, s, a.fmt, a.workers + 2, 'c').start()
    f.wait_refresh()
    f.stop()
    st = subprocess.run(['mdb_stat', '-efa', f.datadir], capture_output=True, text=True).stdout
    size = f.store_size()
    out.write('Store after a full load of N=%d: data.mdb %d bytes (%d allocated); LDIF %d bytes (%.2fx)\n\n'
              % (s.n, size['apparent'], size['allocated'], s.ldif_size, size['allocated'] / s.ldif_size))
    out.write(st + '\n')


def do_group(ctx, s, a, out):
    m = max(s.groups)

    def mods(f):
        base = f.stats()['data']
        bench.ldmod(ctx, s, a.group_k, dnfmt=lab.group_dn(m), attr='member',
                    valfmt='uid=x%07d,' + lab.PEOPLE, op='add')
        f.mark(base + a.group_k, 600)
    # the load itself is in the profile too; the modifies dominate it
    do_perf(ctx, s, a, out, after=mods, label='full load + %d one-member modifies of a %d-member group'
            % (a.group_k, m))


def do_persist(ctx, s, a, out):
    """Syscalls and CPU per event in persist: strace -c attached to every
    process after the refresh, over a burst of modifies from parallel
    clients (the full load is not in the counts)."""
    import signal
    f = bench.Feed(ctx, s, a.fmt, a.workers + 2, 'c').start()
    f.wait_refresh()
    roles = roles_of(supervisor_pid(f))
    traces = {}
    for pid, role in roles.items():
        path = ctx.tmp('strace-' + role)
        traces[pid] = (path, subprocess.Popen(['strace', '-qq', '-c', '-o', path, '-p', str(pid)],
                                              stderr=subprocess.DEVNULL))
    time.sleep(1)
    base = f.stats()['data']
    cpu0 = f.sampler.cpu()
    scpu0 = bench.proc_cpu(s.pid)
    k = min(a.burst, s.n)
    m = bench.ldmod(ctx, s, k, conns=a.clients)
    t_last = f.mark(base + k, 600)
    cpu1 = f.sampler.cpu()
    scpu1 = bench.proc_cpu(s.pid)
    for pid, (path, st) in traces.items():
        st.send_signal(signal.SIGINT)
        st.wait()
    f.stop()
    out.write('Persist: %d modifies of distinct entries from %d clients, N=%d (%s, W=%d); strace -c attached to '
              'each process after refresh_done.\nServer %.0f modifies/s, events %.0f/s (slowed by strace); '
              'slapd %.0f us CPU per modify.\n\n'
              % (k, a.clients, s.n, a.fmt, a.workers, k / (m['last'] - m['first']), k / (t_last - m['first']),
                 (scpu1 - scpu0) / k * 1e6))
    for pid, role in sorted(roles.items(), key=lambda x: x[1]):
        path = traces[pid][0]
        rows = []
        with open(path, errors='replace') as fp:
            for line in fp:
                w = line.split()
                if len(w) >= 5 and w[0][0].isdigit() and w[-1] != 'total':
                    rows.append((int(w[3]), w[-1]))
        total = sum(c for c, _ in rows)
        cpu = (cpu1.get(role) or 0) - (cpu0.get(role) or 0)
        out.write('%s (pid %d): %.2f syscalls per event; %.0f us CPU per event (under strace)\n'
                  % (role, pid, total / k, cpu / k * 1e6))
        for c, name in sorted(rows, reverse=True)[:10]:
            out.write('  %-16s %9d  %6.3f/event\n' % (name, c, c / k))
        out.write('\n')


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('what', nargs='+', choices=['syscalls', 'perf', 'callgrind', 'store', 'group', 'persist'])
    p.add_argument('--n', type=int, default=20000)
    p.add_argument('--fmt', default='pickle')
    p.add_argument('--workers', type=int, default=1)
    p.add_argument('--group-size', type=int, default=100000)
    p.add_argument('--group-k', type=int, default=20)
    p.add_argument('--freq', type=int, default=999, help='perf sampling rate')
    p.add_argument('--burst', type=int, default=10000, help='modifies for persist')
    p.add_argument('--clients', type=int, default=8, help='parallel modify clients for persist')
    p.add_argument('--workdir', default=os.environ.get('BENCH_WORKDIR', '/var/tmp/ldapfeed-bench'))
    p.add_argument('--ldapfeed')
    p.add_argument('--keep', action='store_true')
    a = p.parse_args()
    ctx = bench.Ctx(a)
    os.makedirs(bench.RESULTS, exist_ok=True)
    try:
        for what in a.what:
            groups = (a.group_size,) if what == 'group' else ()
            s = bench.make_slapd(ctx, 1000 if what == 'group' else a.n, groups=groups)
            path = os.path.join(bench.RESULTS, 'profile-%s%s.txt'
                                % (what, '-w%d' % a.workers if what == 'persist' else ''))
            try:
                with open(path, 'w') as out:
                    out.write('# python3 bench/profile.py %s --n %d --fmt %s --workers %d  (%s; ldapfeed %s)\n\n'
                              % (what, a.n, a.fmt, a.workers, time.strftime('%Y-%m-%d %H:%M'),
                                 ctx.binary_info))
                    {'syscalls': do_syscalls, 'perf': do_perf, 'callgrind': do_callgrind,
                     'store': do_store, 'group': do_group, 'persist': do_persist}[what](ctx, s, a, out)
                bench.log('wrote %s' % path)
            finally:
                s.destroy()
    finally:
        ctx.cleanup()


if __name__ == '__main__':
    main()
