#!/usr/bin/env python3
"""Secrets (ldapfeed.8, ENVIRONMENT, and OPTIONS, -y and -k): the password
and the key are read from files once and appear in no process's argv or
environment, in no log line, and no process can dump core by default; a
secret file readable by group or others gives a warning.  (The wrong key
refused in both directions of the handshake is tested in
test_wire_handshake.py and test_daemon.py.)
"""

import os
import re
import resource
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F403

PASSWORD = 'readerpw'


def ldapfeed_pids(d):
    return [d.pid] + list(d.descendants())


def allow_core_dumps():
    """Raise this process's core limit, so that a 0 in the daemon is the
    daemon's own doing, not an inherited limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    want = hard if hard != resource.RLIM_INFINITY else resource.RLIM_INFINITY
    resource.setrlimit(resource.RLIMIT_CORE, (want, hard))
    limit = open('/proc/self/limits').read()
    assert re.search(r'Max core file size\s+(unlimited|[1-9])', limit), 'cannot raise the core limit here'


def core_limit(pid):
    for line in open('/proc/%d/limits' % pid):
        if line.startswith('Max core file size'):
            return line.split()[4]
    raise AssertionError('no core limit line for %d' % pid)


@test
def secrets_stay_secret(tmp):
    # Scenario: a normal run bound as cn=reader with a password file and a
    # key file; then look at every ldapfeed process and at the logs.
    allow_core_dumps()
    s = Slapd(tmp)
    s.add_people(5)
    con = Consumer(tmp)
    key = open(con.keyfile, 'rb').read()
    d = Daemon(tmp, s, con, processes=4, extra=['-v'])
    con.wait_refresh_done()
    pids = ldapfeed_pids(d)
    assert len(pids) == 4, pids
    for pid in pids:
        argv = open('/proc/%d/cmdline' % pid, 'rb').read()
        env = open('/proc/%d/environ' % pid, 'rb').read()
        assert PASSWORD.encode() not in argv and key not in argv, 'secret in argv of %d' % pid
        assert PASSWORD.encode() not in env and key not in env, 'secret in the environment of %d' % pid
        assert core_limit(pid) == '0', 'process %d may dump core: %s' % (pid, core_limit(pid))
    s.replace('uid=user00001,ou=people,' + s.suffix, 'description', ['changed'])
    wait_until(lambda: con.messages('modify'), what='the modify')
    d.signal(15)
    assert d.wait(20) == 0
    log = d.stderr()
    assert PASSWORD not in log, 'the password is in the log'
    assert key.decode('latin-1') not in log, 'the key is in the log'
    assert 'bindname' in log or 'ldap://' in log, 'the startup line is missing: ' + log[-500:]


def memory_holds(pid, needles):
    """Which of needles (bytes) occur in the readable memory of pid, read
    through /proc/PID/mem (as root).  The store's own mappings are left
    out: they are files, not a process's secrets."""
    found = set()
    longest = max(len(n) for n in needles)
    with open('/proc/%d/maps' % pid) as maps, open('/proc/%d/mem' % pid, 'rb', 0) as mem:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split('-'))
            path = fields[5] if len(fields) > 5 else ''
            if 'r' not in fields[1] or path in ('[vvar]', '[vsyscall]') or path.endswith('.mdb'):
                continue
            if end - start > 1 << 30:
                continue    # a sanitizer's shadow memory, not a heap
            tail = b''
            for off in range(start, end, 1 << 20):
                try:
                    mem.seek(off)
                    chunk = tail + mem.read(min(1 << 20, end - off))
                except OSError:
                    break
                found.update(n for n in needles if n in chunk)
                tail = chunk[-longest:]
    return found


@test
def each_process_holds_only_its_secret(tmp):
    # Scenario: a running daemon (2 workers), its refresh done; read every
    # process's memory.  The reader holds the password (it binds again
    # after a reconnect) and nothing else; a worker held the key for its
    # handshake and holds nothing now; the supervisor holds neither.  (The
    # search is ou=people: the bind entry's own userPassword, which it may
    # read, would put the password into an event.)
    if os.geteuid() != 0:
        raise Skip('reading another process\'s memory needs root')
    if os.environ.get('ASAN_OPTIONS') or os.environ.get('TEST_WRAP'):
        raise Skip('a sanitizer or valgrind keeps memory of its own (freed blocks held in quarantine)')
    s = Slapd(tmp)
    s.add_people(3)
    con = Consumer(tmp)
    url = ldap_url(s, 'ou=people,' + s.suffix, exts=['bindname=' + s.reader_dn])
    d = Daemon(tmp, s, con, url=url, password=s.reader_pw, processes=4)
    con.wait_refresh_done()
    password, key = PASSWORD.encode(), con.key
    workers = list(con.worker_pids().values())
    assert len(workers) == 2, workers
    held = {pid: memory_holds(pid, [password, key]) for pid in [d.pid] + list(d.descendants())}
    note('held: %r' % {pid: sorted(x.decode('latin-1')[:4] + '...' for x in v) for pid, v in held.items()})
    assert held[d.pid] == set(), 'the supervisor still holds %d secret(s)' % len(held[d.pid])
    for w in workers:
        assert held[w] == set(), 'worker %d still holds %s' % (w, 'the key' if key in held[w] else 'the password')
    readers = [p for p in held if p != d.pid and p not in workers]
    assert len(readers) == 1, readers
    assert held[readers[0]] == {password}, 'the reader holds %s' % (
        'the key too' if key in held[readers[0]] else 'no password: is the memory scan blind?')
    d.signal(15)
    assert d.wait(20) == 0


@test
def core_dumps_when_asked(tmp):
    # Scenario: LDAPFEED_CORE_DUMPS=1 leaves the core limit as it was.
    allow_core_dumps()
    s = Slapd(tmp)
    con = Consumer(tmp)
    env = dict(os.environ, LDAPFEED_CORE_DUMPS='1')
    d = Daemon(tmp, s, con, processes=3, env=env)
    con.wait_hellos(1)
    assert core_limit(d.pid) == core_limit(os.getpid()) != '0', core_limit(d.pid)
    d.signal(15)
    assert d.wait(20) == 0


@test
def readable_secret_files_warn(tmp):
    # Scenario: a key file mode 0644 and a password file mode 0640: the
    # daemon still runs (the operator decides) but says so, naming the file.
    s = Slapd(tmp)
    con = Consumer(tmp)
    os.chmod(con.keyfile, 0o644)
    d = Daemon(tmp, s, con, processes=3, start=False)
    os.chmod(d.password_file, 0o640)
    d.start()
    con.wait_hellos(1)
    d.signal(15)
    assert d.wait(20) == 0
    log = d.stderr()
    assert re.search(r'warning: --auth-key %s is readable by group or others' % re.escape(con.keyfile), log), log
    assert re.search(r'warning: --password-file \S+ is readable by group or others', log), log


if __name__ == '__main__':
    main()
