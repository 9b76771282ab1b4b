#!/usr/bin/env python3
"""How ldapfeed's reader handles the ends of a sync search, against the
scriptable fake LDAP server (tests/tools/fake_ldap.py): e-syncRefreshRequired
with and without a cookie (RFC 4533 section 3.8), a SearchResultDone that
ends a refreshAndPersist search during its refresh, a canceled result the
client never asked for, a refreshOnly search that ends its refresh with
an intermediate before the SearchResultDone, and a sync search answered by a
response no search gets (an ExtendedResponse, as Samba AD sends, or a
BindResponse), which must end the run rather than hang it.

Each test resumes from a store built by one clean refreshOnly run against
the fake server (entries one and two, PREP_COOKIE, the marker).
"""

import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'tools'))
from harness import *  # noqa: E402,F403
import harness  # noqa: E402
import fake_ldap as F  # noqa: E402

SUFFIX = 'dc=example,dc=com'
U1 = F.uuid_bytes('11111111-2222-4333-8444-555555555501')
U2 = F.uuid_bytes('11111111-2222-4333-8444-555555555502')
U3 = F.uuid_bytes('11111111-2222-4333-8444-555555555503')
U4 = F.uuid_bytes('11111111-2222-4333-8444-555555555504')
PREP_COOKIE = b'rid=000,csn=20240101000000.000000Z#000000#000#000000'
NEXT_COOKIE = b'rid=000,csn=20240101000001.000000Z#000000#000#000000'
RESUME_COOKIE = b'rid=000,csn=20240101000001.500000Z#000000#000#000000'
LATER_COOKIE = b'rid=000,csn=20240101000002.000000Z#000000#000#000000'


# ---------------------------------------------------------------- helpers

def _dev(cn):
    return {'objectClass': [b'device'], 'cn': [cn.encode()]}


def _add(msgid, cn, uuid):
    return F.entry(msgid, 'cn=%s,%s' % (cn, SUFFIX), _dev(cn), [F.sync_state(F.ADD, uuid)])


def _present(msgid, cn, uuid):
    """A present-state entry (RFC 4533 section 3.3.2: no attributes)."""
    return F.entry(msgid, 'cn=%s,%s' % (cn, SUFFIX), {}, [F.sync_state(F.PRESENT, uuid)])


def _end_refresh(s, req, cookie=None):
    """refreshDelete{cookie, refreshDone TRUE}: the refresh of a persist search ends."""
    s.send(F.intermediate(req.msgid, value=F.info_refresh('delete', cookie)))


class _Closer:
    def __init__(self, obj):
        self.obj = obj

    def _teardown(self):
        self.obj.close()


def _fake(script):
    fake = F.FakeLdap(script)
    harness._register(_Closer(fake))
    return fake


def _prep_script(s, n):
    req = s.serve_until_sync()
    s.send(_add(req.msgid, 'one', U1))
    s.send(_add(req.msgid, 'two', U2))
    s.send(F.search_done(req.msgid, controls=[F.sync_done(PREP_COOKIE, True)]))
    s.serve_rest()


def fake_template(tmp):
    """A store built by one clean refreshOnly run against the fake server:
    entries one and two, PREP_COOKIE; (datadir, marker)."""
    d0 = os.path.join(tmp, 'template')
    os.makedirs(d0)
    fake = _fake(_prep_script)
    con = Consumer(d0)
    d = Daemon(d0, None, con, processes=3, mode='refresh', url=ldap_url(fake.url, SUFFIX))
    rc = d.wait(30)
    assert rc == 0 and d.marker_exists(), 'preparing run: exit %s\n%s\n%s' % (rc, d.stderr(), fake.errors)
    assert fake.errors == [], fake.errors
    info = store_info(d.datadir)
    assert info is None or (info['entries'] == 2 and info['cookie'] == PREP_COOKIE), info
    fake.close()
    con.close()
    return d.datadir, d.marker


class FakeCase:
    """One resumed run against a fake server running script: a copy of the
    template store, a consumer, ldapfeed (persist mode unless told)."""

    def __init__(self, tmp, name, script, mode='persist'):
        template = fake_template(tmp)
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        self.datadir = os.path.join(self.dir, 'data')
        self.marker = os.path.join(self.dir, 'marker')
        shutil.copytree(template[0], self.datadir)
        shutil.copy2(template[1], self.marker)
        self.fake = _fake(script)
        self.con = Consumer(self.dir)
        self.d = Daemon(self.dir, None, self.con, processes=3, url=ldap_url(self.fake.url, SUFFIX),
                        datadir=self.datadir, marker=self.marker, mode=mode)

    def syncs(self, n):
        """The first n sync searches, once there are n (for wait_until)."""
        reqs = self.fake.sync_requests()
        return len(reqs) >= n and reqs[:n]

    def stop(self, out, timeout=30):
        """SIGTERM; notes in out unless exit 0 with the marker."""
        try:
            rc = self.d.stop(timeout)
        except AssertionError as e:
            self.d.kill_group()
            out.append(str(e).splitlines()[0])
            return None
        if rc != 0 or not self.d.marker_exists():
            out.append('SIGTERM: exit %s, marker %s' % (rc, self.d.marker_exists()))
        return rc

    def check(self, out):
        """What every case must hold: no crash, no fake-server error, the stored
        cookie sent first, no process left; the store once stopped (or None)."""
        err = self.d.stderr()
        rc = self.d.returncode
        if rc is not None and rc < 0:
            out.append('killed by signal %d' % -rc)
        if crash_lines(err):
            out.append('crash: %r' % crash_lines(err))
        if self.fake.errors:
            out.append('fake server: %s' % self.fake.errors[0])
        first = self.fake.sync_requests()[:1]
        if first and first[0].cookie != PREP_COOKIE:
            out.append('the first sync search sent cookie %r, not the stored %r' % (first[0].cookie, PREP_COOKIE))
        try:
            wait_until(lambda: not instance_procs(self.datadir), 15, 'no process left')
        except AssertionError:
            out.append('processes left: %r' % instance_procs(self.datadir))
        return store_info(self.datadir) if rc is not None else None

    def fail(self, out):
        tail = '\n    '.join(self.d.stderr().splitlines()[-12:])
        return '%s\n  sync searches: %r\n  ldapfeed stderr (tail):\n    %s' % (
            '; '.join(out), self.fake.sync_requests()[:8], tail)


def _events(con):
    return [(m['type'], m['dn']) for m in con.events()]


# ---------------------------------------------------------------- e-syncRefreshRequired

@test(timeout=120)
def refresh_required_with_cookie_resumes(tmp):
    # Scenario: persist.  Connection 0: the resumed refresh delivers entry three and ends with
    # refreshDelete{NEXT}; then the server hangs up.  ldapfeed reconnects with NEXT; the server answers that
    # search with SearchResultDone e-syncRefreshRequired (4096) carrying a Sync Done control {RESUME}.
    # RFC 4533 section 3.8: a cookie in that response means an incremental refresh with that cookie, so the
    # next sync search carries RESUME (not none: that would be a full refresh against the store).  The server
    # answers it incrementally (entry four, refreshDelete{LATER}): the consumer gets add three and add four and
    # no delete, no line says "full refresh against the store"; SIGTERM -> exit 0, marker, the store holds
    # four entries and LATER.
    def script(s, n):
        req = s.serve_until_sync()
        if n == 0:
            s.send(_add(req.msgid, 'three', U3))
            _end_refresh(s, req, NEXT_COOKIE)
            return                                  # hang up
        # the second sync search, on whichever connection it comes (the
        # connection count is not the test's: it failed once under load)
        if len(s.server.sync_requests()) == 2:
            s.send(F.refresh_required(req.msgid, RESUME_COOKIE, 'an incremental refresh is needed'))
            req = s.serve_until_sync()
        s.send(_add(req.msgid, 'four', U4))
        _end_refresh(s, req, LATER_COOKIE)
        s.serve_rest()
    case = FakeCase(tmp, 'reqcookie', script)
    out = []
    reqs = wait_until(lambda: case.syncs(3), 30, 'a third sync search (after the reconnect and the 4096)')
    if reqs[1].cookie != NEXT_COOKIE:
        out.append('the reconnect sent cookie %r, expected %r' % (reqs[1].cookie, NEXT_COOKIE))
    if reqs[2].cookie != RESUME_COOKIE:
        out.append('the search after 4096 + Sync Done{cookie} sent cookie %r, expected the one in the Sync Done '
                   '(%r)' % (reqs[2].cookie, RESUME_COOKIE))
    try:
        # one "refresh done" line per refresh that ended: connection 0's, then the third search's
        wait_until(lambda: case.d.stderr().count('refresh done in') >= 2, 20, 'the third search\'s refresh to end')
    except AssertionError as e:
        out.append(str(e).splitlines()[0])
    ev = _events(case.con)
    if ev != [('add', 'cn=three,' + SUFFIX), ('add', 'cn=four,' + SUFFIX)]:
        out.append('events %r, expected add three and add four only' % ev)
    reload = [ln for ln in case.d.stderr().splitlines() if 'full refresh against the store' in ln]
    if reload:
        out.append('a full refresh: %s' % reload[0])
    case.stop(out)
    info = case.check(out)
    if info is not None and (info['entries'] != 4 or info['cookie'] != LATER_COOKIE):
        out.append('store %r, expected 4 entries and %r' % (info, LATER_COOKIE))
    assert not out, case.fail(out)
    note('4096 with a cookie: searched again with %r' % reqs[2].cookie)


@test(timeout=120)
def repeated_refresh_required_backs_off(tmp):
    # Scenario: persist; the fake server answers every sync search with SearchResultDone
    # e-syncRefreshRequired (4096) and no Sync Done control, the cookie-less search after the first one too.
    # ldapfeed must not search in a tight loop: within 6 s of the first sync search at most 5 sync searches
    # (a backoff of 1, 2, 4 s ...), or it gives up with exit 70 (a 4096 to a search without a cookie is a
    # protocol error).  If it is still running, SIGTERM -> exit 0; no crash, no other exit status, no delete
    # reaches the consumer and the store keeps its two entries (no refresh ever ended).
    times = []          # time.monotonic() of each sync search

    def script(s, n):
        while True:
            req = s.serve_until_sync()
            times.append(time.monotonic())
            s.send(F.refresh_required(req.msgid, text='sync cookie is stale'))
    case = FakeCase(tmp, 'again4096', script)
    out = []
    wait_until(lambda: times, 20, 'the first sync search')
    wait_until(lambda: case.d.returncode is not None or len(times) > 5 or time.monotonic() - times[0] >= 6, 10,
               'six seconds, an exit or a sixth sync search', interval=0.05)
    seen = list(times)
    took = seen[-1] - seen[0]
    searches = len([t for t in seen if t - seen[0] <= 6])
    rc = case.d.returncode
    if searches > 5:
        out.append('%d sync searches within %.3f s (at most 5 in 6 s): a tight loop' % (len(seen), took))
    if rc is None:
        outcome = 'still running, %d sync searches in the first 6 s' % searches
        case.stop(out)
    elif rc == 70:
        outcome = 'exit 70 after %d sync searches: %s' % (searches, case.d.stderr().splitlines()[-3:])
        if case.d.marker_exists():
            out.append('exit 70 with the marker written')
    else:
        outcome = 'exit %s' % rc
        out.append('exit %s (expected to keep running, or 70)' % rc)
    if any(t == 'delete' for t, _ in _events(case.con)):
        out.append('deletes reached the consumer: %r' % _events(case.con))
    info = case.check(out)
    if info is not None and info['entries'] != 2:
        out.append('store %r, expected its 2 entries' % info)
    assert not out, case.fail(out)
    note('repeated 4096: %s' % outcome)


# ---------------------------------------------------------------- SearchResultDone in persist

@test(timeout=120)
def persist_search_done_during_refresh_keeps_cookie(tmp):
    # Scenario: persist; the fake server answers the resumed sync search with entries one and two as
    # present, three and four as adds, then ends the search with SearchResultDone (success) carrying a Sync
    # Done control {DONE cookie, refreshDeletes FALSE}, never a refreshPresent/refreshDelete intermediate.
    # As OpenLDAP's own consumer does, the refresh counts as complete and its cookie is kept: the consumer
    # gets add three, add four, no delete, and a refresh_done from every worker; ldapfeed searches again
    # (persist) and that sync search carries the DONE cookie; it keeps running; SIGTERM -> exit 0, marker,
    # the store holds four entries and the DONE cookie.
    def script(s, n):
        req = s.serve_until_sync()
        if len(s.server.sync_requests()) == 1:
            s.send(_present(req.msgid, 'one', U1))
            s.send(_present(req.msgid, 'two', U2))
            s.send(_add(req.msgid, 'three', U3))
            s.send(_add(req.msgid, 'four', U4))
            s.send(F.search_done(req.msgid, controls=[F.sync_done(NEXT_COOKIE, False)]))
            req = s.serve_until_sync()
        # the next search: the server stays in its refresh (nothing to send)
        s.serve_rest()
    case = FakeCase(tmp, 'persistdone', script)
    out = []
    reqs = wait_until(lambda: case.syncs(2), 20, 'a second sync search')
    if reqs[1].cookie != NEXT_COOKIE:
        out.append('the search after Done{cookie} sent cookie %r, expected the Sync Done\'s %r'
                   % (reqs[1].cookie, NEXT_COOKIE))
    try:
        case.con.wait_refresh_done(timeout=10)
    except AssertionError as e:
        out.append('no refresh_done: %s' % e)
    ev = _events(case.con)
    if ev != [('add', 'cn=three,' + SUFFIX), ('add', 'cn=four,' + SUFFIX)]:
        out.append('events %r, expected add three and add four only' % ev)
    if not case.d.alive():
        out.append('exited (%s) after the search ended' % case.d.returncode)
    case.stop(out)
    info = case.check(out)
    if info is not None and (info['entries'] != 4 or info['cookie'] != NEXT_COOKIE):
        out.append('store %r, expected 4 entries and %r' % (info, NEXT_COOKIE))
    assert not out, case.fail(out)


@test(timeout=120)
def unsolicited_canceled_is_a_reconnect(tmp):
    # Scenario: persist; the resumed refresh ends (refreshDelete{NEXT}), then the fake server ends the search
    # with SearchResultDone canceled (118) although ldapfeed never sent a Cancel (a server that stops
    # processing a sync search, RFC 4533 section 3.7, not an answer to ours).  That is no stop: ldapfeed
    # keeps following the directory (no exit, no marker written as if stopped): a new sync search arrives
    # within 20 s carrying NEXT; the server ends that refresh quietly; ldapfeed is still running 2 s later;
    # SIGTERM (its own Cancel answered with 118) -> exit 0, marker.
    def script(s, n):
        req = s.serve_until_sync()
        if len(s.server.sync_requests()) == 1:
            _end_refresh(s, req, NEXT_COOKIE)
            s.send(F.search_done(req.msgid, F.CANCELED, 'canceled by the server'))
            req = s.serve_until_sync()
        _end_refresh(s, req)
        s.serve_rest()
    case = FakeCase(tmp, 'canceled', script)
    out = []
    try:
        wait_until(lambda: case.d.returncode is not None or case.syncs(2), 20,
                   'a new sync search after the unsolicited 118')
    except AssertionError as e:
        out.append(str(e).splitlines()[0])
    if case.d.returncode is not None:
        out.append('ldapfeed stopped after an unsolicited 118: exit %s, marker %s'
                   % (case.d.returncode, case.d.marker_exists()))
    else:
        reqs = case.fake.sync_requests()
        if len(reqs) >= 2 and reqs[1].cookie != NEXT_COOKIE:
            out.append('the search after 118 sent cookie %r, expected %r' % (reqs[1].cookie, NEXT_COOKIE))
        t1 = time.monotonic()
        try:
            wait_until(lambda: case.d.returncode is not None or time.monotonic() - t1 >= 2, 5,
                       'two seconds or an exit', interval=0.05)
        except AssertionError as e:
            out.append(str(e).splitlines()[0])
        if case.d.returncode is not None:
            out.append('exited (%s) after searching again' % case.d.returncode)
        else:
            case.stop(out)
    case.check(out)
    assert not out, case.fail(out)


# ---------------------------------------------------------------- refreshOnly

@test(timeout=120)
def refresh_only_refreshdone_intermediate_then_done(tmp):
    # Scenario: refreshOnly; the fake server answers the resumed sync search with entries one and two as
    # present and entry three as an add, then a refreshPresent intermediate whose refreshDone is absent
    # (DEFAULT TRUE) with cookie NEXT, then SearchResultDone (success) with a Sync Done control {NEXT}.  The
    # intermediate's refreshDone flag should be FALSE in refreshOnly (RFC 4533 section 3.3.2), but the
    # search's end is the Done: accepted, as OpenLDAP's consumer does.  The consumer gets add three (no
    # delete) and a refresh_done, ldapfeed exits 0 on its own with the marker after one sync search, and the
    # store holds three entries and NEXT.
    def script(s, n):
        req = s.serve_until_sync()
        s.send(_present(req.msgid, 'one', U1))
        s.send(_present(req.msgid, 'two', U2))
        s.send(_add(req.msgid, 'three', U3))
        s.send(F.intermediate(req.msgid, value=F.info_refresh('present', NEXT_COOKIE)))
        s.send(F.search_done(req.msgid, controls=[F.sync_done(NEXT_COOKIE)]))
        s.serve_rest()
    case = FakeCase(tmp, 'rodone', script, mode='refresh')
    out = []
    try:
        rc = case.d.wait(20)
    except AssertionError as e:
        rc = None
        out.append(str(e).splitlines()[0])
        case.d.kill_group()
    if rc is not None and (rc != 0 or not case.d.marker_exists()):
        fatal = [ln for ln in case.d.stderr().splitlines() if 'refreshDone' in ln]
        out.append('exit %s, marker %s%s' % (rc, case.d.marker_exists(), ': ' + fatal[0] if fatal else ''))
    ev = _events(case.con)
    if ev != [('add', 'cn=three,' + SUFFIX)]:
        out.append('events %r, expected add three only' % ev)
    if not case.con.messages('refresh_done'):
        out.append('no refresh_done')
    if len(case.fake.sync_requests()) != 1:
        out.append('%d sync searches, expected one' % len(case.fake.sync_requests()))
    info = case.check(out)
    if info is not None and (info['entries'] != 3 or info['cookie'] != NEXT_COOKIE):
        out.append('store %r, expected 3 entries and %r' % (info, NEXT_COOKIE))
    assert not out, case.fail(out)


# ---------------------------------------------------------------- not a search's answer

def _unexpected_answer(tmp, name, answer, expect):
    """A first start against a fake server that answers the sync search
    with answer(msgid) and then says nothing more, the connection open
    (what Samba AD does with the Sync Request control: an ExtendedResponse,
    result 12).  ldapfeed must end the run by itself, exit 70, within 10 s,
    with a line naming what the server said (every string of expect)."""
    def script(s, n):
        req = s.serve_until_sync()
        s.send(answer(req.msgid))
        s.serve_rest()
    fake = _fake(script)
    con = Consumer(tmp)
    d = Daemon(tmp, None, con, processes=3, url=ldap_url(fake.url, SUFFIX))
    out = []
    t0 = time.monotonic()
    try:
        rc = d.wait(10)
    except AssertionError:
        rc = None
        out.append('still running 10 s after the answer: a hang')
        d.kill_group()
    took = time.monotonic() - t0
    err = d.stderr()
    if rc is not None and rc != 70:
        out.append('exit %s, expected 70' % rc)
    lines = [ln for ln in err.splitlines() if all(e in ln for e in expect)]
    if not lines:
        out.append('no line naming %r' % (expect,))
    if crash_lines(err):
        out.append('crash: %r' % crash_lines(err))
    if fake.errors:
        out.append('fake server: %s' % fake.errors[0])
    assert not out, '%s; stderr tail:\n%s' % ('; '.join(out), '\n'.join(err.splitlines()[-8:]))
    note('%s: exit %s after %.1f s: %s' % (name, rc, took, lines[0].split('] ')[-1]))


@test(timeout=60)
def extended_response_to_the_sync_search(tmp):
    # Scenario: a first start; the fake server answers the sync search with an ExtendedResponse carrying the
    # search's messageID, result 12 "Critical extension is unavailable" (Samba AD's answer to the Sync Request
    # control), and then nothing, the connection left open.  ldapfeed ends the run by itself (exit 70, within
    # 10 s) with a line that says what the server answered: the result code and the server's text.
    _unexpected_answer(tmp, 'extended response 12', lambda msgid: F.message(msgid, F.ldap_result(
        F.EXT_RESP, 12, text='Critical extension is unavailable')),
        ('extended response', 'result 12', 'Critical extension is unavailable'))


@test(timeout=60)
def bind_response_to_the_sync_search(tmp):
    # Scenario: a first start; the fake server answers the sync search with a BindResponse (success) carrying
    # the search's messageID, and then nothing.  No search ever ends that way: ldapfeed ends the run (exit 70,
    # within 10 s) naming it a bind response.
    _unexpected_answer(tmp, 'bind response', lambda msgid: F.bind_response(msgid, 0),
                       ('protocol error', 'bind response', 'result 0'))


if __name__ == '__main__':
    main()
