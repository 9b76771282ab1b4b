"""The conformance rows T18-T34, end to end: the edge cases.  A subtree
moved into the search, a DN deleted and added again, stale and too-new
cookies, a provider reloaded under the store, writers and kills during
persist and mid-refresh, Cancel on SIGTERM, the server's size limit and
ACLs, large and binary values, a store built for another search,
nopresent, and no syncprov at all.  (This suite's own numbering, each row
defined by its Scenario comment; the rules they check are those of
doc/syncrepl.md and doc/subtrees.md.)  Rows T01-T17 and the helpers are in
test_conformance.py; the two files run in parallel."""

import base64
import os
import random
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F403
from test_conformance import (  # noqa: E402
    A, D, GROUPS, M, PEOPLE, RD, SUFFIX, LdapProxy, Run, assert_advanced, assert_cookie_current, assert_events,
    check_model, check_run, csn_time, csns, deletes_seen, feed, hexuuid, lab, load_expected, person,
    StrictModel, reader_pid, refresh_line, resume, stop_clean, store_meta, stored_cookie, summary, synced, view,
    wait_cookie_current, wait_run)

STAFF = 'ou=staff,' + SUFFIX
READER = 'cn=reader,' + SUFFIX


def drop_attr(ev, name):
    """An event summary without attribute `name` (case-insensitive)."""
    def strip(a):
        return {k: v for k, v in a.items() if k.lower() != name.lower()}
    if ev[0] in ('add', 'delete'):
        return ev[:3] + (strip(ev[3]),)
    if ev[0] == 'modify':
        return ev[:3] + (strip(ev[3]), strip(ev[4]), tuple(c for c in ev[5] if c.lower() != name.lower()))
    return ev


def copy_of(con):
    """The consumer's copy {dn: attrs}; no anomaly allowed."""
    m = StrictModel.from_consumer(con)
    assert m.anomalies == [], m.anomalies
    return m.as_dict()


def problem_lines(d):
    """Daemon log lines that report trouble."""
    return [ln for ln in d.stderr().splitlines()
            if re.search(r'error|clash|duplicate|fail|protocol|corrupt|refused|lost', ln, re.I)]


@test
def t18_subtree_into_scope(tmp):
    # Scenario (T18): persist, base ou=staff.  ou=team with 2 people lives under ou=groups, outside the base,
    # and moves into ou=staff: slapd sends one add for ou=team (hasSubordinates TRUE) and nothing for the
    # children, now or later.  doc/subtrees.md, "The cases" (and "Tasks"): the consumer must still get A(ou=team)
    # then A for each child (by a subtree search or a reload); no delete, no duplicate.  Done with
    # hasSubordinates requested in the URL (the row) and with the default attributes (ldapfeed asks for it
    # itself).  hasSubordinates is ignored in the comparison (ldapfeed keeps it out of stored attributes and
    # diffs unless the URL asks for it: doc/syncrepl.md, "hasSubordinates").
    team_out, team_in = 'ou=team,' + GROUPS, 'ou=team,' + STAFF
    failures = []
    for label, attrs in (('requested', ['*', 'hasSubordinates']), ('default', None)):
        sub = os.path.join(tmp, label)
        os.makedirs(sub)
        s = lab(sub, people=(), ous=(STAFF, team_out))
        s.add(ldif_entry(*person('sam', STAFF)) + ldif_entry(*person('tim', team_out)) +
              ldif_entry(*person('tom', team_out)))
        con = Consumer(sub)
        d = feed(sub, s, con, base=STAFF, attrs=attrs)
        try:
            wait_run(con, 0)
            u, before = s.uuids(), view(s, d)
            n0 = len(con.events())
            s.modrdn(team_out, 'ou=team', newsuperior=STAFF)
            after = view(s, d)
            try:
                wait_until(lambda: len(con.events()) >= n0 + 3, 5, 'the children')
            except AssertionError:
                pass        # the comparison below says what is missing
            wait_cookie_current(s, d)
            stop_clean(d)
            r = Run(con, 0)
            rd = r.timeline.index(RD)
            drop = [drop_attr(e, 'hasSubordinates') for e in r.timeline]
            assert_events(drop[:rd], [drop_attr(A(dn, u[dn], a), 'hasSubordinates') for dn, a in before.items()],
                          False, '%s: initial load' % label)
            exp = [A(team_in, u[team_out], after[team_in])] + [
                A('uid=%s,%s' % (k, team_in), u['uid=%s,%s' % (k, team_out)], after['uid=%s,%s' % (k, team_in)])
                for k in ('tim', 'tom')]
            assert_events(drop[rd + 1:], [drop_attr(e, 'hasSubordinates') for e in exp], ordered=False,
                          what='hasSubordinates %s: events after ou=team moved in' % label)
            assert r.events[rd + 1]['dn'] == team_in, 'ou=team must come first: %r' % r.events[rd + 1:]
            check_model(con, s, d, drop_attrs=('hasSubordinates',))
        except AssertionError as e:
            failures.append(str(e))
            note('daemon log (%s):' % label, d.stderr())
        d.stop()
        s.stop()
    assert not failures, '\n'.join(failures)


@test
def t19_delete_readd_same_dn(tmp):
    # Scenario (T19): V0, down; alice is deleted and added again (same DN, new entryUUID).  Resume: D(old uuid,
    # her old attributes) and A(new uuid), in either order (slapd sends the new one first, the sweep then removes
    # the old one), refresh_done; no error about a DN clash; cookie advanced.
    s, con, d = synced(tmp)
    c0, before, u = stored_cookie(d), view(s, d), s.uuids()
    dn, attrs = person('alice')
    s.delete(dn)
    attrs['description'] = 'alice, born again'
    s.add_entry(dn, attrs)
    u2, after = s.uuids(), view(s, d)
    assert u2[dn] != u[dn]
    d2 = resume(tmp, s, con, d, 1)
    r = check_run(con, 1, [D(dn, u[dn], before[dn]), A(dn, u2[dn], after[dn]), RD], ordered=False)
    assert r.timeline[-1] == RD
    assert not problem_lines(d2), problem_lines(d2)
    assert_advanced(s, c0, stored_cookie(d2))
    check_model(con, s, d2)


def _stale_cookie(tmp, force_hint_false):
    """T20/T21: V3; sync, stop; every entry in the DB is then written (alice and ou=groups really change,
    the suffix, ou=people, cn=reader and carol are rewritten with the values they had, bob is deleted), all
    more than 1 s after the stored cookie's CSN, so that no entry has an entryCSN <= the cookie."""
    s, con, d = synced(tmp, 'V3')
    c0, before, u = stored_cookie(d), view(s, d), s.uuids()
    # The row's deliberate wait: slapd counts an entry written in the same second as the cookie's CSN as
    # "older than the cookie" (doc/syncrepl.md, "Provider settings", the syncprov-reloadhint row: about a second).
    # Wait only for what is left of 2 s after that CSN.
    left = csn_time(csns(c0)[0]) + 2.0 - time.time()
    if left > 0:
        time.sleep(left)
    alice, bob, carol = ('uid=%s,%s' % (n, PEOPLE) for n in ('alice', 'bob', 'carol'))
    s.replace(alice, 'description', 'alice, rewritten after the cookie')
    s.replace(GROUPS, 'description', 'groups, rewritten after the cookie')
    s.replace(SUFFIX, 'o', 'example')
    s.replace(PEOPLE, 'ou', 'people')
    s.replace(READER, 'cn', 'reader')
    s.replace(carol, 'description', before[carol]['description'])
    s.delete(bob)
    after = view(s, d)
    for dn in after:
        assert dn == READER or after[dn] != before[dn] or dn in (SUFFIX, PEOPLE, carol), dn
    p = LdapProxy(s, force_hint_false=force_hint_false)
    d2 = resume(tmp, s, con, d, 1, server=p.url)
    r = check_run(con, 1, [M(alice, u[alice], before[alice], after[alice]),
                           M(GROUPS, u[GROUPS], before[GROUPS], after[GROUPS]),
                           D(bob, u[bob], before[bob]), RD], ordered=False)
    assert r.timeline[-2:] == [D(bob, u[bob], before[bob]), RD], r.timeline
    meta = store_meta(d2.datadir)
    assert_advanced(s, c0, meta.get(b'cookie'))
    assert b'reload' not in meta, 'reload_pending left set: %r' % meta
    check_model(con, s, d2)
    return p, d2


@test
def t20_refresh_required_4096(tmp):
    # Scenario (T20): V3 (syncprov-reloadhint TRUE), the store's cookie made stale (see _stale_cookie) and the
    # consumer's reloadHint FALSE -- ldapfeed always sends TRUE with a cookie (doc/syncrepl.md, "The Sync Request"),
    # so the LdapProxy rewrites it to FALSE on the way.  slapd answers 4096 "sync cookie is stale"; ldapfeed
    # searches again without a cookie and reconciles: M for alice and ou=groups, nothing for the entries rewritten
    # unchanged, D(bob) from the sweep, refresh_done; a new cookie; no reload_pending left.
    p, d2 = _stale_cookie(tmp, True)
    codes = [x['code'] for x in p.results('done')]
    assert 4096 in codes, 'slapd sent no e-syncRefreshRequired: %r' % p.results('done')
    first, again = p.requests[0], p.requests[1]
    assert first['cookie'] and first['hint'], 'ldapfeed sent %r' % first
    assert again['cookie'] is None, 'after 4096 ldapfeed searched with cookie %r' % again['cookie']
    assert len(p.requests) == 2, p.requests


@test
def t21_stale_cookie_reload_hint(tmp):
    # Scenario (T21): the same stale cookie as T20, with ldapfeed's own reloadHint TRUE: slapd streams the full
    # content ending as a present phase (the "full content" shape of doc/syncrepl.md, "Refresh shapes"), no
    # 4096: M for alice and ou=groups, nothing for the rewritten ones, D(bob) from the sweep, refresh_done; a new
    # cookie.
    p, d2 = _stale_cookie(tmp, False)
    assert len(p.requests) == 1 and p.requests[0]['cookie'] and p.requests[0]['hint'] is True, p.requests
    assert 4096 not in [x['code'] for x in p.results('done')], p.results('done')
    assert p.results('refreshPresent'), 'no present phase: %r' % [x for x in p.server if x['kind'] != 'entry']
    assert 'full refresh' not in d2.stderr(), d2.stderr()


@test(timeout=60)
def t22_cookie_newer_than_provider(tmp):
    # Scenario (T22): slapd restarted cleanly (contextCSN checkpointed as X); ldapfeed (base ou=people) syncs and
    # commits cookie C > X for a change to alice; ldapfeed stops cleanly and slapd is SIGKILLed before its next
    # checkpoint, so it restarts with contextCSN X < C.  Resume: 53 "consumer state is newer than provider!",
    # ldapfeed keeps the cookie and retries with backoff (same reader, no restart); after the next provider write
    # (out of the base, so nothing to send) the refresh succeeds: refresh_done only, and the new cookie.
    s = lab(tmp)
    s.restart()
    con = Consumer(tmp)
    d = feed(tmp, s, con, base=PEOPLE)
    wait_run(con, 0)
    u, before = s.uuids(), view(s, d)
    alice = 'uid=alice,' + PEOPLE
    s.replace(alice, 'description', 'alice, just before the crash')
    after = view(s, d)
    wait_cookie_current(s, d)
    C = stored_cookie(d)
    stop_clean(d)
    r = Run(con, 0)
    assert_events(r.timeline[r.timeline.index(RD) + 1:], [M(alice, u[alice], before[alice], after[alice])])
    s.kill()
    s.start()
    assert s.context_csn() < csns(C), 'slapd did not fall back to an older contextCSN: %r vs %r' % (
        s.context_csn(), C)
    p = LdapProxy(s)
    d2 = feed(tmp, s, con, base=PEOPLE, server=p.url)
    wait_until(lambda: len([x for x in p.results('done') if x['code'] == 53]) >= 2, 15,
               'two 53 answers (a retry)')
    assert all('newer than provider' in x['text'] for x in p.results('done') if x['code'] == 53), p.results()
    assert stored_cookie(d2) == C, 'cookie changed while slapd refuses it: %r' % stored_cookie(d2)
    assert d2.alive() and len(set(re.findall(r'ldapfeed\[(\d+)\] reader:', d2.stderr()))) == 1
    wait_until(lambda: len(con.runs()) == 2, 10, 'the second run to say hello')
    assert Run(con, 1).rd_count == 0, 'refresh_done while slapd refuses the cookie'
    s.replace(GROUPS, 'description', 'the next provider write')
    wait_run(con, 1, timeout=30)
    stop_clean(d2)
    check_run(con, 1, [RD])
    assert_advanced(s, C, stored_cookie(d2))
    check_model(con, s, d2)


@test
def t23_provider_reloaded_while_down(tmp):
    # Scenario (T23, consumer restarted): ldapfeed syncs and stops; slapd's DB is wiped and reloaded offline with
    # slapadd from an LDIF of the same entries (new entryUUIDs).  slapd 2.5 computes a contextCSN from the
    # loaded entries, so it answers with a full present phase (the "full content" shape of doc/syncrepl.md, "Refresh
    # shapes"), not the 53 "no state" of an empty DB (t23_provider_wiped_under_persist produces that).  Expected: A
    # for every entry (new uuids), then D for every old uuid (the sweep; ldapfeed has no mass-delete guard to trip),
    # refresh_done; cookie replaced.
    s, con, d = synced(tmp)
    c0, before, u = stored_cookie(d), view(s, d), s.uuids()
    entries = s.search(attrs=['*'])
    s.stop()
    s.wipe()
    os.makedirs(s.db_dir)
    ldif = os.path.join(tmp, 'reload.ldif')
    with open(ldif, 'wb') as f:
        f.write(b''.join(ldif_entry(dn, a) for dn, a in entries.items()))
    r = subprocess.run(['slapadd', '-f', s.conf_path, '-b', s.suffix, '-l', ldif], capture_output=True, timeout=60)
    assert r.returncode == 0, r
    s._populated = True             # harness: do not add the base entries again
    s.start()
    u2, after = s.uuids(), view(s, d)
    assert set(u2) == set(u) and not set(u2.values()) & set(u.values())
    d2 = resume(tmp, s, con, d, 1)
    exp = [A(dn, u2[dn], after[dn]) for dn in after] + [D(dn, u[dn], before[dn]) for dn in before]
    r = check_run(con, 1, exp + [RD], ordered=False)
    kinds = [e[0] for e in r.timeline]
    assert kinds == ['add'] * len(after) + ['delete'] * len(before) + ['refresh_done'], kinds
    assert_cookie_current(s, stored_cookie(d2))
    assert stored_cookie(d2) != c0
    check_model(con, s, d2)


@test
def t23_no_state_53(tmp):
    # Scenario (T23, the 53 "consumer has state info but provider doesn't!" answer, doc/syncrepl.md, "Result
    # codes"): not producible on slapd 2.5.13.  A provider DB with entries always has a contextCSN (syncprov
    # computes or generates one at open: checked with slapadd of entries with and without entryCSN), and an empty
    # one answers 32 for the missing base before looking at the cookie (ldapfeed then stops with 70: 32 "no such
    # object" is permanent, doc/syncrepl.md, "Result codes").
    raise Skip('slapd 2.5.13 never answers 53 "provider doesn\'t" while the search base exists; '
               't23_provider_reloaded_while_down covers the reload from LDIF')


@test(timeout=90)
def t24_concurrent_writers_reader_killed(tmp):
    # Scenario (T24): persist over 2 workers through an LdapProxy (which counts slapd's CSN-less cookies).  16
    # ldapmodify processes each write 40 successive descriptions to their own entry (640 modifies).  After a
    # random number of modifies has arrived, the reader is SIGKILLed: the daemon exits non-zero without the
    # marker (doc/processes.md, "Failure"); it is started again at once, so it wipes and reloads (hello.reload)
    # while the writers go on.  Every stored cookie seen (read live, throughout) has a csn=.  Per entry, the
    # modifies of each run carry strictly increasing values (no duplicate, none going back), the reload snapshot
    # holds each entry once, the copy ends equal to the server (every entry at its 40th value), and the final cookie
    # is current.
    s = lab(tmp, people=())
    targets = s.add_people(16)
    p = LdapProxy(s)
    con = Consumer(tmp)
    d = feed(tmp, s, con, server=p.url, processes=4)
    wait_run(con, 0)
    u = s.uuids()
    writers = []
    for i, dn in enumerate(targets):
        ldif = ''.join('dn: %s\nchangetype: modify\nreplace: description\ndescription: w%02d %02d\n\n' % (dn, i, k)
                       for k in range(40))
        w = subprocess.Popen(['ldapmodify', '-x', '-H', s.url, '-D', s.rootdn, '-w', s.rootpw],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
        register_process(w, group=True, name='writer')
        writers.append((w, ldif.encode()))
    for w, data in writers:
        w.stdin.write(data)
        w.stdin.close()
    kill_at = random.randint(20, 200)
    note('SIGKILL of the reader after %d modifies' % kill_at)
    cookies = []

    def sample():
        try:
            c = stored_cookie(d_now[0])
        except AssertionError:
            return      # mdb_dump raced the wipe of the store at the restart
        if c is not None:
            cookies.append(c)
    d_now = [d]
    wait_until(lambda: sample() or len(con.messages('modify')) >= kill_at, 20, '%d modifies' % kill_at)
    os.kill(reader_pid(d), signal.SIGKILL)
    rc = d.wait(15)
    assert rc != 0 and not d.marker_exists(), (rc, d.marker_exists())
    d2 = feed(tmp, s, con, server=p.url, processes=4)
    d_now[0] = d2
    wait_until(lambda: sample() or all(w.poll() is not None for w, _ in writers), 30, 'the writers to finish')
    for w, _ in writers:
        assert w.returncode == 0, w.stderr.read()
    wait_run(con, 1)
    wait_until(lambda: sample() or csns(stored_cookie(d2)) == s.context_csn(), 20, 'the cookie to catch up')
    stop_clean(d2)
    cookies.append(stored_cookie(d2))
    bad = [c for c in cookies if b'csn=' not in c]
    assert not bad, 'stored cookies without csn=: %r' % bad[:5]
    csnless = [x for x in p.server if x.get('cookie') is not None and b'csn=' not in x['cookie']]
    note('%d cookies sampled from the store; slapd sent %d CSN-less cookies' % (len(cookies), len(csnless)))
    assert_cookie_current(s, stored_cookie(d2))
    final = view(s, d2)
    for i, dn in enumerate(targets):
        assert final[dn]['description'] == [b'w%02d 39' % i], final[dn]
    r0, r1 = Run(con, 0), Run(con, 1)
    assert r1.reload == [True] * r1.workers, r1.reload
    rd = r0.timeline.index(RD)
    last = {}
    for ev in r0.events[rd + 1:]:
        assert ev['type'] == 'modify' and ev['dn'] in targets, ev
        v = int(ev['new']['description'][0].split()[1])
        assert v > last.get(ev['uuid'], -1), 'run 0: %s went from %s to %d' % (ev['dn'], last.get(ev['uuid']), v)
        last[ev['uuid']] = v
    adds, seen = {}, {}
    for ev in r1.events:
        if ev['type'] == 'add':
            assert ev['uuid'] not in adds, 'run 1: two adds of %s' % ev['dn']
            adds[ev['uuid']] = ev
            if ev['dn'] in targets:
                v = int(ev['attrs']['description'][0].split()[1]) if ev['attrs']['description'][0].startswith(b'w') \
                    else -1
                assert v >= last.get(ev['uuid'], -1), 'run 1 snapshot of %s older than run 0' % ev['dn']
                seen[ev['uuid']] = v
        elif ev['type'] == 'modify':
            assert ev['uuid'] in adds, 'run 1: modify before the add: %r' % ev
            v = int(ev['new']['description'][0].split()[1])
            assert v > seen[ev['uuid']], 'run 1: %s went from %d to %d' % (ev['dn'], seen[ev['uuid']], v)
            seen[ev['uuid']] = v
        else:
            assert ev['type'] == 'refresh_done', ev
    assert set(adds) == {u[dn] for dn in final}, 'run 1 snapshot is not the directory'
    check_model(con, s, d2)


@test
def t25_sigterm_cancels(tmp):
    # Scenario (T25): persist through an LdapProxy, one change delivered; SIGTERM to the supervisor: ldapfeed
    # sends Cancel (RFC 3909) for its search, slapd ends it with 118, the daemon exits 0 with the marker and the
    # last committed cookie.  A restart gives refresh_done only, and keeps that cookie.
    s = lab(tmp)
    p = LdapProxy(s)
    con = Consumer(tmp)
    d = feed(tmp, s, con, server=p.url)
    wait_run(con, 0)
    u, before = s.uuids(), view(s, d)
    alice = 'uid=alice,' + PEOPLE
    s.replace(alice, 'description', 'alice before the stop')
    after = view(s, d)
    wait_cookie_current(s, d)
    stop_clean(d)
    assert '1.3.6.1.1.8' in p.exops, 'no Cancel sent: %r' % p.exops
    assert [x['code'] for x in p.results('done')][-1] == 118, p.results('done')
    c0 = stored_cookie(d)
    assert_cookie_current(s, c0)
    r = Run(con, 0)
    rd = r.timeline.index(RD)
    assert_events(r.timeline[rd + 1:], [M(alice, u[alice], before[alice], after[alice])])
    d2 = resume(tmp, s, con, d, 1)
    check_run(con, 1, [RD])
    assert stored_cookie(d2) == c0
    check_model(con, s, d2)


# T26/T27: 5,000 entries instead of the lab's 20,000.  The lab needed a big refresh to have time to kill
# something while it streamed; here the LdapProxy stops the stream at a chosen entry (mid-message), so the cut
# is deterministic at any size.  5,000 still spans two of the reader's 2,000-message commit batches and takes
# a few seconds to load, which keeps each file well inside its time budget.
BIG = 5000


def _big_lab(tmp):
    s = lab(tmp, people=())
    s.add_people(BIG)
    return s


@test(timeout=100)
def t26_slapd_killed_mid_refresh(tmp):
    # Scenario (T26): initial refresh of 5,000 people over 2 workers through an LdapProxy that stops the stream
    # halfway through the 2,501st entry; slapd is SIGKILLed there and restarted.  ldapfeed reconnects (same
    # run, same reader) and refreshes again without a cookie (none was committed mid-refresh): over the whole
    # run every entry is added exactly once (only those not yet delivered come after the reconnect), nothing is
    # deleted (sweep 0), one refresh_done; the copy equals the server; a new cookie.
    s = _big_lab(tmp)
    p = LdapProxy(s)
    p.hold(BIG // 2)
    con = Consumer(tmp)
    d = feed(tmp, s, con, server=p.url, processes=4)
    wait_until(p.held, 60, 'the proxy to hold the refresh')
    wait_until(lambda: len(con.messages('add')) >= BIG // 2, 30, '%d adds' % (BIG // 2))
    first = len(con.messages('add'))
    s.kill()
    p.drop()
    p.release()
    s.start()
    wait_run(con, 0, timeout=60)
    stop_clean(d)
    r = check_run(con, 0, load_expected(s, d), reload=True, ordered=False)
    assert r.timeline[-1] == RD
    assert len(p.requests) == 2 and p.requests[1]['cookie'] is None, p.requests
    assert refresh_line(d)[4] == 0, refresh_line(d)
    note('%d adds before the kill, %d after' % (first, len(r.timeline) - 1 - first))
    assert 'reconnected' in d.stderr() and len(set(re.findall(r'ldapfeed\[(\d+)\] reader:', d.stderr()))) == 1
    assert_cookie_current(s, stored_cookie(d))
    check_model(con, s, d)


@test(timeout=100)
def t27_reader_killed_mid_refresh(tmp):
    # Scenario (T27): initial refresh of 5,000 people through an LdapProxy that stops the stream halfway; the
    # reader is SIGKILLed there.  The daemon exits non-zero without the marker; started again, it wipes the
    # store (no marker: doc/store.md, "When the store is trusted") and reloads: hello.reload true, every entry added
    # exactly once in that run (the adds of the killed run are superseded by the reload snapshot, not duplicated
    # into it), refresh_done, the copy equals the server, a new cookie.
    s = _big_lab(tmp)
    p = LdapProxy(s)
    p.hold(BIG // 2)
    con = Consumer(tmp)
    d = feed(tmp, s, con, server=p.url, processes=4)
    wait_until(p.held, 60, 'the proxy to hold the refresh')
    wait_until(lambda: len(con.messages('add')) >= BIG // 4, 30, 'adds to arrive')
    os.kill(reader_pid(d), signal.SIGKILL)
    rc = d.wait(15)
    assert rc != 0 and not d.marker_exists(), (rc, d.marker_exists())
    p.drop()
    p.release()
    r0 = Run(con, 0)
    assert r0.rd_count == 0 and r0.reload == [True] * r0.workers, (r0.rd_count, r0.reload)
    d2 = feed(tmp, s, con, server=p.url, processes=4)
    wait_run(con, 1, timeout=60)
    stop_clean(d2)
    r = check_run(con, 1, load_expected(s, d2), reload=True, ordered=False)
    assert r.timeline[-1] == RD
    assert 'wiping the store' in d2.stderr(), d2.stderr()
    assert_cookie_current(s, stored_cookie(d2))
    check_model(con, s, d2)


@test
def t28_size_limit(tmp):
    # Scenario (T28): the consumer identity cn=reader has no `limits` line, so slapd's default size limit (500)
    # applies; 600 people.  The run fails: slapd ends the search with result 4 after 500 entries, ldapfeed exits
    # 70 with a log line naming the size limit, no refresh_done, no marker, no cookie in the store; whatever
    # adds reached the consumer are real entries, each once.
    s = lab(tmp, people=(), reader_limits=False)
    s.add_people(600)
    con = Consumer(tmp)
    d = feed(tmp, s, con)
    rc = d.wait(30)
    assert rc == 70, 'exit %s; stderr:\n%s' % (rc, d.stderr())
    assert re.search(r'size limit exceeded', d.stderr(), re.I), d.stderr()
    assert not d.marker_exists()
    assert not con.messages('refresh_done'), 'refresh_done after a failed refresh'
    full, u = s.search(), s.uuids()
    adds = [summary(m) for m in con.messages('add')]
    assert len(adds) <= 500, len(adds)
    assert len({a[2] for a in adds}) == len(adds), 'an entry added twice'
    for a in adds:
        assert a == A(a[1], u[a[1]], full[a[1]]), a
    assert [m['type'] for m in con.events()] == ['add'] * len(adds), con.events()[-3:]
    assert b'cookie' not in store_meta(d.datadir), store_meta(d.datadir)


@test
def t29_acl_hides_attribute(tmp):
    # Scenario (T29): cn=reader may not read description (an ACL before the default ones).  The initial load as
    # cn=reader: A for every entry, none with description, refresh_done; the copy equals what cn=reader sees.
    s = lab(tmp, acl_prefix='access to attrs=description by dn.exact="%s" none by * read' % READER)
    con = Consumer(tmp)
    d = feed(tmp, s, con)
    wait_run(con, 0)
    stop_clean(d)
    assert s.search(attrs=['description'])['uid=alice,' + PEOPLE]['description'], 'rootdn sees no description'
    exp = load_expected(s, d)
    assert all('description' not in e[3] for e in exp[:-1])
    check_run(con, 0, exp, reload=True, ordered=False)
    assert_cookie_current(s, stored_cookie(d))
    check_model(con, s, d)


@test
def t30_acl_hides_entry_later(tmp):
    # Scenario (T30): V1, cn=reader synced; slapd restarts with an ACL that hides carol from cn=reader.  Resume:
    # refresh_done only -- an ACL change alone sends nothing, so the copy still holds carol while cn=reader no
    # longer sees her (the divergence doc/syncrepl.md, "What makes no traffic, and limits", and ldapfeed.8, CAVEATS,
    # document; a full reload would fix it).  A write to carol during persist: slapd sends only a newcookie, nothing
    # reaches the consumer, the cookie advances.  A write to carol while ldapfeed is down, then resume (V1 session
    # log): IdSet(D) for carol, so D(carol, stored attributes), refresh_done; now the copy equals cn=reader's view.
    s, con, d = synced(tmp, 'V1')
    before, u = view(s, d), s.uuids()
    carol = 'uid=carol,' + PEOPLE
    s.restart(acl_prefix='access to dn.exact="%s" by dn.exact="%s" none by * read' % (carol, READER))
    assert carol not in view(s, d)
    p = LdapProxy(s)
    d2 = feed(tmp, s, con, server=p.url)
    wait_run(con, 1)
    c1 = stored_cookie(d2)
    mine = copy_of(con)
    assert set(mine) - set(view(s, d2)) == {carol}, 'expected exactly carol to diverge: %r' % (
        set(mine) ^ set(view(s, d2)))
    note('documented divergence: the copy keeps %s, hidden from cn=reader by an ACL change' % carol)
    s.replace(carol, 'description', 'carol, hidden, written in persist')
    wait_cookie_current(s, d2)
    assert csns(stored_cookie(d2)) > csns(c1)
    assert p.results('newcookie'), 'no newcookie for the hidden write: %r' % p.server[-3:]
    stop_clean(d2)
    check_run(con, 1, [RD])
    c2 = stored_cookie(d2)
    s.replace(carol, 'description', 'carol, hidden, written while ldapfeed is down')
    p2 = LdapProxy(s)
    d3 = resume(tmp, s, con, d2, 2, server=p2.url)
    assert hexuuid(u[carol]) in deletes_seen(p2), 'no IdSet(D) for carol: %r' % p2.server
    check_run(con, 2, [D(carol, u[carol], before[carol]), RD])
    assert_advanced(s, c2, stored_cookie(d3))
    check_model(con, s, d3)


def _der_certificate(tmp):
    key, crt = os.path.join(tmp, 'k.pem'), os.path.join(tmp, 'c.der')
    r = subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
                        '-nodes', '-keyout', key, '-outform', 'DER', '-out', crt, '-subj', '/CN=t31', '-days', '2'],
                       capture_output=True, timeout=60)
    if r.returncode != 0:
        raise Skip('openssl cannot make a certificate: %s' % r.stderr.decode(errors='replace'))
    with open(crt, 'rb') as f:
        return f.read()


def _json_value(v):
    try:
        text = v.decode('utf-8')
    except UnicodeDecodeError:
        return {'base64': base64.b64encode(v).decode()}
    return {'base64': base64.b64encode(v).decode()} if '\0' in text else text


@test
def t31_large_and_binary_values(tmp):
    # Scenario (T31): two ldapfeeds (pickle and JSON) follow one slapd in persist; an entry is added with a 3 MiB
    # jpegPhoto (not UTF-8), a DER certificate under userCertificate;binary and a non-ASCII UTF-8 description.
    # Both get exactly A(entry) after refresh_done: pickle with the exact bytes; JSON with {"base64": ...} for
    # the non-UTF-8 values and a plain string for the description; attribute name "userCertificate;binary".
    s = lab(tmp)
    cert = _der_certificate(tmp)
    photo = b'\xff\xd8\xff\xe0' + os.urandom(3 * 1024 * 1024)
    text = 'Jörg Müller – ☃ 日本語'.encode()
    consumers = {}
    for fmt in ('pickle', 'json'):
        con = Consumer(tmp, fmt=fmt, name='consumer-' + fmt)
        d = feed(tmp, s, con, datadir=os.path.join(tmp, 'data-' + fmt), marker=os.path.join(tmp, 'marker-' + fmt))
        consumers[fmt] = (con, d)
    for con, d in consumers.values():
        wait_run(con, 0)
    dn = 'uid=big,' + PEOPLE
    s.add_entry(dn, {'objectClass': 'inetOrgPerson', 'uid': 'big', 'cn': 'Big', 'sn': 'Binary',
                     'jpegPhoto': photo, 'userCertificate;binary': cert, 'description': text})
    u = s.uuids()
    for fmt, (con, d) in consumers.items():
        wait_cookie_current(s, d, timeout=30)
        stop_clean(d)
        after = view(s, d)
        assert after[dn]['jpegPhoto'] == [photo] and after[dn]['userCertificate;binary'] == [cert]
        r = Run(con, 0)
        rd = r.timeline.index(RD)
        assert_events(r.timeline[rd + 1:], [A(dn, u[dn], after[dn])], what=fmt + ' events')
        attrs = r.events[rd + 1]['attrs']
        assert set(attrs) == {'objectClass', 'uid', 'cn', 'sn', 'jpegPhoto', 'userCertificate;binary',
                              'description'}, sorted(attrs)
        if fmt == 'pickle':
            assert attrs['jpegPhoto'] == [photo] and attrs['userCertificate;binary'] == [cert]
            assert attrs['description'] == [text]
        else:
            assert attrs['jpegPhoto'] == [_json_value(photo)] and isinstance(attrs['jpegPhoto'][0], dict)
            assert attrs['userCertificate;binary'] == [_json_value(cert)]
            assert attrs['description'] == [text.decode()]
        assert_cookie_current(s, stored_cookie(d))
        check_model(con, s, d)


@test
def t32_search_changed(tmp):
    # Scenario (T32): a store built for base dc=example,dc=com, stopped cleanly; ldapfeed starts on it with base
    # ou=people.  The fingerprint differs: the log says why, the store is wiped (seq starts at 1 again) and
    # reloaded: hello.reload true, A for each entry under ou=people, refresh_done; the copy (dropping what the
    # snapshot did not resend) equals the new search; the cookie is the current one.
    s, con, d = synced(tmp)
    d2 = feed(tmp, s, con, base=PEOPLE)
    wait_run(con, 1)
    stop_clean(d2)
    assert 'search differs' in d2.stderr(), d2.stderr()
    check_run(con, 1, load_expected(s, d2), reload=True, ordered=False)
    assert store_meta(d2.datadir)[b'search'].startswith(b'base=' + PEOPLE.encode() + b'\n')
    assert_cookie_current(s, stored_cookie(d2))
    check_model(con, s, d2)


@test
def t33_nopresent_loses_delete(tmp):
    # Scenario (T33): V4 (syncprov-nopresent, no log), down; bob is deleted.  Resume: slapd sends no present
    # list and no delete, so nothing but refresh_done arrives and the copy still holds bob -- the documented
    # provider limitation; the cookie advances.  Only a full reload fixes it: with the marker removed the next
    # start wipes and reloads (hello.reload), and the copy equals the server.
    s, con, d = synced(tmp, 'V4')
    c0 = stored_cookie(d)
    bob = 'uid=bob,' + PEOPLE
    s.delete(bob)
    d2 = resume(tmp, s, con, d, 1)
    check_run(con, 1, [RD])
    assert_advanced(s, c0, stored_cookie(d2))
    mine = copy_of(con)
    assert set(mine) - set(view(s, d2)) == {bob}, set(mine) ^ set(view(s, d2))
    os.unlink(d2.marker)
    d3 = resume(tmp, s, con, d2, 2)
    check_run(con, 2, load_expected(s, d3), reload=True, ordered=False)
    check_model(con, s, d3)


@test
def t34_no_syncprov(tmp):
    # Scenario (T34): the DB has no syncprov overlay; ldapfeed's critical Sync Request control gets 12
    # unavailableCriticalExtension: exit 70 with that reason in the log, no event, no refresh_done, no marker,
    # no cookie.
    s = lab(tmp, 'NONE')
    con = Consumer(tmp)
    d = feed(tmp, s, con)
    rc = d.wait(30)
    assert rc == 70, 'exit %s; stderr:\n%s' % (rc, d.stderr())
    assert re.search(r'critical extension is unavailable|unavailableCriticalExtension|\(12\)', d.stderr(), re.I), \
        d.stderr()
    assert not d.marker_exists()
    assert con.events() == [] and not con.messages('refresh_done'), con.messages()
    assert b'cookie' not in store_meta(d.datadir)


if __name__ == '__main__':
    main()
