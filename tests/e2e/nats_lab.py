"""NATS for the end-to-end tests: nats-server -js on 127.0.0.1 in the test's
temp dir (one node, or a cluster of three with routes between them), and
the stream read back with ldapfeed-nats-tail (ldapfeed-nats-tail.1).

Every server is registered with the harness and torn down by pid.
"""

import base64
import json
import os
import pickle
import shutil
import subprocess
import threading
import time
import urllib.request

from harness import (Model, Skip, TOP, assert_model_equals_server, free_port, register_process, scaled,
                     terminate_pid, wait_until)

NATS_SERVER = shutil.which('nats-server') or '/usr/bin/nats-server'
TAIL = os.path.join(TOP, 'ldapfeed-nats-tail')


class NatsServer:
    """One nats-server with JetStream, file storage under tmp/name; conf:
    more lines for its configuration (nats_jwt.server_conf()); tls: (cert,
    key) of the certificate it serves on its client port, tls:// only."""

    def __init__(self, tmp, name='n1', token=None, cluster=None, routes=(), start=True, conf=(), tls=None):
        if not os.access(NATS_SERVER, os.X_OK):
            raise Skip('nats-server not installed')
        self.name = name
        self.dir = os.path.join(tmp, 'nats-' + name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.mport = free_port()
        self.cport = free_port() if cluster else None
        self.token = token
        self.cluster = cluster
        self.routes = list(routes)
        self.conf, self.tls = list(conf), tls
        self.popen = None
        if start:
            self.start()

    @property
    def url(self):
        return '%s://127.0.0.1:%d' % ('tls' if self.tls else 'nats', self.port)

    def write_conf(self):
        lines = ['server_name: %s' % self.name, 'listen: 127.0.0.1:%d' % self.port,
                 'http: 127.0.0.1:%d' % self.mport,
                 'jetstream { store_dir: "%s" }' % os.path.join(self.dir, 'js')]
        if self.token:
            lines.append('authorization { token: "%s" }' % self.token)
        if self.tls:
            lines.append('tls { cert_file: "%s", key_file: "%s" }' % self.tls)
        lines += self.conf
        if self.cluster:
            lines.append('cluster { name: %s, listen: 127.0.0.1:%d, routes: [%s] }' % (
                self.cluster, self.cport, ', '.join('nats-route://127.0.0.1:%d' % p for p in self.routes)))
        path = os.path.join(self.dir, 'nats.conf')
        with open(path, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        return path

    def start(self, wait=True):
        conf = self.write_conf()
        log = open(os.path.join(self.dir, 'nats.log'), 'ab')
        self.popen = subprocess.Popen([NATS_SERVER, '-c', conf], stdout=log, stderr=log,
                                      start_new_session=True)
        log.close()
        self._res = register_process(self.popen, name='nats-server ' + self.name)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=20):
        wait_until(lambda: self.healthy(), timeout, 'nats-server %s ready' % self.name, interval=0.1)

    def monitor(self, path):
        with urllib.request.urlopen('http://127.0.0.1:%d/%s' % (self.mport, path), timeout=2) as r:
            return json.loads(r.read().decode())

    def healthy(self):
        try:
            return self.monitor('healthz').get('status') == 'ok'
        except (OSError, ValueError):
            return False

    def clients(self):
        """Names of the client connections it holds."""
        try:
            return [c.get('name', '') for c in self.monitor('connz').get('connections', [])]
        except (OSError, ValueError):
            return []

    def stream_leader(self, stream):
        try:
            j = self.monitor('jsz?streams=true')
        except (OSError, ValueError):
            return None
        for acc in j.get('account_details', []):
            for st in acc.get('stream_detail', []):
                if st.get('name') == stream:
                    return (st.get('cluster') or {}).get('leader')
        return None

    def running(self):
        return self.popen is not None and self.popen.poll() is None

    def stop(self):
        if self.popen is not None:
            terminate_pid(self.popen, group=True, term_timeout=10)
            self.popen = None

    def kill(self):
        if self.popen is not None:
            self.popen.kill()
            self.popen.wait(10)
            self.popen = None

    def stream_last_seq(self, stream):
        """The stream's last sequence number as this node has it (0 if unknown)."""
        try:
            j = self.monitor('jsz?streams=true')
        except (OSError, ValueError):
            return 0
        for acc in j.get('account_details', []):
            for st in acc.get('stream_detail', []):
                if st.get('name') == stream:
                    return (st.get('state') or {}).get('last_seq', 0)
        return 0


def cluster(tmp, n=3):
    """n nodes with routes to each other, all started."""
    nodes = [NatsServer(tmp, 'c%d' % i, cluster='lab', start=False) for i in range(n)]
    for node in nodes:
        node.routes = [o.cport for o in nodes if o is not node]
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_ready(30)
    return nodes


def tail(servers, stream='LDAPFEED', prefix='ldapfeed', durable=None, type=None, count=None,
         idle=1, token_file=None, check=True, ca=None):
    """The stream's messages as dicts: stream_seq, subject, msg_id, type, seq,
    uuid and the event (JSON decoded, or a pickle loaded)."""
    if not os.access(TAIL, os.X_OK):
        raise Skip('ldapfeed-nats-tail not built')
    argv = [TAIL, '-s', servers, '-S', stream, '-p', prefix, '-i', str(idle)]
    if durable:
        argv += ['-d', durable]
    if type:
        argv += ['-t', type]
    if count is not None:
        argv += ['-n', str(count)]
    if token_file:
        argv += ['-k', token_file]
    if ca:
        argv += ['-C', ca]
    p = subprocess.run(argv, capture_output=True, timeout=scaled(120))
    if check:
        assert p.returncode == 0, 'ldapfeed-nats-tail exit %d: %s' % (p.returncode, p.stderr.decode())
    elif p.returncode != 0:
        return []
    out = []
    for line in p.stdout.decode().splitlines():
        m = json.loads(line)
        if 'pickle' in m:
            m['event'] = pickle.loads(base64.b64decode(m.pop('pickle')))
        out.append(m)
    return out


class StreamReader:
    """A reader of the stream as a consumer would have it: .messages() are
    tail()'s dicts in stream order.  refresh() reads the stream again from
    its start when a node says it grew (ldapfeed-nats-tail with -n, an
    ephemeral consumer, so that nothing is left of a read a fault cut
    short), and keeps the longest prefix read.  Also what
    harness.Daemon takes as its consumer: .address (the servers), .keyfile
    and .fmt."""

    def __init__(self, nodes, fmt='json', stream='LDAPFEED', **kw):
        self.nodes, self.fmt, self.stream, self.kw = list(nodes), fmt, stream, kw
        self.address = ','.join(n.url for n in self.nodes)
        self.keyfile = None
        self.msgs = []

    def refresh(self):
        last = max((n.stream_last_seq(self.stream) for n in self.nodes if n.running()), default=0)
        if last <= len(self.msgs):
            return self.msgs
        got = tail(self.address, stream=self.stream, count=last, idle=2, check=False, **self.kw)
        seqs = [m['stream_seq'] for m in got]
        if seqs != list(range(1, len(got) + 1)):
            raise AssertionError('ldapfeed-nats-tail read the stream out of order: %s' % seqs[:50])
        for old, new in zip(self.msgs, got):
            if (old['msg_id'], old['subject']) != (new['msg_id'], new['subject']):
                raise AssertionError('stream sequence %d changed: %r then %r' % (old['stream_seq'], old, new))
        if len(got) > len(self.msgs):
            self.msgs = got
        return self.msgs

    def messages(self):
        return self.msgs

    def events(self):
        return events_of(self.msgs)


def wait_stream(servers, pred, timeout=30, what='stream condition', **kw):
    """Read the whole stream until pred(messages) holds; returns them."""
    got = []

    def ok():
        got[:] = tail(servers, check=False, **kw)
        return pred(got)
    wait_until(ok, timeout, what, interval=0.2)
    return got


def events_of(msgs):
    return [m['event'] for m in msgs]


def refresh_dones(msgs, epoch=None):
    return [m for m in msgs if m.get('type') == 'refresh_done' and
            (epoch is None or m['msg_id'].startswith(epoch))]


def meta_leader(nodes):
    """The JetStream meta leader's name once the cluster elected one."""
    for node in nodes:
        try:
            leader = (node.monitor('jsz').get('meta_cluster') or {}).get('leader')
        except (OSError, ValueError):
            continue
        if leader:
            return leader
    return None


# ---------------------------------------------------------------- checks

PEOPLE = 'ou=people,dc=example,dc=com'
ENTRY_TYPES = ('add', 'modify', 'rename', 'delete')


def person_dn(i):
    return 'uid=user%05d,%s' % (i, PEOPLE)


def check_stream(msgs, fmt='json'):
    """What holds for any stream ldapfeed wrote: returns the Model built
    from it in stream order."""
    ids = [m['msg_id'] for m in msgs]
    dups = sorted({i for i in ids if ids.count(i) > 1})
    assert not dups, 'message ids twice in the stream: %s' % dups[:5]
    seen, last = {}, {}
    for m in msgs:
        ev = m['event']
        t = ev['type']
        assert m['subject'] == 'ldapfeed.' + t and m['type'] == t, m
        if t == 'hello':
            epoch = ev['epoch']
            assert len(epoch) == 32 and m['msg_id'].startswith(epoch + '-r'), m
            assert ev['format'] == fmt, ev
            continue
        assert int(m['seq']) == ev['seq'], m
        if t in ENTRY_TYPES:
            assert m['uuid'] == ev['uuid'], m
            key = (m['msg_id'].split('-')[0], ev['seq'])
            assert key not in seen, 'event twice in the stream: %r and %r' % (seen[key], ev)
            seen[key] = ev
            epoch = key[0]
            prev = last.get((epoch, ev['uuid']))
            assert prev is None or prev < ev['seq'], 'entry %s out of order: seq %d after %d' % (
                ev['uuid'], ev['seq'], prev)
            last[(epoch, ev['uuid'])] = ev['seq']
    model = Model()
    for m in msgs:
        model.apply(m['event'], check_seq=False)
    assert not model.anomalies, model.anomalies[:5]
    return model


def hellos(msgs):
    return [m['event'] for m in msgs if m['type'] == 'hello']


def loaded(url, epoch_count=1, workers=2, timeout=60, **kw):
    """Wait for every worker's refresh_done of the last run."""
    def ok(msgs):
        hs = hellos(msgs)
        if not hs:
            return False
        epoch = hs[-1]['epoch']
        return len(refresh_dones(msgs, epoch)) >= workers * epoch_count
    return wait_stream(url, ok, timeout, 'every worker\'s refresh_done', **kw)


class Changer(threading.Thread):
    """Modifies entries one by one for a while, in the background."""

    def __init__(self, s, count, pause=0.02):
        super().__init__(daemon=True)
        self.s, self.count, self.pause, self.done, self.error = s, count, pause, 0, None

    def run(self):
        try:
            for i in range(self.count):
                self.s.modify_entry(person_dn(i % 20), [('replace', 'description', ['change %d' % i])])
                self.done += 1
                time.sleep(self.pause)
        except Exception as e:      # reported by the test
            self.error = e


def settled(url, s, **kw):
    """The stream's copy equals the server's, with nothing twice."""
    def ok(msgs):
        try:
            assert_model_equals_server(check_stream(msgs), s, bind='reader')
            return True
        except AssertionError:
            return False
    msgs = wait_stream(url, ok, 60, 'the stream to catch up with the server', **kw)
    return check_stream(msgs)
