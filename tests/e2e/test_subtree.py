"""Subtree operations end to end: a lab slapd, ldapfeed, a Python Listener.

Renames and moves of non-leaf entries, while ldapfeed runs and while it is
down (with and without a session log), subtrees that leave or enter the
search, a subtree fetch that fails, a search base typed in another form than
the server's, deep trees; and the process plumbing those paths lean on (the
pipe ends each process holds, a worker that dies with a full pipe, a start
that fails before touching anything).

Every scenario ends by comparing the consumer's copy (StrictModel) with an
ldapsearch of the server using the daemon's base, filter, attributes and
identity: the same DNs (compared case-insensitively), the same attributes,
and at each DN the server's entryUUID.  Helpers come from test_conformance.py.
"""

import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F403
from test_conformance import (  # noqa: E402
    GROUPS, PEOPLE, SUFFIX, LdapProxy, Run, StrictModel, _children, _tlv, deletes_seen, feed, lab, person,
    reader_pid, resume, stop_clean, wait_cookie_current, wait_events, wait_run)

STAFF = 'ou=staff,' + SUFFIX
TEAM = 'ou=team,' + STAFF
READER = 'cn=reader,' + SUFFIX
# The same DN as STAFF, typed with spaces after the commas and another case.
STAFF_TYPED = 'OU=Staff, dc=example, DC=com'


# ---------------------------------------------------------------- helpers

def people_ldif(ou, *names):
    return b''.join(ldif_entry(*person(n, ou)) for n in names)


def same_as_server(con, s, d, bind=None):
    """The consumer's copy is exactly the server's answer to the daemon's
    search: the same DNs (case-insensitively) with the same attributes, the
    server's entryUUID at each DN, and no anomaly in the event stream."""
    m = StrictModel.from_consumer(con)
    q = d.search
    assert_model_equals_server(m, s, q['base'], q['filt'], q['attrs'], bind=bind or d.bind, fold_dn=True)
    real = {dn.lower(): u for dn, u in s.uuids(q['base'], 'sub', q['filt']).items()}
    wrong = ['%s: uuid %s, server %s' % (e['dn'], u, real.get(e['dn'].lower()))
             for u, e in m.entries.items() if real.get(e['dn'].lower()) != u]
    assert not wrong, 'the copy holds entries under another uuid than the server:\n  ' + '\n  '.join(wrong)
    assert m.anomalies == [], 'model anomalies:\n  ' + '\n  '.join(m.anomalies[:20])
    return m


def wait_same(con, s, d, timeout, live=None):
    """Poll until the copy equals the server (same_as_server), then check it
    once more for a readable diff.  live: a running Daemon that must not
    exit meanwhile."""
    def ok():
        if live is not None and not live.alive():
            raise AssertionError('ldapfeed exited %s while the copy should catch up; stderr tail:\n%s'
                                 % (live.returncode, live.stderr()[-3000:]))
        try:
            same_as_server(con, s, d)
        except AssertionError:
            return False
        return True
    try:
        wait_until(ok, timeout, 'the copy to equal the server', interval=0.25)
    except AssertionError as e:
        if not str(e).startswith('timed out'):
            raise
    return same_as_server(con, s, d)


def finish(con, s, d):
    """Stop a persist run cleanly, let the consumer read to the end of every
    connection, and compare."""
    stop_clean(d)
    con.wait_closed()
    return same_as_server(con, s, d)


def while_down(tmp, s, con, d, change, k=1, server=None):
    """Stop d cleanly, change the directory, resume (run k, waited for up to
    its refresh_done and stopped cleanly) and compare.  Returns the new
    daemon."""
    stop_clean(d)
    change()
    d2 = resume(tmp, s, con, d, k, server=server)
    con.wait_closed()
    same_as_server(con, s, d2)
    return d2


def event_uuids(con):
    return {m['uuid'] for m in con.events() if isinstance(m, dict) and 'uuid' in m}


def deleted(con, k=None):
    """(dn, uuid) of every delete event (of run k only, if given)."""
    msgs = con.messages('delete')
    if k is not None:
        runs = con.runs()
        per = con.per_connection()
        msgs = [m for c in runs[k] for m in per[c] if m.get('type') == 'delete']
    return sorted((m['dn'], m['uuid']) for m in msgs)


# ---------------------------------------------------------------- swaps and replaced OUs

A_OU, B_OU = 'ou=a,' + SUFFIX, 'ou=b,' + SUFFIX


def _two_ous(tmp, variant='V0'):
    s = lab(tmp, variant, people=(), ous=(A_OU, B_OU))
    s.add(people_ldif(A_OU, 'x') + people_ldif(B_OU, 'y'))
    return s


def _swap(s):
    s.modrdn(A_OU, 'ou=tmp')
    s.modrdn(B_OU, 'ou=a')
    s.modrdn('ou=tmp,' + SUFFIX, 'ou=b')


def _swap_while_down(tmp, variant):
    s = _two_ous(tmp, variant)
    con = Consumer(tmp)
    d = feed(tmp, s, con)
    wait_run(con, 0)
    while_down(tmp, s, con, d, lambda: _swap(s))


@test
def swap_subtrees_while_down(tmp):
    # Scenario: V0, whole-tree search; ou=a holds uid=x and ou=b holds uid=y.  With ldapfeed stopped cleanly the
    # two OUs swap names (a -> tmp, b -> a, tmp -> b).  The resumed refresh sends both roots in entry order, not
    # in the order of the renames: the copy must still end with uid=x under ou=b and uid=y under ou=a, each
    # under its own uuid, exactly as on the server.
    _swap_while_down(tmp, 'V0')


@test
def swap_subtrees_while_down_sessionlog(tmp):
    # Scenario: the same swap of ou=a and ou=b while ldapfeed is down, with a session log (V1): the copy ends
    # equal to the server (uid=x under ou=b, uid=y under ou=a).
    _swap_while_down(tmp, 'V1')


@test
def swap_subtrees_while_running(tmp):
    # Scenario: the same swap while ldapfeed follows in persist: each rename arrives in the order it was
    # made, with its descendants; after the last one the copy equals the server.
    s = _two_ous(tmp)
    con = Consumer(tmp)
    d = feed(tmp, s, con)
    wait_run(con, 0)
    _swap(s)
    wait_cookie_current(s, d)
    finish(con, s, d)


def _replace_ou_while_down(tmp, variant):
    # ou=dept-new is created before ou=dept, so the entry that takes over the name ou=dept has the lower
    # entry ID and comes first in the refresh, before the entry that gave the name up.
    new, cur = 'ou=dept-new,' + SUFFIX, 'ou=dept,' + SUFFIX
    s = lab(tmp, variant, people=(), ous=(new, cur))
    s.add(people_ldif(new, 'nina', 'ned') + people_ldif(cur, 'olga', 'oscar'))
    con = Consumer(tmp)
    d = feed(tmp, s, con)
    wait_run(con, 0)

    def replace():
        s.modrdn(cur, 'ou=dept-old')
        s.modrdn(new, 'ou=dept')
    while_down(tmp, s, con, d, replace)


@test
def replace_ou_while_down(tmp):
    # Scenario: V0, whole tree; ou=dept (olga, oscar) is in use and ou=dept-new (nina, ned), created earlier,
    # is its replacement.  While ldapfeed is down: ou=dept -> ou=dept-old, then ou=dept-new -> ou=dept.
    # Resume: the copy must have olga and oscar under ou=dept-old and nina and ned under ou=dept, as the
    # server does.
    _replace_ou_while_down(tmp, 'V0')


@test
def replace_ou_while_down_sessionlog(tmp):
    # Scenario: the same replacement of ou=dept while ldapfeed is down, with a session log (V1): the copy ends
    # with olga and oscar under ou=dept-old, nina and ned under ou=dept.
    _replace_ou_while_down(tmp, 'V1')


# ---------------------------------------------------------------- subtrees leaving the search while down

def _out_of_scope_while_down(tmp, variant):
    s = lab(tmp, variant, people=(), ous=(STAFF, TEAM))
    s.add(people_ldif(STAFF, 'sam') + people_ldif(TEAM, 'tim', 'tom'))
    con = Consumer(tmp)
    d = feed(tmp, s, con, base=STAFF)
    wait_run(con, 0)
    stop_clean(d)
    s.modrdn(TEAM, 'ou=team', newsuperior=GROUPS)
    p = LdapProxy(s)
    d2 = resume(tmp, s, con, d, 1, server=p.url)
    note('%s: %s' % (variant, 'IdSet(D) from the log' if deletes_seen(p) else 'present phase'))
    if variant != 'V0':
        assert deletes_seen(p), 'slapd did not answer from its log (no IdSet with refreshDeletes): %r' % p.server
    con.wait_closed()
    same_as_server(con, s, d2)


@test
def subtree_out_of_scope_while_down(tmp):
    # Scenario: V0, base ou=staff holding sam and ou=team (tim, tom).  With ldapfeed stopped cleanly, ou=team
    # moves under ou=groups, out of the base.  Resume: ou=team, tim and tom are gone from the copy (the
    # present phase leaves all three out), sam stays.
    _out_of_scope_while_down(tmp, 'V0')


@test
def subtree_out_of_scope_while_down_sessionlog(tmp):
    # Scenario: the same move of ou=team out of the base while ldapfeed is down, with a session log (V1).
    # slapd answers from its log with one IdSet(refreshDeletes) naming ou=team only: its descendants have no
    # record of their own.  The copy must still lose tim and tom (a non-leaf leaving the search takes its
    # subtree with it).
    _out_of_scope_while_down(tmp, 'V1')


@test
def subtree_out_of_scope_while_down_accesslog(tmp):
    # Scenario: the same move of ou=team out of the base while ldapfeed is down, with the accesslog-backed
    # session log (V2): the IdSet names ou=team only, and the copy must still lose tim and tom.
    _out_of_scope_while_down(tmp, 'V2')


# ---------------------------------------------------------------- a subtree moving in without entryUUID

@test(timeout=90)
def subtree_in_without_entryuuid_read(tmp):
    # Scenario: persist, base ou=staff; cn=reader may not read entryUUID (syncrepl still works: the Sync
    # State control carries each UUID).  ou=team with tim and tom moves from ou=groups into ou=staff, so
    # ldapfeed fetches the descendants itself and finds no entryUUID on them.  Expected: no event ever carries
    # a uuid that is not a real entryUUID on the server; a warning names a skipped descendant's DN and
    # entryUUID; the daemon keeps running (a failed subtree fetch, retried after reconnecting with backoff).
    # Then slapd restarts without that ACL: a retry brings tim and tom with their real UUIDs and the copy
    # equals the server.
    team_out = 'ou=team,' + GROUPS
    acl = 'access to attrs=entryUUID by dn.exact="%s" none by * read' % READER
    s = lab(tmp, people=(), ous=(STAFF, team_out), acl_prefix=acl)
    s.add(people_ldif(STAFF, 'sam') + people_ldif(team_out, 'tim', 'tom'))
    con = Consumer(tmp)
    d = feed(tmp, s, con, base=STAFF)
    wait_run(con, 0)
    real = set(s.uuids().values())
    kids = ['uid=%s,%s' % (k, TEAM) for k in ('tim', 'tom')]

    def warnings():
        return [ln for ln in d.stderr().splitlines()
                if 'entryuuid' in ln.lower() and any(k.lower() in ln.lower() for k in kids)]

    def invented():
        return sorted(event_uuids(con) - real)
    s.modrdn(team_out, 'ou=team', newsuperior=STAFF)
    try:
        wait_until(lambda: warnings() or invented() or not d.alive(), 10, 'a warning naming a descendant')
    except AssertionError:
        pass        # the checks below say what is missing
    bogus = [m for m in con.events() if m.get('uuid') in invented()]
    assert not bogus, 'events with a uuid that is no entryUUID on the server: %r' % bogus
    assert d.alive(), 'ldapfeed exited %s; stderr:\n%s' % (d.returncode, d.stderr()[-3000:])
    assert warnings(), 'no warning naming %s and entryUUID; stderr:\n%s' % (' or '.join(kids), d.stderr()[-3000:])
    note('warning: ' + warnings()[0])
    s.restart(acl_prefix='')
    wait_same(con, s, d, 30, live=d)
    assert not invented(), 'events with invented uuids: %r' % invented()
    finish(con, s, d)
    assert len(con.runs()) == 1, 'a new run: %r' % con.hellos()


# ---------------------------------------------------------------- a base typed in another form

FILT_VISIBLE_OUS = '(|(objectClass=person)(&(objectClass=organizationalUnit)(!(description=hidden))))'


@test
def filter_exit_with_unnormalized_base(tmp):
    # Scenario: persist, the base typed as "OU=Staff, dc=example, DC=com" (valid, but not how slapd writes
    # it), filter: people, and OUs without description=hidden.  ou=team (tim, tom) gets description=hidden:
    # slapd sends a delete for ou=team with its DN, still inside the base.  Only ou=team leaves the copy; tim
    # and tom are still in the search and stay.
    s = lab(tmp, people=(), ous=(STAFF, TEAM))
    s.add(people_ldif(TEAM, 'tim', 'tom'))
    con = Consumer(tmp)
    d = feed(tmp, s, con, base=STAFF_TYPED, filt=FILT_VISIBLE_OUS)
    wait_run(con, 0)
    s.replace(TEAM, 'description', 'hidden')
    wait_cookie_current(s, d)
    finish(con, s, d)
    assert [dn.lower() for dn, _ in deleted(con)] == [TEAM], deleted(con)


@test
def unnormalized_base_lifecycle(tmp):
    # Scenario: the base typed as "OU=Staff, dc=example, DC=com" through a whole life: full load; in persist
    # sam is renamed to samuel, ou=team (tim, tom) to ou=crew, then ou=crew moves under ou=groups, out of the
    # base; clean stop; samuel is modified while down; clean restart (no reload).  The copy equals the server
    # after each step, and the only deletes ever sent are ou=crew, tim and tom (once each, when they left).
    crew = 'ou=crew,' + STAFF
    s = lab(tmp, people=(), ous=(STAFF, TEAM))
    s.add(people_ldif(STAFF, 'sam') + people_ldif(TEAM, 'tim', 'tom'))
    u = s.uuids()
    con = Consumer(tmp)
    d = feed(tmp, s, con, base=STAFF_TYPED)
    wait_run(con, 0)
    same_as_server(con, s, d)
    s.modrdn('uid=sam,' + STAFF, 'uid=samuel')
    s.modrdn(TEAM, 'ou=crew')
    wait_cookie_current(s, d)
    wait_same(con, s, d, 5, live=d)
    assert deleted(con) == [], 'deletes for renames inside the base: %r' % deleted(con)
    s.modrdn(crew, 'ou=crew', newsuperior=GROUPS)
    wait_cookie_current(s, d)
    wait_same(con, s, d, 5, live=d)
    d2 = while_down(tmp, s, con, d, lambda: s.replace('uid=samuel,' + STAFF, 'description', 'samuel, renamed'))
    assert Run(con, 1).reload == [False] * Run(con, 1).workers, 'the restart reloaded: %r' % con.hellos()
    gone = {u[TEAM], u['uid=tim,' + TEAM], u['uid=tom,' + TEAM]}
    got = deleted(con)
    assert sorted(x[1] for x in got) == sorted(gone), 'deletes %r, expected ou=crew, tim and tom once' % got
    assert deleted(con, 1) == [], deleted(con, 1)


# ---------------------------------------------------------------- a rename that also leaves the filter

FILT_TEAM = '(|(objectClass=person)(ou=team))'


def _team_at_top(tmp, variant='V0'):
    team = 'ou=team,' + SUFFIX
    s = lab(tmp, variant, people=(), ous=(team,))
    s.add(people_ldif(team, 'tim', 'tom'))
    con = Consumer(tmp)
    d = feed(tmp, s, con, filt=FILT_TEAM)
    wait_run(con, 0)
    return s, con, d, team


@test
def rename_plus_filter_exit_nonleaf(tmp):
    # Scenario: persist, filter (|(objectClass=person)(ou=team)), ou=team holds tim and tom.  ou=team is
    # renamed to ou=squad, which leaves the filter in the same operation: slapd sends a delete with the new DN
    # (inside the base).  ou=team leaves the copy; tim and tom still match and are now under ou=squad.
    s, con, d, team = _team_at_top(tmp)
    s.modrdn(team, 'ou=squad')
    wait_cookie_current(s, d)
    finish(con, s, d)


def _rename_plus_filter_exit_while_down(tmp, variant):
    s, con, d, team = _team_at_top(tmp, variant)
    while_down(tmp, s, con, d, lambda: s.modrdn(team, 'ou=squad'))


@test
def rename_plus_filter_exit_nonleaf_while_down(tmp):
    # Scenario: the same rename of ou=team to ou=squad (leaving the filter) while ldapfeed is down, V0.  Resume:
    # ou=team is gone, tim and tom are under ou=squad, as on the server.
    _rename_plus_filter_exit_while_down(tmp, 'V0')


@test
def rename_plus_filter_exit_nonleaf_while_down_sessionlog(tmp):
    # Scenario: the same rename of ou=team to ou=squad while ldapfeed is down, with a session log (V1).
    # Resume: ou=team is gone, tim and tom are under ou=squad.
    _rename_plus_filter_exit_while_down(tmp, 'V1')


# ---------------------------------------------------------------- a subtree fetch that fails

def _search_request(b):
    """(base, scope) of a SearchRequest LDAPMessage, else None."""
    _, s, e = _tlv(b, 0)
    parts = list(_children(b, s, e))
    if len(parts) < 2 or parts[1][0] != 0x63:
        return None
    fields = list(_children(b, parts[1][1], parts[1][2]))
    base = bytes(b[fields[0][1]:fields[0][2]]).decode('utf-8', 'replace')
    return base, int.from_bytes(b[fields[1][1]:fields[1][2]], 'big')


class CutAtSubtreeFetch(LdapProxy):
    """An LdapProxy that, the first time any connection sends a search below
    `root` (the fetch of the entries under a subtree that moved in: its base
    is that subtree's root, whatever its scope), closes every proxied
    connection before slapd sees that search (as a server going away at
    that moment would)."""

    def __init__(self, slapd, root):
        super().__init__(slapd)
        self.root = root.lower()
        self.searches = []
        self.cut = False

    def _client_msg(self, b):
        op = super()._client_msg(b)
        if op == 0x63:
            try:
                req = _search_request(b)
            except (IndexError, ValueError):
                req = None
            with self._cond:
                self.searches.append(req)
                first = req is not None and req[0].lower() == self.root and not self.cut
                if first:
                    self.cut = True
            if first:
                self.drop()
        return op


BIG = 3000


@test(timeout=120)
def subtree_fetch_failure_reconnects(tmp):
    # Scenario: persist, base ou=staff; ou=big with 3,000 people lives under ou=groups and moves into ou=staff
    # while ldapfeed runs.  ldapfeed must fetch the descendants itself, and the connection dies the moment it
    # asks (a proxy closes every connection when the first search based at ou=big,ou=staff passes, on
    # whichever connection).  Expected: no exit, the same run (no second hello), a reconnect, and in the end the copy
    # equals the server with all 3,000 descendants.
    big_out, big_in = 'ou=big,' + GROUPS, 'ou=big,' + STAFF
    s = lab(tmp, people=(), ous=(STAFF, big_out))
    s.add(b''.join(ldif_entry(*Slapd.person(i, big_out)) for i in range(BIG)))
    p = CutAtSubtreeFetch(s, big_in)
    con = Consumer(tmp)
    d = feed(tmp, s, con, base=STAFF, server=p.url)
    r0 = wait_run(con, 0)
    s.modrdn(big_out, 'ou=big', newsuperior=STAFF)
    try:
        wait_until(lambda: p.cut or not d.alive(), 15, 'the fetch below ou=big')
    except AssertionError:
        pass
    assert p.cut, 'ldapfeed sent no search below ou=big: %r' % p.searches
    m = wait_same(con, s, d, 40, live=d)
    assert len(m.entries) == BIG + 2, len(m.entries)
    assert len(con.hellos()) == r0.workers and len(con.runs()) == 1, 'a new run: %r' % con.hellos()
    finish(con, s, d)
    assert 'reconnect' in d.stderr(), d.stderr()[-2000:]


# ---------------------------------------------------------------- changed lists

@test
def changed_sorted_bytewise(tmp):
    # Scenario: persist; one modify of alice replaces postalAddress, postOfficeBox and description and adds a
    # telephoneNumber.  The modify event's `changed` is exactly Python's sorted() of those names (byte
    # order: postOfficeBox before postalAddress), and the copy equals the server.
    s = lab(tmp, people=('alice',))
    con = Consumer(tmp)
    d = feed(tmp, s, con)
    wait_run(con, 0)
    dn = 'uid=alice,' + PEOPLE
    n0 = len(con.events())
    s.modify_entry(dn, [('replace', 'postalAddress', '1 Main Street'), ('replace', 'postOfficeBox', '42'),
                        ('replace', 'description', 'alice moved'), ('add', 'telephoneNumber', '+1 555 0100')])
    wait_events(con, n0 + 1)
    wait_cookie_current(s, d)
    finish(con, s, d)
    mods = con.messages('modify')
    assert len(mods) == 1, mods
    changed = list(mods[0]['changed'])
    assert changed == sorted(changed), 'changed %r is not in sorted() order %r' % (changed, sorted(changed))
    assert changed == ['description', 'postOfficeBox', 'postalAddress', 'telephoneNumber'], changed


# ---------------------------------------------------------------- deep trees

DEPTH = 260


@test(timeout=90)
def deep_tree_rename(tmp):
    # Scenario: a chain of 260 nested OUs under the suffix (ou=l1 down to ou=l260, so the deepest DNs have
    # more than 256 RDNs) with uid=deep at the bottom; whole-tree search.  While ldapfeed runs, the top OU
    # ou=l1 is renamed to ou=top: every one of the 260 descendants is renamed, the deepest ones too, and the
    # copy equals the server.
    s = lab(tmp, people=())
    dn, ldif = SUFFIX, b''
    for i in range(1, DEPTH + 1):
        dn = 'ou=l%d,%s' % (i, dn)
        ldif += ldif_entry(dn, {'objectClass': 'organizationalUnit', 'ou': 'l%d' % i})
    ldif += ldif_entry(*person('deep', dn))
    s.add(ldif)
    deepest = 'uid=deep,' + dn
    assert deepest in s.search(deepest, 'base', attrs=['1.1']), 'slapd did not take %d levels' % DEPTH
    con = Consumer(tmp)
    d = feed(tmp, s, con)
    wait_run(con, 0, timeout=60)
    same_as_server(con, s, d)
    s.modrdn('ou=l1,' + SUFFIX, 'ou=top')
    wait_cookie_current(s, d)
    stop_clean(d)
    con.wait_closed()
    stale = sorted(dn.count(',') + 1 for dn in StrictModel.from_consumer(con).as_dict()
                   if dn.lower().endswith('ou=l1,' + SUFFIX))
    assert not stale, '%d entries kept their ou=l1 DN (depths %d to %d RDNs)' % (len(stale), stale[0], stale[-1])
    same_as_server(con, s, d)
    assert len(con.messages('rename')) == DEPTH + 1, len(con.messages('rename'))


# ---------------------------------------------------------------- worker pipes

def _pipe_ends(pid):
    """{pipe inode: set of 'r'/'w'} for the pipe fds pid holds."""
    out = {}
    for fd in os.listdir('/proc/%d/fd' % pid):
        try:
            target = os.readlink('/proc/%d/fd/%s' % (pid, fd))
            with open('/proc/%d/fdinfo/%s' % (pid, fd)) as f:
                flags = int(re.search(r'flags:\s+(\d+)', f.read()).group(1), 8)
        except (OSError, AttributeError):
            continue
        if target.startswith('pipe:'):
            out.setdefault(target, set()).add('w' if flags & os.O_WRONLY else 'r')
    return out


def _worker_of(con, dn):
    """The index of the worker whose connection carried the add of dn."""
    for msgs in con.per_connection().values():
        if msgs and msgs[0].get('type') == 'hello' and any(m.get('dn') == dn for m in msgs):
            return msgs[0]['worker']
    raise AssertionError('no worker sent the add of %s' % dn)


@test
def worker_pipe_ends(tmp):
    # Scenario: --processes 4 (two workers).  Looking at /proc after the initial load: the reader holds only the
    # write end of each worker's pipe, and each worker holds only the read end of its own pipe (none of the
    # other worker's), so that a worker's death closes its pipe for the reader.
    s = lab(tmp)
    con = Consumer(tmp)
    d = feed(tmp, s, con, processes=4)
    r = wait_run(con, 0)
    assert r.workers == 2, r.workers
    rpid, wpids = reader_pid(d), con.worker_pids()
    assert rpid and len(wpids) == 2, (rpid, wpids)
    reader = _pipe_ends(rpid)
    workers = {i: _pipe_ends(pid) for i, pid in wpids.items()}
    note('reader %r' % reader, *('worker%d %r' % (i, w) for i, w in sorted(workers.items())))
    problems = []
    shared = {p for p in reader if any(p in w for w in workers.values())}
    if len(shared) != 2:
        problems.append('the reader shares %d pipes with the workers, expected 2' % len(shared))
    for p in sorted(shared):
        if reader[p] != {'w'}:
            problems.append('the reader holds %s of %s, expected the write end only' % (sorted(reader[p]), p))
    for i, w in sorted(workers.items()):
        mine = sorted(p for p in w if p in shared)
        if len(mine) != 1:
            problems.append('worker%d holds %d worker pipes %r, expected its own only' % (i, len(mine), mine))
        for p in mine:
            if w[p] != {'r'}:
                problems.append('worker%d holds %s of %s, expected the read end only' % (i, sorted(w[p]), p))
    stop_clean(d)
    assert not problems, '\n'.join(problems)


def _reader_queue(d):
    """The reader's queued bytes, from a fresh SIGUSR1 status line (or -1)."""
    d.signal(signal.SIGUSR1)
    lines = re.findall(r'status reader pid \d+: .*?queue (\d+) bytes', d.stderr())
    return int(lines[-1]) if lines else -1


@test(timeout=60)
def dead_worker_stops_daemon(tmp):
    # Scenario: persist over two workers.  The worker that serves alice is stopped (SIGSTOP), and alice is
    # modified with large values until its pipe is full and the reader's queue for it is over 1 MiB (the
    # reader now waits for that pipe).  Then the worker is SIGKILLed: the whole daemon exits 70, without the
    # marker, within 3 s -- the reader sees the pipe closed and ends by itself; the supervisor need not kill
    # anyone after its grace period.
    s = lab(tmp, people=('alice', 'bob'))
    con = Consumer(tmp)
    d = feed(tmp, s, con, processes=4)
    wait_run(con, 0)
    alice = 'uid=alice,' + PEOPLE
    w = _worker_of(con, alice)
    pid = con.worker_pids()[w]
    os.kill(pid, signal.SIGSTOP)
    for i in range(12):
        s.replace(alice, 'description', ('%x' % i) * 300000)
    def stuck():
        q = _reader_queue(d)
        return q > (1 << 20) and q
    queue = wait_until(stuck, 20, "the reader's queue to pass 1 MiB", interval=0.3)
    note('reader queue %d bytes; killing worker%d (pid %d)' % (queue, w, pid))
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    rc = d.wait(20)
    took = time.monotonic() - t0
    note('daemon exited %s %.1f s after the kill' % (rc, took))
    assert rc == 70, 'exit %s; stderr:\n%s' % (rc, d.stderr()[-3000:])
    assert not d.marker_exists()
    assert took <= scaled(3), 'the daemon took %.1f s to exit after the worker died; stderr tail:\n%s' % (
        took, d.stderr()[-2000:])
    assert 'still running after a failure' not in d.stderr(), d.stderr()[-2000:]
    said = [ln for ln in d.stderr().splitlines()
            if re.search(r'reader: .*(pipe.*worker ?%d\b|worker ?%d\b.*pipe)' % (w, w), ln)]
    assert said, "the reader did not report worker%d's pipe closed; stderr tail:\n%s" % (w, d.stderr()[-2000:])


# ---------------------------------------------------------------- failed starts

def _unreachable_url():
    port = free_port()      # nothing listens there
    return ldap_url('ldap://127.0.0.1:%d' % port, SUFFIX, exts=['bindname=' + READER]), port


@test
def failed_startup_leaves_no_datadir(tmp):
    # Scenario: --data-dir names a directory that does not exist, and the LDAP server is unreachable.  The start
    # fails with 69 and leaves nothing behind: the directory still does not exist, and there is no marker.
    con = Consumer(tmp)
    datadir = os.path.join(tmp, 'newdata')
    url, port = _unreachable_url()
    d = Daemon(tmp, None, con, url=url, password='readerpw', datadir=datadir)
    rc = d.wait(15)
    assert rc == 69, 'exit %s; stderr:\n%s' % (rc, d.stderr())
    assert '127.0.0.1:%d' % port in d.stderr(), d.stderr()
    assert not d.marker_exists()
    assert not os.path.exists(datadir), 'a failed start left %s behind, holding %r' % (
        datadir, os.listdir(datadir) if os.path.isdir(datadir) else '(not a directory)')
    assert con.hellos() == []


@test
def failed_startup_keeps_store(tmp):
    # Scenario: a store and marker left by a clean run; the next start finds the LDAP server unreachable: exit
    # 69, and every store file and the marker are byte for byte as they were.
    s, datadir, marker = prepared_store(tmp)
    before = store_snapshot(datadir, marker)
    con = Consumer(tmp)
    url, _ = _unreachable_url()
    d = Daemon(tmp, s, con, url=url, password=s.reader_pw, datadir=datadir, marker=marker)
    rc = d.wait(15)
    assert rc == 69, 'exit %s; stderr:\n%s' % (rc, d.stderr())
    assert store_snapshot(datadir, marker) == before, (before, store_snapshot(datadir, marker))
    assert con.hellos() == []


if __name__ == '__main__':
    main()
