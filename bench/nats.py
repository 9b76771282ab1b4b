#!/usr/bin/env python3
"""The NATS output's figures (doc/outputs.md), against nats-server -js on
127.0.0.1 with file storage:

  full     a full load of N entries into the stream (--mode refresh: ldapfeed
           exits 0 once JetStream acknowledged every event) against
           ldapsearch -x -LLL of the same search, alternated run by run;
           peak RssAnon of every ldapfeed process through it
  latency  persist: modifies one at a time (ldmod, 10 ms apart), from the
           LDAP server's answer to the event's delivery by a JetStream push
           consumer of the stream (it delivers only what the stream stored)
  rate     persist: modifies as fast as the server takes them (4
           connections); the events in the stream against the modifies
           the server applied, and the rates

  python3 bench/nats.py [--n 100000] [--reps 3] [--workdir DIR]

Writes bench/results/nats.json.
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
        self.port = lab.free_port()
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

    def __init__(self, port, stream, subject='ldapfeed.modify', policy='new'):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(('127.0.0.1', port))
        self.f = self.sock.makefile('rb')
        self.got = []
        self.sock.sendall(b'CONNECT {"verbose":false,"headers":true}\r\nSUB bench.deliver 1\r\n'
                          b'SUB bench.reply 2\r\n')
        cfg = {'stream_name': stream, 'config': {'deliver_subject': 'bench.deliver', 'ack_policy': 'none',
                                                   'deliver_policy': policy, 'filter_subject': subject}}
        body = json.dumps(cfg).encode()
        self.sock.sendall(b'PUB $JS.API.CONSUMER.CREATE.%s bench.reply %d\r\n%s\r\n' % (
            stream.encode(), len(body), body))
        self.start()

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
                if parts[1] == b'bench.deliver':
                    self.got.append((t, data))


def full(n, reps, slapd, nats, work):
    out = {'runs': []}
    for rep in range(reps):
        t0 = time.monotonic()
        subprocess.run(['ldapsearch', '-x', '-LLL', '-H', slapd.url] + slapd.bind_args() +
                       ['-b', lab.SUFFIX, '(objectClass=*)'], stdout=subprocess.DEVNULL, check=True,
                       env=dict(os.environ, LDAPNOINIT='1'))
        ref = time.monotonic() - t0
        data = os.path.join(work, 'data-%d' % rep)
        argv = [LDAPFEED, '-H', slapd.url + '/' + lab.SUFFIX + '????bindname=' +
                lab.READER_DN.replace(',', '%2c'), '-y', os.path.join(work, 'pw'), '-D', data,
                '-m', data + '.marker', '-o', nats.url, '--nats-stream', 'FULL%d' % rep,
                '--nats-subject', 'full%d' % rep, '--mode', 'refresh', '-p', '3', '-f', '-q']
        peak = {}
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stderr=open(os.path.join(work, 'full.err'), 'ab'))
        while p.poll() is None:
            for pid in [p.pid] + children(p.pid):
                v = rss_anon(pid)
                if v:
                    peak[pid] = max(peak.get(pid, 0), v)
            time.sleep(0.05)
        t = time.monotonic() - t0
        if p.returncode != 0:
            raise RuntimeError('ldapfeed exited %d' % p.returncode)
        out['runs'].append({'ldapfeed': t, 'ldapsearch': ref, 'ratio': t / ref,
                            'rss_kib': sorted(peak.values()), 'load': os.getloadavg()[0]})
        log('full rep %d: ldapfeed %.2f s, ldapsearch %.2f s, ratio %.2f, RssAnon KiB %s' % (
            rep, t, ref, t / ref, sorted(peak.values())))
    ratios = [r['ratio'] for r in out['runs']]
    out['ratio_median'] = statistics.median(ratios)
    out['ratio_range'] = [min(ratios), max(ratios)]
    out['rss_max_kib'] = max(max(r['rss_kib']) for r in out['runs'])
    return out


def persist(slapd, nats, work, ldmod, count, conns, gap_us, stream):
    data = os.path.join(work, 'data-' + stream)
    argv = [LDAPFEED, '-H', slapd.url + '/' + lab.SUFFIX + '????bindname=' +
            lab.READER_DN.replace(',', '%2c'), '-y', os.path.join(work, 'pw'), '-D', data,
            '-m', data + '.marker', '-o', nats.url, '--nats-stream', stream,
            '--nats-subject', 'ldapfeed', '-p', '3', '-f', '-q']
    p = subprocess.Popen(argv, stderr=open(os.path.join(work, stream + '.err'), 'ab'))
    # wait for the full load to be in the stream: its refresh_done
    pc = PushConsumer(nats.port, stream, 'ldapfeed.refresh_done', 'all')
    deadline = time.monotonic() + 600
    while not pc.got and time.monotonic() < deadline:
        time.sleep(0.2)
    pc.sock.close()
    pc = PushConsumer(nats.port, stream)
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=100000)
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--workdir', default='/var/tmp/ldapfeed-bench')
    args = ap.parse_args()
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
        res['full'] = full(args.n, args.reps, slapd, nats, work)
        ldmod = os.path.join(HERE, 'ldmod')
        res['latency'] = persist(slapd, nats, work, ldmod, 500, 1, 10000, 'LAT')
        log('latency: %s' % res['latency'])
        res['rate'] = persist(slapd, nats, work, ldmod, 5000, 4, 0, 'RATE')
        log('rate: %s' % res['rate'])
        with open(os.path.join(HERE, 'results', 'nats.json'), 'w') as f:
            json.dump(res, f, indent=1)
        print(json.dumps(res, indent=1))
    finally:
        nats.stop()
        slapd.stop()


if __name__ == '__main__':
    main()
