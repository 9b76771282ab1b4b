#!/usr/bin/env python3
"""End-to-end tests of what ships beside the daemon: the example consumer
(examples/consumer.py) against real ldapfeed runs, the demo (scripts/demo),
the man page (mandoc -Tlint) and make install / uninstall."""

import base64
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F403
import harness  # noqa: E402

CONSUMER = os.path.join(TOP, 'examples', 'consumer.py')
PEOPLE = 'ou=people,dc=example,dc=com'
GROUPS = 'ou=groups,dc=example,dc=com'
# A JPEG header: not UTF-8, so it travels as {"base64": ...} in the copy.
PHOTO = b'\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01'


class ExampleConsumer:
    """examples/consumer.py as a process: listens on a unix socket in tmp,
    keeps tmp/NAME.jsonl, prints events (--print) to NAME.stdout."""

    def __init__(self, tmp, fmt='auto', name='example', key=None):
        self.tmp, self.fmt = tmp, fmt
        self.address = os.path.join(tmp, name + '.sock')
        self.keyfile = os.path.join(tmp, name + '.key')
        self.copy = os.path.join(tmp, name + '.jsonl')
        self.stdout_path = os.path.join(tmp, name + '.stdout')
        self.stderr_path = os.path.join(tmp, name + '.stderr')
        if not os.path.exists(self.keyfile):
            fd = os.open(self.keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, 'wb') as f:
                f.write(key or secrets.token_bytes(32))
        self.popen = None
        self.starts = 0

    def start(self):
        self.log_offset = self._size(self.stderr_path)
        with open(self.stdout_path, 'ab') as out, open(self.stderr_path, 'ab') as err:
            self.popen = subprocess.Popen(
                [sys.executable, CONSUMER, '-a', self.address, '-k', self.keyfile, '-o', self.copy,
                 '-f', self.fmt, '--print', '--write-delay', '0.02'],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
        register_process(self.popen, group=True, name='consumer.py')
        self.starts += 1
        wait_until(lambda: 'listening on' in self.stderr(self.log_offset) or self.popen.poll() is not None,
                   10, 'the example consumer to listen')
        assert self.popen.poll() is None, 'consumer.py exited %s:\n%s' % (self.popen.returncode, self.stderr())
        return self

    def stop(self):
        """SIGTERM: it writes its copy and exits 0."""
        self.popen.send_signal(signal.SIGTERM)
        rc = self.popen.wait(scaled(10))
        assert rc == 0, 'consumer.py exited %s:\n%s' % (rc, self.stderr())
        assert not os.path.exists(self.address), 'the socket file outlived the consumer'

    @staticmethod
    def _size(path):
        try:
            return os.path.getsize(path)
        except OSError:
            return 0

    def stderr(self, offset=0):
        try:
            with open(self.stderr_path, 'rb') as f:
                f.seek(offset)
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''

    def stdout(self):
        try:
            with open(self.stdout_path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''

    def read_copy(self):
        """{dn: {attr: sorted [bytes]}} from the JSON-lines copy; also checks
        the line format."""
        out = {}
        try:
            with open(self.copy, encoding='utf-8') as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return None
        for line in lines:
            e = json.loads(line)
            assert set(e) == {'dn', 'uuid', 'attrs'}, e
            assert re.fullmatch(r'[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}', e['uuid']), e['uuid']
            assert e['dn'] not in out, 'two lines for %s' % e['dn']
            out[e['dn']] = normalize_attrs(e['attrs'], fold_names=True)
        return out


def server_state(slapd):
    """What the copy must hold: ldapsearch as the daemon's identity (cn=reader)."""
    return {dn: normalize_attrs(a, fold_names=True) for dn, a in slapd.search(bind='reader').items()}


def diff(mine, theirs, limit=30):
    lines = []
    for dn in sorted(set(mine) - set(theirs)):
        lines.append('  only in the copy: %s' % dn)
    for dn in sorted(set(theirs) - set(mine)):
        lines.append('  only on the server: %s' % dn)
    for dn in sorted(set(mine) & set(theirs)):
        if mine[dn] != theirs[dn]:
            keys = sorted(k for k in set(mine[dn]) | set(theirs[dn]) if mine[dn].get(k) != theirs[dn].get(k))
            lines.append('  differs: %s (%s)' % (dn, ', '.join(keys)))
    return '\n'.join(lines[:limit])


def wait_copy(consumer, slapd, timeout=30, what='the copy to equal ldapsearch'):
    """Poll the copy until it equals the server's state (which no longer
    changes), with a readable diff on timeout."""
    want = server_state(slapd)
    try:
        wait_until(lambda: consumer.read_copy() == want, timeout, what)
    except AssertionError as e:
        got = consumer.read_copy() or {}
        raise AssertionError('%s\n%s\nconsumer stderr:\n%s' % (e, diff(got, want), consumer.stderr()[-3000:]))
    return want


def person(uid, ou=PEOPLE, **extra):
    attrs = {'objectClass': ['inetOrgPerson'], 'uid': uid, 'cn': uid.title(), 'sn': uid.title(),
             'mail': '%s@example.com' % uid}
    attrs.update(extra)
    return 'uid=%s,%s' % (uid, ou), attrs


def add_person(slapd, uid, ou=PEOPLE, **extra):
    dn, attrs = person(uid, ou, **extra)
    slapd.add_entry(dn, attrs)
    return dn


def populate(slapd):
    slapd.add_people(20)
    slapd.add_entry('cn=staff,' + GROUPS, {'objectClass': 'groupOfNames', 'cn': 'staff',
                                           'member': ['uid=user%05d,%s' % (i, PEOPLE) for i in range(5)]})
    slapd.add_entry('ou=lab,dc=example,dc=com', {'objectClass': 'organizationalUnit', 'ou': 'lab'})
    for uid in ('ada', 'grace', 'linus'):
        add_person(slapd, uid, 'ou=lab,dc=example,dc=com')


def no_warnings(consumer):
    bad = [line for line in consumer.stderr().splitlines() if 'warning' in line or 'error' in line]
    assert not bad, 'consumer complained:\n' + '\n'.join(bad)


@test(timeout=180)
def consumer_copy_equals_ldapsearch(tmp):
    # Scenario: examples/consumer.py follows ldapfeed (pickle, 2 workers) through
    # a full load, persist changes of every kind (adds, modifies incl. a binary
    # value, renames, moves, a subtree rename, deletes, a burst that moves
    # entries between connections), a SIGKILLed daemon whose restart reloads
    # (entries deleted meanwhile must go at refresh_done: no delete is ever
    # sent for them), a clean stop with changes while down and a consumer
    # restart in between; after each step its JSON-lines copy equals ldapsearch.
    slapd = Slapd(tmp)
    populate(slapd)
    c = ExampleConsumer(tmp).start()

    def daemon():
        return Daemon(tmp, slapd, output=c.address, keyfile=c.keyfile, fmt='pickle', processes=4)

    d = daemon()
    wait_copy(c, slapd, what='the initial snapshot')
    assert 'reload' in c.stdout() and 'snapshot complete' in c.stderr(), c.stderr()

    # persist: every kind of change
    for uid in ('alice', 'bob', 'carol'):
        add_person(slapd, uid)
    slapd.modify_entry('uid=alice,' + PEOPLE, [('replace', 'mail', 'alice.liddell@example.com'),
                                               ('add', 'description', ['first', 'second']),
                                               ('add', 'jpegPhoto', PHOTO)])
    slapd.modify_entry('uid=user00001,' + PEOPLE, [('delete', 'telephoneNumber', None)])
    slapd.modify_entry('cn=staff,' + GROUPS, [('add', 'member', 'uid=alice,' + PEOPLE),
                                             ('delete', 'member', 'uid=user00000,' + PEOPLE)])
    slapd.modrdn('uid=bob,' + PEOPLE, 'uid=robert')                         # rename
    slapd.modrdn('uid=carol,' + PEOPLE, 'uid=carol', newsuperior='ou=lab,dc=example,dc=com')   # move
    slapd.modrdn('ou=lab,dc=example,dc=com', 'ou=research')                 # subtree rename
    slapd.delete('uid=user00002,' + PEOPLE)
    slapd.delete('uid=user00003,' + PEOPLE)
    # a burst: each entry renamed back and forth and modified in between, so
    # its events hop between the two connections (they go by DN hash)
    burst = b''
    for i in range(10, 20):
        dn = 'uid=user%05d,%s' % (i, PEOPLE)
        burst += ('dn: %s\nchangetype: modrdn\nnewrdn: uid=moved%d\ndeleteoldrdn: 1\n\n' % (dn, i)).encode()
        burst += harness.ldif_modify('uid=moved%d,%s' % (i, PEOPLE), [('replace', 'description', 'moved')])
        burst += ('dn: uid=moved%d,%s\nchangetype: modrdn\nnewrdn: uid=back%d\ndeleteoldrdn: 1\n\n'
                  % (i, PEOPLE, i)).encode()
        if i % 3 == 0:
            burst += ('dn: uid=back%d,%s\nchangetype: delete\n\n' % (i, PEOPLE)).encode()
    slapd.modify(burst)
    wait_copy(c, slapd, what='the copy after persist changes')
    copy = c.read_copy()
    assert copy['uid=alice,' + PEOPLE]['jpegphoto'] == [PHOTO]
    with open(c.copy, encoding='utf-8') as f:
        raw = [json.loads(line) for line in f]
    alice = [e for e in raw if e['dn'] == 'uid=alice,' + PEOPLE][0]
    assert alice['attrs']['jpegPhoto'] == [{'base64': base64.b64encode(PHOTO).decode()}], alice
    assert alice['attrs']['mail'] == ['alice.liddell@example.com'], alice
    assert 'uid=ada,ou=research,dc=example,dc=com' in copy

    # SIGKILL: no marker, so the next run wipes its store and reloads
    d.kill_group()
    d.wait(10)
    assert not d.marker_exists()
    slapd.delete('uid=user00004,' + PEOPLE)
    slapd.delete('uid=robert,' + PEOPLE)
    slapd.delete('uid=grace,ou=research,dc=example,dc=com')
    add_person(slapd, 'dave')
    slapd.replace('uid=alice,' + PEOPLE, 'description', 'changed while the daemon was down')
    slapd.modrdn('uid=user00005,' + PEOPLE, 'uid=eve')
    offset = len(c.stderr())
    d = daemon()
    wait_copy(c, slapd, what='the copy after a reload')
    log = c.stderr()[offset:]
    m = re.search(r'snapshot complete: (\d+) entries, (\d+) dropped', log)
    assert m, log
    # user00004, robert, grace: gone from the server, never sent as deletes;
    # user00005 is now eve under a new DN, same uuid: replaced, not dropped
    assert int(m.group(2)) == 3, log
    assert 'reload' in c.stdout()

    # clean stop, changes while down, consumer restarted, daemon resumes
    slapd.replace('uid=dave,' + PEOPLE, 'mail', 'dave@example.org')
    wait_copy(c, slapd, what='the copy after a persist modify')
    assert d.stop() == 0 and d.marker_exists(), d.stderr()
    c.stop()
    slapd.delete('uid=eve,' + PEOPLE)
    slapd.modrdn('uid=dave,' + PEOPLE, 'uid=david')
    add_person(slapd, 'frank', description='added while both were down')
    c.start()
    assert 'loaded' in c.stderr(c.log_offset), c.stderr(c.log_offset)
    d = daemon()
    wait_copy(c, slapd, what='the copy after a resumed run')
    assert 'resuming' in c.stderr(c.log_offset), c.stderr(c.log_offset)
    assert d.stop() == 0
    c.stop()
    assert c.read_copy() == server_state(slapd)
    no_warnings(c)


@test(timeout=120)
def consumer_json_three_workers(tmp):
    # Scenario: the example consumer with --format json and 3 workers: a full
    # load, then adds, a binary value, renames and deletes; the copy equals
    # ldapsearch, and --print shows each kind of event.
    slapd = Slapd(tmp)
    populate(slapd)
    c = ExampleConsumer(tmp, fmt='json').start()
    d = Daemon(tmp, slapd, output=c.address, keyfile=c.keyfile, fmt='json', processes=5)
    wait_copy(c, slapd, what='the initial snapshot')
    add_person(slapd, 'zoe', jpegPhoto=PHOTO)
    slapd.replace('uid=zoe,' + PEOPLE, 'cn', ['Zoe', 'Zoë'])
    slapd.modrdn('uid=zoe,' + PEOPLE, 'uid=zoey')
    slapd.delete('uid=user00007,' + PEOPLE)
    wait_copy(c, slapd, what='the copy after changes')
    out = c.stdout()
    for pat in (r'hello: worker \d of 3, json', r'#\d+ add uid=zoe,', r'#\d+ modify uid=zoe,',
                r'cn: Zoe -> Zoe, Zoë', r'#\d+ rename uid=zoe,\S+ -> uid=zoey,', r'#\d+ delete uid=user00007,',
                r'#\d+ refresh_done'):
        assert re.search(pat, out), 'no %r in the --print output:\n%s' % (pat, out[-2000:])
    assert d.stop() == 0
    c.stop()
    no_warnings(c)


def _read_jsonl(path):
    with open(path, encoding='utf-8') as f:
        return {e['dn']: e['attrs'] for e in map(json.loads, f)}


@test(timeout=60)
def consumer_rules_with_scripted_workers(tmp):
    # Scenario: multiprocessing.connection Clients play ldapfeed's workers, so
    # the consumer's rules meet the orders a real feed allows but rarely
    # produces: a snapshot cut short by a clean stop, the consumer restarted,
    # and the snapshot sent again whole by the next (reload) run; events of one
    # entry arriving out of seq order on two connections (rename before add,
    # an older modify after a newer one, a modify after the delete, a delete
    # after the re-add); events of a run superseded by a newer reload run.
    from multiprocessing.connection import Client
    c = ExampleConsumer(tmp)
    with open(c.copy, 'w') as f:
        for name in 'abc':
            f.write(json.dumps({'dn': 'cn=%s,dc=x' % name, 'uuid': uuid_of(name), 'attrs': {'cn': [name]}}) + '\n')
    c.start()
    with open(c.keyfile, 'rb') as f:
        key = f.read()

    def worker(w, ws, reload):
        conn = Client(c.address, family='AF_UNIX', authkey=key)
        conn.send({'type': 'hello', 'worker': w, 'workers': ws, 'format': 'pickle', 'version': '0.1.0',
                   'reload': reload})
        return conn

    def ev(conn, typ, seq, name=None, dn=None, old_dn=None, cn=None, **extra):
        m = {'type': typ, 'seq': seq}
        if name:
            m['uuid'] = uuid_of(name)
            m['dn'] = dn or 'cn=%s,dc=x' % name
        if old_dn:
            m['old_dn'] = old_dn
        attrs = {'cn': [cn.encode() if cn else name.encode()]} if name else None
        attrs and attrs.update(extra)
        if typ == 'add':
            m['attrs'] = attrs
        elif typ == 'modify':
            m['old'], m['new'], m['changed'] = {}, attrs, ['cn']
        elif typ == 'delete':
            m['old'] = attrs
        conn.send(m)
        wait_until(lambda: re.search(r'#%d %s\b' % (seq, typ), c.stdout()), 10, 'the consumer to print #%d' % seq)

    # run 1: a reload, cut short by a clean stop (no refresh_done)
    w0, w1 = worker(0, 2, True), worker(1, 2, True)
    ev(w0, 'add', 1, 'a', dn='cn=a2,dc=x', cn='a2')
    ev(w1, 'add', 2, 'd')
    w0.close()
    w1.close()
    wait_until(lambda: 'run 1 ended before its refresh was complete' in c.stderr(), 10, 'run 1 to end')
    c.stop()
    # COPY keeps the whole state before the unfinished snapshot
    assert sorted(_read_jsonl(c.copy)) == ['cn=a,dc=x', 'cn=b,dc=x', 'cn=c,dc=x'], _read_jsonl(c.copy)
    assert 'stopping during a snapshot' in c.stderr(), c.stderr()

    # the consumer again; run 2 sends the snapshot again and completes it
    c.start()
    w = worker(0, 1, True)
    ev(w, 'add', 1, 'a', dn='cn=a2,dc=x', cn='a2')
    ev(w, 'add', 2, 'e')
    ev(w, 'refresh_done', 3)
    wait_until(lambda: 'snapshot complete: 2 entries, 2 dropped' in c.stderr(c.log_offset), 10, 'the snapshot')
    wait_until(lambda: sorted(_read_jsonl(c.copy)) == ['cn=a2,dc=x', 'cn=e,dc=x'], 10, 'the copy after run 2')
    w.close()

    # run 3, two connections, events of one entry out of seq order
    w0, w1 = worker(0, 2, False), worker(1, 2, False)
    ev(w1, 'rename', 11, 'x', dn='cn=x2,dc=x', old_dn='cn=x,dc=x')     # before its add
    ev(w0, 'add', 10, 'x')
    ev(w0, 'modify', 13, 'e', cn='e13', jpegPhoto=[PHOTO])
    ev(w1, 'modify', 12, 'e', cn='e12')                                  # older: loses
    ev(w1, 'delete', 15, 'a', dn='cn=a2,dc=x')
    ev(w0, 'modify', 14, 'a', dn='cn=a2,dc=x', cn='a14')                 # older than its delete
    ev(w0, 'add', 16, 'f', cn='f16')
    ev(w0, 'add', 18, 'f', cn='f18')                                     # back in scope...
    ev(w1, 'delete', 17, 'f')                                            # ...after this delete
    ev(w0, 'refresh_done', 19)
    ev(w1, 'refresh_done', 19)
    want = {'cn=x2,dc=x': {'cn': ['x']},
            'cn=e,dc=x': {'cn': ['e13'], 'jpegPhoto': [{'base64': base64.b64encode(PHOTO).decode()}]},
            'cn=f,dc=x': {'cn': ['f18']}}
    wait_until(lambda: _read_jsonl(c.copy) == want, 10, 'the copy after run 3')

    # run 4 reloads while a connection of run 3 still talks: run 3 is ignored
    w4 = worker(0, 1, True)
    wait_until(lambda: 'run 3: reload' in c.stderr(c.log_offset), 10, 'the reload hello')
    w0.send({'type': 'add', 'seq': 20, 'uuid': uuid_of('z'), 'dn': 'cn=z,dc=x', 'attrs': {'cn': [b'z']}})
    ev(w4, 'add', 1, 'x', dn='cn=x2,dc=x', cn='x4')
    ev(w4, 'refresh_done', 2)
    wait_until(lambda: _read_jsonl(c.copy) == {'cn=x2,dc=x': {'cn': ['x4']}}, 10, 'the copy after run 4')
    for conn in (w0, w1, w4):
        conn.close()
    c.stop()
    assert 'events of superseded runs ignored' in c.stderr(c.log_offset)
    no_warnings(c)


def uuid_of(name):
    return '%08x-0000-4000-8000-000000000000' % ord(name)


def _cmdline_mentions(text):
    """Live pids whose command line contains text."""
    out = []
    for name in os.listdir('/proc'):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open('/proc/%s/cmdline' % name, 'rb') as f:
                cmd = f.read()
        except OSError:
            continue
        if text.encode() in cmd and pid_alive(int(name)):
            out.append((int(name), cmd.replace(b'\0', b' ').decode('utf-8', 'replace')))
    return out


@test(timeout=120)
def demo_runs_and_cleans_up(tmp):
    # Scenario: scripts/demo (what `make demo` runs once deps and the binary
    # are there) runs non-interactively, shows each kind of event, exits 0,
    # and leaves no process and no temp dir behind.
    if shutil.which('slapd') is None and not os.path.exists(harness.SLAPD_BIN):
        raise Skip('slapd not installed')
    env = dict(os.environ, TMPDIR=tmp)
    p = subprocess.Popen([sys.executable, os.path.join(TOP, 'scripts', 'demo')], cwd=TOP, env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True)
    register_process(p, group=True, name='demo')
    try:
        out, _ = p.communicate(timeout=scaled(60))
    except subprocess.TimeoutExpired:
        raise AssertionError('scripts/demo still running after %ds' % scaled(60))
    out = out.decode('utf-8', 'replace')
    assert p.returncode == 0, 'scripts/demo exited %d:\n%s' % (p.returncode, out)
    for pat in (r'hello: worker', r'#\d+ add ', r'#\d+ modify ', r'#\d+ rename ', r'#\d+ delete ',
                r'refresh_done', r'matches ldapsearch'):
        assert re.search(pat, out), 'no %r in the demo output:\n%s' % (pat, out)
    left = _cmdline_mentions(tmp)
    assert not left, 'the demo left processes running:\n%s' % '\n'.join('%d %s' % x for x in left)
    assert not group_members(p.pid), 'the demo left processes in its group: %r' % group_members(p.pid)
    assert os.listdir(tmp) == [], 'the demo left files in TMPDIR: %r' % os.listdir(tmp)


@test
def man_page_lint():
    # Scenario: mandoc -Tlint finds nothing in man/ldapfeed.8 and
    # man/ldapfeed-nats-tail.1 but the notes about SEE ALSO pages that are
    # not installed on this machine.
    if shutil.which('mandoc') is None:
        raise Skip('mandoc not installed')
    r = subprocess.run(['mandoc', '-Tlint', os.path.join(TOP, 'man', 'ldapfeed.8'),
                        os.path.join(TOP, 'man', 'ldapfeed-nats-tail.1')],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = [line for line in r.stdout.decode('utf-8', 'replace').splitlines()
             if 'referenced manual not found' not in line and 'outdated mandoc.db' not in line]
    assert not lines, 'mandoc -Tlint:\n' + '\n'.join(lines)
    # every option config.c accepts is documented, short and long
    with open(os.path.join(TOP, 'src', 'config.c')) as f:
        src = f.read()
    longs = re.findall(r'\{ "([a-z-]+)",\s+(?:required|no)_argument', src)
    shorts = re.findall(r'[A-Za-z]', re.search(r'getopt_long\(argc, argv, "([^"]+)"', src).group(1))
    with open(os.path.join(TOP, 'man', 'ldapfeed.8')) as f:
        page = f.read().replace('\\-', '-')
    missing = ['--' + o for o in longs if '.It Fl -%s' % o not in page and ', Fl -%s' % o not in page]
    missing += ['-' + o for o in shorts if '.It Fl %s ' % o not in page]
    assert longs and shorts and not missing, 'options missing from OPTIONS: %r' % missing


@test
def make_install_uninstall(tmp):
    # Scenario: make install DESTDIR=tmp PREFIX=/usr puts the binary, the man
    # page and the examples where a package would; make uninstall removes
    # every file it installed.  (-o ldapfeed: use the binary as built, never
    # rebuild it under the other tests' feet.)
    if not os.path.exists(os.path.join(TOP, 'config.mk')):
        raise Skip('not configured')
    root = os.path.join(tmp, 'root')
    make = ['make', '-s', '-C', TOP, '-o', 'ldapfeed', '-o', 'ldapfeed-nats-tail', 'DESTDIR=' + root,
            'PREFIX=/usr']
    r = subprocess.run(make + ['install'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert r.returncode == 0, r.stdout.decode()
    want = {
        'usr/sbin/ldapfeed': 0o755,
        'usr/bin/ldapfeed-nats-tail': 0o755,
        'usr/share/man/man8/ldapfeed.8': 0o644,
        'usr/share/man/man1/ldapfeed-nats-tail.1': 0o644,
        'usr/share/doc/ldapfeed/README.md': 0o644,
        'usr/share/doc/ldapfeed/LICENSE': 0o644,
        'usr/share/doc/ldapfeed/examples/consumer.py': 0o755,
        'usr/share/doc/ldapfeed/examples/ldapfeed.init': 0o755,
        'usr/share/doc/ldapfeed/examples/ldapfeed.service': 0o644,
        'usr/share/doc/ldapfeed/examples/ldapfeed.default': 0o644,
    }
    got = {}
    for d, _, files in os.walk(root):
        for f in files:
            path = os.path.join(d, f)
            got[os.path.relpath(path, root)] = os.stat(path).st_mode & 0o7777
    assert got == want, 'installed %r, want %r' % (got, want)
    with open(os.path.join(root, 'usr/sbin/ldapfeed'), 'rb') as a, \
            open(os.path.join(TOP, 'ldapfeed'), 'rb') as b:
        assert a.read() == b.read()
    r = subprocess.run(make + ['uninstall'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert r.returncode == 0, r.stdout.decode()
    left = [os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs]
    assert not left, 'make uninstall left %r' % left
    assert not os.path.exists(os.path.join(root, 'usr/share/doc/ldapfeed')), 'docdir left behind'


@test(timeout=90)
def init_script_start_status_stop(tmp):
    # Scenario: examples/ldapfeed.init, pointed at this build and a defaults
    # file in tmp: start detaches and returns 0 once the daemon runs (the
    # pidfile names a live supervisor), a second start is a no-op, status
    # and stats work, the copy follows the directory, stop (SIGTERM) ends it
    # cleanly with the marker written; a start that cannot work (missing
    # key file) fails with the daemon's reason and leaves nothing running.
    if os.environ.get('TEST_WRAP'):
        raise Skip('start-stop-daemon --exec cannot match a wrapped binary')
    if shutil.which('start-stop-daemon') is None or not os.path.exists('/lib/lsb/init-functions'):
        raise Skip('start-stop-daemon or /lib/lsb/init-functions missing')
    binary = harness.ldapfeed_binary()
    if not os.access(binary, os.X_OK):
        raise Skip('ldapfeed not built')
    slapd = Slapd(tmp)
    populate(slapd)
    c = ExampleConsumer(tmp).start()
    pw = os.path.join(tmp, 'password')
    fd = os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'w') as f:
        f.write(slapd.reader_pw + '\n')
    defaults = os.path.join(tmp, 'default')

    def configure(keyfile):
        with open(defaults, 'w') as f:
            f.write('LDAPFEED_URL="%s"\nLDAPFEED_OUTPUT="%s"\nLDAPFEED_OPTS="-y %s -p 4"\n'
                    'RUN_AS=""\nRUNDIR="%s/run"\nDATADIR="%s/state/store"\nMARKER="%s/state/marker"\n'
                    'KEYFILE="%s"\nSTOP_TIMEOUT=20\n'
                    % (ldap_url(slapd, slapd.suffix, exts=['bindname=' + slapd.reader_dn]), c.address, pw,
                       tmp, tmp, tmp, keyfile))
    configure(c.keyfile)
    with open(os.path.join(TOP, 'examples', 'ldapfeed.init')) as f:
        text = f.read()
    assert 'DAEMON=/usr/sbin/ldapfeed\n' in text and 'DEFAULTS=/etc/default/$NAME\n' in text
    script = os.path.join(tmp, 'ldapfeed.init')
    with open(script, 'w') as f:
        f.write(text.replace('DAEMON=/usr/sbin/ldapfeed\n', 'DAEMON=%s\n' % binary)
                .replace('DEFAULTS=/etc/default/$NAME\n', 'DEFAULTS=%s\n' % defaults))
    os.chmod(script, 0o755)
    pidfile = os.path.join(tmp, 'run', 'ldapfeed.pid')

    def init(action):
        r = subprocess.run([script, action], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=scaled(60))
        return r.returncode, r.stdout.decode('utf-8', 'replace')

    rc, out = init('start')
    assert rc == 0, out
    with open(pidfile) as f:
        pid = int(f.read())
    register_process(pid=pid, name='ldapfeed (init script)')
    assert pid_alive(pid) and harness._proc_stat(pid)[1] != os.getpid(), 'not detached'
    assert init('start')[0] == 0
    rc, out = init('status')
    assert rc == 0 and 'running' in out, out
    assert init('stats')[0] == 0
    wait_copy(c, slapd, what='the copy under the init script')
    rc, out = init('stop')
    assert rc == 0, out
    assert not pid_alive(pid), 'still running after stop'
    assert os.path.exists(os.path.join(tmp, 'state', 'marker')), 'no marker after stop'
    assert not os.path.exists(pidfile)
    assert init('status')[0] == 3
    assert init('stop')[0] == 0
    configure(os.path.join(tmp, 'no-such-key'))
    rc, out = init('start')
    assert rc == 1 and 'no-such-key' in out, (rc, out)
    assert not os.path.exists(pidfile) or not open(pidfile).read().strip()
    assert not _cmdline_mentions(os.path.join(tmp, 'state')), 'a failed start left a process'


@test
def examples_are_well_formed(tmp):
    # Scenario: the init script parses (sh -n) and has its LSB header; the
    # consumer compiles; the unit has what it promises and passes
    # systemd-analyze verify (when systemd-analyze is installed).
    ex = os.path.join(TOP, 'examples')
    r = subprocess.run(['sh', '-n', os.path.join(ex, 'ldapfeed.init')], stderr=subprocess.PIPE)
    assert r.returncode == 0, r.stderr.decode()
    with open(os.path.join(ex, 'ldapfeed.init')) as f:
        init = f.read()
    assert '### BEGIN INIT INFO' in init and 'start-stop-daemon' in init
    r = subprocess.run(['sh', '-n', os.path.join(ex, 'ldapfeed.default')], stderr=subprocess.PIPE)
    assert r.returncode == 0, r.stderr.decode()
    with open(CONSUMER) as f:
        compile(f.read(), CONSUMER, 'exec')     # no __pycache__ left in examples/
    with open(os.path.join(ex, 'ldapfeed.service')) as f:
        unit = f.read()
    for key in ('Type=forking', 'PIDFile=', 'KillSignal=SIGTERM', 'TimeoutStopSec=', 'ProtectSystem=strict',
                'ReadWritePaths=', 'NoNewPrivileges=yes', 'PrivateTmp=yes'):
        assert key in unit, key
    binary = harness.ldapfeed_binary()
    if shutil.which('systemd-analyze') and os.access(binary, os.X_OK):
        # verify wants ExecStart's binary to exist: point it at this build
        path = os.path.join(tmp, 'ldapfeed.service')
        with open(path, 'w') as f:
            f.write(unit.replace('/usr/sbin/ldapfeed', binary))
        r = subprocess.run(['systemd-analyze', 'verify', '--man=no', path], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, cwd=tmp)
        assert r.returncode == 0 and not r.stdout.strip(), r.stdout.decode()


if __name__ == '__main__':
    main()
