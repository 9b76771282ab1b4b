"""ldapfeed --check end to end (doc/safety.md, "The configuration check";
ldapfeed.8, --check and EXIT STATUS): a lab slapd, a Python Listener.

With everything right: one "ok" line per check, exit 0, and nothing
changed anywhere: the data directory not created (or its store, marker and
lock untouched), the consumer's one connection authenticated and closed
with no message.  With one thing wrong at a time: a FAIL line naming it,
and the exit status a start would have had.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F403
from test_conformance import PEOPLE, SUFFIX, feed, lab, stop_clean, wait_run  # noqa: E402

READER = 'cn=reader,' + SUFFIX


def check(tmp, s, con, base=None, password=None, extra=(), **kw):
    """Run ldapfeed --check (bound as cn=reader); returns (status, stdout
    lines, the Daemon)."""
    url = ldap_url(s, base or s.suffix, exts=['bindname=' + s.reader_dn])
    d = Daemon(tmp, s, con, url=url, password=s.reader_pw if password is None else password,
               extra=['--check'] + list(extra), **kw)
    rc = d.wait(30)
    lines = [ln for ln in d.stdout().splitlines() if ln.strip()]
    note(*lines)
    return rc, lines, d


@test(timeout=90)
def check_passes_and_changes_nothing(tmp):
    # Scenario: everything right, a fresh data directory that does not exist yet.  --check exits 0, every line
    # "ok" (flags, password file, key file, pidfile, marker, data directory, LDAP bind, base, syncrepl,
    # entryUUID, consumer); the data directory is still absent; the consumer saw one authenticated connection
    # that closed without a message.  Then, on a store left by a clean run (marker there): the same, the store,
    # marker and data directory byte for byte as they were, and a start right after resumes from the store.
    s = lab(tmp)
    con = Consumer(tmp)
    data = os.path.join(tmp, 'fresh', 'data')
    rc, lines, d = check(tmp, s, con, datadir=data, extra=['-P', os.path.join(tmp, 'ld.pid')])
    assert rc == 0, (rc, d.stderr())
    assert lines and all(ln.startswith('ok ') for ln in lines), lines
    for what in ('--password-file', '--auth-key', '--pidfile', '--marker', '--data-dir', 'bound as ' + READER,
                 'search base ' + SUFFIX, 'syncrepl: the server offers 1.3.6.1.4.1.4203.1.9.1.1 on ' + SUFFIX,
                 'entryUUID: ' + READER + ' can read it', 'consumer ' + con.address):
        assert any(what in ln for ln in lines), 'no line for %r' % what
    assert not os.path.exists(os.path.join(tmp, 'fresh')), 'the data directory was created'
    assert not os.path.exists(os.path.join(tmp, 'ld.pid')), 'the pidfile was created'
    wait_until(lambda: con.connections == 1 and con.closed.get(0) is not None, 10, 'the check\'s connection')
    assert con.messages() == [], con.messages()

    d0 = feed(tmp, s, con)
    wait_run(con, 0)
    stop_clean(d0)
    before = store_snapshot(d0.datadir, d0.marker)
    n = con.connections
    rc, lines, d = check(tmp, s, con)
    assert rc == 0 and all(ln.startswith('ok ') for ln in lines), (rc, lines)
    assert any('store in %s: 7 entries' % d0.datadir in ln for ln in lines), lines
    assert store_snapshot(d0.datadir, d0.marker) == before, 'the check changed the store or the marker'
    wait_until(lambda: con.connections == n + 1, 10, 'the check\'s connection')
    d1 = feed(tmp, s, con)
    wait_run(con, 1)   # (the checks' connections carry no hello: no run)
    stop_clean(d1)
    assert [h['reload'] for h in con.hellos()][-1] is False, 'the start after the check did not resume'


@test(timeout=150)
def check_failures(tmp):
    # Scenario: one thing wrong at a time; each time a FAIL line naming it and the status a start would exit
    # with: a wrong password (77), nothing listening at the consumer's address (69), a wrong key (77), a search
    # base that does not exist (78), a data directory with a foreign file (78), a server without syncprov (78), an
    # ACL that hides entryUUID from the bind identity (78), a missing password file (66), an unknown flag (64).
    s = lab(tmp)
    con = Consumer(tmp)
    problems = []

    def case(label, code, culprit, **kw):
        rc, lines, d = check(tmp, s, con, **kw)
        fails = [ln for ln in lines if ln.startswith('FAIL')]
        if rc != code or not fails or culprit.lower() not in fails[0].lower():
            problems.append('%s: exit %s (want %d), FAIL lines %r\n    stderr %s' % (label, rc, code, fails,
                                                                                 d.stderr()[-500:]))
    case('wrong password', 77, 'bind as ' + READER, password='wrong')
    case('no consumer', 69, os.path.join(tmp, 'nobody.sock'), output=os.path.join(tmp, 'nobody.sock'),
         keyfile=con.keyfile)
    other = write_secret(os.path.join(tmp, 'other.key'), 'another key')
    case('wrong key', 77, 'consumer', keyfile=other)
    case('no base', 78, 'ou=nowhere', base='ou=nowhere,' + SUFFIX)
    foreign = os.path.join(tmp, 'foreign')
    os.makedirs(foreign)
    open(os.path.join(foreign, 'notes.txt'), 'w').close()
    case('foreign data directory', 78, 'notes.txt', datadir=foreign)
    case('missing password file', 66, 'nothere', extra=['-y', os.path.join(tmp, 'nothere')])
    case('unknown flag', 64, '--no-such-flag', extra=['--no-such-flag'])
    s.restart(acl_prefix='access to attrs=entryUUID by dn.exact="%s" none by * read' % READER)
    case('entryUUID hidden', 78, 'entryUUID')
    s.restart(acl_prefix='', variant='NONE')
    case('no syncprov', 78, 'syncrepl')
    assert not problems, '%d case(s) failed:\n  %s' % (len(problems), '\n  '.join(problems))
    assert con.messages() == [], 'a check sent something: %r' % con.messages()[:3]


if __name__ == '__main__':
    main()
