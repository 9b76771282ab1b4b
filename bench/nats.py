#!/usr/bin/env python3
"""The NATS output's figures (doc/outputs.md), against nats-server -js on
127.0.0.1 with file storage:

  full     a full load of N entries into the stream (--mode refresh: ldapfeed
           exits 0 once JetStream acknowledged every event) against
           ldapsearch -x -LLL of the same search, alternated run by run;
           peak RssAnon of every ldapfeed process through it, and the CPU
           seconds of each party: ldapfeed's reader and worker, nats-server,
           slapd (and ldapsearch in its runs)
  latency  persist: modifies one at a time (ldmod, 10 ms apart), from the
           LDAP server's answer to the event's delivery by a JetStream push
           consumer of the stream (it delivers only what the stream stored)
  rate     persist: modifies as fast as the server takes them (4
           connections); the events in the stream against the modifies
           the server applied, and the rates

  python3 bench/nats.py [--n 100000] [--reps 5] [--workdir DIR] [--ldapfeed PATH]

Writes bench/results/nats.json and prints the README's NATS table.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import lab  # noqa: E402

LDAPFEED = os.path.join(TOP, 'ldapfeed')
LAT_GAP_US = 10000
RATE_CONNS = 4
RATE_N = 20000


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def rss_anon(pid):
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('RssAnon:'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_s(pid):
    """utime + stime of a live process, in seconds."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            x = f.read().rsplit(')', 1)[1].split()
    except OSError:
        return None
    return (int(x[11]) + int(x[12])) / os.sysconf('SC_CLK_TCK')


def children(pid):
    try:
        with open('/proc/%d/task/%d/children' % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


class Nats:
    def __init__(self, d):
        self.dir = d
        os.makedirs(d, exist_ok=True)
        self.port = lab.harness.free_port()
        self.popen = subprocess.Popen(['nats-server', '-js', '-a', '127.0.0.1', '-p', str(self.port),
                                       '-sd', os.path.join(d, 'js')],
                                      stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, 'log'), 'ab'))
        for _ in range(100):
            try:
                socket.create_connection(('127.0.0.1', self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError('nats-server did not start')

    @property
    def url(self):
        return 'nats://127.0.0.1:%d' % self.port

    def stop(self):
        self.popen.terminate()
        self.popen.wait(10)


class PushConsumer(threading.Thread):
    """A JetStream push consumer of new messages, in NATS's text protocol:
    records (arrival time, payload) of each message it is delivered."""

    count = 0

    def __init__(self, port, stream, subject, policy='new'):
        super().__init__(daemon=True)
        PushConsumer.count += 1
        self.deliver = b'bench.deliver.%d' % PushConsumer.count
        self.sock = socket.create_connection(('127.0.0.1', port))
        self.f = self.sock.makefile('rb')
        self.got = []
        self.created = None
        self.sock.sendall(b'CONNECT {"verbose":false,"headers":true}\r\nSUB %s 1\r\n'
                          b'SUB bench.reply 2\r\n' % self.deliver)
        cfg = {'stream_name': stream, 'config': {'deliver_subject': self.deliver.decode(),
                                                   'ack_policy': 'none', 'deliver_policy': policy,
                                                   'filter_subject': subject}}
        body = json.dumps(cfg).encode()
        self.sock.sendall(b'PUB $JS.API.CONSUMER.CREATE.%s bench.reply %d\r\n%s\r\n' % (
            stream.encode(), len(body), body))
        self.start()
        deadline = time.monotonic() + 10
        while self.created is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.created is None or 'error' in self.created:
            raise RuntimeError('push consumer on %s: %s' % (stream, self.created))

    def run(self):
        while True:
            line = self.f.readline()
            if not line:
                return
            if line.startswith(b'PING'):
                self.sock.sendall(b'PONG\r\n')
            elif line.startswith(b'HMSG') or line.startswith(b'MSG'):
                t = time.monotonic()
                parts = line.split()
                total = int(parts[-1])
                data = self.f.read(total + 2)[:total]
                if line.startswith(b'HMSG'):
                    data = data[int(parts[-2]):]
                # by subscription: JetStream delivers under the message's own subject
                if parts[2] == b'1':
                    self.got.append((t, data))
                elif parts[2] == b'2':
                    self.created = json.loads(data)


def full(n, reps, slapd, nats, work):
    out = {'runs': []}
    for rep in range(reps):
        s0 = cpu_s(slapd.pid)
        t0 = time.monotonic()
        p = subprocess.Popen(['ldapsearch', '-x', '-LLL', '-H', slapd.url] + slapd.bind_args() +
                             ['-b', lab.SUFFIX, '(objectClass=*)'], stdout=subprocess.DEVNULL,
                             env=dict(os.environ, LDAPNOINIT='1'))
        _, st, ru = os.wait4(p.pid, 0)
        ref = time.monotonic() - t0
        if st != 0:
            raise RuntimeError('ldapsearch failed')
        ref_cpu = {'slapd': cpu_s(slapd.pid) - s0, 'ldapsearch': ru.ru_utime + ru.ru_stime}
        data = os.path.join(work, 'data-%d' % rep)
        argv = [LDAPFEED, '-H', slapd.url + '/' + lab.SUFFIX + '????bindname=' +
                lab.READER_DN.replace(',', '%2c'), '-y', os.path.join(work, 'pw'), '-D', data,
                '-m', data + '.marker', '-o', nats.url, '--nats-stream', 'FULL%d' % rep,
                '--nats-subject', 'full%d' % rep, '--mode', 'refresh', '-p', '3', '-f', '-q']
        peak, cpu, role = {}, {}, {}
        s0, n0 = cpu_s(slapd.pid), cpu_s(nats.popen.pid)
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stderr=open(os.path.join(work, 'full.err'), 'ab'))
        while p.poll() is None:
            # the reader is the supervisor's first child, the worker the
            # second; the reader may exit first (then the worker is alone)
            for pid in [p.pid] + children(p.pid):
                i = role.setdefault(pid, len(role))
                v, c = rss_anon(pid), cpu_s(pid)
                if v:
                    peak[i] = max(peak.get(i, 0), v)
                if c is not None:
                    cpu[i] = c
            time.sleep(0.05)
        t = time.monotonic() - t0
        if p.returncode != 0:
            raise RuntimeError('ldapfeed exited %d' % p.returncode)
        feed_cpu = {'slapd': cpu_s(slapd.pid) - s0, 'nats-server': cpu_s(nats.popen.pid) - n0,
                    'reader': cpu.get(1), 'worker': cpu.get(2)}
        out['runs'].append({'ldapfeed': t, 'ldapsearch': ref, 'ratio': t / ref,
                            'rss_kib': [peak.get(i) for i in range(3)], 'load': os.getloadavg()[0],
                            'cpu_s': feed_cpu, 'ldapsearch_cpu_s': ref_cpu})
        log('full rep %d: ldapfeed %.2f s, ldapsearch %.2f s, ratio %.2f, RssAnon KiB %s, CPU s %s / %s' % (
            rep, t, ref, t / ref, [peak.get(i) for i in range(3)],
            ' '.join('%s %.2f' % (k, v) for k, v in feed_cpu.items() if v is not None),
            ' '.join('%s %.2f' % kv for kv in ref_cpu.items())))
    ratios = [r['ratio'] for r in out['runs']]
    out['ratio_median'] = statistics.median(ratios)
    out['ratio_range'] = [min(ratios), max(ratios)]
    out['rss_max_kib'] = [max(r['rss_kib'][i] or 0 for r in out['runs']) for i in range(3)]
    return out


def persist(slapd, nats, work, ldmod, count, conns, gap_us, stream):
    data = os.path.join(work, 'data-' + stream)
    prefix = stream.lower()     # streams may not share subjects
    argv = [LDAPFEED, '-H', slapd.url + '/' + lab.SUFFIX + '????bindname=' +
            lab.READER_DN.replace(',', '%2c'), '-y', os.path.join(work, 'pw'), '-D', data,
            '-m', data + '.marker', '-o', nats.url, '--nats-stream', stream,
            '--nats-subject', prefix, '-p', '3', '-f', '-q']
    p = subprocess.Popen(argv, stderr=open(os.path.join(work, stream + '.err'), 'ab'))
    # wait for the full load to be in the stream: its refresh_done
    deadline = time.monotonic() + 600
    while True:
        time.sleep(0.5)
        if p.poll() is not None:
            raise RuntimeError('ldapfeed exited %d (%s.err)' % (p.returncode, stream))
        try:
            pc = PushConsumer(nats.port, stream, prefix + '.refresh_done', 'all')
            break
        except RuntimeError:    # no stream yet
            if time.monotonic() > deadline:
                raise
    while not pc.got and time.monotonic() < deadline:
        time.sleep(0.2)
    pc.sock.close()
    pc = PushConsumer(nats.port, stream, prefix + '.modify')
    time.sleep(0.5)
    logf = os.path.join(work, stream + '.ldmod')
    r = subprocess.run([ldmod, '-H', slapd.url, '-D', lab.ROOTDN, '-w', lab.ROOTPW, '-F', lab.PERSON_DN_FMT,
                        '-A', 'description', '-V', stream + ' %d', '-n', str(count), '-c', str(conns),
                        '-g', str(gap_us), '-l', logf], capture_output=True, text=True, check=True)
    f = r.stdout.split()
    first, last = float(f[1]), float(f[2])
    deadline = time.monotonic() + 60
    while len(pc.got) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    p.terminate()
    p.wait(60)
    resp = {}
    with open(logf) as fh:
        for line in fh:
            treq, tresp, dn = line.split(None, 2)
            resp[dn.strip()] = float(tresp)
    lat = []
    for t, payload in pc.got:
        ev = json.loads(payload)
        if ev['dn'] in resp:
            lat.append((t - resp[ev['dn']]) * 1000)
    lat.sort()
    arrived = [t for t, _ in pc.got]
    return {'modifies': count, 'in_stream': len(pc.got), 'server_rate': count / (last - first),
            'feed_rate': len(pc.got) / (max(arrived) - first) if arrived else 0,
            'p50_ms': lat[len(lat) // 2] if lat else None,
            'p99_ms': lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
            'max_ms': lat[-1] if lat else None}


def table(res):
    """The README's NATS table, from nats.json."""
    f, lat, rate = res['full'], res['latency'], res['rate']
    runs = f['runs']

    def med(key, part):
        v = [r[key][part] for r in runs if r[key].get(part) is not None]
        return statistics.median(v) if v else float('nan')
    search = statistics.median(r['ldapsearch'] for r in runs)
    feed = statistics.median(r['ldapfeed'] for r in runs)
    cpu = {k: med('cpu_s', k) for k in ('reader', 'worker', 'nats-server', 'slapd')}
    total = sum(cpu.values())
    rss = f['rss_max_kib']
    yes = lambda ok: 'yes' if ok else '**no**'  # noqa: E731
    rows = [
        '| figure | target | measured | met |', '| --- | --- | --- | --- |',
        '| full load, N=%d, into the stream (every event acknowledged) | ≤ 1.5× ldapsearch | '
        '%.2f× (runs %.2f–%.2f; %.1f s vs %.1f s) | %s |' % (
            res['n'], f['ratio_median'], f['ratio_range'][0], f['ratio_range'][1], feed, search,
            yes(f['ratio_median'] <= 1.5)),
        '| CPU seconds in that load (medians): reader / worker / nats-server / slapd | — | '
        '%.2f / %.2f / %.2f / %.2f: %.1f s on 2 CPUs, at least %.1f s of wall time, %.2f× '
        'ldapsearch (slapd %.2f s + ldapsearch %.2f s in its runs) | — |' % (
            cpu['reader'], cpu['worker'], cpu['nats-server'], cpu['slapd'], total, total / 2,
            total / 2 / search, statistics.median(r['ldapsearch_cpu_s']['slapd'] for r in runs),
            statistics.median(r['ldapsearch_cpu_s']['ldapsearch'] for r in runs)),
        '| peak RssAnon per process through that load (supervisor / reader / worker) | ≤ 16 MiB | '
        '%.1f / %.1f / %.1f MiB | %s |' % (rss[0] / 1024, rss[1] / 1024, rss[2] / 1024,
                                           yes(max(rss) <= 16 * 1024)),
        '| persist latency, %d modifies %d ms apart: the server\'s answer to the stream\'s delivery '
        '| p99 ≤ 5 ms | p50 %.2f / p99 %.2f / max %.2f ms (%d of %d in the stream) | %s |' % (
            lat['modifies'], LAT_GAP_US // 1000, lat['p50_ms'], lat['p99_ms'], lat['max_ms'],
            lat['in_stream'], lat['modifies'], yes(lat['p99_ms'] <= 5 and lat['in_stream'] == lat['modifies'])),
        '| persist throughput, %d modifies from %d connections | 100%% of the server\'s rate | '
        '%d of %d in the stream; %.0f events/s = %.1f%% of the %.0f modifies/s the server applied | %s |' % (
            rate['modifies'], RATE_CONNS, rate['in_stream'], rate['modifies'], rate['feed_rate'],
            100 * rate['feed_rate'] / rate['server_rate'], rate['server_rate'],
            yes(rate['in_stream'] == rate['modifies'] and rate['feed_rate'] >= 0.99 * rate['server_rate']))]
    return '\n'.join(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=100000)
    ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--workdir', default='/var/tmp/ldapfeed-bench')
    ap.add_argument('--ldapfeed', help='another build (default: ./ldapfeed)')
    ap.add_argument('--only', choices=('full', 'latency', 'rate'),
                    help='one measurement, printed, nats.json left alone')
    args = ap.parse_args()
    if args.ldapfeed:
        global LDAPFEED
        LDAPFEED = os.path.abspath(args.ldapfeed)
    work = os.path.join(args.workdir, 'nats-%d' % os.getpid())
    cache = os.path.join(args.workdir, 'cache')
    os.makedirs(work)
    os.makedirs(cache, exist_ok=True)
    subprocess.run(['make', '-s', '-C', HERE, 'ldmod'], check=True)
    with open(os.path.join(work, 'pw'), 'w') as f:
        f.write(lab.READER_PW + '\n')
    os.chmod(os.path.join(work, 'pw'), 0o600)
    ldif = os.path.join(cache, 'people-%d-v%d.ldif' % (args.n, lab.GEN_VERSION))
    if not os.path.exists(ldif):
        lab.gen_ldif(ldif, args.n)
    slapd = lab.Slapd(os.path.join(work, 'slapd'), ldif, os.path.basename(ldif)[:-5], cache, log=log).start()
    nats = Nats(os.path.join(work, 'nats'))
    try:
        res = {'n': args.n, 'commit': subprocess.run(['git', '-C', TOP, 'rev-parse', '--short', 'HEAD'],
                                                    capture_output=True, text=True).stdout.strip()}
        ldmod = os.path.join(HERE, 'ldmod')
        if args.only in (None, 'full'):
            res['full'] = full(args.n, args.reps, slapd, nats, work)
        if args.only in (None, 'latency'):
            res['latency'] = persist(slapd, nats, work, ldmod, 500, 1, LAT_GAP_US, 'LAT')
            log('latency: %s' % res['latency'])
        if args.only in (None, 'rate'):
            res['rate'] = persist(slapd, nats, work, ldmod, RATE_N, RATE_CONNS, 0, 'RATE')
            log('rate: %s' % res['rate'])
        if args.only:
            return
        with open(os.path.join(HERE, 'results', 'nats.json'), 'w') as f:
            json.dump(res, f, indent=1)
        print(table(res))
    finally:
        nats.stop()
        slapd.stop()


if __name__ == '__main__':
    main()
