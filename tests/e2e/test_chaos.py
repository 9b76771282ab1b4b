#!/usr/bin/env python3
"""Chaos trials: ldapfeed follows a lab slapd while a writer changes a tree
of organizational units at random, in phases, with one fault per trial, and
after every phase the consumer's copy is compared with the server.

Each trial draws, from its seed:
* the server: V0 (no session log), V1 (syncprov-sessionlog of 20, 100 or
  1000 entries) or V2 (session log kept in an accesslog database);
* the search base: the suffix or the sub-OU ou=staff, written either as the
  server writes it or in another valid form (`OU=Staff, dc=example, DC=com`:
  other case, spaces after the commas);
* the filter: everything, people plus the OUs without `description: hidden`,
  or people plus the OUs named `team*`; so a modify of an OU or a rename of
  one can take a non-leaf entry out of the view or back into it while its
  children stay in view;
* the tree: organizational units 2 to 5 levels deep under ou=staff (the
  sub-OU base), ou=outside (out of that base), ou=people and ou=groups, with
  people and sub-OUs at every level;
* 2 to 3 phases (3 to 8 in the long mode), each either *live* (ldapfeed in
  persist mode while the writer writes) or *stopped* (ldapfeed stopped with
  SIGTERM, which must exit 0 and leave the marker, the writer writes, then
  ldapfeed resumes from its store and the writer goes on during the
  refresh); one live phase carries the fault (one trial in ten has none):
  SIGTERM or SIGKILL to the supervisor, the reader or a worker, slapd
  restarted, slapd stopped for a few seconds, or the consumer closing one
  connection (ldapfeed is started again if it exited), sometimes with the
  consumer not reading around it.

The writer feeds one `ldapmodify -c` and keeps its own copy of the tree, so
that every request is valid (a refused one is reported as a fault of the
test, as is a copy that no longer matches the server after a phase).
Besides adds, modifies, renames, moves and deletes of people, it works on
whole subtrees: renames and moves of non-leaf OUs (across the search base
too), swaps of two OUs through a temporary name (a->tmp, b->a, tmp->b, as
siblings or across parents), three-way rotations, "replace an OU" (x->x-old
then another OU, older or newer than x, takes the name), moves away followed
by another entry moving into the vacated name, an OU moved out of the base
and back, a rename of an OU then of one of its sub-OUs then of the OU again,
new subtrees, subtrees deleted leaf first, people deleted and re-added under
the same DN, and OUs hidden or shown by a modify or by a rename.

The writer never makes a change that the sync protocol cannot carry to any
consumer: a subtree whose root is out of the view before and after a change
of its DN sends nothing (its descendants' DNs change silently), so an OU
that was out of the view (out of the filter or the base) at any time in a
phase is renamed or moved only into the view, and then stays in it until
the phase ends.  Everything else is fair: ldapfeed knows the root at the
start or at the end of every window it did not follow.

After every phase the writer's requests are drained and a sentinel entry
under the base is modified; once the consumer has that modify, every seq
before it, and refresh_done from each worker of the current run, its copy
(the Model, rebuilt from every message received) is compared with an
ldapsearch of the server with the daemon's base, filter and identity, by
entryUUID, DNs compared case-insensitively.  A phase that diverges is noted
with the entries that went wrong and, for each, the tree operation of that
phase nearest to it (the last one that named its DN or an ancestor's).
After the last phase ldapfeed is stopped cleanly and the final comparison
is counted.

Prints `chaos: K trials, L lost, P phantom, D wrong` (lost: on the server,
missing in the model; phantom: in the model, not on the server; wrong: in
both with another DN or other attributes, plus every Model anomaly and every
seq missing from a run that ended cleanly; an entry that diverged after a
phase counts, by the kind it had then, even if something later put it
right) and fails if any is non-zero, or if a fault ends in an exit status
the specification does not document.  The one anomaly not counted: in
a run cut by a crash (a SIGKILLed worker takes the events it held along),
events after the first missing seq may not fit the model (a rename of an
entry whose add was lost); the next start answers that with a full reload,
whose snapshot is checked like any other run.

Environment:
  CHAOS_TRIALS   number of trials (default 5; 100 with CHAOS_LONG=1)
  CHAOS_LONG=1   long mode: 3 to 8 phases per trial, more operations per
                 phase, bigger trees; e.g. CHAOS_LONG=1 CHAOS_TRIALS=300
  CHAOS_SEED     the run's seed (default: random; printed, with every
                 trial's own seed, so that a run or one trial can be
                 replayed: the writer's requests derive from the seed, only
                 their timing against ldapfeed varies, and what a slapd
                 fault cuts off)
  CHAOS_FAULT    only this fault (e.g. kill-reader, or none)
  CHAOS_VARIANT  only this server variant (V0, V1 or V2)
  CHAOS_VERBOSE=1  list every tree operation of every phase
Trial N of a run replays alone (with CHAOS_TRIALS >= N):
  CHAOS_SEED=S CHAOS_TRIALS=T python3 tests/e2e/test_chaos.py trial_N summary
The default run takes 30 to 55 s on 2 CPUs (the more phases diverge, the
longer: a diverging phase is polled 3 s more before it counts).
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

LONG = os.environ.get('CHAOS_LONG', '') not in ('', '0')
TRIALS = int(os.environ.get('CHAOS_TRIALS') or (100 if LONG else 5))
SEED = int(os.environ.get('CHAOS_SEED') or random.SystemRandom().randrange(1, 2 ** 31))
FAULTS = ('term-supervisor', 'term-reader', 'term-worker', 'kill-supervisor', 'kill-reader', 'kill-worker',
          'slapd-restart', 'slapd-down', 'close-connection', 'none')
ONLY_FAULT = os.environ.get('CHAOS_FAULT') or None
VARIANTS = ('V0', 'V1', 'V2')
ONLY_VARIANT = os.environ.get('CHAOS_VARIANT') or None
VERBOSE = os.environ.get('CHAOS_VERBOSE', '') not in ('', '0')
CATCH_UP_SECS = 60
CRASH_WORDS = ('Segmentation', 'AddressSanitizer', 'runtime error:', 'LeakSanitizer', 'stack smashing',
               'double free')

if ONLY_FAULT and ONLY_FAULT not in FAULTS:
    sys.exit('CHAOS_FAULT must be one of: %s' % ', '.join(FAULTS))
if ONLY_VARIANT and ONLY_VARIANT not in VARIANTS:
    sys.exit('CHAOS_VARIANT must be one of: %s' % ', '.join(VARIANTS))

SUFFIX = 'dc=example,dc=com'
STAFF = 'ou=staff,' + SUFFIX
OUTSIDE = 'ou=outside,' + SUFFIX
PEOPLE = 'ou=people,' + SUFFIX
GROUPS = 'ou=groups,' + SUFFIX
# the same DNs as a user may type them: other case, spaces after the commas
BASE_FORMS = {SUFFIX: ['DC=Example, DC=COM', 'dc=example, dc=com'],
              STAFF: ['OU=Staff, dc=example, DC=com', 'ou=STAFF,DC=example,DC=com', 'ou=staff, dc=example, dc=com']}
FILTERS = {
    'all': '(objectClass=*)',
    'hidden': '(|(objectClass=person)(&(objectClass=organizationalUnit)(!(description=hidden))))',
    'team': '(|(objectClass=person)(&(objectClass=organizationalUnit)(ou=team*)))',
}
MAX_RDNS = 9            # the deepest DN the writer makes: dc,dc + 7 levels
SENTINEL = 'uid=sentinel'

tally = {'started': 0, 'trials': 0, 'lost': 0, 'phantom': 0, 'wrong': 0, 'excused': 0, 'problems': [], 'failed': [],
         'blame': {}}


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


# ---------------------------------------------------------------- the writer's tree

WORDS = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel', 'india', 'juliett',
         'Jörg Müller', 'naïve café', '☃ snow', 'x' * 300]
OU_PREFIXES = ('team', 'dept', 'unit')


class Reject(Exception):
    """A planned step is invalid, or would hide a change from every consumer."""


class Node:
    __slots__ = ('tag', 'kind', 'name', 'parent', 'children', 'hidden', 'fixed_dn')

    def __init__(self, tag, kind, name, parent=None, hidden=False, fixed_dn=None):
        self.tag, self.kind, self.name, self.parent = tag, kind, name, parent
        self.children = {}          # lower-case RDN -> Node
        self.hidden = hidden
        self.fixed_dn = fixed_dn

    @property
    def rdn(self):
        return ('ou=' if self.kind == 'ou' else 'uid=') + self.name

    @property
    def dn(self):
        return self.fixed_dn or self.rdn + ',' + self.parent.dn

    @property
    def fixed(self):
        return self.fixed_dn is not None

    def nrdns(self):
        return self.dn.count(',') + 1

    def height(self):
        return 1 + max((c.height() for c in self.children.values()), default=0)

    def subtree(self):
        out, todo = [], [self]
        while todo:
            n = todo.pop()
            out.append(n)
            todo.extend(n.children.values())
        return out

    def below(self, other):
        """True if self is other or one of its descendants."""
        n = self
        while n is not None:
            if n is other:
                return True
            n = n.parent
        return False


class Tree:
    """The writer's copy of the directory (the entries it made, under fixed
    parents), and the rule that keeps its changes visible to a consumer:
    per phase, `nv_seen` holds the OUs that were out of the view at some
    moment, and `pinned` the OUs that must stay in the view until the phase
    ends.  Steps are applied at once and journalled, so that a compound
    operation that meets a Reject is rolled back whole."""

    def __init__(self, base, fkind):
        self.base, self.fkind = base.lower(), fkind
        self.root = Node(None, 'top', None, fixed_dn=SUFFIX)
        self.fixed = {SUFFIX: self.root}
        for dn in (PEOPLE, GROUPS, STAFF, OUTSIDE):
            n = Node(None, 'ou', dn.split(',')[0][3:], self.root, fixed_dn=dn)
            self.root.children[n.rdn] = n
            self.fixed[dn] = n
        self.nodes = {}             # tag -> Node
        self.n = 0
        self.nv_seen, self.pinned = set(), set()
        self.journal = []
        self.touched = set()        # tags of the OUs renamed, moved or modified by the operation being made

    # -- looking
    def next(self):
        self.n += 1
        return self.n

    def ous(self):
        return [x for x in self.nodes.values() if x.kind == 'ou']

    def people(self):
        return [x for x in self.nodes.values() if x.kind == 'person']

    def parents(self):
        return list(self.fixed.values())[1:] + self.ous()

    def state(self, node):
        """VIS (in the view), FILT (in the base, not in the filter) or OUT."""
        dn = node.dn.lower()
        if not (dn == self.base or dn.endswith(',' + self.base)):
            return 'OUT'
        if node.kind != 'ou' or node.fixed:
            return 'VIS'
        if self.fkind == 'hidden' and node.hidden:
            return 'FILT'
        if self.fkind == 'team' and not node.name.startswith('team'):
            return 'FILT'
        return 'VIS'

    def begin_phase(self):
        self.nv_seen = {x.tag for x in self.ous() if self.state(x) != 'VIS'}
        self.pinned = set()

    def _after(self, nodes):
        for y in nodes:
            if y.kind != 'ou' or y.fixed:
                continue
            st = self.state(y)
            if st != 'VIS':
                if y.tag in self.pinned:
                    raise Reject('%s must stay in the view' % y.dn)
                self.nv_seen.add(y.tag)

    # -- transactions
    def begin(self):
        return len(self.journal), set(self.nv_seen), set(self.pinned)

    def rollback(self, mark):
        k, self.nv_seen, self.pinned = mark
        while len(self.journal) > k:
            self.journal.pop()()

    def commit(self, mark):
        del self.journal[mark[0]:]

    # -- steps: each returns its LDIF record
    def free_name(self, parent, kind, name):
        return (('ou=' if kind == 'ou' else 'uid=') + name) not in parent.children

    def add(self, parent, kind, name, attrs, hidden=False, tag=None):
        if not self.free_name(parent, kind, name):
            raise Reject('name taken')
        if parent.nrdns() + 1 > MAX_RDNS:
            raise Reject('too deep')
        x = Node(tag or self.next(), kind, name, parent, hidden)
        parent.children[x.rdn] = x
        self.nodes[x.tag] = x

        def undo():
            del parent.children[x.rdn]
            del self.nodes[x.tag]
        self.journal.append(undo)
        self._after([x])
        return rec_add(x.dn, attrs)

    def delete(self, x):
        if x.children or x.fixed:
            raise Reject('not a leaf')
        dn, parent = x.dn, x.parent
        del parent.children[x.rdn]
        del self.nodes[x.tag]

        def undo():
            parent.children[x.rdn] = x
            self.nodes[x.tag] = x
        self.journal.append(undo)
        return rec_delete(dn)

    def modrdn(self, x, name, parent=None):
        if x.fixed:
            raise Reject('fixed entry')
        parent = parent or x.parent
        if parent.below(x):
            raise Reject('under itself')
        if parent is x.parent and name == x.name:
            raise Reject('no change')
        if not self.free_name(parent, x.kind, name):
            raise Reject('name taken')
        if parent.nrdns() + x.height() > MAX_RDNS:
            raise Reject('too deep')
        was_nv = x.kind == 'ou' and x.tag in self.nv_seen
        self.touched.add(x.tag)
        dn, old_parent, old_name = x.dn, x.parent, x.name
        del old_parent.children[x.rdn]
        x.name, x.parent = name, parent
        parent.children[x.rdn] = x

        def undo():
            del parent.children[x.rdn]
            x.name, x.parent = old_name, old_parent
            old_parent.children[x.rdn] = x
        self.journal.append(undo)
        if was_nv:
            # out of the view before, in this phase: a consumer learns of the new DNs of
            # its subtree only if the root comes into the view, and stays there
            if self.state(x) != 'VIS':
                raise Reject('%s would change its DN unseen' % dn)
            self.pinned.add(x.tag)
        self._after(x.subtree())
        return rec_modrdn(dn, x.rdn, parent.dn if parent is not old_parent else None)

    def set_description(self, x, values):
        self.touched.add(x.tag)
        old = x.hidden
        x.hidden = 'hidden' in values

        def undo():
            x.hidden = old
        self.journal.append(undo)
        self._after([x])
        return ldif_modify(x.dn, [('replace', 'description', values)])

    # -- the server's copy
    def load(self, entries):
        """Rebuild from {dn: attrs} of the server (after requests were lost)."""
        for f in self.fixed.values():
            f.children = {}
        for dn, f in self.fixed.items():
            if f.parent is not None:
                f.parent.children[f.rdn] = f
        self.nodes = {}
        byn = {dn.lower(): f for dn, f in self.fixed.items()}
        for dn in sorted(entries, key=lambda d: d.count(',')):
            a = {k.lower(): v for k, v in entries[dn].items()}
            ocs = {v.decode().lower() for v in a.get('objectclass', [])}
            if 'organizationalunit' in ocs and a.get('businesscategory'):
                kind, tag = 'ou', int(a['businesscategory'][0].decode()[1:])
            elif 'inetorgperson' in ocs and a.get('employeenumber'):
                kind, tag = 'person', int(a['employeenumber'][0].decode())
            else:
                continue
            rdn, parent_dn = dn.split(',', 1)
            parent = byn.get(parent_dn.lower())
            if parent is None:
                continue
            x = Node(tag, kind, rdn.split('=', 1)[1], parent,
                     b'hidden' in a.get('description', []))
            parent.children[x.rdn] = x
            self.nodes[tag] = x
            byn[dn.lower()] = x
            self.n = max(self.n, tag)
        self.journal = []

    def signature(self):
        return sorted((x.dn.lower(), x.kind == 'ou' and x.hidden) for x in self.nodes.values())


def server_signature(entries):
    t = Tree(SUFFIX, 'all')
    t.load(entries)
    return t.signature()


def tree_entries(slapd):
    return slapd.search(attrs=['objectClass', 'description', 'businessCategory', 'employeeNumber'])


# ---------------------------------------------------------------- the writer

class Writer:
    """Generates valid random changes from its own seeded generator and feeds
    them to one long-lived `ldapmodify -c` through its stdin.  Work comes in
    jobs of a fixed number of operations (run in a thread): the sequence of
    requests depends only on the seed.  suspend() kills ldapmodify and idles
    (around a slapd stop); resume() re-reads the tree from the server and
    starts a new ldapmodify.  drain() (between jobs) lets ldapmodify apply
    everything and checks its copy of the tree against the server."""

    def __init__(self, slapd, tree, rng, caps, server=None):
        self.s, self.t, self.rng, self.caps = slapd, tree, rng, caps
        self.server = server or SLAPD
        self.proc = None
        self.ops = self.errors = self.starts = 0
        self.error_lines = []
        self.kinds = {}
        self.rejected = {}
        self.log = []               # tree operations of the current phase: (kind, text, [dns])
        self.error = None
        self.thread = None
        self._running = threading.Event()
        self._running.set()
        self._idle = threading.Event()
        self._lock = threading.Lock()
        self.resync_needed = False

    # -- ldapmodify
    def _start_proc(self):
        argv = ['ldapmodify', '-c', '-x', '-H', self.s.url, '-D', self.s.rootdn, '-w', self.s.rootpw]
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env=dict(os.environ, LDAPNOINIT='1'), start_new_session=True)
        register_process(p, group=True, name='ldapmodify')
        t = threading.Thread(target=self._errors, args=(p,), daemon=True)
        t.start()
        p.err_thread = t
        self.proc = p
        self.starts += 1

    def _errors(self, p):
        for ln in p.stderr:
            with self._lock:
                if ln.startswith(b'ldap_'):
                    self.errors += 1
                if len(self.error_lines) < 12:
                    self.error_lines.append(ln.decode('utf-8', 'replace').rstrip())

    def _kill_proc(self):
        if self.proc is not None:
            terminate_pid(self.proc, group=True, term_timeout=0.5, sig=signal.SIGKILL)
            self.proc = None

    def _drain_proc(self, timeout):
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(scaled(timeout))
            self.proc.err_thread.join(5)
        except subprocess.TimeoutExpired:
            raise AssertionError('ldapmodify still busy %gs after its input ended' % scaled(timeout))
        finally:
            self._kill_proc()

    def resync(self):
        self.t.load(tree_entries(self.s))

    # -- control
    def start_job(self, n, mix, pace):
        assert self.thread is None
        self.done = 0
        self.thread = threading.Thread(target=self._job, args=(n, mix, pace), daemon=True, name='chaos-writer')
        self.thread.start()

    def wait_job(self, timeout=300):
        """Wait for the job's last request to be written."""
        self.thread.join(scaled(timeout))
        if self.thread.is_alive():
            raise AssertionError('the writer did not finish its job within %gs' % scaled(timeout))
        self.thread = None
        if self.error:
            raise AssertionError('the writer failed:\n' + self.error)

    def suspend(self, timeout=30):
        self._idle.clear()
        self._running.clear()
        if self.thread is not None and self.thread.is_alive():
            wait_until(lambda: self._idle.is_set() or not self.thread.is_alive(), timeout, 'the writer to pause')
        self._kill_proc()
        self.resync_needed = True

    def resume(self):
        self._running.set()

    def drain(self):
        """Apply everything written; returns problems of the test itself
        (refused requests, a copy of the tree that is not the server's)."""
        self._drain_proc(120)
        out = []
        with self._lock:
            # slapd failing a valid request itself (80, "DN index add
            # failed" under concurrent renames) is no fault of the test's
            # nor ldapfeed's: the server's state stands, the writer's copy
            # is resynced below, and the requests of the phase that built
            # on the failed one are refused in turn.
            theirs_fault = [ln for ln in self.error_lines if ln.startswith('ldap_') and
                            any(code in ln for code in self.server.own_failures)]
            if theirs_fault:
                note('slapd failed a valid request itself; %d refused in this phase: %s'
                     % (self.errors, ' | '.join(self.error_lines[:4])))
                self.resync_needed = True
            elif self.errors:
                out.append('test: slapd refused %d requests: %s' % (self.errors, ' | '.join(self.error_lines[:6])))
            self.errors = 0
            self.error_lines = []
        theirs = server_signature(tree_entries(self.s))
        if not self.resync_needed and self.t.signature() != theirs:
            mine = self.t.signature()
            diff = sorted(set(mine) ^ set(theirs))[:6]
            out.append('test: the writer\'s copy of the tree is not the server\'s: %r' % diff)
        self.resync_needed = False
        self.resync()
        return out

    def _job(self, n, mix, pace):
        try:
            while self.done < n:
                if not self._running.is_set():
                    self._kill_proc()
                    self._idle.set()
                    self._running.wait(0.2)
                    continue
                if self.proc is None:
                    if self.resync_needed:
                        try:
                            self.resync()
                        except LdapError:
                            time.sleep(0.2)     # slapd coming back: try again
                            continue
                        self.resync_needed = False
                    self._start_proc()
                kind, rec = self.op(mix)
                try:
                    self.proc.stdin.write(rec)
                    self.proc.stdin.flush()
                except (BrokenPipeError, OSError):
                    self._kill_proc()
                    self.resync_needed = True
                    continue
                self.done += 1
                self.ops += 1
                self.kinds[kind] = self.kinds.get(kind, 0) + 1
                time.sleep(self.rng.uniform(0, 2 * pace))
        except BaseException:
            self.error = traceback.format_exc()
            self._kill_proc()

    # -- choosing
    def person_attrs(self, uid, tag):
        r = self.rng
        a = {'objectClass': ['top', 'person', 'organizationalPerson', 'inetOrgPerson'], 'uid': uid,
             'cn': 'Person %s' % uid, 'sn': 'S%d' % r.randrange(1000), 'employeeNumber': str(tag),
             'description': r.sample(WORDS, r.randint(1, 3))}
        if r.random() < 0.5:
            a['mail'] = ['%s.%d@example.com' % (uid, i) for i in range(r.randint(1, 3))]
        if r.random() < 0.03:
            a['jpegPhoto'] = bytes(r.randrange(256) for _ in range(r.randint(1, 3000)))
        return a

    def ou_attrs(self, name, tag, hidden):
        return {'objectClass': 'organizationalUnit', 'ou': name, 'businessCategory': 't%d' % tag,
                'description': 'hidden' if hidden else self.rng.choice(WORDS)}

    def ou_name(self, prefix=None, x=None):
        if x is not None and x.tag in self.t.nv_seen and self.t.fkind == 'team':
            prefix = 'team'         # the only new name it may take: one in the view
        return '%s%d' % (prefix or self.rng.choice(OU_PREFIXES), self.t.next())

    def tmp_name(self):
        return '%s%d' % (self.rng.choice(('tmp', 'teamtmp')), self.t.next())

    def pick_ou(self, nonleaf=0.85, exclude=()):
        """An OU, mostly one with children, mostly one whose DN may change
        freely in this phase (never out of the view yet)."""
        ous = [x for x in self.t.ous() if x not in exclude]
        if not ous:
            raise Reject('no OU')
        if self.rng.random() < 0.8:
            ous = [x for x in ous if x.tag not in self.t.nv_seen] or ous
        inner = [x for x in ous if x.children]
        if inner and self.rng.random() < nonleaf:
            return self.rng.choice(sorted(inner, key=lambda x: x.tag))
        return self.rng.choice(sorted(ous, key=lambda x: x.tag))

    def pick_person(self):
        ps = self.t.people()
        if not ps:
            raise Reject('no person')
        return self.rng.choice(sorted(ps, key=lambda x: x.tag))

    def pick_parent(self, exclude_below=None):
        """A parent for a new or moved entry: as often in the base as out of it."""
        ps = [p for p in self.t.parents() if exclude_below is None or not p.below(exclude_below)]
        if self.rng.random() < 0.6:
            ps = [p for p in ps if self.t.state(p) != 'OUT'] or ps
        return self.rng.choice(sorted(ps, key=lambda x: (x.tag or 0, x.dn)))

    def add_person(self, parent):
        tag = self.t.next()
        uid = 'p%d' % tag
        return self.t.add(parent, 'person', uid, self.person_attrs(uid, tag), tag=tag)

    def add_subtree(self, parent, depth, hidden=None):
        tag = self.t.next()
        name = '%s%d' % (self.rng.choice(OU_PREFIXES), tag)
        h = self.rng.random() < 0.2 if hidden is None else hidden
        recs = [self.t.add(parent, 'ou', name, self.ou_attrs(name, tag, h), hidden=h, tag=tag)]
        x = parent.children['ou=' + name]
        for _ in range(self.rng.randint(0, 3)):
            recs.append(self.add_person(x))
        if depth > 1:
            for _ in range(self.rng.randint(1, 2)):
                recs += self.add_subtree(x, depth - 1)
        self.last_subtree = tag
        return recs

    # -- operations: each returns (kind, record bytes); tree operations are logged
    def op(self, mix):
        weights = MIXES[mix]
        for _ in range(20):
            kind = self.rng.choices(list(weights), list(weights.values()))[0]
            mark = self.t.begin()
            before = len(self.log)
            self.t.touched = set()
            try:
                recs, text, dns = getattr(self, 'op_' + kind.replace('-', '_'))()
            except Reject:
                self.rejected[kind] = self.rejected.get(kind, 0) + 1
                self.t.rollback(mark)
                del self.log[before:]
                continue
            self.t.commit(mark)
            if text:
                self.log.append((kind, text, [d.lower() for d in dns], set(self.t.touched)))
            return kind, b''.join(recs)
        mark = self.t.begin()
        rec = self.add_person(self.t.fixed[STAFF])
        self.t.commit(mark)
        return 'p-add', rec

    def op_p_add(self):
        if len(self.t.people()) >= self.caps['people']:
            raise Reject('enough people')
        return [self.add_person(self.pick_parent())], None, ()

    def op_p_modify(self):
        x, r = self.pick_person(), self.rng
        n = self.t.next()
        changes = r.choice([
            [('replace', 'description', r.sample(WORDS, r.randint(0, 3)))],
            [('add', 'telephoneNumber', ['+1 555 %07d' % n, '+1 556 %07d' % n][:r.randint(1, 2)])],
            [('replace', 'telephoneNumber', [])],
            [('replace', 'mail', ['m%d.%d@example.com' % (n, i) for i in range(r.randint(0, 3))])],
            [('replace', 'sn', ['S%d' % n]), ('add', 'description', ['d%d' % n]),
             ('replace', 'title', ['t%d' % n] if r.random() < 0.7 else [])],
        ])
        return [ldif_modify(x.dn, changes)], None, ()

    def op_p_rename(self):
        x = self.pick_person()
        return [self.t.modrdn(x, 'p%d' % self.t.next())], None, ()

    def op_p_move(self):
        x = self.pick_person()
        parent = self.pick_parent()
        name = x.name if self.rng.random() < 0.6 else 'p%d' % self.t.next()
        return [self.t.modrdn(x, name, parent)], None, ()

    def op_p_delete(self):
        return [self.t.delete(self.pick_person())], None, ()

    def op_p_reuse(self):
        # a person goes (deleted, or moved away) and another entry takes its DN
        x = self.pick_person()
        dn, name, parent = x.dn, x.name, x.parent
        if self.rng.random() < 0.5:
            recs = [self.t.delete(x)]
            tag = self.t.next()
            recs.append(self.t.add(parent, 'person', name, self.person_attrs(name, tag), tag=tag))
            return recs, 'p-reuse: %s deleted and added again' % dn, [dn]
        recs = [self.t.modrdn(x, 'p%d' % self.t.next(), self.pick_parent())]
        y = self.pick_person()
        if y is x:
            raise Reject('same')
        ydn = y.dn
        recs.append(self.t.modrdn(y, name, parent))
        return recs, 'p-reuse: %s moved away, %s took its DN' % (dn, ydn), [dn, ydn]

    def op_ou_add(self):
        if len(self.t.ous()) >= self.caps['ous']:
            raise Reject('enough OUs')
        parent = self.pick_parent()
        recs = self.add_subtree(parent, self.rng.randint(1, 3))
        return recs, None, ()

    def op_ou_modify(self):
        x = self.pick_ou(nonleaf=0.5)
        vals = self.rng.sample(WORDS, self.rng.randint(0, 2))
        st = self.t.state(x)
        rec = self.t.set_description(x, vals)
        text = None
        if x.hidden is False and st != self.t.state(x):
            text = 'ou-modify: %s shown again' % x.dn
        return [rec], text, [x.dn] if text else ()

    def op_ou_hide(self):
        x = self.pick_ou()
        if x.hidden:
            rec = self.t.set_description(x, [self.rng.choice(WORDS)])
            return [rec], 'ou-hide: %s shown (description no longer hidden)' % x.dn, [x.dn]
        rec = self.t.set_description(x, ['hidden'])
        return [rec], 'ou-hide: %s hidden (description: hidden)' % x.dn, [x.dn]

    def op_ou_rename(self):
        x = self.pick_ou()
        dn = x.dn
        if self.rng.random() < 0.5:
            # keep or change filter membership on purpose: team* <-> other names
            prefix = 'dept' if x.name.startswith('team') else 'team'
        else:
            prefix = None
        rec = self.t.modrdn(x, self.ou_name(prefix, x))
        return [rec], 'ou-rename: %s -> %s' % (dn, x.dn), [dn, x.dn]

    def op_ou_move(self):
        outside = [x for x in self.t.ous() if self.t.state(x) == 'OUT']
        if outside and self.rng.random() < 0.3:
            x = self.rng.choice(sorted(outside, key=lambda n: n.tag))      # mostly into the base
        else:
            x = self.pick_ou()
        dn = x.dn
        parent = self.pick_parent(exclude_below=x)
        name = x.name if self.rng.random() < 0.7 else self.ou_name(x=x)
        rec = self.t.modrdn(x, name, parent)
        return [rec], 'ou-move: %s -> %s' % (dn, x.dn), [dn, x.dn]

    def op_ou_swap(self):
        a = self.pick_ou()
        if self.rng.random() < 0.5 and len([c for c in a.parent.children.values() if c.kind == 'ou']) > 1:
            b = self.rng.choice(sorted([c for c in a.parent.children.values() if c.kind == 'ou' and c is not a],
                                       key=lambda x: x.tag))
        else:
            b = self.pick_ou(exclude=(a,))
        if a.below(b) or b.below(a):
            raise Reject('nested')
        adn, bdn = a.dn, b.dn
        na, pa, nb, pb = a.name, a.parent, b.name, b.parent
        recs = [self.t.modrdn(a, self.tmp_name()),
                self.t.modrdn(b, na, pa),
                self.t.modrdn(a, nb, pb)]
        return recs, 'ou-swap: %s <-> %s (through a temporary name)' % (adn, bdn), [adn, bdn]

    def op_ou_rotate(self):
        a = self.pick_ou()
        b = self.pick_ou(exclude=(a,))
        c = self.pick_ou(exclude=(a, b))
        for x, y in ((a, b), (a, c), (b, c)):
            if x.below(y) or y.below(x):
                raise Reject('nested')
        dns = [a.dn, b.dn, c.dn]
        na, pa, nb, pb, nc, pc = a.name, a.parent, b.name, b.parent, c.name, c.parent
        recs = [self.t.modrdn(a, self.tmp_name()), self.t.modrdn(b, na, pa), self.t.modrdn(c, nb, pb),
                self.t.modrdn(a, nc, pc)]
        return recs, 'ou-rotate: %s -> %s -> %s -> first' % tuple(dns), dns

    def op_ou_replace(self):
        # x -> x-old, then another OU takes x's name: an existing one (older or newer
        # than x) or a new subtree made for it
        x = self.pick_ou()
        dn, name, parent = x.dn, x.name, x.parent
        recs = [self.t.modrdn(x, name + 'old%d' % self.t.next())]
        xdn = x.dn
        if self.rng.random() < 0.6:
            y = self.pick_ou(exclude=(x,))
            how = 'existing %s (%s)' % (y.dn, 'older' if y.tag < x.tag else 'newer')
        else:
            if len(self.t.ous()) >= self.caps['ous'] + 5:
                raise Reject('enough OUs')
            where = parent if self.rng.random() < 0.5 else self.pick_parent()
            recs += self.add_subtree(where, self.rng.randint(1, 2))
            y = self.t.nodes[self.last_subtree]
            how = 'new %s' % y.dn
        ydn = y.dn
        recs.append(self.t.modrdn(y, name, parent))
        return recs, 'ou-replace: %s -> %s, then %s takes its name' % (dn, xdn, how), [dn, xdn, x.dn, ydn]

    def op_ou_vacate(self):
        # x moves away (another parent), and y moves into x's vacated DN
        x = self.pick_ou()
        dn, name, parent = x.dn, x.name, x.parent
        recs = [self.t.modrdn(x, x.name if self.rng.random() < 0.5 else self.ou_name(x=x),
                              self.pick_parent(exclude_below=x))]
        xdn = x.dn
        y = self.pick_ou(exclude=(x,))
        ydn = y.dn
        recs.append(self.t.modrdn(y, name, parent))
        return recs, 'ou-vacate: %s -> %s, then %s -> %s' % (dn, xdn, ydn, y.dn), [dn, xdn, x.dn, ydn, y.dn]

    def op_ou_bounce(self):
        # out of the base and back (to the same place or elsewhere)
        x = self.pick_ou()
        dn = x.dn
        if self.t.state(x) == 'OUT':
            raise Reject('outside')
        inside = x.parent
        outside = self.rng.choice([self.t.fixed[OUTSIDE], self.t.fixed[GROUPS]] +
                                  [o for o in self.t.ous() if self.t.state(o) == 'OUT' and not o.below(x)])
        recs = [self.t.modrdn(x, x.name, outside)]
        mid = x.dn
        back = inside if self.rng.random() < 0.6 else self.pick_parent(exclude_below=x)
        recs.append(self.t.modrdn(x, x.name if self.rng.random() < 0.7 else self.ou_name(x=x), back))
        return recs, 'ou-bounce: %s -> %s -> %s' % (dn, mid, x.dn), [dn, mid, x.dn]

    def op_ou_nested(self):
        # rename an OU, then one of its sub-OUs, then the OU again
        x = self.pick_ou()
        subs = [y for y in x.subtree() if y is not x and y.kind == 'ou']
        if not subs:
            raise Reject('no sub-OU')
        y = self.rng.choice(sorted(subs, key=lambda n: n.tag))
        dns = [x.dn, y.dn]
        recs = [self.t.modrdn(x, self.ou_name(x=x))]
        recs.append(self.t.modrdn(y, self.ou_name(x=y)))
        recs.append(self.t.modrdn(x, self.ou_name(x=x) if self.rng.random() < 0.5 else dns[0].split(',')[0][3:]))
        dns += [x.dn, y.dn]
        return recs, 'ou-nested: %s renamed, then its %s, then it again (now %s, %s)' % tuple(dns), dns

    def op_ou_delete(self):
        x = self.pick_ou(nonleaf=0.5)
        nodes = x.subtree()
        if len(nodes) > 12:
            raise Reject('too big')
        dn = x.dn
        recs = [self.t.delete(y) for y in sorted(nodes, key=lambda n: -n.nrdns())]
        return recs, 'ou-delete: %s and its %d descendants' % (dn, len(nodes) - 1), [dn]


LIVE_MIX = {'p-add': 12, 'p-modify': 16, 'p-rename': 4, 'p-move': 5, 'p-delete': 7, 'p-reuse': 3,
            'ou-add': 4, 'ou-modify': 3, 'ou-hide': 4, 'ou-rename': 6, 'ou-move': 6, 'ou-swap': 5,
            'ou-rotate': 2, 'ou-replace': 4, 'ou-vacate': 3, 'ou-bounce': 3, 'ou-nested': 3, 'ou-delete': 2}
STOPPED_MIX = dict(LIVE_MIX, **{'p-add': 6, 'p-modify': 8, 'ou-swap': 10, 'ou-replace': 8, 'ou-rotate': 4,
                                'ou-vacate': 6, 'ou-bounce': 5, 'ou-hide': 6, 'ou-rename': 8})
MIXES = {'live': LIVE_MIX, 'stopped': STOPPED_MIX}


def initial_tree(w, n_people):
    """LDIF for the starting tree: OU subtrees 2 to 5 levels deep under the
    fixed OUs, and people spread over every OU."""
    t, r = w.t, w.rng
    mark = t.begin()
    recs = []
    tops = [t.fixed[STAFF]] * 3 + [t.fixed[OUTSIDE]] * 2 + [t.fixed[PEOPLE], t.fixed[GROUPS]]
    for _ in range(r.randint(*w.caps['subtrees'])):
        parent = r.choice(tops)
        recs += chain(w, parent, r.randint(2, 5))
    parents = t.parents()
    for _ in range(n_people):
        recs.append(w.add_person(r.choice(parents)))
    t.commit(mark)
    return b''.join(recs)


def chain(w, parent, depth):
    """One OU with children and a line of sub-OUs `depth` levels deep."""
    tag = w.t.next()
    name = '%s%d' % (w.rng.choice(OU_PREFIXES), tag)
    h = w.rng.random() < 0.2
    recs = [w.t.add(parent, 'ou', name, w.ou_attrs(name, tag, h), hidden=h, tag=tag)]
    x = parent.children['ou=' + name]
    if depth > 1:
        recs += chain(w, x, depth - 1)
        if w.rng.random() < 0.4:
            recs += w.add_subtree(x, 1)
    return recs


# ---------------------------------------------------------------- the server

class SlapdServer:
    """What a trial needs of its server, for slapd: a fresh lab slapd in the
    variant the trial drew (with the suffix, ou=people and ou=groups), and
    which attribute holds the uuid ldapfeed gives an entry (entryUUID).
    test_389ds_chaos.py's Trial subclass names another."""
    name = 'slapd'
    uuid_attr = 'entryUUID'
    unsent = ()             # attributes the server shows that ldapfeed leaves out (lower case)
    own_failures = ('(80)',)    # result codes of a valid request the server fails itself (Writer.drain)

    def start(self, trial):
        return Slapd(trial.tmp, variant=trial.variant, sessionlog=trial.sessionlog)

    def uuid(self, value):
        """The event's uuid of an entry whose uuid_attr is value."""
        return value

    def label(self, trial):
        return trial.variant + (' (sessionlog %d)' % trial.sessionlog if trial.variant == 'V1' else '')


SLAPD = SlapdServer()


# ---------------------------------------------------------------- comparing

def server_view(slapd, base, filt, server=SLAPD):
    """{uuid: (dn lower-cased, attrs)} of the daemon's search, as its identity sees it."""
    res = slapd.search(base, 'sub', filt, attrs=['*', server.uuid_attr], bind='reader')
    key = server.uuid_attr.lower()
    out = {}
    for dn, attrs in res.items():
        attrs = dict(attrs)
        uu = [v for k, v in attrs.items() if k.lower() == key]
        attrs = {k: v for k, v in attrs.items() if k.lower() != key and k.lower() not in server.unsent}
        out[server.uuid(uu[0][0].decode())] = (dn.lower(), normalize_attrs(attrs, fold_names=True))
    return out


def replay(con, crashed=()):
    """Model the consumer's copy from everything it received, run by run, as
    Model.apply_records does (hellos, then events in seq order), noting
    which event produced each anomaly.  Returns (model, counted, excused,
    gaps): anomalies a correct feed never produces; anomalies excused
    because they follow a gap in the seqs of a run that ended in a crash
    (runs whose index is in `crashed`: a SIGKILLed worker takes the events
    it held with it, and the other connections go on without them, which
    is why the next start is a full reload); and the seqs missing in runs
    that ended cleanly (lost events)."""
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


class Diff:
    """The model of everything the consumer received against the server's
    view, by entryUUID (DNs compared case-insensitively); wrong also counts
    anomalies and lost events (replay())."""

    def __init__(self, con, slapd, base, filt, crashed=(), replay=replay, server=SLAPD):
        m, self.anomalies, excused, self.gaps = replay(con, crashed)
        self.excused = len(excused)
        self.mine = {u: (e['dn'].lower(), normalize_attrs(e['attrs'], fold_names=True))
                     for u, e in m.entries.items()}
        self.theirs = server_view(slapd, base, filt, server)
        mine, theirs = self.mine, self.theirs
        self.lost_u = sorted(set(theirs) - set(mine))
        self.phantom_u = sorted(set(mine) - set(theirs))
        self.wrong_u = sorted(u for u in set(mine) & set(theirs) if mine[u] != theirs[u])
        self.lost, self.phantom = len(self.lost_u), len(self.phantom_u)
        self.wrong = len(self.wrong_u) + len(self.anomalies) + len(self.gaps)
        self.total = len(theirs)

    @property
    def clean(self):
        return (self.lost, self.phantom, self.wrong) == (0, 0, 0)

    def bad(self):
        """{uuid: (kind, model dn, server dn)} of the diverging entries."""
        out = {}
        for u in self.lost_u:
            out[u] = ('lost', None, self.theirs[u][0])
        for u in self.phantom_u:
            out[u] = ('phantom', self.mine[u][0], None)
        for u in self.wrong_u:
            out[u] = ('wrong', self.mine[u][0], self.theirs[u][0])
        return out

    def details(self, only=None, limit=10):
        lines = []
        bad = self.bad()
        for u in sorted(bad, key=lambda u: (bad[u][0], bad[u][2] or bad[u][1])):
            if only is not None and u not in only:
                continue
            if len(lines) >= limit:
                lines.append('... %d more' % (len(bad) - limit))
                break
            kind, mdn, sdn = bad[u]
            if kind == 'lost':
                lines.append('lost     %s %s' % (u, sdn))
            elif kind == 'phantom':
                lines.append('phantom  %s %s' % (u, mdn))
            else:
                (dn1, a1), (dn2, a2) = self.mine[u], self.theirs[u]
                if dn1 != dn2:
                    lines.append('wrong    %s dn: model %r, server %r' % (u, dn1, dn2))
                for k in sorted(set(a1) | set(a2)):
                    if a1.get(k) != a2.get(k):
                        lines.append('wrong    %s %s: model %s, server %s' % (u, k, _short(a1.get(k)),
                                                                            _short(a2.get(k))))
        lines += ['anomaly  %s' % a for a in self.anomalies[:10]]
        lines += ['gap      %s' % g for g in self.gaps]
        return lines


def _short(v):
    s = repr(v)
    return s if len(s) < 120 else s[:117] + '...'


def _under(dn, top):
    return dn is not None and (dn == top or dn.endswith(',' + top))


def _tag(attrs):
    for name in ('employeenumber', 'businesscategory'):
        for v in (attrs or {}).get(name, []):
            try:
                return int(v.decode().lstrip('t'))
            except ValueError:
                pass
    return None


def blame(log, bad, tree, diff):
    """For each diverging entry, the tree operations of `log` that renamed,
    moved or modified the entry itself or one of its ancestors (known by
    their tags where the writer's tree has the entry, and by the DNs that
    the operation named, on the model's side and the server's).  Returns
    [(operation indices, latest first, [uuids])], most entries first."""
    by = {}
    for u, (_, m, s) in bad.items():
        chain = set()               # tags of the entry and its ancestors now
        tag = _tag((diff.theirs.get(u) or diff.mine.get(u) or (None, {}))[1])
        x = tree.nodes.get(tag)
        while x is not None and not x.fixed:
            chain.add(x.tag)
            x = x.parent
        ops = tuple(i for i in range(len(log) - 1, -1, -1)
                    if log[i][3] & chain or any(_under(m, top) or _under(s, top) for top in log[i][2]))
        by.setdefault(ops, []).append(u)
    return sorted(by.items(), key=lambda kv: (-len(kv[1]), kv[0]))


# ---------------------------------------------------------------- catching up

def _token_in(msg, token):
    attrs = msg.get('attrs') if msg.get('type') == 'add' else msg.get('new')
    try:
        vals = normalize_attrs(attrs or {}, fold_names=True).get('description', [])
    except (TypeError, ValueError):
        return False
    return token.encode() in vals


def caught_up(con, token):
    """The latest run has all its workers, refresh_done on each, the
    sentinel's modify carrying `token`, and every seq before it."""
    records = con.records()
    runs = harness._group_runs(records)
    if not runs:
        return False
    run = runs[-1]
    if len(run['conns']) < run['workers']:
        return False
    conns = set(run['conns'])
    done, seqs, at = set(), set(), None
    for idx, m in records:
        if idx not in conns or not isinstance(m, dict):
            continue
        t, sq = m.get('type'), m.get('seq')
        if t == 'refresh_done':
            done.add(idx)
        if t != 'hello' and isinstance(sq, int):
            seqs.add(sq)
        if t in ('add', 'modify') and _token_in(m, token):
            at = sq
    if at is None or done != conns:
        return False
    lo = min(seqs)
    return all(q in seqs for q in range(lo, at + 1))


# ---------------------------------------------------------------- one trial

class Trial:
    faults, only_fault = FAULTS, ONLY_FAULT
    daemon_flags = ()           # more flags for ldapfeed
    server = SLAPD              # the server's part (SlapdServer)

    def __init__(self, tmp, n, seed):
        self.tmp, self.n, self.seed = tmp, n, seed
        r = self.r = random.Random(seed)
        self.wseed = r.randrange(1, 2 ** 31)
        self.variant = ONLY_VARIANT or r.choice(VARIANTS)
        self.sessionlog = r.choice([20, 100, 1000])
        self.base = r.choice([SUFFIX, STAFF, STAFF])
        self.base_form = r.choice(BASE_FORMS[self.base]) if r.random() < 0.5 else self.base
        self.fkind = r.choice(sorted(FILTERS))
        self.filt = FILTERS[self.fkind]
        self.fault = self.only_fault or r.choice(self.faults)
        self.procs = r.choice([3, 4])
        self.fmt = r.choice(['pickle', 'json'])
        self.initial = r.randint(600, 1500) if r.random() < 0.1 else r.randint(20, 200)
        nph = r.randint(3, 8) if LONG else r.randint(2, 3)
        kinds = [r.choice(['live', 'stopped']) for _ in range(nph)]
        if 'stopped' not in kinds and r.random() < 0.85:
            kinds[r.randrange(nph)] = 'stopped'
        if self.fault != 'none' and 'live' not in kinds:
            kinds[r.randrange(nph)] = 'live'
        fault_phase = r.choice([i for i, k in enumerate(kinds) if k == 'live']) if self.fault != 'none' else None
        scale = 3 if LONG else 1
        self.phases = []
        for i, k in enumerate(kinds):
            ph = {'kind': k, 'ops': r.randint(15, 80) * scale if k == 'live' else r.randint(8, 40) * scale,
                  'pace': r.uniform(0.002, 0.012), 'fault': None}
            if k == 'stopped':
                # writes that go on while ldapfeed refreshes, sometimes
                ph['refresh_ops'] = r.randint(1, 20) if r.random() < 0.5 else 0
            if i == fault_phase:
                ph['fault'] = self.fault
                ph['fault_at'] = r.randint(0, ph['ops'] - 1)
                ph['stall'] = (r.uniform(0.2, 1.5), r.uniform(0.0, 2.0)) if r.random() < 0.3 else None
                ph['down'] = r.uniform(1.0, 4.0)
            self.phases.append(ph)
        self.caps = {'people': self.initial + (400 if LONG else 150), 'ous': 90 if LONG else 45,
                     'subtrees': (6, 12) if LONG else (4, 8)}
        self.problems = []
        self.crashed = set()        # runs (by index) that ended otherwise than cleanly
        self.daemons = []
        self.token = 0
        self.diverged = {}          # uuid -> (phase, kind) where it first diverged
        self.blamed = []

    def describe(self):
        return ('trial %d seed %d: %s, base %r%s, filter %s, %s, --processes %d, %s, %d initial people; '
                'phases: %s' % (
                    self.n, self.seed, self.server.label(self),
                    self.base_form, '' if self.base_form == self.base else ' (the server writes %s)' % self.base,
                    self.fkind, 'fault ' + self.fault, self.procs, self.fmt, self.initial,
                    ', '.join('%s %d ops%s' % (p['kind'], p['ops'],
                                               ' + %d during the refresh' % p['refresh_ops'] if p.get('refresh_ops')
                                               else '') + (' with the fault after %d' % p['fault_at']
                                                           if p['fault'] else '')
                              for p in self.phases)))

    # -- the consumer: a Listener (test_nats_chaos.py reads a NATS stream instead)
    def new_consumer(self):
        return Consumer(self.tmp, fmt=self.fmt)

    def caught_up(self, token):
        return caught_up(self.con, token)

    def diff(self):
        return Diff(self.con, self.s, self.base, self.filt, self.crashed, server=self.server)

    def runs(self):
        return harness._group_runs(self.con.records())

    # -- ldapfeed
    def start_daemon(self):
        s = self.s
        url = ldap_url(s, self.base_form, filt=self.filt, exts=['bindname=' + s.reader_dn])
        # A trial moves whole subtrees out of view at once: the mass-delete
        # guard (tested in test_guard.py) stands aside here.
        d = Daemon(self.tmp, s, self.con, url=url, password=s.reader_pw, processes=self.procs, bind='reader',
                   extra=['--max-delete', '100%'] + list(self.daemon_flags))
        self.daemons.append(d)
        self.d = d
        return d

    def stop_clean(self, what):
        d = self.d
        rc = d.stop(60)
        if rc != 0 or not d.marker_exists():
            self.problems.append('%s: SIGTERM gave exit %s, marker %s' % (what, rc, d.marker_exists()))
            if rc != 0:
                self.crashed.add(len(self.daemons) - 1)

    # -- checks
    def check(self, label, log):
        """Wait until the consumer has caught up, compare, and note what
        diverged for the first time here."""
        self.token += 1
        token = 'sync %d.%d' % (self.n, self.token)
        self.s.modify(ldif_modify(self.sentinel, [('replace', 'description', [token])]))
        t0 = time.monotonic()
        d = self.d
        try:
            wait_until(lambda: self.caught_up(token) or not d.alive(), CATCH_UP_SECS,
                       'the consumer to catch up', interval=0.1)
        except AssertionError as e:
            self.problems.append('%s: %s' % (label, e))
        if not d.alive():
            self.problems.append('%s: ldapfeed exited (%s) while catching up' % (label, d.returncode))
        took = time.monotonic() - t0
        diff = self.diff()
        end = time.monotonic() + scaled(3)
        while not diff.clean and time.monotonic() < end:
            time.sleep(0.5)
            diff = self.diff()
        bad = diff.bad()
        new = {u: v for u, v in bad.items() if u not in self.diverged}
        note('%s: caught up in %.1fs, %d entries; lost %d, phantom %d, wrong %d%s' % (
            label, took, diff.total, diff.lost, diff.phantom, diff.wrong,
            ' (%d new)' % len(new) if bad and len(new) != len(bad) else ''))
        if new or (diff.anomalies or diff.gaps) and not self.blamed:
            for u, v in new.items():
                self.diverged[u] = (label, v[0])
            for ln in diff.details(only=set(new)):
                note('  ' + ln)
            kinds = set()
            for ops, us in blame(log, new, self.w.t, diff)[:8]:
                if not ops:
                    note('  %d of them: no tree operation of this phase touched them or their ancestors' % len(us))
                    kinds.add('(none)')
                    continue
                note('  %d of them after (latest first):' % len(us))
                for i in ops[:4]:
                    note('    ' + log[i][1])
                    kinds.add(log[i][0])
                if len(ops) > 4:
                    note('    ... and %d earlier' % (len(ops) - 4))
            self.blamed.append((label, sorted(kinds)))
            # What the consumer was told of them, for whoever looks into it.
            for u in list(new)[:3]:
                evs = [m for m in self.con.events() if isinstance(m, dict) and m.get('uuid') == u]
                note('  events of %s: %s' % (u, ' | '.join('%s %s %s' % (
                    m.get('seq'), m.get('type'), (m.get('old_dn', '') + ' -> ' if m.get('old_dn') else '') +
                    str(m.get('dn'))) for m in evs[-8:])))
        return diff

    # -- the fault
    def strike(self, ph):
        fault, con, r = ph['fault'], self.con, self.r
        stall = ph['stall']
        d = self.d
        if stall:
            con.pause()
            time.sleep(stall[0])

        def end_stall():
            if stall:
                time.sleep(stall[1])
                con.resume()
        if fault in ('slapd-restart', 'slapd-down'):
            self.w.suspend()
            self.s.stop()
            if fault == 'slapd-down':
                time.sleep(ph['down'])
            self.s.start()
            self.w.resume()
            end_stall()
            if not d.alive():
                self.problems.append('%s: ldapfeed exited (%s); it must reconnect' % (fault, d.returncode))
            return
        # startup over (hellos may sit unread in a stalled consumer's sockets)
        workers = max(1, self.procs - 2)
        wait_until(lambda: 'supervisor: started' in d.stderr() and len(list(con.connection_pids().values())) >= workers,
                   30, 'ldapfeed to start (%d workers connected)' % workers)
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
                pid = r.choice(sorted(wpids))
            else:
                rest = [p for p in d.children() if p not in wpids]
                if len(rest) != 1:
                    raise AssertionError('cannot tell the reader: children %r, workers %r' % (d.children(), wpids))
                pid = rest[0]
            os.kill(pid, sig)
            expect = 0 if sig == signal.SIGTERM else (-9 if target == 'supervisor' else 70)
        end_stall()
        try:
            rc = d.wait(60)
        except AssertionError as e:
            raise AssertionError('%s: %s' % (fault, e)) from None
        try:
            wait_until(lambda: not instance_procs(d.datadir), 30, 'every ldapfeed process to exit')
        except AssertionError as e:
            self.problems.append('%s: %s: %r' % (fault, e, instance_procs(d.datadir)))
        if rc != 0:
            self.crashed.add(len(self.daemons) - 1)
        if rc != expect:
            self.problems.append('%s: exit status %s, expected %s' % (fault, rc, expect))
        if d.marker_exists() != (expect == 0):
            self.problems.append('%s: marker %s after exit %s'
                                 % (fault, 'present' if d.marker_exists() else 'absent', rc))
        self.start_daemon()

    # -- the whole
    def run(self):
        note(self.describe())
        s = self.s = self.server.start(self)
        self.sentinel = '%s,%s' % (SENTINEL, self.base)
        ldif = b''.join(ldif_entry(dn, {'objectClass': 'organizationalUnit', 'ou': dn.split(',')[0][3:]})
                        for dn in (STAFF, OUTSIDE))
        ldif += ldif_entry(self.sentinel, {'objectClass': ['top', 'person', 'organizationalPerson', 'inetOrgPerson'],
                                           'uid': 'sentinel', 'cn': 'sentinel', 'sn': 'sentinel',
                                           'description': 'start'})
        s.add(ldif)
        tree = Tree(self.base, self.fkind)
        w = self.w = Writer(s, tree, random.Random(self.wseed), self.caps, self.server)
        s.tool('ldapmodify', ['-c'], input=initial_tree(w, self.initial))
        self.problems += w.drain()
        self.con = self.new_consumer()
        self.start_daemon()
        t_start = time.monotonic()
        self.check('initial load', [])
        for i, ph in enumerate(self.phases, 1):
            label = 'phase %d (%s)' % (i, ph['kind'])
            tree.begin_phase()
            w.log = []
            if ph['kind'] == 'stopped':
                self.stop_clean(label)
                w.start_job(ph['ops'], 'stopped', ph['pace'])
                w.wait_job()
                self.problems += w.drain()
                self.start_daemon()
                if ph['refresh_ops']:
                    w.start_job(ph['refresh_ops'], 'stopped', ph['pace'])
                    w.wait_job()
                    self.problems += w.drain()
            else:
                w.start_job(ph['ops'], 'live', ph['pace'])
                if ph['fault']:
                    wait_until(lambda: w.done >= ph['fault_at'] or not w.thread.is_alive(), 120,
                               'the writer to reach the fault')
                    self.strike(ph)
                w.wait_job()
                self.problems += w.drain()
            kinds = {}
            for k, _, _, _ in w.log:
                kinds[k] = kinds.get(k, 0) + 1
            note('%s: %s' % (label, ', '.join('%s %d' % kv for kv in sorted(kinds.items())) or 'no tree operations'))
            if VERBOSE:
                for k, text, _, _ in w.log:
                    note('  ' + text)
            self.check(label, w.log)
        note('writer: %d requests (%s), %d ldapmodify processes; %.1fs; plans dropped: %s'
             % (w.ops, ', '.join('%s %d' % kv for kv in sorted(w.kinds.items())), w.starts,
                time.monotonic() - t_start, ', '.join('%s %d' % kv for kv in sorted(w.rejected.items()))))
        # a clean stop delivers whatever was still on its way; then the final count
        d = self.d
        if d.alive():
            rc = d.stop(60)
            if rc != 0 or not d.marker_exists():
                self.problems.append('final SIGTERM: exit %s, marker %s' % (rc, d.marker_exists()))
        final = self.diff()
        for x in self.daemons:
            bad = [ln for ln in x.stderr().splitlines() if any(wd in ln for wd in CRASH_WORDS)]
            if bad:
                self.problems.append('ldapfeed crashed: %s' % ' | '.join(bad[:3]))
        runs = self.runs()
        if len(runs) != len(self.daemons):
            note('%d runs seen for %d ldapfeed starts' % (len(runs), len(self.daemons)))
        # an entry that went wrong after a phase counts even if something later (a full reload
        # after a crash, a later change of the entry) put it right: by its kind then
        healed = sorted(u for u in self.diverged if u not in final.bad())
        self.counts = {'lost': final.lost, 'phantom': final.phantom, 'wrong': final.wrong}
        for u in healed:
            self.counts[self.diverged[u][1]] += 1
        note('final: %d entries, %d messages in %d runs (reload: %s); lost %d, phantom %d, wrong %d%s%s'
             % (final.total, len(self.con.messages()), len(runs),
                ', '.join(str(rn['reload']).lower() for rn in runs), final.lost, final.phantom, final.wrong,
                '; %d anomalies after a crash excused' % final.excused if final.excused else '',
                '; %d more diverged after %s and came right later' % (
                    len(healed), ', '.join(sorted({self.diverged[u][0] for u in healed}))) if healed else ''))
        for ln in final.details():
            note('  ' + ln)
        return final


def run_trial(tmp, n, seed, cls=Trial):
    t = cls(tmp, n, seed)
    final = t.run()
    tally['trials'] += 1
    for k in ('lost', 'phantom', 'wrong'):
        tally[k] += t.counts[k]
    tally['excused'] += final.excused
    for p in t.problems:
        tally['problems'].append('trial %d (seed %d): %s' % (n, seed, p))
    for label, kinds in t.blamed:
        phase = label.split('(')[-1].rstrip(')') if '(' in label else label
        for k in kinds:
            tally['blame'].setdefault('%s in a %s phase' % (k, phase), []).append(
                '%d (%s, %s)' % (n, t.server.label(t), t.fkind))
    if t.problems or any(t.counts.values()):
        tally['failed'].append('%d (seed %d, %s, %s, %s)' % (n, seed, t.server.label(t), t.fkind, t.fault))
        raise AssertionError('%s\nlost %d, phantom %d, wrong %d\n%s\n%s' % (
            t.describe(), t.counts['lost'], t.counts['phantom'], t.counts['wrong'], '\n'.join(t.problems),
            '\n'.join(final.details())))


def _make_trial(n, seed, cls=Trial):
    def trial(tmp):
        # Scenario: one chaos trial (see the module docstring): a fresh slapd (V0, V1 or V2; or the server
        # of cls) with a random tree of OUs, a consumer, ldapfeed on a base and filter drawn from `seed`, live
        # and stopped phases of random tree operations, one fault, a check of the model against the server
        # after every phase.
        tally['started'] += 1
        try:
            run_trial(tmp, n, seed, cls)
        except BaseException:
            if not any(f.startswith('%d ' % n) for f in tally['failed']):
                tally['failed'].append('%d (seed %d, aborted)' % (n, seed))
            raise
    return trial


# Run as a script, this file registers its trials; imported for the
# machinery (test_389ds_chaos.py, test_nats_chaos.py), it must not.
def _unregistered(arg=None, **kw):
    return arg if callable(arg) else (lambda fn: fn)


register = test if __name__ == '__main__' else _unregistered
_master = random.Random(SEED)
for _n in range(1, TRIALS + 1):
    register(name='trial_%d' % _n, timeout=(900 if LONG else 240))(_make_trial(_n, _master.randrange(1, 2 ** 31)))


@register
def summary():
    # Scenario: the trials above, summed: `chaos: K trials, L lost, P phantom, D wrong`; fails if any count
    # is non-zero, a trial failed, or a fault ended in an undocumented way.
    line = 'chaos: %d trials, %d lost, %d phantom, %d wrong' % (
        tally['trials'], tally['lost'], tally['phantom'], tally['wrong'])
    print(line + ' (CHAOS_SEED=%d; %d anomalies excused after crashes)' % (SEED, tally['excused']))
    sys.stdout.flush()
    for k, v in sorted(tally['blame'].items(), key=lambda kv: (-len(kv[1]), kv[0])):
        note('divergence after %s: trials %s' % (k, ', '.join(sorted(set(v), key=lambda t: int(t.split()[0])))))
    for p in tally['problems']:
        note(p)
    assert tally['trials'] == tally['started'], '%d of %d trials completed; failed: %s' % (
        tally['trials'], tally['started'], ', '.join(tally['failed']))
    assert not tally['failed'] and not tally['problems'] and \
        tally['lost'] == tally['phantom'] == tally['wrong'] == 0, \
        '%s; failed trials: %s' % (line, ', '.join(tally['failed']))


if __name__ == '__main__':
    print('# chaos: CHAOS_SEED=%d CHAOS_TRIALS=%d%s' % (SEED, TRIALS, ' CHAOS_LONG=1' if LONG else ''))
    main()
