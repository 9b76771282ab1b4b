#!/usr/bin/env python3
"""Chaos trials with the NATS output: test_chaos.py's trials (the same
random trees, writer, live and stopped phases, and comparison with the
server after every phase), with ldapfeed publishing into NATS JetStream
(doc/outputs.md) and the consumer's copy rebuilt from the stream, in
stream order, as ldapfeed.8 (NATS JETSTREAM) tells a reader to.  One NATS
fault per trial, in a live phase, while the writer goes on changing LDAP:

* nats-term: nats-server stopped with SIGTERM, then started again;
* nats-kill: nats-server SIGKILLed, then started again;
* nats-down: nats-server SIGKILLed, started again 1 to 4 s later;
* leader-kill: on a three-node cluster, the stream leader SIGKILLed, then
  started again;
* none.

A trial runs on a three-node cluster (routes between the nodes, the stream
created with --nats-replicas 3) for leader-kill and one time in four
otherwise, where the other faults strike the node worker 0 is connected to;
else on one node.

Besides test_chaos.py's counts (lost, phantom, wrong after every phase),
it checks that ldapfeed never exits for a NATS fault, and counts as wrong
every message id that is in the stream twice, every entry event (epoch,
seq) that is there twice, every entry whose events are not in seq order,
and every seq missing from a run.

Environment: as test_chaos.py's (CHAOS_SEED, CHAOS_LONG, CHAOS_VARIANT,
CHAOS_VERBOSE), with CHAOS_TRIALS (default 3; 100 with CHAOS_LONG=1) and
CHAOS_FAULT one of the faults above.  Trial N replays alone:
  CHAOS_SEED=S CHAOS_TRIALS=T python3 tests/e2e/test_nats_chaos.py trial_N summary
"""

import collections
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F403
import harness  # noqa: E402
import nats_lab as N  # noqa: E402

FAULTS = ('nats-term', 'nats-kill', 'nats-down', 'leader-kill', 'none')
# test_chaos.py checks CHAOS_FAULT against its own faults, and registers its
# own trials, when imported: these are this script's.
ONLY_FAULT = os.environ.pop('CHAOS_FAULT', None) or None
if ONLY_FAULT and ONLY_FAULT not in FAULTS:
    sys.exit('CHAOS_FAULT must be one of: %s' % ', '.join(FAULTS))
_before = len(harness._tests)
import test_chaos as C  # noqa: E402
del harness._tests[_before:]

TRIALS = int(os.environ.get('CHAOS_TRIALS') or (100 if C.LONG else 3))
STREAM = 'LDAPFEED'
ENTRY_TYPES = ('add', 'modify', 'rename', 'delete')


# ---------------------------------------------------------------- the stream, run by run

def run_id(msg):
    """A hello's run, EPOCH-rN, from its message id EPOCH-rN-wK."""
    return msg['msg_id'].rsplit('-w', 1)[0]


def stream_runs(msgs):
    """The stream cut into ldapfeed's runs: a run begins with the first
    hello of a run id not seen before, and holds what follows until the
    next one.  Returns (runs, problems); a run is {'id', 'workers',
    'reload', 'hellos', 'msgs'}, msgs (stream order) not counting hellos."""
    runs, problems, seen = [], [], set()
    for m in msgs:
        ev = m['event']
        if m['type'] == 'hello':
            rid = run_id(m)
            if not runs or rid != runs[-1]['id']:
                if rid in seen:
                    problems.append('a hello of run %s after run %s began' % (rid, runs[-1]['id']))
                seen.add(rid)
                ws = ev.get('workers')
                runs.append({'id': rid, 'workers': ws if isinstance(ws, int) and ws > 0 else 1, 'reload': False,
                             'hellos': [], 'msgs': []})
            runs[-1]['hellos'].append(m)
            runs[-1]['reload'] = runs[-1]['reload'] or bool(ev.get('reload'))
        elif not runs:
            problems.append('message before any hello: %s' % C._short(m))
        else:
            runs[-1]['msgs'].append(m)
    return runs, problems


def seq_of(m):
    sq = m['event'].get('seq')
    return sq if isinstance(sq, int) else None


def stream_replay(reader, crashed=()):
    """test_chaos.replay() for a stream: the model of the stream applied in
    stream order, and (counted, excused, gaps) as replay() has them, the
    stream's own faults (an id twice, an event twice, an entry out of
    order) counted."""
    msgs = reader.messages()
    runs, counted = stream_runs(msgs)
    excused, gaps = [], []
    ids = collections.Counter(m['msg_id'] for m in msgs)
    counted += ['message id twice in the stream: %s' % i for i, k in ids.items() if k > 1]
    events, last = {}, {}
    for m in msgs:
        if m['type'] in ENTRY_TYPES:
            epoch, sq, u = m['msg_id'].split('-')[0], seq_of(m), m['event'].get('uuid')
            if (epoch, sq) in events:
                counted.append('event %s-%s twice in the stream' % (epoch, sq))
            events[(epoch, sq)] = m
            if sq is not None and last.get((epoch, u), -1) >= sq:
                counted.append('entry %s: seq %d after %d' % (u, sq, last[(epoch, u)]))
            last[(epoch, u)] = sq
    first_missing = {}
    for n, run in enumerate(runs):
        seqs = {seq_of(m) for m in run['msgs']} - {None}
        missing = sorted(set(range(min(seqs), max(seqs) + 1)) - seqs) if seqs else []
        if missing:
            first_missing[n] = missing[0]
            if n not in crashed:
                gaps.append('run %d: %d seqs never arrived, from %d' % (n, len(missing), missing[0]))
    model = Model()
    run_of = {id(m): n for n, run in enumerate(runs) for m in run['hellos'] + run['msgs']}
    for m in msgs:
        k = len(model.anomalies)
        model.apply(m['event'], check_seq=False)
        n = run_of.get(id(m))
        for a in model.anomalies[k:]:
            text = 'run %s: %s' % (n, a)
            sq = seq_of(m)
            if n in crashed and n in first_missing and sq is not None and sq > first_missing[n]:
                excused.append(text)
            else:
                counted.append(text)
    return model, counted, excused, gaps


def stream_caught_up(reader, token):
    """test_chaos.caught_up() for a stream: the latest run has every
    worker's hello and refresh_done, the sentinel's modify carrying
    `token`, and every seq before it."""
    runs, _ = stream_runs(reader.refresh())
    if not runs:
        return False
    run = runs[-1]
    done = {m['msg_id'].rsplit('-w', 1)[-1] for m in run['msgs'] if m['type'] == 'refresh_done'}
    if len(run['hellos']) < run['workers'] or len(done) < run['workers']:
        return False
    seqs, at = set(), None
    for m in run['msgs']:
        sq = seq_of(m)
        if sq is not None:
            seqs.add(sq)
        if m['type'] in ('add', 'modify') and C._token_in(m['event'], token):
            at = sq
    if at is None:
        return False
    return all(q in seqs for q in range(min(seqs), at + 1))


# ---------------------------------------------------------------- one trial

class NatsTrial(C.Trial):
    faults, only_fault = FAULTS, ONLY_FAULT

    def __init__(self, tmp, n, seed):
        super().__init__(tmp, n, seed)
        # drawn after test_chaos.py's draws, which stay as they are
        self.cluster = self.fault == 'leader-kill' or self.r.random() < 0.25
        self.daemon_flags = ['--nats-replicas', '3'] if self.cluster else []
        self.nodes = []

    def describe(self):
        return '%s; NATS: %s' % (super().describe(), 'three nodes, 3 replicas' if self.cluster else 'one node')

    def new_consumer(self):
        if self.cluster:
            self.nodes = N.cluster(self.tmp)
            wait_until(lambda: N.meta_leader(self.nodes), 60, 'a JetStream meta leader')
        else:
            self.nodes = [N.NatsServer(self.tmp)]
        return N.StreamReader(self.nodes, fmt=self.fmt, stream=STREAM)

    def caught_up(self, token):
        return stream_caught_up(self.con, token)

    def diff(self):
        return C.Diff(self.con, self.s, self.base, self.filt, self.crashed, replay=stream_replay)

    def runs(self):
        return stream_runs(self.con.messages())[0]

    def target(self, fault):
        """The node the fault strikes."""
        if fault == 'leader-kill':
            by_name = {nd.name: nd for nd in self.nodes}
            return wait_until(lambda: next((by_name.get(nd.stream_leader(STREAM)) for nd in self.nodes
                                            if nd.running() and nd.stream_leader(STREAM)), None),
                              30, 'the stream leader')
        if len(self.nodes) == 1:
            return self.nodes[0]
        return wait_until(lambda: next((nd for nd in self.nodes if 'ldapfeed worker 0' in nd.clients()), None),
                          30, 'the node of worker 0')

    def strike(self, ph):
        fault, d = ph['fault'], self.d
        node = self.target(fault)
        if fault == 'nats-term':
            node.stop()
        else:
            node.kill()
        if fault in ('nats-down', 'leader-kill'):
            time.sleep(ph['down'])
        if not d.alive():
            self.problems.append('%s: ldapfeed exited (%s) while %s was down' % (fault, d.returncode, node.name))
        node.start(wait=False)
        node.wait_ready(60)
        note('%s: %s restarted%s' % (fault, node.name, ' after %.1fs' % ph['down']
                                     if fault in ('nats-down', 'leader-kill') else ''))
        if not d.alive():
            self.problems.append('%s: ldapfeed exited (%s); it must wait for NATS' % (fault, d.returncode))


_master = random.Random(C.SEED)
for _n in range(1, TRIALS + 1):
    test(name='trial_%d' % _n, timeout=(900 if C.LONG else 240))(
        C._make_trial(_n, _master.randrange(1, 2 ** 31), NatsTrial))
test(C.summary)


if __name__ == '__main__':
    print('# chaos with NATS: CHAOS_SEED=%d CHAOS_TRIALS=%d%s' % (C.SEED, TRIALS, ' CHAOS_LONG=1' if C.LONG else ''))
    main()
