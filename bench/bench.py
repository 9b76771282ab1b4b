#!/usr/bin/env python3
"""ldapfeed benchmarks.  One command each; see bench/README.md.

    python3 bench/bench.py [options] full|resume|latency|throughput|memory|group|subtree|all|report

Every figure is a ratio against a reference measured in the same run, the
two alternated, medians of --reps runs.  Results go to bench/results/*.json;
`report` turns them into bench/RESULTS.md.
"""
import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import queue

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import lab  # noqa: E402

RESULTS = os.path.join(HERE, 'results')


def log(*a):
    print('[%s] %s' % (time.strftime('%H:%M:%S'), ' '.join(str(x) for x in a)), file=sys.stderr, flush=True)


def median(xs):
    return statistics.median(xs) if xs else None


def pct(xs, p):
    """p-th percentile (nearest rank) of xs."""
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def loadavg():
    return round(os.getloadavg()[0], 2)


# ---------------------------------------------------------------- /proc

def proc_status(pid, field):
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def proc_cpu(pid):
    """utime + stime of pid, seconds."""
    try:
        with open('/proc/%d/stat' % pid, 'rb') as f:
            data = f.read()
        fields = data[data.rindex(b')') + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
    except (OSError, ValueError, IndexError):
        return None


def proc_children(pid):
    try:
        with open('/proc/%d/task/%d/children' % (pid, pid)) as f:
            return sorted(int(x) for x in f.read().split())
    except OSError:
        return []


class Sampler(threading.Thread):
    """Peak RssAnon (KiB) of the supervisor and each child, every `every` s.
    The reader is the supervisor's first child (forked first)."""

    def __init__(self, sup, every=0.02):
        super().__init__(daemon=True)
        self.sup, self.every = sup, every
        self.roles = {sup: 'supervisor'}
        self.peak = {}
        self.stop_ev = threading.Event()

    def role_map(self):
        kids = proc_children(self.sup)
        if kids and len(self.roles) < 1 + len(kids):
            for i, k in enumerate(kids):
                self.roles.setdefault(k, 'reader' if i == 0 else 'worker%d' % (i - 1))
        return self.roles

    def sample(self):
        now = {}
        for pid, role in list(self.role_map().items()):
            v = proc_status(pid, 'RssAnon')
            if v is not None:
                now[role] = v
                if v > self.peak.get(role, 0):
                    self.peak[role] = v
        return now

    def run(self):
        while not self.stop_ev.is_set():
            self.sample()
            self.stop_ev.wait(self.every)

    def window(self):
        """(peaks since the last window or the start, RssAnon now); the next
        window starts now, from the current level (memory a process keeps
        from an earlier phase counts in the next one's peak)."""
        now = self.sample()
        peak, self.peak = self.peak, dict(now)
        return dict(peak), now

    def cpu(self):
        return {role: proc_cpu(pid) for pid, role in self.role_map().items()}

    def finish(self):
        self.stop_ev.set()
        self.join()
        return dict(self.peak)


# ---------------------------------------------------------------- context

class Ctx:
    def __init__(self, args):
        self.args = args
        self.work = os.path.abspath(args.workdir)
        self.cache = os.path.join(self.work, 'cache')
        os.makedirs(self.cache, exist_ok=True)
        self.run_dir = os.path.join(self.work, 'run-%d' % os.getpid())
        os.makedirs(self.run_dir)
        src = args.ldapfeed or os.path.join(TOP, 'ldapfeed')
        if not os.access(src, os.X_OK):
            sys.exit('no ldapfeed binary at %s: run make at the top first' % src)
        # A private copy: the tree may be rebuilt while we measure.
        self.ldapfeed = os.path.join(self.run_dir, 'ldapfeed')
        shutil.copy2(src, self.ldapfeed)
        self.binary_info = binary_info(src)
        self.sink = os.path.join(HERE, 'sink')
        self.ldmod = os.path.join(HERE, 'ldmod')
        subprocess.run(['make', '-s', '-C', HERE], check=True)
        self.keyfile = os.path.join(self.run_dir, 'key')
        with open(self.keyfile, 'wb') as f:
            f.write(os.urandom(32))
        self.pwfile = os.path.join(self.run_dir, 'pw')
        with open(self.pwfile, 'w') as f:
            f.write(lab.READER_PW + '\n')
        self.seq = 0
        self.vbase = int(time.time()) % 100000 * 10000

    def tmp(self, name):
        self.seq += 1
        return os.path.join(self.run_dir, '%s-%d' % (name, self.seq))

    def next_vbase(self, n):
        v = self.vbase
        self.vbase += n + 1
        return v

    def cleanup(self):
        if not self.args.keep:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def binary_info(path):
    try:
        head = subprocess.run(['git', '-C', TOP, 'rev-parse', '--short', 'HEAD'], capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(['git', '-C', TOP, 'status', '--porcelain', '--', 'src', 'include'],
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        head, dirty = '?', ''
    import hashlib
    with open(path, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    return {'path': path, 'sha256': digest, 'commit': head, 'src_modified': bool(dirty),
            'mtime': time.ctime(os.path.getmtime(path))}


def machine():
    model = '?'
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    model = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    return {'nproc': os.cpu_count(), 'cpu': model, 'kernel': platform.release(),
            'slapd': subprocess.run([lab.SLAPD, '-VV'], capture_output=True, text=True).stderr.split('\n')[0]
            .replace('@(#) $OpenLDAP: ', '').strip(' $'),
            'python': platform.python_version()}


def dataset(ctx, n, groups=(), kind='people'):
    """(path, size) of the LDIF for n people (+ groups), generated once;
    kind 'subtree': lab.gen_subtree_ldif()."""
    name = '%s-%d%s-v%d.ldif' % (kind, n, ''.join('-g%d' % m for m in groups), lab.GEN_VERSION)
    path = os.path.join(ctx.cache, name)
    if not os.path.exists(path):
        need = n * 8192 + (4 << 30)
        if shutil.disk_usage(ctx.cache).free < need:
            sys.exit('not enough free disk under %s for N=%d (%d MiB wanted)' % (ctx.cache, n, need >> 20))
        log('generating %s' % name)
        if kind == 'subtree':
            lab.gen_subtree_ldif(path, n)
        else:
            lab.gen_ldif(path, n, groups)
    return path, os.path.getsize(path)


def make_slapd(ctx, n, groups=(), sessionlog=0, kind='people'):
    path, size = dataset(ctx, n, groups, kind)
    key = os.path.basename(path)[:-5]
    s = lab.Slapd(ctx.tmp('slapd'), path, key, ctx.cache, sessionlog=sessionlog, log=log).start()
    s.n, s.ldif_size, s.groups = n, size, groups
    ldapsearch(ctx, s)      # warm the server's caches
    return s


def ldapsearch(ctx, slapd):
    """The reference: the same search, ldapsearch -x -LLL to /dev/null."""
    cpu0 = proc_cpu(slapd.pid)
    t0 = time.monotonic()
    p = subprocess.Popen(['ldapsearch', '-x', '-LLL', '-H', slapd.url] + slapd.bind_args() +
                         ['-b', lab.SUFFIX, '(objectClass=*)'], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=dict(os.environ, LDAPNOINIT='1'))
    _, status, ru = os.wait4(p.pid, 0)
    t = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError('ldapsearch failed: %s' % p.stderr.read().decode())
    return {'time': t, 'client_cpu': ru.ru_utime + ru.ru_stime, 'slapd_cpu': proc_cpu(slapd.pid) - cpu0,
            'load': loadavg()}


def ldmod(ctx, slapd, n, start=0, step=1, conns=1, gap_us=0, dnfmt=lab.PERSON_DN_FMT,
          attr='description', valfmt='bench change %d', op='replace', logfile=None):
    argv = [ctx.ldmod, '-H', slapd.url, '-D', lab.ROOTDN, '-w', lab.ROOTPW, '-F', dnfmt, '-A', attr,
            '-V', valfmt, '-O', op, '-n', str(n), '-s', str(start), '-k', str(step), '-c', str(conns),
            '-g', str(gap_us), '-v', str(ctx.next_vbase(n))]
    if logfile:
        argv += ['-l', logfile]
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError('ldmod failed (%d): %s' % (r.returncode, r.stderr))
    f = r.stdout.split()
    return {'first': float(f[1]), 'last': float(f[2]), 'n': int(f[3])}


# ---------------------------------------------------------------- one ldapfeed run

class Feed:
    """ldapfeed against slapd, delivering to a C sink or a Python Listener."""

    def __init__(self, ctx, slapd, fmt='pickle', procs=3, consumer='c', datadir=None, marker=None,
                 arrivals=None, wrap=(), base=lab.SUFFIX):
        self.ctx, self.slapd, self.fmt, self.procs, self.consumer = ctx, slapd, fmt, procs, consumer
        self.base = base
        self.wrap = list(wrap)
        self.pidfile = ctx.tmp('pid')
        self.workers = max(1, procs - 2)
        self.datadir = datadir or ctx.tmp('data')
        self.marker = marker or self.datadir + '.marker'
        self.arrivals = arrivals
        self.lines = queue.Queue()

    def _pump(self):
        for line in self.sink.stdout:
            self.lines.put(line.split())
        self.lines.put(['eof'])

    def expect(self, word, timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError('sink: no %r after %ds; ldapfeed stderr:\n%s'
                                   % (word, timeout, self.stderr_tail()))
            try:
                f = self.lines.get(timeout=min(left, 1))
            except queue.Empty:
                if self.popen.poll() is not None and word != 'closed':
                    raise RuntimeError('ldapfeed exited %s; stderr:\n%s' % (self.popen.returncode,
                                                                           self.stderr_tail()))
                continue
            if f[0] == word:
                return f
            if f[0] == 'eof':
                raise RuntimeError('sink ended before %r; ldapfeed %s; stderr:\n%s'
                                   % (word, 'running' if self.popen.poll() is None
                                      else 'exited %s' % self.popen.returncode, self.stderr_tail()))

    def stderr_tail(self):
        try:
            with open(self.errfile, 'rb') as f:
                return f.read()[-3000:].decode('utf-8', 'replace')
        except OSError:
            return ''

    def start(self, fresh=True):
        if fresh:
            shutil.rmtree(self.datadir, ignore_errors=True)
            if os.path.exists(self.marker):
                os.unlink(self.marker)
        sock = self.ctx.tmp('sock')
        if self.consumer == 'c':
            argv = [self.ctx.sink, '-a', sock, '-k', self.ctx.keyfile, '-w', str(self.workers)]
            if self.arrivals:
                argv += ['-l', self.arrivals]
        else:
            argv = [sys.executable, os.path.join(HERE, 'pysink.py'), sock, self.ctx.keyfile,
                    str(self.workers)]
        self.sink = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     bufsize=1)
        threading.Thread(target=self._pump, daemon=True).start()
        self.expect('ready', 10)
        url = '%s/%s????bindname=%s' % (self.slapd.url, self.base, lab.READER_DN.replace(',', '%2C'))
        self.errfile = self.ctx.tmp('ldapfeed.stderr')
        argv = [self.ctx.ldapfeed, '-H', url, '-y', self.ctx.pwfile, '-D', self.datadir, '-m', self.marker,
                '-o', sock, '-k', self.ctx.keyfile, '-p', str(self.procs), '--mode', 'persist',
                '--format', self.fmt, '-f', '-q', '-P', self.pidfile]
        self.slapd_cpu0 = proc_cpu(self.slapd.pid)
        self.load0 = loadavg()
        self.t0 = time.monotonic()
        self.popen = subprocess.Popen(self.wrap + argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=open(self.errfile, 'wb'), start_new_session=True)
        self.sampler = Sampler(self.popen.pid)
        self.sampler.start()
        return self

    def wait_refresh(self, timeout=3600):
        f = self.expect('refresh_done', timeout)
        r = {'time': float(f[1]) - self.t0, 'msgs': int(f[2]), 'data': int(f[3]), 'bytes': int(f[4]),
             'cpu': self.sampler.cpu(), 'slapd_cpu': proc_cpu(self.slapd.pid) - self.slapd_cpu0,
             'load': self.load0}
        return r

    def command(self, text):
        self.sink.stdin.write(text + '\n')
        self.sink.stdin.flush()

    def mark(self, n, timeout=600):
        self.command('mark %d' % n)
        return float(self.expect('reached', timeout)[2])

    def stats(self):
        self.command('stats')
        f = self.expect('stats', 10)
        return {'msgs': int(f[2]), 'data': int(f[3]),
                'types': dict(zip(('add', 'modify', 'rename', 'delete'), map(int, f[5:9])))}

    def stop(self):
        t0 = time.monotonic()
        pid = self.popen.pid
        if self.wrap:
            with open(self.pidfile) as f:
                pid = int(f.read().split()[0])
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            rc = self.popen.wait(600)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            rc = self.popen.wait()
        stop_time = time.monotonic() - t0
        peaks = self.sampler.finish()
        try:
            self.expect('closed', 30)
        except RuntimeError:
            pass
        self.sink.stdin.close()
        try:
            self.sink.wait(30)
        except subprocess.TimeoutExpired:
            self.sink.kill()
            self.sink.wait()
        if rc != 0:
            raise RuntimeError('ldapfeed exited %d; stderr:\n%s' % (rc, self.stderr_tail()))
        return {'stop_time': stop_time, 'rss_kib': peaks, 'marker': os.path.exists(self.marker)}

    def store_size(self):
        p = os.path.join(self.datadir, 'data.mdb')
        st = os.stat(p)
        return {'apparent': st.st_size, 'allocated': st.st_blocks * 512}


def configs(args, consumers=('c',)):
    out = []
    for consumer in consumers:
        if consumer not in args.consumers.split(','):
            continue
        for fmt in args.formats.split(','):
            for w in [int(x) for x in args.workers.split(',')]:
                out.append((consumer, fmt, w))
    return out


def procs_of(w):
    return w + 2


def cfg_name(consumer, fmt, w):
    return '%s/%s/W=%d' % ({'c': 'C sink', 'py': 'Python'}[consumer], fmt, w)


# ---------------------------------------------------------------- benchmarks

def bench_full(ctx):
    """Full load: ldapfeed from an empty store to refresh_done on every
    connection, against ldapsearch -x -LLL of the same search, alternated."""
    a = ctx.args
    s = make_slapd(ctx, a.n)
    out = {'n': a.n, 'ldif_bytes': s.ldif_size, 'configs': {}}
    try:
        for consumer, fmt, w in configs(a, ('c', 'py')):
            name = cfg_name(consumer, fmt, w)
            feeds, refs = [], []
            for rep in range(a.reps):
                refs.append(ldapsearch(ctx, s))
                f = Feed(ctx, s, fmt, procs_of(w), consumer).start()
                r = f.wait_refresh()
                r.update(f.stop())
                r['store'] = f.store_size()
                shutil.rmtree(f.datadir, ignore_errors=True)
                if r['data'] != a.n + 4:
                    log('warning: %d data messages, expected %d' % (r['data'], a.n + 4))
                feeds.append(r)
                log('full %s rep %d: ldapfeed %.2f s, ldapsearch %.2f s (load %.1f)'
                    % (name, rep + 1, r['time'], refs[-1]['time'], r['load']))
            out['configs'][name] = summarize_pairs(feeds, refs)
    finally:
        s.destroy()
    return out


def summarize_pairs(feeds, refs):
    tf = median([r['time'] for r in feeds])
    tr = median([r['time'] for r in refs])
    peaks = {}
    for r in feeds:
        for role, v in r.get('rss_kib', {}).items():
            peaks[role] = max(peaks.get(role, 0), v)
    ratios = [f['time'] / r['time'] for f, r in zip(feeds, refs)]
    # the median of the run-by-run ratios: each pair ran back to back, so
    # the machine's load drifts out of the ratio better than out of times
    return {'feed_s': tf, 'ref_s': tr, 'ratio': median(ratios), 'ratio_of_medians': tf / tr,
            'ratios': ratios,
            'rss_kib_max': peaks, 'runs': feeds, 'refs': refs}


def bench_resume(ctx):
    """Resume: full load, clean stop, 1% of the entries modified while down,
    restart; the time to refresh_done against the full load's."""
    a = ctx.args
    out = {'n': a.n, 'changed': max(1, a.n // 100), 'slapd': {}}
    for label, sessionlog in (('no sessionlog (present phase)', 0),
                              ('sessionlog %d' % (2 * max(1, a.n // 100)), 2 * max(1, a.n // 100))):
        s = make_slapd(ctx, a.n, sessionlog=sessionlog)
        res = out['slapd'][label] = {}
        try:
            for consumer, fmt, w in configs(a):
                name = cfg_name(consumer, fmt, w)
                fulls, resumes = [], []
                for rep in range(a.reps):
                    f = Feed(ctx, s, fmt, procs_of(w), consumer).start()
                    r = f.wait_refresh()
                    r.update(f.stop())
                    fulls.append(r)
                    k = out['changed']
                    step = max(1, a.n // k)
                    ldmod(ctx, s, k, start=rep % step, step=step, conns=4)
                    f2 = Feed(ctx, s, fmt, procs_of(w), consumer, datadir=f.datadir,
                              marker=f.marker).start(fresh=False)
                    r2 = f2.wait_refresh()
                    r2.update(f2.stop())
                    resumes.append(r2)
                    shutil.rmtree(f.datadir, ignore_errors=True)
                    log('resume %s [%s] rep %d: full %.2f s, resume %.3f s (%d events), %.1f%%'
                        % (name, label, rep + 1, r['time'], r2['time'], r2['data'],
                           100 * r2['time'] / r['time']))
                    if r2['data'] != k:
                        log('warning: resume delivered %d events, %d changed' % (r2['data'], k))
                res[name] = summarize_pairs(resumes, fulls)
        finally:
            s.destroy()
    return out


def latencies(arrivals_file, modlog, since=0.0):
    """Per DN: arrival at the consumer minus the modify's response."""
    arr = {}
    with open(arrivals_file) as f:
        for line in f:
            t, typ, dn = line.rstrip('\n').split(' ', 2)
            t = float(t)
            if t >= since and typ == 'modify':
                arr.setdefault(dn, t)
    lat, srv = [], []
    with open(modlog) as f:
        for line in f:
            treq, tresp, dn = line.rstrip('\n').split(' ', 2)
            srv.append(float(tresp) - float(treq))
            if dn in arr:
                lat.append(arr[dn] - float(tresp))
    return lat, srv


def bench_latency(ctx):
    """Persist latency: modifies one at a time (a gap between them), the
    time from the server's response to the event's arrival at the sink."""
    a = ctx.args
    n = a.latency_n
    s = make_slapd(ctx, a.n)
    out = {'n': a.n, 'modifies': n, 'gap_us': a.gap_us, 'configs': {}}
    try:
        for consumer, fmt, w in configs(a):
            name = cfg_name(consumer, fmt, w)
            arrivals = ctx.tmp('arrivals')
            f = Feed(ctx, s, fmt, procs_of(w), consumer, arrivals=arrivals).start()
            f.wait_refresh()
            runs = []
            base = f.stats()['data']
            for rep in range(a.reps):
                modlog = ctx.tmp('modlog')
                t_start = time.monotonic()
                step = max(1, a.n // n)
                m = ldmod(ctx, s, n, start=rep % step, step=step, conns=1, gap_us=a.gap_us, logfile=modlog)
                base += n
                f.mark(base, 120)
                f.command('flush')
                f.stats()
                lat, srv = latencies(arrivals, modlog, t_start)
                if len(lat) != n:
                    log('warning: %d of %d modifies matched' % (len(lat), n))
                runs.append({'p50_ms': 1e3 * pct(lat, 50), 'p99_ms': 1e3 * pct(lat, 99),
                             'max_ms': 1e3 * max(lat), 'min_ms': 1e3 * min(lat),
                             'server_p50_ms': 1e3 * pct(srv, 50), 'server_p99_ms': 1e3 * pct(srv, 99),
                             'matched': len(lat), 'load': loadavg(),
                             'elapsed_s': m['last'] - m['first']})
                log('latency %s rep %d: p50 %.3f ms p99 %.3f ms max %.3f ms (server p50 %.3f ms)'
                    % (name, rep + 1, runs[-1]['p50_ms'], runs[-1]['p99_ms'], runs[-1]['max_ms'],
                       runs[-1]['server_p50_ms']))
            stop = f.stop()
            out['configs'][name] = {
                'p50_ms': median([r['p50_ms'] for r in runs]), 'p99_ms': median([r['p99_ms'] for r in runs]),
                'max_ms': median([r['max_ms'] for r in runs]),
                'server_p50_ms': median([r['server_p50_ms'] for r in runs]),
                'rss_kib_max': stop['rss_kib'], 'runs': runs}
    finally:
        s.destroy()
    return out


def bench_throughput(ctx):
    """Persist throughput: a burst of modifies from parallel clients; the
    rate at which events reach the sink against the rate at which the server
    applies them (in the same run), and against the server alone (no
    ldapfeed attached), alternated."""
    a = ctx.args
    n = min(a.burst, a.n)
    s = make_slapd(ctx, a.n)
    out = {'n': a.n, 'modifies': n, 'clients': a.clients, 'configs': {}}
    step = max(1, a.n // n)
    try:
        for consumer, fmt, w in configs(a):
            name = cfg_name(consumer, fmt, w)
            runs = []
            for rep in range(a.reps):
                solo = ldmod(ctx, s, n, start=rep % step, step=step, conns=a.clients)
                solo_rate = n / (solo['last'] - solo['first'])
                # the server feeding a syncrepl consumer that does nothing:
                # the best any consumer of this server can see
                rp = subprocess.Popen(['ldapsearch', '-x', '-LLL', '-H', s.url] + s.bind_args() +
                                      ['-E', '!sync=rp', '-b', lab.SUFFIX, '(objectClass=*)'],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      env=dict(os.environ, LDAPNOINIT='1'))
                time.sleep(0.5 + a.n / 100000.0 * 2)    # its refresh
                synced = ldmod(ctx, s, n, start=rep % step, step=step, conns=a.clients)
                rp.terminate()
                rp.wait()
                sync_rate = n / (synced['last'] - synced['first'])
                f = Feed(ctx, s, fmt, procs_of(w), consumer).start()
                f.wait_refresh()
                base = f.stats()['data']
                cpu0 = f.sampler.cpu()
                scpu0 = proc_cpu(s.pid)
                m = ldmod(ctx, s, n, start=rep % step, step=step, conns=a.clients)
                t_last = f.mark(base + n, 600)
                cpu1 = f.sampler.cpu()
                scpu1 = proc_cpu(s.pid)
                stop = f.stop()
                server_rate = n / (m['last'] - m['first'])
                feed_rate = n / (t_last - m['first'])
                runs.append({'solo_rate': solo_rate, 'sync_rate': sync_rate, 'server_rate': server_rate,
                             'feed_rate': feed_rate, 'ratio_sync': feed_rate / sync_rate,
                             'ratio': feed_rate / server_rate, 'ratio_solo': feed_rate / solo_rate,
                             'lag_s': t_last - m['last'], 'load': loadavg(),
                             'cpu_s': {k: cpu1[k] - cpu0[k] for k in cpu1 if k in cpu0 and cpu1[k] is not None},
                             'slapd_cpu_s': scpu1 - scpu0, 'rss_kib': stop['rss_kib']})
                log('throughput %s rep %d: server alone %.0f/s, with ldapsearch sync=rp %.0f/s, with ldapfeed '
                    '%.0f/s, events %.0f/s (%.1f%%), lag %.3f s' % (name, rep + 1, solo_rate, sync_rate, server_rate,
                                                                    feed_rate, 100 * runs[-1]['ratio'],
                                                                    runs[-1]['lag_s']))
            out['configs'][name] = {k: median([r[k] for r in runs]) for k in
                                    ('solo_rate', 'sync_rate', 'server_rate', 'feed_rate', 'ratio', 'ratio_solo',
                                     'ratio_sync', 'lag_s')}
            out['configs'][name]['runs'] = runs
    finally:
        s.destroy()
    return out


def bench_memory(ctx):
    """Peak RssAnon of every process through a full load and some persist
    traffic, at several N; the store's size against the LDIF's."""
    a = ctx.args
    out = {'sizes': {}}
    for n in [int(x) for x in a.memory_n.split(',')]:
        s = make_slapd(ctx, n)
        res = out['sizes'][str(n)] = {'ldif_bytes': s.ldif_size, 'configs': {}}
        try:
            for consumer, fmt, w in configs(a):
                name = cfg_name(consumer, fmt, w)
                ref = ldapsearch(ctx, s)
                f = Feed(ctx, s, fmt, procs_of(w), consumer).start()
                r = f.wait_refresh()
                k = min(1000, n)
                ldmod(ctx, s, k, step=max(1, n // k), conns=4)
                f.mark(r['data'] + k, 300)
                r.update(f.stop())
                r['store'] = f.store_size()
                shutil.rmtree(f.datadir, ignore_errors=True)
                res['configs'][name] = {'rss_kib': r['rss_kib'], 'store': r['store'],
                                        'store_ratio': r['store']['allocated'] / s.ldif_size,
                                        'feed_s': r['time'], 'ref_s': ref['time'],
                                        'ratio': r['time'] / ref['time'], 'cpu': r['cpu']}
                log('memory N=%d %s: RssAnon peak %s KiB; store %.0f MiB, LDIF %.0f MiB (%.2fx); '
                    'load %.1f s vs ldapsearch %.1f s' % (n, name, r['rss_kib'], r['store']['allocated'] / 2**20,
                                                          s.ldif_size / 2**20, res['configs'][name]['store_ratio'],
                                                          r['time'], ref['time']))
        finally:
            s.destroy()
    return out


def bench_group(ctx):
    """Big groups modified one member at a time: per change, the time from
    the server's answer to the event's arrival, and ldapfeed's CPU, at
    several group sizes (linear growth is O(n) per change, not O(n^2))."""
    a = ctx.args
    sizes = [int(x) for x in a.group_sizes.split(',')]
    s = make_slapd(ctx, 1000, groups=tuple(sizes))
    out = {'sizes': sizes, 'modifies': a.group_k, 'configs': {}}
    try:
        for consumer, fmt, w in configs(a):
            name = cfg_name(consumer, fmt, w)
            arrivals = ctx.tmp('arrivals')
            res = out['configs'][name] = {}
            for m in sizes:
                # reference: the same modifies with no ldapfeed attached
                ref = ldmod(ctx, s, a.group_k, dnfmt=lab.group_dn(m), attr='member',
                            valfmt='uid=x%07d,' + lab.PEOPLE, op='add')
                f = Feed(ctx, s, fmt, procs_of(w), consumer, arrivals=arrivals).start()
                r = f.wait_refresh()
                base = f.stats()['data']
                cpu0 = f.sampler.cpu()
                modlog = ctx.tmp('modlog')
                t_start = time.monotonic()
                mm = ldmod(ctx, s, a.group_k, dnfmt=lab.group_dn(m), attr='member',
                           valfmt='uid=x%07d,' + lab.PEOPLE, op='add', logfile=modlog)
                t_last = f.mark(base + a.group_k, 600)
                cpu1 = f.sampler.cpu()
                f.command('flush')
                f.stats()
                stop = f.stop()
                # every event has the same DN: match the k-th arrival to the k-th modify
                arr = []
                with open(arrivals) as fp:
                    for line in fp:
                        t, typ, _ = line.split(' ', 2)
                        if typ == 'modify' and float(t) >= t_start:
                            arr.append(float(t))
                resp = []
                with open(modlog) as fp:
                    for line in fp:
                        resp.append(float(line.split()[1]))
                lat = [x - y for x, y in zip(arr, resp)]
                cpu = {k: (cpu1[k] - cpu0[k]) / a.group_k for k in cpu1 if k in cpu0 and cpu1[k] is not None}
                res[str(m)] = {
                    'server_ms_per_change_solo': 1e3 * (ref['last'] - ref['first']) / a.group_k,
                    'server_ms_per_change': 1e3 * (mm['last'] - mm['first']) / a.group_k,
                    'feed_ms_per_change': 1e3 * (t_last - mm['first']) / a.group_k,
                    'lag_p50_ms': 1e3 * pct(lat, 50) if lat else None,
                    'lag_after_last_s': t_last - mm['last'],
                    'cpu_ms_per_change': {k: 1e3 * v for k, v in cpu.items()},
                    'full_load_s': r['time'], 'rss_kib': stop['rss_kib']}
                log('group %s members=%d: server %.1f ms/change (alone %.1f), delivered %.1f ms/change, '
                    'CPU ms/change %s' % (
                        name, m, res[str(m)]['server_ms_per_change'], res[str(m)]['server_ms_per_change_solo'],
                        res[str(m)]['feed_ms_per_change'],
                        {k: round(v, 1) for k, v in res[str(m)]['cpu_ms_per_change'].items()}))
    finally:
        s.destroy()
    return out


def ldap_write(ctx, slapd, tool, args, text=None):
    """ldapmodrdn / ldapmodify as the root DN: (request, response) times,
    CLOCK_MONOTONIC like the sink's (the tool's start-up included)."""
    t0 = time.monotonic()
    r = subprocess.run([tool, '-x', '-H', slapd.url] + slapd.bind_args('root') + args, input=text,
                       capture_output=True, text=True, env=dict(os.environ, LDAPNOINIT='1'))
    t1 = time.monotonic()
    if r.returncode != 0:
        raise RuntimeError('%s %s failed: %s' % (tool, ' '.join(args), r.stderr))
    return t0, t1


def modrdn(ctx, slapd, dn, newrdn, superior=None):
    return ldap_write(ctx, slapd, 'ldapmodrdn', ['-r'] + (['-s', superior] if superior else []) + [dn, newrdn])


def cpu_delta(c1, c0):
    return {k: round(c1[k] - c0[k], 2) for k in c1 if c0.get(k) is not None and c1[k] is not None}


def subtree_run(ctx, people, staff, n, consumer, fmt, w, name):
    """One run of every case of bench_subtree() at N = n: {case: figures}."""
    c = {}
    # 1. full load of N (the reference), clean stop; then ou=people hidden
    # from the reader (slapd.access(5)) and one write elsewhere, so that the
    # resume gets a present phase (no session log) without them: the
    # reader sweeps ou=people and the N below
    if people.acl:
        people.reconfigure(())
    f = Feed(ctx, people, fmt, procs_of(w), consumer).start()
    r = f.wait_refresh()
    peak, _ = f.sampler.window()
    f.stop()
    c['full'] = {'time': r['time'], 'data': r['data'], 'expected': n + 4, 'rss_kib': peak, 'cpu': r['cpu'],
                 'load': r['load']}
    log('subtree N=%d %s: full load %.2f s, %d events, reader peak %s KiB'
        % (n, name, r['time'], r['data'], peak.get('reader')))
    people.reconfigure([lab.hide_acl(lab.PEOPLE)])
    ldap_write(ctx, people, 'ldapmodify', [], 'dn: %s\nchangetype: modify\nreplace: description\n'
               'description: bench %d\n' % (lab.GROUPS, ctx.next_vbase(1)))
    f2 = Feed(ctx, people, fmt, procs_of(w), consumer, datadir=f.datadir, marker=f.marker).start(fresh=False)
    r = f2.wait_refresh()
    # N + 1 deletes and the write's modify
    t_last = f2.mark(n + 2, 600) - f2.t0
    peak, _ = f2.sampler.window()
    st = f2.stats()
    f2.stop()
    shutil.rmtree(f.datadir, ignore_errors=True)
    c['sweep'] = {'time': max(r['time'], t_last), 'refresh_done': r['time'], 'data': st['data'],
                  'types': st['types'], 'expected': n + 2, 'rss_kib': peak, 'cpu': r['cpu'], 'load': r['load']}
    log('subtree N=%d %s: present-phase sweep %.2f s, %d events, reader peak %s KiB'
        % (n, name, c['sweep']['time'], st['data'], peak.get('reader')))

    # 2. and 3., running, the search based at ou=staff: ou=big moved in,
    # out, in again, renamed
    f = Feed(ctx, staff, fmt, procs_of(w), consumer, base=lab.STAFF).start()
    f.wait_refresh()
    _, before = f.sampler.window()
    big, big2 = 'ou=big,' + lab.STAFF, 'ou=big2,' + lab.STAFF
    # events: the root's add + N fetched; the root's delete + N; the
    # root's rename + N + the root's modify (its ou value changed)
    steps = (('move_in', (lab.BIG_OUT, 'ou=big', lab.STAFF), n + 1),
             ('move_out', (big, 'ou=big', lab.GROUPS), n + 1),
             ('move_in_again', (lab.BIG_OUT, 'ou=big', lab.STAFF), n + 1),
             ('rename', (big, 'ou=big2', None), n + 2))
    for step, (dn, newrdn, sup), expected in steps:
        st0 = f.stats()
        cpu0 = f.sampler.cpu()
        t0, t1 = modrdn(ctx, staff, dn, newrdn, sup)
        t_last = f.mark(st0['data'] + expected, 600)
        peak, after = f.sampler.window()
        st1 = f.stats()
        c[step] = {'time': t_last - t0, 'server_s': t1 - t0, 'data': st1['data'] - st0['data'],
                   'types': {k: st1['types'][k] - st0['types'][k] for k in st1['types']},
                   'expected': expected, 'rss_kib': peak, 'rss_kib_before': before,
                   'cpu': cpu_delta(f.sampler.cpu(), cpu0), 'load': loadavg()}
        before = after
        log('subtree N=%d %s: %s %.2f s (server %.3f s), reader peak %s KiB (%s before)'
            % (n, name, step, c[step]['time'], c[step]['server_s'], peak.get('reader'),
               c[step]['rss_kib_before'].get('reader')))
    f.stop()
    # 3., stopped: renamed back while ldapfeed is down, then resumed
    modrdn(ctx, staff, big2, 'ou=big')
    f2 = Feed(ctx, staff, fmt, procs_of(w), consumer, datadir=f.datadir, marker=f.marker,
              base=lab.STAFF).start(fresh=False)
    r = f2.wait_refresh()
    t_last = f2.mark(n + 2, 600) - f2.t0
    peak, _ = f2.sampler.window()
    st = f2.stats()
    f2.stop()
    shutil.rmtree(f.datadir, ignore_errors=True)
    c['rename_stopped'] = {'time': max(r['time'], t_last), 'refresh_done': r['time'], 'data': st['data'],
                           'types': st['types'], 'expected': n + 2, 'rss_kib': peak, 'cpu': r['cpu'],
                           'load': r['load']}
    log('subtree N=%d %s: renamed while stopped, resume %.2f s, %d events, reader peak %s KiB'
        % (n, name, c['rename_stopped']['time'], st['data'], peak.get('reader')))
    modrdn(ctx, staff, big, 'ou=big', lab.GROUPS)      # as it was, for the next run
    for step, v in c.items():
        if v['data'] != v['expected']:
            log('warning: %s delivered %d events, %d expected' % (step, v['data'], v['expected']))
    return c


def bench_subtree(ctx):
    """The reader's peak RssAnon while one LDAP message makes it work on N
    entries (doc/subtrees.md, "Bounded work per message"), at several N:
    a present-phase sweep of N entries (a resume after they left the
    reader's view); with the search based at ou=staff, a subtree of N moved
    in (a fetch of N) and out (a reconcile of N), renamed inside the
    search while running (a fetch of N) and while stopped (the
    refresh from the cookie fetches below the new DN).  The reference is
    the full load of the N entries, in each run."""
    a = ctx.args
    out = {'sizes': {}, 'runs': a.reps}
    for n in [int(x) for x in a.subtree_n.split(',')]:
        res = out['sizes'][str(n)] = {'configs': {}}
        people = make_slapd(ctx, n)
        staff = None
        try:
            staff = make_slapd(ctx, n, kind='subtree')
            for rep in range(a.reps):
                for consumer, fmt, w in configs(a):
                    name = cfg_name(consumer, fmt, w)
                    res['configs'].setdefault(name, {'runs': []})['runs'].append(
                        subtree_run(ctx, people, staff, n, consumer, fmt, w, name))
        finally:
            people.destroy()
            if staff:
                staff.destroy()
    return out


BENCHES = {'full': bench_full, 'resume': bench_resume, 'latency': bench_latency,
           'throughput': bench_throughput, 'memory': bench_memory, 'group': bench_group,
           'subtree': bench_subtree}


def save(ctx, name, data, started):
    os.makedirs(RESULTS, exist_ok=True)
    a = ctx.args
    doc = {'bench': name, 'quick': a.quick, 'started': started, 'finished': time.strftime('%Y-%m-%d %H:%M:%S'),
           'duration_s': None, 'machine': machine(), 'ldapfeed': ctx.binary_info,
           'command': ' '.join(['python3', 'bench/bench.py', name] + [x for x in sys.argv[1:] if x != a.command]),
           'reps': a.reps, 'result': data}
    path = os.path.join(RESULTS, '%s%s.json' % (name, '-quick' if a.quick else ''))
    with open(path, 'w') as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    log('wrote %s' % path)
    return doc


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('command', choices=sorted(BENCHES) + ['all', 'report'])
    p.add_argument('--quick', action='store_true', help='smoke run: small N, one rep')
    p.add_argument('--n', type=int, default=100000, help='entries (default 100000)')
    p.add_argument('--reps', type=int, default=3, help='runs per figure (default 3)')
    p.add_argument('--formats', default='pickle,json')
    p.add_argument('--workers', default='1,4', help='W values; -p is W + 2 (default 1,4)')
    p.add_argument('--consumers', default='c,py', help='c (C sink) and/or py (Python Listener; full only)')
    p.add_argument('--latency-n', type=int, default=1000, help='modifies per latency run')
    p.add_argument('--gap-us', type=int, default=2000, help='pause between latency modifies (µs)')
    p.add_argument('--burst', type=int, default=50000, help='modifies per throughput burst')
    p.add_argument('--clients', type=int, default=8, help='parallel modify clients')
    p.add_argument('--memory-n', default='10000,100000,1000000', help='N values for memory')
    p.add_argument('--subtree-n', default='10000,100000', help='N values for subtree')
    p.add_argument('--group-sizes', default='10000,50000,100000', help='member counts for group')
    p.add_argument('--group-k', type=int, default=40, help='one-member modifies per group size')
    p.add_argument('--workdir', default=os.environ.get('BENCH_WORKDIR', '/var/tmp/ldapfeed-bench'))
    p.add_argument('--ldapfeed', help='daemon binary (default: ./ldapfeed at the top)')
    p.add_argument('--keep', action='store_true', help='keep the run directory')
    a = p.parse_args()
    if a.command == 'report':
        import report
        report.main()
        return
    if a.quick:
        a.n = min(a.n, 2000)
        a.reps = 1
        a.latency_n = 100
        a.burst = 1000
        a.memory_n = '1000,2000'
        a.subtree_n = '1000,2000'
        a.group_sizes = '1000,5000'
        a.group_k = 5
    ctx = Ctx(a)
    log('machine: %s; load %.1f' % (machine(), loadavg()))
    try:
        for name in (sorted(BENCHES, key=list(BENCHES).index) if a.command == 'all' else [a.command]):
            started = time.strftime('%Y-%m-%d %H:%M:%S')
            t0 = time.monotonic()
            data = BENCHES[name](ctx)
            doc = save(ctx, name, data, started)
            doc['duration_s'] = time.monotonic() - t0
            save_duration(doc, a)
            log('%s took %.0f s' % (name, doc['duration_s']))
        if a.command == 'all' and not a.quick:
            import report
            report.main()
    finally:
        ctx.cleanup()


def save_duration(doc, a):
    path = os.path.join(RESULTS, '%s%s.json' % (doc['bench'], '-quick' if a.quick else ''))
    with open(path, 'w') as f:
        json.dump(doc, f, indent=1, sort_keys=True)


if __name__ == '__main__':
    main()
