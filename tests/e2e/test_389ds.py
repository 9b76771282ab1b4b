#!/usr/bin/env python3
"""ldapfeed against a real 389 Directory Server (389-ds-base 2.3, the
Content Synchronization plugin over the Retro Changelog): the provider
matrix of the slapd tests, for the cases that make sense on 389-ds.

Not part of `make check`: tests/run runs this file only when an argument
names it (`make check-389ds` does, after `sh scripts/deps 389ds`).  One
instance (ds389.DS389) is created for the whole file (about ten seconds)
and reset at the start of every test: plugins as the test wants them, the
feed identity's ACI and limits in place, the suffix emptied but for
ou=services.

Every scenario compares the consumer's copy (StrictModel: the events
applied in seq order) with an ldapsearch of the server bound as the feed
identity, with the daemon's base: the same DNs (case-insensitively), the
same attributes, and at each DN the uuid the server's Sync State control
carries.  On 389-ds that is the entry's nsUniqueId read as 16 bytes, so
the event's `uuid` is the nsUniqueId's 32 hex digits in the same order,
regrouped 8-4-4-4-12: nsUniqueId 0d1561ca-f13d11f1-a783e2bc-f3b3dba9 is
uuid 0d1561ca-f13d-11f1-a783-e2bcf3b3dba9 (ds389.nsuniqueid_uuid).  The
entryUUID attribute that 389-ds also keeps (its entryuuid plugin) is an
unrelated value: an event keyed by it is a second copy of the entry.

What the server sent is counted from its access log (a line per entry,
level 512): a resume from a cookie must not read the directory again.
Its sync search sends the changed entries alone; the lookups of those,
the listing of DNs and nsUniqueIds that ends a refresh on 389-ds when
anything changed, and the catch-up sync search from the refresh's cookie
(doc/providers.md) are other searches, and not counted.
389-ds's cookie is `HOST:PORT#BINDDN:BASE:FILTER#CHANGENUMBER` (the last
Retro Changelog change number the session has seen); the cookie_format
test pins that shape down.
"""

import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F403
import harness  # noqa: E402
from test_conformance import Run, StrictModel, reader_pid, stop_clean, stored_cookie, wait_run  # noqa: E402
from ds389 import DS389, nsuniqueid_uuid  # noqa: E402

SUFFIX = 'dc=example,dc=com'
PEOPLE = 'ou=people,' + SUFFIX
GROUPS = 'ou=groups,' + SUFFIX
ARCHIVE = 'ou=archive,' + SUFFIX
TEAM = 'ou=team,' + ARCHIVE

# Created at import so that the harness keeps it from test to test (a
# resource registered inside a test goes at that test's end) and removes it
# when the file is done, on every path; made on first use by reset().
DS = DS389(SUFFIX, lazy=True)


# ---------------------------------------------------------------- the lab

def person(name, ou=PEOPLE, **extra):
    attrs = {'objectClass': ['top', 'person', 'organizationalPerson', 'inetOrgPerson'], 'uid': name,
             'cn': name.capitalize(), 'sn': name.capitalize() + 'son', 'mail': name + '@example.com'}
    attrs.update(extra)
    return 'uid=%s,%s' % (name, ou), attrs


def ou(dn):
    return ldif_entry(dn, {'objectClass': ['top', 'organizationalUnit'], 'ou': dn.split(',')[0].split('=')[1]})


def ldif_modrdn(dn, newrdn, newsuperior=None):
    """An LDIF modrdn record (deleteoldrdn 1), for several changes in one ldapmodify."""
    return ('dn: %s\nchangetype: modrdn\nnewrdn: %s\ndeleteoldrdn: 1\n%s\n' % (
        dn, newrdn, 'newsuperior: %s\n' % newsuperior if newsuperior else '')).encode()


def account(dn):
    return ldif_entry(dn, {'objectClass': ['top', 'account'], 'uid': dn.split(',')[0].split('=')[1]})


def lab(**conf):
    """The instance reset (configure(**conf)), then: ou=people with alice,
    bob, carol, dave; ou=groups with cn=staff; ou=archive with ou=team and
    two accounts under it.  14 entries under the suffix with ou=services."""
    ds = DS.reset(**conf)
    ldif = ou(PEOPLE) + ou(GROUPS) + ou(ARCHIVE) + ou(TEAM)
    ldif += b''.join(ldif_entry(*person(n)) for n in ('alice', 'bob', 'carol', 'dave'))
    ldif += ldif_entry('cn=staff,' + GROUPS, {'objectClass': ['top', 'groupOfNames'], 'cn': 'staff',
                                              'member': ['uid=alice,' + PEOPLE, 'uid=bob,' + PEOPLE]})
    ldif += account('uid=tm1,' + TEAM) + account('uid=tm2,' + TEAM)
    ds.add(ldif)
    return ds


def feed(tmp, ds, con, base=SUFFIX, processes=3, mode='persist', filt=None, **kw):
    """ldapfeed on ds bound as the feed identity, following base (and filt)."""
    url = ldap_url(ds.url, base, filt=filt, exts=['bindname=' + ds.feed_dn])
    d = Daemon(tmp, ds, con, url=url, password=ds.feed_pw, processes=processes, mode=mode, bind='feed', **kw)
    d.search = {'base': base, 'attrs': None, 'filt': '(objectClass=*)'}
    return d


# ---------------------------------------------------------------- checks

class _Without:
    """ds.search() with some attributes left out of every entry."""

    def __init__(self, ds, drop):
        self.ds, self.drop = ds, {a.lower() for a in drop}

    def search(self, *a, **k):
        return {dn: {n: v for n, v in at.items() if n.lower() not in self.drop}
                for dn, at in self.ds.search(*a, **k).items()}


def same_as_server(con, ds, d, strict_aci=False):
    """The consumer's copy is the server's answer to the daemon's search as
    the feed identity: the same DNs (case-insensitively), the same
    attributes, at each DN the uuid the server's syncUUID (nsUniqueId)
    maps to, and no anomaly in the event stream.

    389-ds's Content Synchronization plugin adds `aci` (an operational
    attribute there) to a sync search that asks for `*`, so the copy holds
    the aci values an ordinary search hides: left out of the comparison
    unless strict_aci (the unrequested_aci test is about that alone)."""
    m = StrictModel.from_consumer(con)
    base, filt = d.search['base'], d.search['filt']
    if strict_aci:
        assert_model_equals_server(m, ds, base, filt, bind='feed', fold_dn=True)
    else:
        mine = {dn: {n: v for n, v in a.items() if n.lower() != 'aci'} for dn, a in m.as_dict().items()}
        assert_model_equals_server(mine, _Without(ds, ['aci']), base, filt, bind='feed', fold_dn=True)
    real = {dn.lower(): u for dn, u in ds.uuids(base, filt=filt).items()}
    wrong = ['%s: uuid %s, nsUniqueId gives %s' % (e['dn'], u, real.get(e['dn'].lower()))
             for u, e in m.entries.items() if real.get(e['dn'].lower()) != u]
    assert not wrong, 'the copy holds entries under another uuid than the server:\n  ' + '\n  '.join(wrong)
    assert m.anomalies == [], 'model anomalies:\n  ' + '\n  '.join(m.anomalies[:20])
    return m


def wait_same(con, ds, d, timeout=15, live=None):
    """Poll until the copy equals the server, then check once more for a
    readable diff.  live: a running Daemon that must not exit meanwhile."""
    def ok():
        if live is not None and not live.alive():
            raise AssertionError('ldapfeed exited %s while the copy should catch up; stderr tail:\n%s'
                                 % (live.returncode, live.stderr()[-3000:]))
        try:
            same_as_server(con, ds, d)
        except AssertionError:
            return False
        return True
    try:
        wait_until(ok, timeout, 'the copy to equal the server', interval=0.25)
    except AssertionError as e:
        if not str(e).startswith('timed out'):
            raise
    return same_as_server(con, ds, d)


def kinds(events):
    """{'add': n, 'modify': n, ...} of a run's events."""
    out = {}
    for m in events:
        if m.get('type') != 'refresh_done':
            out[m['type']] = out.get(m['type'], 0) + 1
    return out


def synced(tmp, base=SUFFIX, mode='persist'):
    """lab() and a store in sync with it, the daemon stopped cleanly."""
    ds = lab()
    con = Consumer(tmp)
    d = feed(tmp, ds, con, base, mode=mode)
    wait_run(con, 0)
    if mode == 'persist':
        stop_clean(d)
    else:
        assert d.wait(30) == 0, d.stderr()
    same_as_server(con, ds, d)
    return ds, con, d


def sync_searches(d):
    """What each sync search of the daemon said it started from."""
    return re.findall(r'sync search started: (.*)', d.stderr())


def listed(d):
    """Whether the daemon listed the search after a refresh (its log line)."""
    return re.search(r'reader: \d+ entries in the search, \d+ of them to look up', d.stderr()) is not None


def check_resume(d, run, sent, expected_kinds, what):
    """A run that resumed: no reload, exactly expected_kinds events, the
    server sent (sent: DS389.entries_sent of the run's sync search) no more
    entries than there were changes, ldapfeed said it resumed from the
    stored cookie.  Every failed point is reported."""
    bad = []
    if any(run.reload):
        bad.append('hello reload %r (expected false)' % run.reload)
    got = kinds(run.events)
    if got != expected_kinds:
        bad.append('events %r, expected %r' % (got, expected_kinds))
    n_changes = sum(expected_kinds.values())
    if len(sent) > n_changes:
        bad.append('the server sent %d entries for %d changes: the directory was read again'
                   % (len(sent), n_changes))
    started = sync_searches(d)
    if not started or 'resuming from the stored cookie' not in started[-1]:
        bad.append('ldapfeed says "sync search started: %s"' % (started[-1] if started else '(no line)'))
    note('%s: sync search started: %s; %d entries sent by the server; events %r'
         % (what, started[-1] if started else '-', len(sent), got))
    assert not bad, '%s:\n  %s' % (what, '\n  '.join(bad))


# ---------------------------------------------------------------- tests

@test
def full_load(tmp):
    # A full load (persist, empty store): one add per entry the feed can
    # see, refresh_done, hello reload true; each add's uuid is the entry's
    # nsUniqueId regrouped, not its entryUUID.
    ds = lab()
    note('389-ds instance created in %.1f s' % DS.create_seconds)
    con = Consumer(tmp)
    d = feed(tmp, ds, con)
    run = wait_run(con, 0)
    assert all(run.reload), run.reload
    view = ds.search(SUFFIX, bind='feed', attrs=['1.1'])
    assert kinds(run.events) == {'add': len(view)}, (kinds(run.events), len(view))
    assert len(view) == 14, sorted(view)
    m = same_as_server(con, ds, d)
    ids = {dn.lower(): a for dn, a in ds.search(SUFFIX, attrs=['nsUniqueId', 'entryUUID']).items()}
    for ev in run.events:
        if ev['type'] != 'add':
            continue
        a = ids[ev['dn'].lower()]
        assert ev['uuid'] == nsuniqueid_uuid(a['nsUniqueId'][0].decode()), (ev['dn'], ev['uuid'], a)
        if 'entryUUID' in a:
            assert ev['uuid'] != a['entryUUID'][0].decode(), (ev['dn'], ev['uuid'], a)
    dn = 'uid=alice,' + PEOPLE
    note('uuid mapping: nsUniqueId %s -> uuid %s' % (ids[dn]['nsUniqueId'][0].decode(), m.uuid_of(dn)))
    # Nothing changed while it read: a snapshot, which no listing follows.
    assert not listed(d), d.stderr()
    stop_clean(d)
    note('stored cookie after a full load: %r' % stored_cookie(d))


@test
def cookie_format(tmp):
    # What 389-ds hands out as a cookie (refreshOnly with ldapsearch, as the
    # feed identity): HOST:PORT#BINDDN:BASE:FILTER#CHANGENUMBER, without the
    # rid=/csn= fields of OpenLDAP's.
    ds = lab()
    r = ds.sync_search('ro', base=PEOPLE, bind='feed')
    cookie = re.search(r'^# cookie: (.*)$', r.stdout.decode(), re.M).group(1)
    note('389-ds cookie: %s' % cookie)
    m = re.match(r'^([^#:]+):(\d+)#(.*):(.*):(\(.*\))#(\d+)$', cookie)
    assert m, cookie
    assert m.group(2) == str(ds.port) and m.group(3) == ds.feed_dn and m.group(4) == PEOPLE, m.groups()
    # The change number is the Retro Changelog's last one: it moves with a change.
    ds.replace('uid=alice,' + PEOPLE, 'description', 'moved the change number')
    r = ds.sync_search('ro', cookie=cookie, base=PEOPLE, bind='feed')
    cookie2 = re.search(r'^# cookie: (.*)$', r.stdout.decode(), re.M).group(1)
    assert int(cookie2.rsplit('#', 1)[1]) > int(m.group(6)), (cookie, cookie2)


@test
def persist_changes(tmp):
    # Persist, base the suffix: an add, modifies (a user and a group), a
    # rename, a move between OUs, a subtree rename (ou=archive, with
    # children), deletes, an add and delete of the same entry.
    ds = lab()
    con = Consumer(tmp)
    d = feed(tmp, ds, con, processes=4)
    wait_run(con, 0)
    ds.add_entry(*person('frank'))
    ds.modify_entry('uid=alice,' + PEOPLE, [('replace', 'mail', 'alice.liddell@example.com'),
                                            ('add', 'telephoneNumber', '+1 555 0101')])
    ds.modify_entry('cn=staff,' + GROUPS, [('add', 'member', 'uid=frank,' + PEOPLE)])
    ds.modrdn('uid=bob,' + PEOPLE, 'uid=robert')
    ds.modrdn('uid=carol,' + PEOPLE, 'uid=carol', deleteoldrdn=False, newsuperior=ARCHIVE)
    ds.modrdn(ARCHIVE, 'ou=former')
    ds.delete('uid=dave,' + PEOPLE)
    ds.add(account('uid=temp,' + PEOPLE))
    ds.delete('uid=temp,' + PEOPLE)
    wait_same(con, ds, d, live=d)
    stop_clean(d)
    wait_same(con, ds, d)


@test
def subtree_move_out(tmp):
    # Base ou=people: a leaf and a subtree (ou=team with two accounts) move
    # out to ou=archive; the copy drops all four.
    ds = lab()
    ds.add(ou('ou=team,' + PEOPLE) + account('uid=tm3,ou=team,' + PEOPLE) + account('uid=tm4,ou=team,' + PEOPLE))
    con = Consumer(tmp)
    d = feed(tmp, ds, con, base=PEOPLE)
    wait_run(con, 0)
    assert len(StrictModel.from_consumer(con).entries) == 8
    ds.modrdn('uid=alice,' + PEOPLE, 'uid=alice', newsuperior=ARCHIVE)
    ds.modrdn('ou=team,' + PEOPLE, 'ou=squad', newsuperior=ARCHIVE)
    m = wait_same(con, ds, d, live=d)
    assert len(m.entries) == 4, sorted(e['dn'] for e in m.entries.values())
    stop_clean(d)


@test
def subtree_move_in(tmp):
    # Base ou=people: a leaf and a subtree (ou=team with two accounts) move
    # in from ou=archive; the copy gains all four, each once, under its
    # nsUniqueId (the descendants come from a fetch, not from the sync
    # search: they must carry the same uuid the sync search would give).
    ds = lab()
    ds.add(account('uid=x,' + ARCHIVE))
    con = Consumer(tmp)
    d = feed(tmp, ds, con, base=PEOPLE)
    wait_run(con, 0)
    ds.modrdn('uid=x,' + ARCHIVE, 'uid=x', newsuperior=PEOPLE)
    ds.modrdn(TEAM, 'ou=team', newsuperior=PEOPLE)
    m = wait_same(con, ds, d, live=d)
    assert len(m.entries) == 9, sorted(e['dn'] for e in m.entries.values())
    stop_clean(d)


@test
def clean_restart_resumes(tmp):
    # Store in sync, ldapfeed stopped cleanly; while it is down: an add, a
    # modify, a rename (with its RDN value replaced: a modify too), a
    # delete, a move.  The restart resumes from the stored cookie: hello
    # reload false, exactly those six events, and the server sends no more
    # than the changed entries.
    ds, con, d = synced(tmp)
    cookie = stored_cookie(d)
    ds.add_entry(*person('grace'))
    ds.replace('uid=carol,' + PEOPLE, 'sn', 'Danvers')
    ds.modrdn('uid=bob,' + PEOPLE, 'uid=robert')
    ds.delete('uid=dave,' + PEOPLE)
    ds.modrdn('uid=alice,' + PEOPLE, 'uid=alice', newsuperior=ARCHIVE)
    mark = ds.access_mark()
    d2 = feed(tmp, ds, con)
    run = wait_run(con, 1)
    sent = ds.entries_sent(mark, scope=2, base=SUFFIX, filt='(objectClass=*)', all_attrs=True)
    stop_clean(d2)
    same_as_server(con, ds, d2)
    note('stored cookie before the restart: %r' % cookie)
    check_resume(d2, run, sent, {'add': 1, 'modify': 2, 'rename': 2, 'delete': 1}, 'restart after changes')
    assert listed(d2), d2.stderr()


def held_in(ds, tmp, function, then):
    """gdb attached to ns-slapd in non-stop mode: the first server thread
    to call `function` (an exported symbol of a plugin) stops there while
    the shell command `then` runs to its end, the other threads serving
    it; then gdb lets go.  Returns gdb's Popen once the server runs on
    with the breakpoint set (gdb's output in tmp/gdb.out)."""
    script = os.path.join(tmp, 'gdb.cmds')
    with open(script, 'w') as f:
        f.write(HOLD_GDB % {'pid': ds.pid, 'function': function, 'then': then})
    out = os.path.join(tmp, 'gdb.out')
    g = subprocess.Popen(['gdb', '-nx', '-batch', '-x', script], stdout=open(out, 'wb'), stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, env=ds._env())
    wait_until(lambda: 'held-in: ready' in open(out, errors='replace').read() or g.poll() is not None, 60,
               'gdb to attach to ns-slapd')
    assert g.poll() is None, 'gdb exited %s:\n%s' % (g.returncode, open(out, errors='replace').read()[-2000:])
    return g


# The breakpoint's stop() runs in gdb while the thread that hit it waits
# (the others run on: non-stop); a thread stopped for another reason (the
# attach's own stops arrive late) is resumed by the loop.
HOLD_GDB = """set pagination off
set confirm off
set non-stop on
attach %(pid)d
python
import subprocess
held = []
class Hold(gdb.Breakpoint):
    def stop(self):
        if not held:
            held.append(subprocess.run(%(then)r, shell=True).returncode)
            gdb.write('held-in: released (%%d)\\n' %% held[0])
        return True
Hold(%(function)r)
gdb.write('held-in: ready\\n')
gdb.flush()
while not held:
    gdb.execute('continue -a')
end
detach
quit
"""


@test(timeout=180)
def change_while_the_persist_session_registers(tmp):
    # 389-ds 2.3 reads the Retro Changelog's last change number for the
    # cookie it will hand out before it registers the persist session that
    # catches changes: a change committed in between comes in neither the
    # refresh (it is past the cookie) nor the persist phase (no session
    # yet).  Here it is made to happen: ns-slapd's thread for ldapfeed's
    # resuming sync search is held in sync_persist_add (gdb, non-stop)
    # while alice's description is replaced, then let go.  Once a later
    # change of bob's has come, the copy must hold alice's too
    # (doc/providers.md, "The registration gap").
    ds, con, d = synced(tmp)
    ldif = os.path.join(tmp, 'gap.ldif')
    with open(ldif, 'wb') as f:
        f.write(ldif_modify('uid=alice,' + PEOPLE, [('replace', 'description', ['changed in the gap'])]))
    then = 'ldapmodify -x -H %s -D "%s" -w %s -f %s > %s 2>&1' % (
        ds.url, ds.rootdn, ds.rootpw, ldif, os.path.join(tmp, 'gap.out'))
    g = held_in(ds, tmp, 'sync_persist_add', then)
    try:
        d2 = feed(tmp, ds, con)
        assert g.wait(scaled(60)) == 0, open(os.path.join(tmp, 'gdb.out'), errors='replace').read()[-2000:]
    finally:
        if g.poll() is None:
            g.kill()
            g.wait()
    gap = open(os.path.join(tmp, 'gap.out'), errors='replace').read()
    assert 'modifying entry' in gap, 'the modify in the gap: %r' % gap
    wait_run(con, 1)
    ds.replace('uid=bob,' + PEOPLE, 'description', 'after the gap')
    wait_until(lambda: any(m.get('type') == 'modify' and 'after the gap' in str(m.get('new'))
                           for m in Run(con, 1).events), 30, "bob's change after the gap")
    assert ds.search('uid=alice,' + PEOPLE, 'base')['uid=alice,' + PEOPLE]['description'] == [b'changed in the gap']
    wait_same(con, ds, d2, timeout=10, live=d2)
    stop_clean(d2)


@test
def restart_nothing_changed(tmp):
    # Store in sync, nothing changes while ldapfeed is down: the restart
    # gives refresh_done only, reload false, and no entry from the server.
    ds, con, d = synced(tmp)
    mark = ds.access_mark()
    d2 = feed(tmp, ds, con)
    run = wait_run(con, 1)
    sent = ds.entries_sent(mark, scope=2, base=SUFFIX, filt='(objectClass=*)', all_attrs=True)
    stop_clean(d2)
    same_as_server(con, ds, d2)
    check_resume(d2, run, sent, {}, 'restart with nothing changed')
    # No change since its cookie: no listing of the search either.
    assert not listed(d2), d2.stderr()


@test
def subtree_move_in_while_stopped(tmp):
    # Base ou=people, store in sync, ldapfeed stopped cleanly; meanwhile a
    # subtree (ou=team with two accounts, and one more level below) moves
    # in from ou=archive.  389-ds's refresh from the cookie sends the root
    # alone, without the hasSubordinates it was asked for (entries of a
    # cookie refresh come without operational attributes): ldapfeed must
    # ask what lies below it, and the copy gains all five entries.
    ds = lab()
    ds.add(ou('ou=sub,' + TEAM) + account('uid=tm3,ou=sub,' + TEAM))
    con = Consumer(tmp)
    d = feed(tmp, ds, con, base=PEOPLE)
    wait_run(con, 0)
    stop_clean(d)
    ds.modrdn(TEAM, 'ou=team', newsuperior=PEOPLE)
    d2 = feed(tmp, ds, con, base=PEOPLE)
    run = wait_run(con, 1)
    m = wait_same(con, ds, d2, live=d2)
    stop_clean(d2)
    assert not any(run.reload), run.reload
    assert len(m.entries) == 10, sorted(e['dn'] for e in m.entries.values())


# The OUs named team*, and the accounts without `description: gone`: a
# rename or a modify takes an entry out of this filter, or back in.
TEAM_FILTER = '(|(&(objectClass=account)(!(description=gone)))(ou=team*))'


def filtered_feed(tmp, ds, con, **kw):
    d = feed(tmp, ds, con, base=ARCHIVE, filt=TEAM_FILTER, **kw)
    d.search['filt'] = TEAM_FILTER
    return d


@test
def filter_exits_persist(tmp):
    # Base ou=archive, filter TEAM_FILTER, persist: ou=team renamed to
    # ou=squad leaves the filter (its accounts stay, under the new DN); an
    # account modified to description: gone leaves it; ou=squad renamed to
    # ou=team2 comes back.  389-ds sends nothing for an entry a rename
    # takes out of the filter (its persist thread tests the filter on the
    # renamed entry): ldapfeed must not keep it.
    ds = lab()
    con = Consumer(tmp)
    d = filtered_feed(tmp, ds, con)
    wait_run(con, 0)
    m = wait_same(con, ds, d, live=d)
    assert len(m.entries) == 3, sorted(e['dn'] for e in m.entries.values())
    ds.modrdn(TEAM, 'ou=squad')
    m = wait_same(con, ds, d, live=d)
    assert len(m.entries) == 2, sorted(e['dn'] for e in m.entries.values())
    ds.replace('uid=tm2,ou=squad,' + ARCHIVE, 'description', 'gone')
    m = wait_same(con, ds, d, live=d)
    assert len(m.entries) == 1, sorted(e['dn'] for e in m.entries.values())
    ds.modrdn('ou=squad,' + ARCHIVE, 'ou=team2')
    m = wait_same(con, ds, d, live=d)
    assert len(m.entries) == 2, sorted(e['dn'] for e in m.entries.values())
    stop_clean(d)


@test
def filter_exits_while_stopped(tmp):
    # The same changes while ldapfeed is stopped, then a resume from the
    # cookie.  389-ds's refresh from a cookie sends an entry changed since
    # only when it matches the filter now, and no delete when it does not:
    # ldapfeed must still drop what left the filter, and rename the
    # accounts below the renamed OU.
    ds = lab()
    con = Consumer(tmp)
    d = filtered_feed(tmp, ds, con)
    wait_run(con, 0)
    stop_clean(d)
    ds.modrdn(TEAM, 'ou=squad')
    ds.replace('uid=tm2,ou=squad,' + ARCHIVE, 'description', 'gone')
    ds.add(account('uid=tm3,ou=squad,' + ARCHIVE))
    d2 = filtered_feed(tmp, ds, con)
    run = wait_run(con, 1)
    m = wait_same(con, ds, d2, live=d2)
    stop_clean(d2)
    assert not any(run.reload), run.reload
    assert len(m.entries) == 2, sorted(e['dn'] for e in m.entries.values())


@test
def stale_message_after_fetch(tmp):
    # Persist, the reader stopped (SIGSTOP) while three changes queue up in
    # its socket: ou=archive renamed to ou=former (the reader will fetch
    # what lies below it, and see the server as it is after all three), an
    # account below modified (its message carries its DN of that moment,
    # under ou=former,...,ou=team), then ou=team renamed to ou=squad.  The
    # account's message is older than what the fetch applied, and 389-ds
    # has no entryCSN to tell: applied as it came, it would put the
    # account back under ou=team, and ou=team's own message, finding it
    # renamed by the fetch already, would change nothing.
    ds = lab()
    con = Consumer(tmp)
    d = feed(tmp, ds, con)
    wait_run(con, 0)
    pid = reader_pid(d)
    os.kill(pid, signal.SIGSTOP)
    try:
        ds.modify(ldif_modrdn(ARCHIVE, 'ou=former') +
                  ldif_modify('uid=tm1,ou=team,ou=former,' + SUFFIX, [('replace', 'description', 'moved twice')]) +
                  ldif_modrdn('ou=team,ou=former,' + SUFFIX, 'ou=squad'))
    finally:
        os.kill(pid, signal.SIGCONT)
    m = wait_same(con, ds, d, live=d)
    assert m.uuid_of('uid=tm1,ou=squad,ou=former,' + SUFFIX), sorted(e['dn'] for e in m.entries.values())
    stop_clean(d)


@test
def stale_delete_after_fetch(tmp):
    # Base ou=people, persist, the reader stopped (SIGSTOP) while three
    # changes queue up: ou=sub renamed to ou=sub2 (the reader will fetch
    # what lies below it, as the server has it after all three), alice
    # moved out to ou=team,ou=archive (389-ds sends a delete), then
    # ou=team moved in below ou=sub2 (an add of ou=team alone).  The
    # fetch finds alice below ou=sub2 already; the delete, older, must not
    # drop her, for ou=team's own message, finding ou=team stored by the
    # fetch, asks for nothing below it.
    ds = lab()
    ds.add(ou('ou=sub,' + PEOPLE) + account('uid=s1,ou=sub,' + PEOPLE))
    con = Consumer(tmp)
    d = feed(tmp, ds, con, base=PEOPLE)
    wait_run(con, 0)
    pid = reader_pid(d)
    os.kill(pid, signal.SIGSTOP)
    try:
        ds.modify(ldif_modrdn('ou=sub,' + PEOPLE, 'ou=sub2') +
                  ldif_modrdn('uid=alice,' + PEOPLE, 'uid=alice', TEAM) +
                  ldif_modrdn(TEAM, 'ou=team', 'ou=sub2,' + PEOPLE))
    finally:
        os.kill(pid, signal.SIGCONT)
    m = wait_same(con, ds, d, live=d)
    assert m.uuid_of('uid=alice,ou=team,ou=sub2,' + PEOPLE), sorted(e['dn'] for e in m.entries.values())
    stop_clean(d)


@test(timeout=300)
def subtree_renamed_during_full_load(tmp):
    # A full load is no snapshot on 389-ds: entries come in entry-ID order,
    # each under its DN of the moment.  ou=team (with its two accounts,
    # old entries) sits below ou=late, the newest entry, after 3000 big
    # ones.  The reader is stopped (SIGSTOP) once the load has begun and
    # ou=late renamed to ou=later: ou=team and its accounts have come under
    # ou=late already, ou=late comes as ou=later, and its own message then
    # finds it stored so.  The copy must still end with all of them under
    # ou=later.
    ds = lab()
    late = 'ou=late,' + SUFFIX
    ds.add(ou('ou=bulk,' + SUFFIX) + b''.join(
        ldif_entry('uid=b%d,ou=bulk,%s' % (i, SUFFIX), {'objectClass': ['top', 'account'], 'uid': 'b%d' % i,
                                                         'description': 'x' * 2000}) for i in range(3000)))
    ds.add(ou(late))
    ds.modrdn(TEAM, 'ou=team', newsuperior=late)
    con = Consumer(tmp)
    d = feed(tmp, ds, con)
    wait_until(lambda: 'sync search started' in d.stderr(), 30, 'the full load to start', interval=0.005)
    pid = reader_pid(d)
    os.kill(pid, signal.SIGSTOP)
    try:
        ds.modrdn(late, 'ou=later')
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_run(con, 0, timeout=120)
    m = wait_same(con, ds, d, timeout=60, live=d)
    assert m.uuid_of('uid=tm1,ou=team,ou=later,' + SUFFIX), sorted(e['dn'] for e in m.entries.values()
                                                                  if 'late' in e['dn'])
    stop_clean(d)


@test
def moved_out_under_a_new_parent_while_stopped(tmp):
    # Base ou=people, store in sync, ldapfeed stopped; meanwhile ou=x is
    # added under ou=people, alice moved into it, and ou=x moved out to
    # ou=archive.  389-ds's refresh from the cookie sees alice's move as
    # one within the search (the Retro Changelog's DNs of that moment),
    # finds her outside the base now, and sends nothing: no entry, no
    # delete.  ldapfeed must still drop her.
    ds = lab()
    con = Consumer(tmp)
    d = feed(tmp, ds, con, base=PEOPLE)
    wait_run(con, 0)
    stop_clean(d)
    ds.add(ou('ou=x,' + PEOPLE))
    ds.modrdn('uid=alice,' + PEOPLE, 'uid=alice', newsuperior='ou=x,' + PEOPLE)
    ds.modrdn('ou=x,' + PEOPLE, 'ou=x', newsuperior=ARCHIVE)
    d2 = feed(tmp, ds, con, base=PEOPLE)
    run = wait_run(con, 1)
    m = wait_same(con, ds, d2, live=d2)
    stop_clean(d2)
    assert not any(run.reload), run.reload
    assert len(m.entries) == 4, sorted(e['dn'] for e in m.entries.values())


@test
def server_restart_during_persist(tmp):
    # The server restarts under a running ldapfeed: it reconnects, follows
    # the changes made after the restart, and its new sync search resumes
    # from its cookie instead of reading the directory again.
    ds = lab()
    con = Consumer(tmp)
    d = feed(tmp, ds, con)
    wait_run(con, 0)
    mark = ds.access_mark()
    t0 = time.monotonic()
    ds.restart()
    note('389-ds restart took %.1f s' % (time.monotonic() - t0))
    wait_until(lambda: len(sync_searches(d)) >= 2 and d.stderr().count('refresh done') >= 2, 30,
               'ldapfeed to search again after the server restart')
    sent = ds.entries_sent(mark, scope=2, base=SUFFIX, filt='(objectClass=*)', all_attrs=True)
    ds.replace('uid=carol,' + PEOPLE, 'mail', 'carol@example.org')
    ds.add_entry(*person('henry'))
    ds.delete('uid=dave,' + PEOPLE)
    wait_same(con, ds, d, live=d)
    stop_clean(d)
    started = sync_searches(d)
    note('after the server restart: sync search started: %s; %d entries sent by the server'
         % (started[1], len(sent)))
    assert 'resuming from the stored cookie' in started[1] and not sent, \
        'the reconnect read the directory again: "sync search started: %s", %d entries sent' \
        % (started[1], len(sent))


@test
def refresh_only_twice(tmp):
    # refreshOnly: a full load and exit 0; changes (an add, a modify, a
    # rename with its RDN value replaced, a delete); a second run resumes
    # from the cookie: reload false, exactly those five events, no phantom
    # delete, exit 0.
    ds, con, d = synced(tmp, mode='refresh')
    assert d.marker_exists()
    ds.add_entry(*person('ivan'))
    ds.replace('uid=alice,' + PEOPLE, 'description', 'changed between two refreshes')
    ds.modrdn('uid=bob,' + PEOPLE, 'uid=bobby')
    ds.delete('uid=tm1,' + TEAM)
    mark = ds.access_mark()
    d2 = feed(tmp, ds, con, mode='refresh')
    rc = d2.wait(60)
    assert rc == 0, 'second refresh exited %s:\n%s' % (rc, d2.stderr()[-3000:])
    sent = ds.entries_sent(mark, scope=2, base=SUFFIX, filt='(objectClass=*)', all_attrs=True)
    run = Run(con, 1)
    same_as_server(con, ds, d2)
    check_resume(d2, run, sent, {'add': 1, 'modify': 2, 'rename': 1, 'delete': 1}, 'second refresh')


def _format_test(fmt):
    def body(tmp):
        # Full load and a persist add, modify, delete in this format, with a
        # binary value and a UTF-8 one; the decoded copy equals the server.
        ds = lab()
        con = Consumer(tmp, fmt=fmt)
        d = feed(tmp, ds, con, fmt=fmt)
        wait_run(con, 0)
        ds.add_entry(*person('zoe', audio=b'\x00\xff\xfe\x01', description='h\u00e9llo w\u00f6rld'))
        ds.modify_entry('uid=alice,' + PEOPLE, [('add', 'audio', b'\x80\x81binary')])
        ds.delete('uid=dave,' + PEOPLE)
        wait_same(con, ds, d, live=d)
        assert con.errors == [], con.errors
        hello = con.hellos()[0]
        assert hello.get('format') == fmt, hello
        stop_clean(d)
    return body


for _fmt in ('pickle', 'json'):
    test(name='format_' + _fmt)(_format_test(_fmt))


@test
def sigterm_fast(tmp):
    # SIGTERM during persist: exit 0 in well under a second, the marker
    # written.  389-ds answers the Cancel extended operation with result 2
    # and never ends the search, so ldapfeed must not wait for it.
    ds = lab()
    con = Consumer(tmp)
    d = feed(tmp, ds, con)
    wait_run(con, 0)
    mark = ds.access_mark()
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    rc = d.wait(30)
    took = time.monotonic() - t0
    with open(ds.access_log, 'rb') as f:
        f.seek(mark)
        log = f.read().decode('utf-8', 'replace').splitlines()
    ops = [m.group(1) for m in (re.search(r' (conn=\d+ op=\d+) EXT oid="1\.3\.6\.1\.1\.8"', l) for l in log) if m]
    cancel = [l.split('] ', 1)[-1] for l in log if any(o + ' ' in l for o in ops)]
    note('SIGTERM to exit: %.2f s, exit %s; Cancel in the access log: %s' % (took, rc, cancel or 'none'))
    assert rc == 0, 'exit %s:\n%s' % (rc, d.stderr()[-3000:])
    assert d.marker_exists()
    assert took < scaled(1.0), 'SIGTERM to exit took %.2f s' % took


BUSY = 'Too many active synchronization sessions'


class SessionHolder:
    """Another client's refreshAndPersist search (ldapsearch -E sync=rp as
    cn=Directory Manager), holding one of the Content Synchronization
    plugin's sessions until release() or the end of the test.

    389-ds counts a session for about three seconds after its client
    abandoned it or went away (its persist thread notices late): the
    holder asks again while it is refused as busy."""

    def __init__(self, tmp, ds, timeout=30):
        self.out = os.path.join(tmp, 'holder.out')
        self.tries = 0
        deadline = time.monotonic() + scaled(timeout)
        while True:
            self.tries += 1
            with open(self.out, 'wb') as f:
                # line-buffered, to see "refresh done" while it persists
                self.popen, _ = harness._spawn(['stdbuf', '-oL', 'ldapsearch', '-x', '-H', ds.url, '-D', ds.rootdn,
                                                '-w', ds.rootpw, '-E', '!sync=rp', '-b', ds.suffix, '1.1'],
                                               name='ldapsearch sync=rp', stdout=f, stderr=subprocess.STDOUT)
            wait_until(lambda: 'switching to persist stage' in self.text() or self.popen.poll() is not None, 30,
                       'the other client to reach its persist stage')
            if self.popen.poll() is None:
                return
            if BUSY not in self.text() or time.monotonic() > deadline:
                raise AssertionError('the other client ended: %s' % self.text()[-500:])
            time.sleep(0.25)

    def text(self):
        with open(self.out, 'rb') as f:
            return f.read().decode('utf-8', 'replace')

    def release(self):
        terminate_pid(self.popen, group=True, term_timeout=5)


def refused_busy(d):
    """How many of the daemon's sync searches 389-ds refused as busy."""
    return d.stderr().count(BUSY)


@test(timeout=300)
def too_many_sessions(tmp):
    # The Content Synchronization plugin's limit on refreshAndPersist
    # sessions (nsslapd-pluginarg0 of its entry; 10 by default) set to 1,
    # and that session held by another client.  389-ds refuses ldapfeed's
    # persist search with 53 "Too many active synchronization sessions";
    # ldapfeed must not exit, must send nothing meanwhile, and must retry
    # with its backoff.  Changes made while it waits are in the full load
    # it delivers once the other client goes; then it follows the
    # directory as usual.
    ds = lab(sync_sessions=1)
    holder = SessionHolder(tmp, ds)
    con = Consumer(tmp)
    d = feed(tmp, ds, con)
    wait_until(lambda: refused_busy(d) >= 2 or not d.alive(), 60, 'ldapfeed to be refused twice')
    assert d.alive(), 'ldapfeed exited %s on a busy server:\n%s' % (d.returncode, d.stderr()[-3000:])
    ds.add_entry(*person('frank'))
    ds.delete('uid=dave,' + PEOPLE)
    ds.modrdn('uid=bob,' + PEOPLE, 'uid=robert')
    assert [m for m in con.messages() if m.get('type') != 'hello'] == [], 'events before a search was accepted'
    note('refused %d times while the session was held; stderr: %s'
         % (refused_busy(d), [l for l in d.stderr().splitlines() if BUSY in l][-1]))
    t0 = time.monotonic()
    holder.release()
    run = wait_run(con, 0, timeout=90)
    note('full load %.1f s after the session was released' % (time.monotonic() - t0))
    assert all(run.reload), run.reload
    same_as_server(con, ds, d)
    ds.replace('uid=alice,' + PEOPLE, 'mail', 'alice@example.org')
    ds.add_entry(*person('grace'))
    wait_same(con, ds, d, live=d)
    stop_clean(d)


@test(timeout=300)
def too_many_sessions_resume(tmp):
    # A store in sync, the single refreshAndPersist session then held by
    # another client while ldapfeed is stopped.  A refreshOnly run is not
    # limited (the plugin counts persist sessions only): it delivers the
    # changes so far and exits 0.  The persist run after it is refused
    # with 53, keeps trying, and once the session is free resumes from its
    # cookie: reload false, exactly the changes made since the refreshOnly
    # run, and the server reads no more than the changed entries.
    ds = lab(sync_sessions=1)
    con = Consumer(tmp)
    d = feed(tmp, ds, con)
    wait_run(con, 0)
    stop_clean(d)
    holder = SessionHolder(tmp, ds)
    note('the other client had the session at its try %d after the stop' % holder.tries)
    ds.add_entry(*person('ivan'))
    ds.replace('uid=carol,' + PEOPLE, 'sn', 'Danvers')
    mark = ds.access_mark()
    d2 = feed(tmp, ds, con, mode='refresh')
    rc = d2.wait(60)
    assert rc == 0, 'refreshOnly run exited %s:\n%s' % (rc, d2.stderr()[-3000:])
    assert refused_busy(d2) == 0, d2.stderr()[-2000:]
    check_resume(d2, Run(con, 1), ds.entries_sent(mark, scope=2, base=SUFFIX, filt='(objectClass=*)', all_attrs=True), {'add': 1, 'modify': 1},
                 'refreshOnly while the session is held')
    ds.modrdn('uid=alice,' + PEOPLE, 'uid=alice', newsuperior=ARCHIVE)
    ds.delete('uid=tm1,' + TEAM)
    ds.replace('cn=staff,' + GROUPS, 'description', 'changed while ldapfeed waited')
    d3 = feed(tmp, ds, con)
    wait_until(lambda: refused_busy(d3) >= 2 or not d3.alive(), 60, 'ldapfeed to be refused twice')
    assert d3.alive(), 'ldapfeed exited %s on a busy server:\n%s' % (d3.returncode, d3.stderr()[-3000:])
    mark = ds.access_mark()
    holder.release()
    run = wait_run(con, 2, timeout=90)
    sent = ds.entries_sent(mark, scope=2, base=SUFFIX, filt='(objectClass=*)', all_attrs=True)
    wait_same(con, ds, d3, live=d3)
    stop_clean(d3)
    check_resume(d3, run, sent, {'rename': 1, 'delete': 1, 'modify': 1}, 'persist after the session was freed')


@test
def unrequested_aci(tmp):
    # A search for all user attributes (`*`): the copy holds what an
    # ordinary `*` search shows the feed identity, and not the operational
    # `aci` values that the Content Synchronization plugin adds to the
    # attributes of every sync search asking for `*`.
    ds = lab()
    con = Consumer(tmp)
    d = feed(tmp, ds, con, mode='refresh')
    assert d.wait(60) == 0, d.stderr()[-3000:]
    same_as_server(con, ds, d)
    same_as_server(con, ds, d, strict_aci=True)


@test
def feed_sees_only_base(tmp):
    # The feed identity without its ACI: 389-ds's default ACIs show it the
    # suffix entry and nothing under it.  A full load that gets the base
    # alone while the base has children must say so (a warning naming the
    # base and the identity's access).
    ds = lab()
    ds.feed_access(False)
    con = Consumer(tmp)
    d = feed(tmp, ds, con, mode='refresh')
    rc = d.wait(60)
    err = d.stderr()
    n = len(StrictModel.from_consumer(con).entries)
    note('exit %s, %d entries delivered' % (rc, n))
    assert n == 1, n
    warn = [l for l in err.splitlines()
            if SUFFIX in l.lower() and re.search(r'(?i)\b(aci|acis|access|rights|sees? only)\b', l)]
    assert warn, 'no warning that the identity sees the base entry only; stderr:\n' + err[-2000:]


@test
def size_limit_named(tmp):
    # The feed identity with 389-ds's own size limit back (nsSizeLimit 5)
    # and 14 entries to load: the search ends with sizeLimitExceeded, and
    # the error names the attributes that lift it; no marker.
    ds = lab()
    ds.modify(ldif_modify(ds.feed_dn, [('replace', 'nsSizeLimit', '5')]))
    con = Consumer(tmp)
    d = feed(tmp, ds, con, mode='refresh')
    rc = d.wait(60)
    err = d.stderr()
    note('exit %s: %s' % (rc, [l for l in err.splitlines() if 'limit' in l.lower()][-1:]))
    assert rc == 70, 'exit %s, expected 70:\n%s' % (rc, err[-2000:])
    assert 'nsSizeLimit' in err and 'nsLookThroughLimit' in err, 'the limits are not named:\n' + err[-2000:]
    assert not d.marker_exists()


@test
def content_sync_off(tmp):
    # The Content Synchronization plugin disabled: the server refuses the
    # critical Sync Request control (result 12).  ldapfeed refuses to start
    # with a line naming the plugin, exit 78 (configuration) or 69
    # (unavailable).
    ds = lab(content_sync=False)
    con = Consumer(tmp)
    d = feed(tmp, ds, con)
    rc = d.wait(60)
    err = d.stderr()
    note('exit %s; stderr: %s' % (rc, ' | '.join(err.strip().splitlines()[-4:])))
    assert rc in (69, 78), 'exit %s, expected 78 or 69:\n%s' % (rc, err[-2000:])
    assert 'Content Synchronization' in err, 'the plugin is not named:\n' + err[-2000:]


@test
def retro_changelog_without_target_unique_id(tmp):
    # The Retro Changelog without nsslapd-attribute: nsuniqueid:targetUniqueId:
    # the Content Synchronization plugin then cannot match changelog records
    # to entries, and refreshes from a cookie silently drop changes.  ldapfeed
    # must refuse to start, exit 78, with the fix (targetUniqueId) named.
    # (Seen on 2.3.1: such a refresh answers result 0 with no entry and an
    # advanced cookie; only the server's errors log says "Retro Changelog
    # does not provide nsuniquedid".  The feed identity can read neither
    # the plugin's entry under cn=config nor cn=changelog; the root DSE
    # shows it changelog, firstchangenumber and lastchangenumber.)
    ds = lab(target_unique_id=False)
    con = Consumer(tmp)
    d = feed(tmp, ds, con)
    try:
        rc = d.wait(20)
    except AssertionError:
        rc = None
    err = d.stderr()
    note('exit %s; stderr: %s' % ('(still running after 20 s)' if rc is None else rc,
                                  ' | '.join(err.strip().splitlines()[-4:])))
    assert rc == 78, 'exit %s, expected 78' % ('none: still running after 20 s' if rc is None else rc)
    assert 'targetUniqueId' in err, 'no line naming targetUniqueId:\n' + err[-2000:]


if __name__ == '__main__':
    main()
