#!/usr/bin/env python3
"""Which protocol ldapfeed follows a server with (doc/providers.md, "The
protocol"), and how the DirSync reader's startup refuses what it cannot
use, against the lab slapd and the scriptable fake LDAP server
(tests/tools/fake_ldap.py) playing a root DSE and a DirSync: the real
Active Directory matrix is tests/e2e/test_ad.py (make check-ad).
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'tools'))
from harness import *  # noqa: E402,F403
import harness  # noqa: E402
import fake_ldap as F  # noqa: E402

SUFFIX = 'DC=example,DC=test'
SYNC = '1.3.6.1.4.1.4203.1.9.1.1'
DIRSYNC = '1.2.840.113556.1.4.841'
NOTIFY = '1.2.840.113556.1.4.528'


class _Closer:
    def __init__(self, obj):
        self.obj = obj

    def _teardown(self):
        self.obj.close()


def fake_dc(controls, naming=(SUFFIX,), dirsync=None):
    """A fake server whose root DSE lists controls and naming contexts, and
    that answers every other search that carries DirSync's control with
    dirsync(msgid) (the bytes to send), every plain one with success."""
    def script(s, n):
        while True:
            req = s.recv(60)
            if req.op == F.BIND_REQ:
                s.send(F.bind_response(req.msgid))
            elif req.op == F.SEARCH_REQ and req.base == '' and req.scope == 0:
                s.send(F.entry(req.msgid, '', {'supportedControl': list(controls),
                                               'namingContexts': list(naming)}))
                s.send(F.search_done(req.msgid))
            elif req.op == F.SEARCH_REQ and DIRSYNC in req.controls and dirsync is not None:
                s.send(dirsync(req.msgid))
            elif req.op == F.SEARCH_REQ:
                s.send(F.search_done(req.msgid))
            elif req.op == F.UNBIND_REQ:
                return
    fake = F.FakeLdap(script)
    harness._register(_Closer(fake))
    return fake


def start(tmp, url, extra=()):
    con = Consumer(tmp)
    return Daemon(tmp, None, con, url=url, processes=3, extra=list(extra))


def refused(d, code, words, timeout=20):
    """The start ends with code, within timeout s, on a line naming words."""
    t0 = time.monotonic()
    rc = d.wait(timeout)
    err = d.stderr()
    lines = [ln for ln in err.splitlines() if all(w in ln for w in words)]
    assert rc == code and lines, 'exit %s (expected %s), no line naming %r:\n%s' % (rc, code, words, err[-2000:])
    note('exit %d after %.1f s: %s' % (rc, time.monotonic() - t0, lines[0].split('] ')[-1]))


@test
def usage(tmp):
    # --protocol takes syncrepl or dirsync, --poll-interval 1 to 86400
    # seconds: anything else is a usage error (64) naming the flag.
    con = Consumer(tmp)
    base = ['-H', 'ldap://127.0.0.1:9/dc=x', '-D', os.path.join(tmp, 'data'), '-m', os.path.join(tmp, 'm'),
            '-o', con.address, '-k', con.keyfile, '-f']
    for extra, word in ((['--protocol', 'rfc4533'], '--protocol'), (['--poll-interval', '0'], '--poll-interval'),
                        (['--poll-interval', 'soon'], '--poll-interval'),
                        (['--poll-interval', '86401'], '--poll-interval')):
        d = Daemon(tmp, None, None, argv=base + extra)
        refused(d, 64, [word])


@test
def neither(tmp):
    # A root DSE that lists its controls, with neither RFC 4533's sync nor
    # DirSync: refused at startup, 78, both named.
    fake = fake_dc(['1.2.840.113556.1.4.319'])
    refused(start(tmp, ldap_url(fake.url, SUFFIX)), 78, ['RFC 4533', 'DirSync'])


@test
def dirsync_forced_on_slapd(tmp):
    # --protocol dirsync against slapd (its root DSE lists no DirSync):
    # refused at startup, 78, naming DirSync.
    s = Slapd(tmp)
    con = Consumer(tmp)
    d = Daemon(tmp, s, con, processes=3, extra=['--protocol', 'dirsync'])
    refused(d, 78, ['does not offer DirSync'])


@test
def dirsync_right_missing(tmp):
    # The root DSE offers DirSync and not RFC 4533: ldapfeed takes DirSync;
    # its startup DirSync is answered insufficientAccessRights (50): refused,
    # 78, naming the right to grant.
    fake = fake_dc([DIRSYNC, NOTIFY], dirsync=lambda msgid: F.search_done(msgid, 50, 'no get-changes'))
    refused(start(tmp, ldap_url(fake.url, SUFFIX)), 78, ['Replicating Directory Changes'])


@test
def dirsync_unexpected_answer(tmp):
    # The startup DirSync answered with an ExtendedResponse (result 12) and
    # nothing more: refused at once, 78, naming the answer, never a hang.
    fake = fake_dc([DIRSYNC], dirsync=lambda msgid: F.message(msgid, F.ldap_result(
        F.EXT_RESP, 12, text='Critical extension is unavailable')))
    refused(start(tmp, ldap_url(fake.url, SUFFIX)), 78, ['extended response', 'result 12'])


@test
def base_outside_naming_contexts(tmp):
    # DirSync reads a naming context from its root: a base in none of the
    # root DSE's namingContexts is refused, 78, the base named.
    fake = fake_dc([DIRSYNC], naming=['DC=other,DC=test'])
    refused(start(tmp, ldap_url(fake.url, 'OU=People,' + SUFFIX)), 78, ['OU=People', 'naming context'])


if __name__ == '__main__':
    main()
