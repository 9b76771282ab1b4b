#!/usr/bin/env python3
"""ldapfeed against a real Samba Active Directory domain controller (samba
4.17, tests/e2e/samba_dc.py): the DirSync reader end to end.

Not part of `make check`: tests/run runs this file only when an argument
names it (`make check-ad` does, after `sh scripts/deps samba`).  One DC is
provisioned for the whole file (20-40 s) into a template, and every test
starts from a fresh copy of it (about two seconds).  The DC listens on its
ldapi socket alone: no TCP or UDP socket is opened.

Every scenario compares the consumer's copy (StrictModel: the events in
seq order, nothing a correct feed never sends) with an ldapsearch of the DC
as ldapfeed's bind identity, with ldapfeed's base, scope, filter and
attributes, keyed by objectGUID (Samba returns entries in no fixed order):
the same entries, each under the uuid its objectGUID gives (samba_dc.
ad_uuid: the first three fields byte-swapped, as AD's tools print it), at
the same DN, with the same attributes.
"""

import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F403
from test_conformance import (  # noqa: E402
    Run, StrictModel, deletes_of, entries_dump, guard_stop, metric, read_status, stop_clean, store_meta, wait_run)
from samba_dc import BASE, SambaDC, ad_uuid  # noqa: E402

PEOPLE = 'OU=People,' + BASE
GROUPS = 'OU=Groups,' + BASE
ARCHIVE = 'OU=Archive,' + BASE
TEAM = 'OU=Team,' + ARCHIVE
POLL = 2            # --poll-interval of the tests' runs (seconds)

# Made at import so that the harness keeps it from test to test and removes
# it when the file is done; provisioned on first use by reset().
DC = SambaDC(lazy=True)


# ---------------------------------------------------------------- the lab

def user(name, ou=PEOPLE, **extra):
    attrs = {'objectClass': 'user', 'sAMAccountName': name, 'givenName': name.capitalize(),
             'sn': name.capitalize() + 'son', 'mail': name + '@example.test',
             'description': 'member of staff'}
    attrs.update(extra)
    return 'CN=%s,%s' % (name, ou), attrs


def ou(dn):
    return ldif_entry(dn, {'objectClass': 'organizationalUnit'})


def group(dn, members):
    return ldif_entry(dn, {'objectClass': 'group', 'sAMAccountName': dn.split(',')[0][3:],
                           'member': members})


def lab():
    """A fresh DC with OU=People (alice, bob, carol, dave), OU=Groups
    (CN=staff: alice and bob), OU=Archive with OU=Team (tm1, tm2)."""
    dc = DC.reset()
    ldif = ou(PEOPLE) + ou(GROUPS) + ou(ARCHIVE) + ou(TEAM)
    ldif += b''.join(ldif_entry(*user(n)) for n in ('alice', 'bob', 'carol', 'dave'))
    ldif += group('CN=staff,' + GROUPS, ['CN=alice,' + PEOPLE, 'CN=bob,' + PEOPLE])
    ldif += ldif_entry(*user('tm1', TEAM)) + ldif_entry(*user('tm2', TEAM))
    dc.add(ldif)
    return dc


def feed(tmp, dc, con, base=BASE, bind='admin', mode='persist', filt=None, scope=None, attrs=None,
         processes=3, extra=(), **kw):
    """ldapfeed on the DC, bound as `bind`, following base."""
    dn, pw = dc.creds(bind)
    url = ldap_url(dc.url, base, attrs=attrs, scope=scope, filt=filt, exts=['bindname=' + dn])
    d = Daemon(tmp, None, con, url=url, password=pw, processes=processes, mode=mode,
               extra=['--poll-interval', str(POLL)] + list(extra), **kw)
    d.search = {'base': base, 'scope': {'one': 'one', 'base': 'base'}.get(scope, 'sub'),
                'filt': filt or '(objectClass=*)', 'attrs': attrs, 'bind': bind}
    return d


# ---------------------------------------------------------------- checks

FOLLOWED = {'distinguishedname', 'objectguid', 'usnchanged', 'usncreated', 'whenchanged'}
_untracked = []


def untracked(dc, d):
    """The attributes ldapfeed leaves out: those the DC does not replicate
    (DirSync cannot follow them), back links and FOLLOWED aside, unless the
    URL names them."""
    if not _untracked:
        _untracked.append(dc.not_replicated() - FOLLOWED)
    return _untracked[0] - {a.lower() for a in d.search['attrs'] or []}


def view(dc, d):
    """The DC's answer to the daemon's search, as its identity: {uuid: (dn,
    attrs)}, the uuid from objectGUID (asked for too when the search's
    attribute list leaves it out, and then dropped), the attributes
    ldapfeed leaves out dropped."""
    q = d.search
    attrs = q['attrs']
    extra = attrs is not None and not any(a == '*' or a.lower() == 'objectguid' for a in attrs)
    res = dc.search(q['base'], q['scope'], q['filt'], (list(attrs) + ['objectGUID']) if extra else attrs,
                    bind=q['bind'])
    drop = untracked(dc, d) | ({'objectguid'} if extra else set())
    out = {}
    for dn, a in res.items():
        guid = next((v for k, v in a.items() if k.lower() == 'objectguid'), [None])[0]
        if guid is None:
            continue        # nameless to this identity: left out (ldapfeed.8, PROVIDERS)
        a = {k: v for k, v in a.items() if k.lower() not in drop}
        out[ad_uuid(guid)] = (dn, normalize_attrs(a, fold_names=True))
    return out


def same_as_server(con, dc, d):
    """The consumer's copy is the server's view, keyed by objectGUID, and
    the event stream holds no anomaly."""
    m = StrictModel.from_consumer(con)
    theirs = view(dc, d)
    mine = {u: (e['dn'], normalize_attrs(e['attrs'], fold_names=True)) for u, e in m.entries.items()}
    lines = []
    for u in sorted(set(mine) - set(theirs)):
        lines.append('  only in the copy: %s %s' % (u, mine[u][0]))
    for u in sorted(set(theirs) - set(mine)):
        lines.append('  only on the DC:   %s %s' % (u, theirs[u][0]))
    for u in sorted(set(mine) & set(theirs)):
        (mdn, ma), (sdn, sa) = mine[u], theirs[u]
        if mdn != sdn:
            lines.append('  %s: DN %r in the copy, %r on the DC' % (u, mdn, sdn))
        for k in sorted(set(ma) | set(sa)):
            if ma.get(k) != sa.get(k):
                lines.append('  %s %s: %s: copy %s, DC %s' % (u, sdn, k, _short(ma.get(k)), _short(sa.get(k))))
    if lines:
        raise AssertionError('the copy (%d entries) differs from the DC (%d entries):\n%s'
                             % (len(mine), len(theirs), '\n'.join(lines[:40])))
    assert m.anomalies == [], 'model anomalies:\n  ' + '\n  '.join(m.anomalies[:20])
    return m


def _short(v):
    s = repr(v)
    return s if len(s) < 160 else s[:157] + '...'


def wait_same(con, dc, d, timeout=30, live=None):
    """Poll until the copy equals the DC, then check once more for a
    readable diff.  live: a running Daemon that must not exit meanwhile."""
    def ok():
        if live is not None and not live.alive():
            raise AssertionError('ldapfeed exited %s while the copy should catch up; stderr tail:\n%s'
                                 % (live.returncode, live.stderr()[-3000:]))
        try:
            same_as_server(con, dc, d)
        except AssertionError:
            return False
        return True
    try:
        wait_until(ok, timeout, 'the copy to equal the DC', interval=0.25)
    except AssertionError as e:
        if not str(e).startswith('timed out'):
            raise
    return same_as_server(con, dc, d)


def kinds(events):
    out = {}
    for m in events:
        if m.get('type') != 'refresh_done':
            out[m['type']] = out.get(m['type'], 0) + 1
    return out


def events_since(con, n):
    """The events (no hello, no refresh_done) after the first n, as
    (type, dn) pairs, in seq order."""
    evs = sorted(con.events(), key=lambda m: m['seq'])[n:]
    return [(m['type'], m['dn']) for m in evs]


def started_lines(d):
    return re.findall(r'dirsync started: (.*)', d.stderr())


def synced(tmp, **kw):
    """lab() and a store in sync with it, ldapfeed stopped cleanly."""
    dc = lab()
    con = Consumer(tmp)
    d = feed(tmp, dc, con, **kw)
    wait_run(con, 0, timeout=60)
    stop_clean(d)
    same_as_server(con, dc, d)
    return dc, con, d


# ---------------------------------------------------------------- tests

@test(timeout=300)
def full_load(tmp):
    # A first start, refresh mode, bound as Administrator, the whole domain:
    # hello reload true, one add per entry of the DC's view (what ldapsearch
    # with * returns), each under the uuid its objectGUID gives, then exit 0.
    # The protocol comes from the root DSE: DirSync, not RFC 4533.
    t0 = time.monotonic()
    dc = lab()
    note('Samba DC provisioned and templated in %.1f s, started in %.1f s (first reset %.1f s)'
         % (DC.create_seconds, dc.start_seconds, time.monotonic() - t0))
    con = Consumer(tmp)
    d = feed(tmp, dc, con, mode='refresh')
    rc = d.wait(60)
    assert rc == 0, 'exit %s:\n%s' % (rc, d.stderr()[-3000:])
    run = Run(con, 0)
    assert all(run.reload), run.reload
    theirs = view(dc, d)
    assert kinds(run.events) == {'add': len(theirs)}, (kinds(run.events), len(theirs))
    m = same_as_server(con, dc, d)
    alice = dc.search('CN=alice,' + PEOPLE, 'base', attrs=['objectGUID'])['CN=alice,' + PEOPLE]
    note('alice: objectGUID %s is uuid %s' % (alice['objectGUID'][0].hex(), m.uuid_of('CN=alice,' + PEOPLE)))
    assert 'DirSync' in d.stderr() and started_lines(d) == ['full load'], d.stderr()[-2000:]
    assert d.marker_exists()


@test(timeout=300)
def persist_changes(tmp):
    # Persist, the whole domain, 4 workers: an add, modifies (a multi-valued
    # attribute, a binary one, a removed attribute), a rename (its RDN
    # value and distinguishedName change too: a rename, then a modify), a
    # move between OUs, an add and a delete of the same entry, a delete
    # (a tombstone: the delete names the stored DN and the last attributes).
    dc = lab()
    con = Consumer(tmp)
    d = feed(tmp, dc, con, processes=4)
    wait_run(con, 0, timeout=60)
    n0 = len(con.events())
    alice_uuid = StrictModel.from_consumer(con).uuid_of('CN=alice,' + PEOPLE)
    dc.add_entry(*user('frank'))
    dc.modify_entry('CN=alice,' + PEOPLE, [('replace', 'otherTelephone', ['+1 555 0101', '+1 555 0102']),
                                           ('replace', 'jpegPhoto', b'\x00\xff\xfe\x01binary'),
                                           ('delete', 'description', None)])
    dc.modrdn('CN=bob,' + PEOPLE, 'CN=robert')
    dc.modrdn('CN=carol,' + PEOPLE, 'CN=carol', newsuperior=ARCHIVE)
    dc.add_entry(*user('temp'))
    dc.delete('CN=temp,' + PEOPLE)
    dc.delete('CN=dave,' + PEOPLE)
    m = wait_same(con, dc, d, live=d)
    evs = sorted(con.events(), key=lambda e: e['seq'])[n0:]
    dave = [e for e in evs if e['type'] == 'delete' and e['dn'] == 'CN=dave,' + PEOPLE]
    assert len(dave) == 1 and dave[0]['old'].get('sAMAccountName') == [b'dave'], dave
    mods = [e for e in evs if e['type'] == 'modify' and e['uuid'] == alice_uuid]
    assert any({'otherTelephone', 'jpegPhoto', 'description'} <= set(e['changed']) for e in mods), mods
    assert ('rename', 'CN=robert,' + PEOPLE) in [(e['type'], e['dn']) for e in evs], evs
    assert not any(e['dn'].startswith('CN=temp,') and e['type'] in ('modify', 'rename') for e in evs), evs
    note('events: %r' % kinds(evs))
    note('%d entries in the copy' % len(m.entries))
    stop_clean(d)


@test(timeout=300)
def group_membership(tmp):
    # Persist: members added to and removed from a group (the group's member
    # and the users' memberOf), a member renamed and one moved (AD rewrites
    # the group's member values without DirSync naming the group), a member
    # deleted (AD drops it from the group, likewise unnamed), a group
    # renamed (the members' memberOf values change).  The copy equals the DC
    # after each step.
    dc = lab()
    con = Consumer(tmp)
    d = feed(tmp, dc, con)
    wait_run(con, 0, timeout=60)
    staff = 'CN=staff,' + GROUPS
    dc.modify_entry(staff, [('add', 'member', ['CN=carol,' + PEOPLE, 'CN=tm1,' + TEAM])])
    wait_same(con, dc, d, live=d)
    dc.modify_entry(staff, [('delete', 'member', 'CN=bob,' + PEOPLE)])
    wait_same(con, dc, d, live=d)
    dc.modrdn('CN=alice,' + PEOPLE, 'CN=alicia')
    wait_same(con, dc, d, live=d)
    dc.modrdn('CN=carol,' + PEOPLE, 'CN=carol', newsuperior=ARCHIVE)
    wait_same(con, dc, d, live=d)
    dc.delete('CN=tm1,' + TEAM)
    wait_same(con, dc, d, live=d)
    dc.modrdn(staff, 'CN=crew')
    m = wait_same(con, dc, d, live=d)
    members = sorted(m.entries[m.uuid_of('CN=crew,' + GROUPS)]['attrs']['member'])
    assert members == sorted([b'CN=alicia,' + PEOPLE.encode(), b'CN=carol,' + ARCHIVE.encode()]), members
    stop_clean(d)


@test(timeout=300)
def links_from_outside(tmp):
    # Base OU=Groups: the groups are in the copy, their members are not.  A
    # member renamed, one moved, one deleted, and a member's parent OU
    # renamed: AD rewrites or drops the group's member values and DirSync
    # names only the member; the copy of the group follows each time.
    dc = lab()
    staff = 'CN=staff,' + GROUPS
    dc.modify_entry(staff, [('add', 'member', ['CN=carol,' + PEOPLE, 'CN=tm1,' + TEAM])])
    con = Consumer(tmp)
    d = feed(tmp, dc, con, base=GROUPS)
    wait_run(con, 0, timeout=60)
    dc.modrdn('CN=alice,' + PEOPLE, 'CN=alicia')
    wait_same(con, dc, d, live=d)
    dc.modrdn('CN=bob,' + PEOPLE, 'CN=bob', newsuperior=ARCHIVE)
    wait_same(con, dc, d, live=d)
    dc.delete('CN=carol,' + PEOPLE)
    wait_same(con, dc, d, live=d)
    dc.modrdn(TEAM, 'OU=Crew')
    m = wait_same(con, dc, d, live=d)
    members = sorted(m.entries[m.uuid_of(staff)]['attrs']['member'])
    want = sorted(v.encode() for v in ('CN=alicia,' + PEOPLE, 'CN=bob,' + ARCHIVE, 'CN=tm1,OU=Crew,' + ARCHIVE))
    assert members == want, members
    stop_clean(d)


@test(timeout=300)
def subtrees(tmp):
    # Persist: an OU with children renamed (every child renamed, a group
    # naming one of them updated), moved under another OU, then deleted
    # with its children (ldapdelete -r: a delete for each).
    dc = lab()
    dc.modify_entry('CN=staff,' + GROUPS, [('add', 'member', 'CN=tm2,' + TEAM)])
    con = Consumer(tmp)
    d = feed(tmp, dc, con)
    wait_run(con, 0, timeout=60)
    n0 = len(con.events())
    dc.modrdn(TEAM, 'OU=Squad')
    squad = 'OU=Squad,' + ARCHIVE
    wait_same(con, dc, d, live=d)
    got = events_since(con, n0)
    for name in ('OU=Squad', 'CN=tm1,OU=Squad', 'CN=tm2,OU=Squad'):
        assert ('rename', name + ',' + ARCHIVE) in got, got
    dc.modrdn(squad, 'OU=Squad', newsuperior=PEOPLE)
    wait_same(con, dc, d, live=d)
    n1 = len(con.events())
    dc.delete('OU=Squad,' + PEOPLE, recursive=True)
    wait_same(con, dc, d, live=d)
    got = events_since(con, n1)
    assert sum(1 for t, _ in got if t == 'delete') == 3, got
    stop_clean(d)


@test(timeout=300)
def filter_and_base(tmp):
    # Base OU=People, filter (&(objectClass=user)(!(description=hidden))):
    # DirSync reads the whole domain, the copy holds what that search
    # returns.  An entry that comes to match "hidden" is deleted, and added
    # back when it stops; one moved out of the base is deleted; one moved
    # in is added; a subtree moved in (OU=Team: the OU itself does not
    # match, its two users do) brings its children; a change outside the
    # base gives nothing.
    dc = lab()
    con = Consumer(tmp)
    filt = '(&(objectClass=user)(!(description=hidden)))'
    d = feed(tmp, dc, con, base=PEOPLE, filt=filt)
    wait_run(con, 0, timeout=60)
    assert len(StrictModel.from_consumer(con).entries) == 4
    n0 = len(con.events())
    dc.replace('CN=alice,' + PEOPLE, 'description', 'hidden')
    wait_same(con, dc, d, live=d)
    assert events_since(con, n0) == [('delete', 'CN=alice,' + PEOPLE)], events_since(con, n0)
    dc.replace('CN=alice,' + PEOPLE, 'description', 'shown')
    wait_same(con, dc, d, live=d)
    assert events_since(con, n0)[1:] == [('add', 'CN=alice,' + PEOPLE)], events_since(con, n0)
    n1 = len(con.events())
    dc.modrdn('CN=bob,' + PEOPLE, 'CN=bob', newsuperior=ARCHIVE)
    dc.replace('CN=tm1,' + TEAM, 'description', 'changed outside the base')
    wait_same(con, dc, d, live=d)
    dc.modrdn(TEAM, 'OU=Team', newsuperior=PEOPLE)
    m = wait_same(con, dc, d, live=d)
    got = events_since(con, n1)
    assert got[0] == ('delete', 'CN=bob,' + PEOPLE), got
    assert sorted(got[1:]) == [('add', 'CN=tm1,OU=Team,' + PEOPLE), ('add', 'CN=tm2,OU=Team,' + PEOPLE)], got
    assert len(m.entries) == 5, sorted(e['dn'] for e in m.entries.values())
    stop_clean(d)


@test(timeout=300)
def clean_restart_resumes(tmp):
    # Store in sync, ldapfeed stopped cleanly; while it is down: an add, a
    # modify, a rename, a delete, a group change.  The restart resumes from
    # the stored DirSync cookie: hello reload false, only those changes'
    # events, and the log says it resumed (no full load).
    dc, con, d = synced(tmp)
    n0 = len(con.events())
    dc.add_entry(*user('grace'))
    dc.replace('CN=carol,' + PEOPLE, 'sn', 'Danvers')
    dc.modrdn('CN=bob,' + PEOPLE, 'CN=robert')
    dc.delete('CN=dave,' + PEOPLE)
    dc.modify_entry('CN=staff,' + GROUPS, [('add', 'member', 'CN=grace,' + PEOPLE)])
    d2 = feed(tmp, dc, con)
    run = wait_run(con, 1, timeout=60)
    wait_same(con, dc, d2, live=d2)
    stop_clean(d2)
    assert not any(run.reload), run.reload
    got = kinds(sorted(con.events(), key=lambda e: e['seq'])[n0:])
    note('after the restart: %r; dirsync started: %r' % (got, started_lines(d2)))
    assert started_lines(d2) == ['resuming from the stored cookie'], started_lines(d2)
    # grace: add (+ memberOf modify); carol: modify; bob: rename + modify
    # (name, distinguishedName) and the group's member; dave: delete
    assert got.get('add') == 1 and got.get('delete') == 1 and got.get('rename') == 1, got
    assert got.get('modify', 0) <= 6, got


@test(timeout=400)
def resume_after_many_changes(tmp):
    # Store in sync, ldapfeed stopped; meanwhile an OU with 600 users added,
    # 200 of them deleted, and the OU renamed: one DirSync names more
    # objects than one resolve asks for (256).  The restart catches up: the
    # copy equals the DC, an add for the OU and each of the 400 users under
    # its new name, no delete (nothing deleted was ever sent), no rename.
    dc, con, d = synced(tmp)
    n0 = len(con.events())
    bulk = 'OU=Bulk,' + BASE
    ldif = ou(bulk) + b''.join(ldif_entry(*user('bulk%03d' % i, bulk)) for i in range(600))
    dc.add(ldif)
    for i in range(0, 600, 3):
        dc.delete('CN=bulk%03d,%s' % (i, bulk))
    dc.modrdn(bulk, 'OU=Heap')
    d2 = feed(tmp, dc, con)
    wait_run(con, 1, timeout=120)
    m = wait_same(con, dc, d2, live=d2, timeout=60)
    stop_clean(d2)
    got = kinds(sorted(con.events(), key=lambda e: e['seq'])[n0:])
    note('after 600 adds, 200 deletes and an OU rename: %r, %d entries' % (got, len(m.entries)))
    assert got.get('add') == 401 and not got.get('delete') and not got.get('rename'), got


def spoil_cookie(datadir, value):
    """Write value as the stored cookie (mdb_load into the meta table of a
    stopped store)."""
    text = 'VERSION=3\nformat=bytevalue\ntype=btree\nHEADER=END\n %s\n %s\nDATA=END\n' % (
        b'cookie'.hex(), value.hex())
    r = subprocess.run(['mdb_load', '-s', 'meta', datadir], input=text.encode(), capture_output=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr.decode()


@test(timeout=300)
def cookie_refused(tmp):
    # Store in sync, ldapfeed stopped cleanly; its DirSync cookie replaced
    # by bytes the DC cannot read, and an entry deleted meanwhile.  The DC
    # refuses the cookie (12): ldapfeed says so and makes a full refresh
    # against the store: no reload for the consumer, the deleted entry's
    # delete, nothing for what did not change, a new cookie, and the next
    # start resumes from it.
    dc, con, d = synced(tmp)
    n0 = len(con.events())
    spoil_cookie(d.datadir, b'MSDS not a cookie')
    dc.delete('CN=dave,' + PEOPLE)
    d2 = feed(tmp, dc, con)
    run = wait_run(con, 1, timeout=60)
    wait_same(con, dc, d2, live=d2)
    stop_clean(d2)
    err = d2.stderr()
    assert 'cookie refused' in err and started_lines(d2)[-1] == 'full refresh against the store', err[-2000:]
    assert not any(run.reload), run.reload
    assert events_since(con, n0) == [('delete', 'CN=dave,' + PEOPLE)], events_since(con, n0)
    d3 = feed(tmp, dc, con)
    wait_run(con, 2, timeout=60)
    stop_clean(d3)
    assert started_lines(d3) == ['resuming from the stored cookie'], started_lines(d3)
    note('refused: %s' % [ln for ln in err.splitlines() if 'cookie refused' in ln][0].split('] ')[-1])


@test(timeout=300)
def restart_nothing_changed(tmp):
    # Store in sync, nothing changes while ldapfeed is down: the restart
    # sends refresh_done only, reload false.
    dc, con, d = synced(tmp)
    n0 = len(con.events())
    d2 = feed(tmp, dc, con)
    run = wait_run(con, 1, timeout=60)
    stop_clean(d2)
    assert not any(run.reload), run.reload
    assert events_since(con, n0) == [], events_since(con, n0)


@test(timeout=300)
def dc_restart(tmp):
    # The DC restarts under a running ldapfeed: it reconnects, resumes from
    # its cookie (no full load), and follows what changes afterwards.
    dc = lab()
    con = Consumer(tmp)
    d = feed(tmp, dc, con)
    wait_run(con, 0, timeout=60)
    n0 = len(con.events())
    t0 = time.monotonic()
    dc.restart()
    note('DC restart took %.1f s' % (time.monotonic() - t0))
    dc.replace('CN=carol,' + PEOPLE, 'mail', 'carol@example.org')
    dc.add_entry(*user('henry'))
    wait_until(lambda: 'reconnected' in d.stderr(), 60, 'ldapfeed to reconnect')
    wait_same(con, dc, d, live=d)
    stop_clean(d)
    assert started_lines(d) == ['full load', 'resuming from the stored cookie'], started_lines(d)
    assert kinds(sorted(con.events(), key=lambda e: e['seq'])[n0:]).get('add') == 1


@test(timeout=300)
def refresh_only_twice(tmp):
    # refresh mode: a full load and exit 0; changes; a second run resumes
    # from the cookie, sends only those changes' events, exits 0.
    dc, con, d = synced(tmp, mode='refresh')
    n0 = len(con.events())
    dc.add_entry(*user('ivan'))
    dc.delete('CN=tm1,' + TEAM)
    d2 = feed(tmp, dc, con, mode='refresh')
    rc = d2.wait(60)
    assert rc == 0, 'exit %s:\n%s' % (rc, d2.stderr()[-3000:])
    same_as_server(con, dc, d2)
    got = events_since(con, n0)
    assert ('add', 'CN=ivan,' + PEOPLE) in got and ('delete', 'CN=tm1,' + TEAM) in got, got


@test(timeout=300)
def feed_identity(tmp):
    # Bound as CN=feed, a non-administrator with the rights ldapfeed.8
    # documents (Replicating Directory Changes on the domain; List Contents
    # and Read Property on CN=Deleted Objects): no warning about deletes, a
    # full load equal to what it may read, and a delete seen.
    dc = lab()
    con = Consumer(tmp, fmt='json')
    d = feed(tmp, dc, con, bind='feed', fmt='json')
    wait_run(con, 0, timeout=60)
    dc.delete('CN=dave,' + PEOPLE)
    dc.add_entry(*user('zoe', description='h\u00e9llo w\u00f6rld'))
    wait_same(con, dc, d, live=d)
    assert 'deletes will not be seen' not in d.stderr(), d.stderr()[-2000:]
    stop_clean(d)


@test(timeout=300)
def rights_missing(tmp):
    # CN=halfway has Replicating Directory Changes but may not list CN=Deleted
    # Objects: ldapfeed starts and warns at once that deletes will not be
    # seen.  CN=plain has no right: refused at startup, exit 78, the right
    # named.
    dc = lab()
    con = Consumer(tmp)
    d = feed(tmp, dc, con, bind='halfway', mode='refresh')
    rc = d.wait(60)
    assert rc == 0, 'exit %s:\n%s' % (rc, d.stderr()[-3000:])
    warn = [ln for ln in d.stderr().splitlines() if 'deletes will not be seen' in ln]
    assert warn, d.stderr()[-2000:]
    note('halfway: %s' % warn[0].split('] ')[-1])
    con2 = Consumer(tmp, name='plain')
    d2 = feed(tmp, dc, con2, bind='plain', datadir=os.path.join(tmp, 'plain'),
              marker=os.path.join(tmp, 'plain.marker'))
    rc = d2.wait(60)
    err = d2.stderr()
    assert rc == 78, 'exit %s:\n%s' % (rc, err[-2000:])
    assert 'Replicating Directory Changes' in err, err[-2000:]
    note('plain: exit 78: %s' % [ln for ln in err.splitlines() if 'Replicating' in ln][0].split(': ', 1)[-1])


@test(timeout=300)
def protocol_choice(tmp):
    # The root DSE offers DirSync and not RFC 4533: ldapfeed follows with
    # DirSync by itself.  Forced to RFC 4533 (--protocol syncrepl), the DC
    # answers the sync search with an ExtendedResponse, result 12, and never
    # ends it: ldapfeed ends the run (exit 70) within 10 s, naming the
    # answer, instead of hanging.
    dc = DC.reset()
    dse = dc.root_dse('supportedControl')
    oids = {v.decode() for v in dse.get('supportedControl', [])}
    assert '1.2.840.113556.1.4.841' in oids and '1.3.6.1.4.1.4203.1.9.1.1' not in oids, sorted(oids)
    con = Consumer(tmp)
    d = feed(tmp, dc, con, extra=['--protocol', 'syncrepl'])
    t0 = time.monotonic()
    rc = d.wait(20)
    err = d.stderr()
    assert rc == 70, 'exit %s:\n%s' % (rc, err[-2000:])
    line = [ln for ln in err.splitlines() if 'result 12' in ln]
    assert line, err[-2000:]
    note('--protocol syncrepl: exit 70 after %.1f s: %s' % (time.monotonic() - t0, line[0].split('] ')[-1]))


@test(timeout=300)
def notification_latency(tmp):
    # Persist with a poll interval of 60 s, so that only change notification
    # wakes ldapfeed: 10 modifies, one after the other; each reaches the
    # consumer within Samba's notification delay (a notification search is
    # run again 0.1 s after a write made through the same server process,
    # else every 5 s) plus a DirSync round: at most 7 s, the figures noted.
    # Then SIGTERM: exit 0 at once, the marker written.
    dc = lab()
    con = Consumer(tmp)
    d = feed(tmp, dc, con, extra=['--poll-interval', '60'])
    wait_run(con, 0, timeout=60)
    # armed once the server ran it a first time: a change it reports
    dc.replace('CN=bob,' + PEOPLE, 'description', 'arming')
    wait_until(lambda: any(m.get('type') == 'modify' for m in con.events()), 20,
               'a first notification')
    lat = []
    for i in range(10):
        val = 'latency %d' % i
        t0 = time.monotonic()
        dc.replace('CN=alice,' + PEOPLE, 'description', val)

        def seen():
            return any(m.get('type') == 'modify' and m['new'].get('description') == [val.encode()]
                       for m in con.events())
        wait_until(seen, 20, 'modify %d to reach the consumer' % i, interval=0.005)
        lat.append(time.monotonic() - t0)
    lat.sort()
    note('modify to consumer, woken by notification alone: min %.2f s, median %.2f s, max %.2f s'
         % (lat[0], lat[len(lat) // 2], lat[-1]))
    assert lat[-1] <= 7, lat
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    rc = d.wait(30)
    took = time.monotonic() - t0
    note('SIGTERM to exit: %.2f s' % took)
    assert rc == 0 and d.marker_exists(), (rc, d.stderr()[-2000:])
    assert took < scaled(3), took


# ---------------------------------------------------------------- the mass-delete guard

BULK = 'OU=Bulk,' + BASE


def bulk_synced(tmp, n=300):
    """A DC with OU=Bulk holding n users, and a store of ldapfeed following
    OU=Bulk in sync with it, stopped cleanly."""
    dc = DC.reset()
    dc.add(ou(BULK) + b''.join(ldif_entry(*user('bulk%03d' % i, BULK)) for i in range(n)))
    con = Consumer(tmp)
    d = feed(tmp, dc, con, base=BULK)
    wait_run(con, 0, timeout=120)
    stop_clean(d)
    return dc, con, d


def delete_bulk(dc, numbers):
    """Delete CN=bulkNNN for those numbers, one ldapdelete; their uuids."""
    dns = ['CN=bulk%03d,%s' % (i, BULK) for i in numbers]
    uuids = dc.guids(BULK)
    dc.tool('ldapdelete', dns)
    return sorted(uuids[dn] for dn in dns)


@test(timeout=600)
def guard_full_refresh(tmp):
    # The mass-delete guard (doc/safety.md) on DirSync's full refresh against the store: ldapfeed follows OU=Bulk
    # (300 users), store in sync, stopped cleanly.  While it is down 200 users are deleted and the stored cookie
    # replaced by bytes the DC cannot read: the DC refuses it, and the full refresh against the store would sweep
    # 200 of the 301 entries the consumer holds.  Refused (65, the marker written), no delete sent, the store's
    # entries unchanged, no cookie written (the full refresh is still owed); the same start again stops the same
    # way; --max-delete 200 lets exactly the 200 deletes through, once; the next start resumes from its cookie
    # and sends nothing.
    dc, con, d = bulk_synced(tmp)
    gone = delete_bulk(dc, range(200))
    spoil_cookie(d.datadir, b'MSDS not a cookie')
    dump = entries_dump(d.datadir)

    d1 = feed(tmp, dc, con, base=BULK)
    guard_stop(d1, 200, 301, 'this full refresh')
    assert 'cookie refused' in d1.stderr(), d1.stderr()[-2000:]
    assert deletes_of(con, 1) == [], 'deletes reached the consumer: %r' % deletes_of(con, 1)[:5]
    assert entries_dump(d.datadir) == dump, 'the store\'s entries changed'
    meta = store_meta(d.datadir)
    assert b'cookie' not in meta and meta.get(b'reload') == b'1', meta

    d2 = feed(tmp, dc, con, base=BULK)
    guard_stop(d2, 200, 301, 'this full refresh')
    assert started_lines(d2) == ['full refresh against the store'], started_lines(d2)
    assert deletes_of(con, 2) == [] and entries_dump(d.datadir) == dump

    d3 = feed(tmp, dc, con, base=BULK, extra=['--max-delete', '200'])
    wait_run(con, 3, timeout=120)
    stop_clean(d3)
    assert deletes_of(con, 3) == gone, 'run 3 deleted %d, not the 200' % len(deletes_of(con, 3))
    assert kinds(Run(con, 3).events) == {'delete': 200}, kinds(Run(con, 3).events)
    d4 = feed(tmp, dc, con, base=BULK)
    wait_run(con, 4, timeout=120)
    stop_clean(d4)
    assert started_lines(d4) == ['resuming from the stored cookie'], started_lines(d4)
    assert kinds(Run(con, 4).events) == {}, Run(con, 4).timeline[:5]
    same_as_server(con, dc, d4)


@test(timeout=600)
def guard_full_reload(tmp):
    # The guard on a full reload from a wiped store: OU=Bulk (300 users) in sync, ldapfeed stopped cleanly; while
    # it is down 200 users are deleted and the marker removed, so the next start wipes the store and loads OU=Bulk
    # again.  At that load's refresh_done the consumer would drop the 200 entries the load did not send, of the
    # 301 it held: refused (65) before refresh_done, the snapshot left unfinished; the same start again (the store
    # wiped again, the copy size carried over) stops the same way; --max-delete 200 lets the refresh_done through
    # and the consumer's copy equals the DC.
    dc, con, d = bulk_synced(tmp)
    delete_bulk(dc, range(200))
    os.unlink(d.marker)

    d1 = feed(tmp, dc, con, base=BULK)
    guard_stop(d1, 200, 301, 'this full reload')
    assert Run(con, 1).rd_count == 0, 'refresh_done sent'
    assert store_meta(d.datadir).get(b'snapshot') == b'1'

    d2 = feed(tmp, dc, con, base=BULK)
    guard_stop(d2, 200, 301, 'this full reload')
    assert 'the last full reload did not finish' in d2.stderr(), d2.stderr()[-2000:]

    d3 = feed(tmp, dc, con, base=BULK, extra=['--max-delete', '200'])
    wait_run(con, 3, timeout=120)
    stop_clean(d3)
    assert b'previous' not in store_meta(d.datadir) and b'snapshot' not in store_meta(d.datadir)
    same_as_server(con, dc, d3)


@test(timeout=300)
def status_figures(tmp):
    # --status-file under DirSync (doc/safety.md, "Health figures"): the reader's figures are those of the syncrepl
    # reader: the LDAP connection, the store's entries and size on disk, the LMDB map and the pages in use.
    dc = lab()
    con = Consumer(tmp)
    status = os.path.join(tmp, 'ldapfeed.prom')
    d = feed(tmp, dc, con, extra=['--status-file', status])
    wait_run(con, 0, timeout=60)
    n = len(view(dc, d))
    st = read_status(status, lambda m: metric(m, 'ldapfeed_store_entries') == n, timeout=30)
    used, size = metric(st, 'ldapfeed_store_map_used_bytes'), metric(st, 'ldapfeed_store_map_size_bytes')
    assert metric(st, 'ldapfeed_ldap_connected') == 1, st
    assert metric(st, 'ldapfeed_store_size_bytes') > 0 and 0 < used < size, (used, size)
    assert metric(st, 'ldapfeed_store_map_grows_total') == 0
    note('DirSync: %d entries, %d of a %d-byte map used' % (n, used, size))
    stop_clean(d)


if __name__ == '__main__':
    main()
