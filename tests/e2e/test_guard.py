"""The mass-delete guard end to end (doc/safety.md; ldapfeed.8, --max-delete
and EXIT STATUS): a lab slapd, ldapfeed, a Python Listener.

An access-control change that hides most of the tree, seen by a resume as
a present phase (the sweep) or by a full reload (the consumer's drops at
refresh_done); a mass delete made while ldapfeed was down, seen through a
session log as one syncIdSet per entry; a subtree moved out of the search
while ldapfeed follows it (the reconcile's cascade).  Each time: ldapfeed
stops with status 65 and a message naming the deletes, the store size and
the limit; no delete of the batch reaches the consumer; the store's entries
and cookie are as they were; the next start with the same flags stops the
same way; the next with a raised limit delivers exactly those deletes,
once.  And a small delete passes under the default.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F403
from test_conformance import (  # noqa: E402
    PEOPLE, SUFFIX, Run, StrictModel, check_model, deletes_of, entries_dump, feed,
    guard_stop, lab, person, stop_clean, store_meta, stored_cookie, wait_cookie_current, wait_run)

READER = 'cn=reader,' + SUFFIX
CORP = 'ou=corp,' + SUFFIX
STAFF = 'ou=staff,' + CORP
ELSEWHERE = 'ou=elsewhere,' + SUFFIX


def hide_people():
    """An ACL line that hides uid=user00050..user00249 (Slapd.add_people's
    numbers) from cn=reader."""
    return ('access to dn.regex="^uid=user00(0[5-9][0-9]|1[0-9][0-9]|2[0-4][0-9]),ou=people,dc=example,dc=com$" '
            'by dn.exact="%s" none by * read' % READER)


def people_lab(tmp, n, variant='V0', **kw):
    s = lab(tmp, variant, people=(), **kw)
    s.add_people(n)
    return s


def synced(tmp, s, con, **kw):
    d = feed(tmp, s, con, **kw)
    wait_run(con, 0)
    stop_clean(d)
    return d


@test(timeout=180)
def acl_hides_most_of_the_tree(tmp):
    # Scenario: V0 (no session log), 300 people, store in sync, ldapfeed stopped cleanly.  An ACL now hides 200 of
    # them from cn=reader, and a write to a hidden entry moves the directory on, so the resume is a present phase
    # that lists only what is visible: the sweep would delete 200 of the 304 entries the consumer holds.  Refused
    # (65), nothing of it sent, the store's entries and cookie unchanged; the same start again stops the same way;
    # --max-delete 200 lets exactly the 200 deletes through, once; a later start sends nothing.
    s = people_lab(tmp, 300)
    con = Consumer(tmp)
    d = synced(tmp, s, con)
    stored = len(s.search(bind='reader'))
    hidden = s.uuids()
    hidden = sorted(hidden['uid=user%05d,%s' % (i, PEOPLE)] for i in range(50, 250))
    s.restart(acl_prefix=hide_people())
    s.replace('uid=user00100,' + PEOPLE, 'description', 'changed while hidden')
    dump, cookie = entries_dump(d.datadir), stored_cookie(d)

    d1 = feed(tmp, s, con)
    guard_stop(d1, 200, stored, 'this refresh')
    assert deletes_of(con, 1) == [], 'deletes reached the consumer: %r' % deletes_of(con, 1)[:5]
    assert entries_dump(d.datadir) == dump, 'the store\'s entries changed'
    assert stored_cookie(d) == cookie, 'the cookie moved: %r -> %r' % (cookie, stored_cookie(d))

    d2 = feed(tmp, s, con)
    guard_stop(d2, 200, stored, 'this refresh')
    assert entries_dump(d.datadir) == dump and stored_cookie(d) == cookie

    d3 = feed(tmp, s, con, extra=['--max-delete', '200'])
    wait_run(con, 3)
    stop_clean(d3)
    assert deletes_of(con, 3) == hidden, 'run 3 deleted %d, not the 200 hidden' % len(deletes_of(con, 3))
    d4 = feed(tmp, s, con)
    wait_run(con, 4)
    stop_clean(d4)
    assert Run(con, 4).timeline == [('refresh_done',)], Run(con, 4).timeline[:5]
    check_model(con, s, d4)


@test(timeout=120)
def small_delete_passes(tmp):
    # Scenario: V0, 300 people in sync; while ldapfeed is down 5 are deleted and the present phase of the resume
    # sweeps them: under the default guard (50% and more than 100) they pass, the run ends 0 with the 5 deletes.
    s = people_lab(tmp, 300)
    con = Consumer(tmp)
    synced(tmp, s, con)
    u = s.uuids()
    gone = ['uid=user%05d,%s' % (i, PEOPLE) for i in range(5)]
    for dn in gone:
        s.delete(dn)
    d1 = feed(tmp, s, con)
    wait_run(con, 1)
    stop_clean(d1)
    assert deletes_of(con, 1) == sorted(u[dn] for dn in gone), deletes_of(con, 1)
    assert 'mass-delete guard' not in d1.stderr()
    check_model(con, s, d1)


@test(timeout=180)
def mass_delete_through_session_log(tmp):
    # Scenario: V1 (a session log of 1000), 250 people in sync; slapd restarted (its log reseeded at our cookie),
    # then 150 people deleted while ldapfeed is down.  slapd sends one syncIdSet per deleted entry: the guard
    # must weigh the whole refresh, not one message.  Refused (65): no delete sent, entries and cookie
    # unchanged; --max-delete 60% lets the 150 through, once.
    s = people_lab(tmp, 250, 'V1', sessionlog=1000)
    con = Consumer(tmp)
    d = synced(tmp, s, con)
    stored = len(s.search(bind='reader'))
    s.restart()
    u = s.uuids()
    gone = ['uid=user%05d,%s' % (i, PEOPLE) for i in range(150)]
    s.tool('ldapdelete', gone)
    dump, cookie = entries_dump(d.datadir), stored_cookie(d)
    d1 = feed(tmp, s, con)
    guard_stop(d1, 150, stored, 'this refresh')
    assert deletes_of(con, 1) == []
    assert entries_dump(d.datadir) == dump and stored_cookie(d) == cookie
    d2 = feed(tmp, s, con, extra=['--max-delete', '60%'])
    wait_run(con, 2)
    stop_clean(d2)
    assert deletes_of(con, 2) == sorted(u[dn] for dn in gone), len(deletes_of(con, 2))
    check_model(con, s, d2)


@test(timeout=180)
def full_reload_guarded(tmp):
    # Scenario: V0, 300 people in sync, stopped cleanly; the marker is deleted (a forced full reload) and an ACL
    # hides 200 people.  The reload's snapshot holds 104 entries: at its refresh_done the consumer would drop
    # 200 of the 304 it holds.  Refused (65) before refresh_done; the next start with the same flags stops the
    # same way; with --max-delete 100% the snapshot ends with refresh_done and the consumer's copy is the
    # server's view.
    s = people_lab(tmp, 300)
    con = Consumer(tmp)
    d = synced(tmp, s, con)
    stored = len(s.search(bind='reader'))
    s.restart(acl_prefix=hide_people())
    os.unlink(d.marker)
    d1 = feed(tmp, s, con)
    guard_stop(d1, 200, stored, 'full reload')
    r = Run(con, 1)
    assert r.reload == [True] * r.workers and r.rd_count == 0, (r.reload, r.rd_count)
    d2 = feed(tmp, s, con)
    guard_stop(d2, 200, stored, 'full reload')
    assert Run(con, 2).rd_count == 0
    d3 = feed(tmp, s, con, extra=['--max-delete', '100%'])
    wait_run(con, 3)
    stop_clean(d3)
    m = StrictModel.from_consumer(con)
    assert len(m.entries) == stored - 200, len(m.entries)
    check_model(con, s, d3)


@test(timeout=180)
def subtree_cascade_in_persist(tmp):
    # Scenario: persist, base ou=corp holding ou=staff with 30 people, --max-delete 10.  ou=staff moves out of
    # ou=corp: slapd sends one delete (the root's, which goes through), and the reconcile of its 30 stored
    # descendants would delete them all.  Refused (65): none of the 30 deletes sent, the task pending in the
    # store; the same start again stops the same way (it runs the task first); --max-delete 30 delivers the 30
    # deletes once, and the copy equals the server's view.
    s = lab(tmp, people=(), ous=(CORP, STAFF, ELSEWHERE))
    s.add(b''.join(ldif_entry(*person('p%02d' % i, STAFF)) for i in range(30)))
    con = Consumer(tmp)
    d = feed(tmp, s, con, base=CORP, extra=['--max-delete', '10'])
    wait_run(con, 0)
    stored = len(s.search(CORP, bind='reader'))
    u = s.uuids()
    s.modrdn(STAFF, 'ou=staff', newsuperior=ELSEWHERE)
    guard_stop(d, 30, stored - 1, "reconcile of the entries stored below " + STAFF)
    dels = deletes_of(con, 0)
    assert dels == [u[STAFF]], 'deletes sent: %d (%r)' % (len(dels), dels[:3])
    assert b'cookie' in store_meta(d.datadir)
    d1 = feed(tmp, s, con, base=CORP, extra=['--max-delete', '10'])
    guard_stop(d1, 30, stored - 1, 'reconcile of the entries stored below ' + STAFF)
    assert deletes_of(con, 1) == []
    d2 = feed(tmp, s, con, base=CORP, extra=['--max-delete', '30'])
    wait_run(con, 2)
    wait_cookie_current(s, d2)
    stop_clean(d2)
    want = sorted(u['uid=p%02d,%s' % (i, STAFF)] for i in range(30))
    assert deletes_of(con, 2) == want, '%d deletes in run 2' % len(deletes_of(con, 2))
    check_model(con, s, d2)


if __name__ == '__main__':
    main()
