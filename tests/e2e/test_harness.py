"""Self-tests of the harness (tests/e2e/harness/) that need no ldapfeed: the lab slapd
(variants, LDIF round trips, restarts, teardown), the consumer (every address
family, both formats, bad keys), the Model and the URL builder."""

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.connection import AuthenticationError, Client, Connection, answer_challenge, \
    deliver_challenge

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F403
import harness  # noqa: E402


def entries_under(res, base):
    return sorted(dn for dn in res if dn.endswith(base))


@test
def slapd_v0_starts(tmp):
    # Scenario: a V0 slapd starts, answers on its port, holds the populated base entries.
    s = Slapd(tmp)
    assert s.running and pid_alive(s.pid)
    assert os.path.exists(s.pidfile)
    conf = open(s.conf_path).read()
    assert 'syncprov-checkpoint 100 10' in conf and 'sessionlog' not in conf
    root = s.tool('ldapsearch', ['-LLL', '-b', '', '-s', 'base', '+'], bind='anon').stdout
    assert b'namingContexts: dc=example,dc=com' in root, root
    res = s.search()
    assert sorted(res) == sorted(s.base_dns()), sorted(res)
    # the reader can bind and see everything but passwords
    r = s.search(bind='reader')
    assert sorted(r) == sorted(res)
    assert 'userPassword' in res[s.reader_dn] and 'userPassword' in r[s.reader_dn]   # by self
    anon = s.search(bind='anon')
    assert sorted(anon) == sorted(res) and 'userPassword' not in anon[s.reader_dn]
    assert s.tool('ldapwhoami', [], bind='reader').stdout.strip() == b'dn:' + s.reader_dn.encode()


@test
def add_people_1000(tmp):
    # Scenario: 1000 inetOrgPersons in one ldapadd, quickly; search sees 1000 + base entries.
    s = Slapd(tmp)
    t0 = time.monotonic()
    dns = s.add_people(1000)
    took = time.monotonic() - t0
    note('add_people(1000) took %.2fs' % took)
    assert took < scaled(5), took
    assert len(dns) == 1000 and dns[0] == 'uid=user00000,ou=people,dc=example,dc=com'
    res = s.search()
    assert len(res) == 1000 + len(s.base_dns()), len(res)
    people = s.search('ou=people,' + s.suffix, 'one', attrs=['uid', 'mail'])
    assert len(people) == 1000
    assert people['uid=user00042,ou=people,dc=example,dc=com'] == {
        'uid': [b'user00042'], 'mail': [b'user00042@example.com']}
    u = s.uuids()
    assert len(u) == len(res) and all(len(x) == 36 and x.count('-') == 4 for x in u.values())
    # extra() overrides and removes attributes
    s.add_people(2, start=5000, extra=lambda i: {'description': ['a%d' % i, 'b'], 'telephoneNumber': None})
    e = s.search('uid=user05001,ou=people,' + s.suffix, 'base')['uid=user05001,ou=people,dc=example,dc=com']
    assert sorted(e['description']) == [b'a5001', b'b'] and 'telephoneNumber' not in e


@test
def writes_reflected(tmp):
    # Scenario: modify, modrdn (in place and with newsuperior), delete and recursive delete show in search.
    s = Slapd(tmp)
    p = 'ou=people,' + s.suffix
    s.add_people(4)
    s.modify('dn: uid=user00000,%s\nchangetype: modify\nreplace: description\ndescription: changed\n' % p)
    s.replace('uid=user00003,' + p, 'mail', ['x@example.com', 'y@example.com'])
    s.modify_entry('uid=user00003,' + p, [('delete', 'telephoneNumber', None), ('add', 'title', 'boss')])
    s.modrdn('uid=user00001,' + p, 'uid=renamed')
    s.modrdn('uid=user00002,' + p, 'uid=moved', deleteoldrdn=False, newsuperior='ou=groups,' + s.suffix)
    s.delete('uid=user00000,' + p)
    res = s.search(p, 'one')
    assert sorted(res) == ['uid=renamed,' + p, 'uid=user00003,' + p], sorted(res)
    assert res['uid=renamed,' + p]['uid'] == [b'renamed']
    assert sorted(res['uid=user00003,' + p]['mail']) == [b'x@example.com', b'y@example.com']
    assert 'telephoneNumber' not in res['uid=user00003,' + p] and res['uid=user00003,' + p]['title'] == [b'boss']
    moved = s.search('ou=groups,' + s.suffix, 'one')
    assert sorted(moved['uid=moved,ou=groups,' + s.suffix]['uid']) == [b'moved', b'user00002']
    try:
        s.delete('ou=groups,' + s.suffix)
        raise AssertionError('non-leaf delete succeeded')
    except LdapError as e:
        assert e.rc == 66, e      # notAllowedOnNonLeaf
    s.delete('ou=groups,' + s.suffix, recursive=True)
    try:
        s.search('ou=groups,' + s.suffix)
        raise AssertionError('search of a deleted base succeeded')
    except LdapError as e:
        assert e.rc == 32, e
    # the modified entry's description changed before deletion: check on another one
    s.modify('dn: uid=renamed,%s\nchangetype: modify\nreplace: description\ndescription: again\n' % p)
    assert s.search('uid=renamed,' + p, 'base', attrs=['description'])['uid=renamed,' + p] == \
        {'description': [b'again']}


@test
def base64_values_round_trip(tmp):
    # Scenario: binary jpegPhoto, non-UTF-8 and NUL-bearing values, UTF-8 and a base64 DN parse back exactly.
    s = Slapd(tmp)
    p = 'ou=people,' + s.suffix
    photo = bytes(range(256)) * 64 + b'\x00\xff\xd8' + os.urandom(50000)
    latin1 = 'caf\xe9 cr\xe8me'.encode('latin-1')        # not UTF-8
    nul = b'a\x00b\x01\x7f'                              # UTF-8, but base64 in LDIF
    utf8 = 'Jörg Müller – ☃'.encode()
    spacey = b' leading space'
    s.add_entry('uid=bin,' + p, {'objectClass': 'inetOrgPerson', 'uid': 'bin', 'cn': 'bin', 'sn': 'bin',
                                  'jpegPhoto': photo, 'description': [utf8, spacey], 'audio': latin1})
    # hand-written `description:: ` lines, as a test would write them
    s.modify(b'dn: uid=bin,' + p.encode() + b'\nchangetype: modify\nadd: description\ndescription:: '
             + base64.b64encode(nul) + b'\n')
    # slapd refuses non-UTF-8 in a directoryString such as description (so such bytes go in audio above)
    try:
        s.modify(b'dn: uid=bin,' + p.encode() + b'\nchangetype: modify\nadd: description\ndescription:: '
                 + base64.b64encode(latin1) + b'\n')
        raise AssertionError('slapd took a non-UTF-8 description')
    except LdapError as e:
        assert e.rc == 21, e    # invalidAttributeSyntax
    dn_utf8 = 'uid=jörg,' + p
    s.add_entry(dn_utf8, {'objectClass': 'inetOrgPerson', 'uid': 'jörg', 'cn': 'J', 'sn': 'J'})
    raw = s.tool('ldapsearch', ['-LLL', '-o', 'ldif-wrap=no', '-b', p, '(objectClass=*)']).stdout
    assert b'dn:: ' in raw and b'jpegPhoto:: ' in raw and b'description:: ' in raw and b'audio:: ' in raw
    res = s.search(p, 'one')
    e = res['uid=bin,' + p]
    assert e['jpegPhoto'] == [photo] and e['audio'] == [latin1]
    assert sorted(e['description']) == sorted([utf8, spacey, nul])
    assert dn_utf8 in res and res[dn_utf8]['uid'] == ['jörg'.encode()]
    # folded LDIF (default ldapsearch wrapping) parses to the same thing
    folded = s.tool('ldapsearch', ['-LLL', '-b', p, '(objectClass=*)']).stdout
    assert b'\n ' in folded
    assert parse_ldif(folded) == s.search(p)


@test(timeout=60)
def variants_sync_refresh_only(tmp):
    # Scenario: V0-V4 (and NONE) configs start; ldapsearch -E sync=ro works where syncprov is on.
    expect = {'V0': [], 'V1': ['syncprov-sessionlog 7'], 'V2': ['syncprov-sessionlog-source cn=log',
              'overlay accesslog', 'logdb cn=log'], 'V3': ['syncprov-reloadhint TRUE'],
              'V4': ['syncprov-nopresent TRUE']}
    servers = {}
    for v in expect:
        servers[v] = Slapd(tmp, variant=v, sessionlog=7, name='slapd-' + v)
    for v, s in servers.items():
        conf = open(s.conf_path).read()
        for line in expect[v]:
            assert line in conf, (v, line)
        if v == 'V2':
            assert conf.index('suffix "cn=log"') < conf.index('suffix "dc=example,dc=com"')
        s.add_people(3)
        r = s.sync_search('ro')
        out = r.stdout.decode()
        assert 'dn: uid=user00002,ou=people,dc=example,dc=com' in out, (v, out[-500:])
        assert 'result: 0 Success' in out, (v, out[-500:])
        # the same as the reader (not rootdn)
        assert s.sync_search('ro', bind='reader').returncode == 0
    # the accesslog DB records the writes
    log = servers['V2'].search('cn=log', filt='(reqType=add)', attrs=['reqDN'])
    assert any(a.get('reqDN') == [b'uid=user00002,ou=people,dc=example,dc=com'] for a in log.values()), log
    none = Slapd(tmp, variant='NONE', name='slapd-none')
    assert 'overlay syncprov' not in open(none.conf_path).read()
    assert none.sync_search('ro').returncode == 0          # a non-critical control is ignored
    r = none.sync_search('ro', check=False, critical=True)
    assert r.returncode == 12, r       # unavailableCriticalExtension
    assert servers['V0'].sync_search('ro', critical=True).returncode == 0


@test
def parallel_instances(tmp):
    # Scenario: two slapds at once get different ports and separate data.
    a, b = Slapd(tmp), Slapd(tmp)
    assert a.port != b.port and a.dir != b.dir
    a.add_people(2)
    assert len(a.search()) == len(a.base_dns()) + 2
    assert len(b.search()) == len(b.base_dns())


@test
def stop_leaves_no_process(tmp):
    # Scenario: stop() ends slapd (nothing in /proc, group empty), kill() too; the URL stops answering.
    s = Slapd(tmp, ldapi=True)
    pid = s.pid
    s.stop()
    assert not os.path.exists('/proc/%d' % pid), open('/proc/%d/stat' % pid).read()
    assert group_members(pid) == [] and s.pid is None
    r = subprocess.run(['ldapsearch', '-x', '-H', s.url, '-b', '', '-s', 'base'], capture_output=True)
    assert r.returncode != 0
    assert not os.path.exists(s.ldapi_path)        # slapd removes its socket on a clean stop
    s.start()
    pid = s.pid
    s.kill()
    assert not os.path.exists('/proc/%d' % pid) and s.pid is None


@test
def restart_keeps_data(tmp):
    # Scenario: stop/start, kill/start and a variant switch keep port, entries and entryUUIDs.
    s = Slapd(tmp, ldapi=True)
    s.add_people(10)
    before, port = s.uuids(), s.port
    s.restart()
    assert s.port == port and s.uuids() == before
    s.kill()                                   # leaves a stale ldapi socket behind
    s.start()
    assert s.port == port and s.uuids() == before
    who = s.tool('ldapwhoami', [], bind='external').stdout.strip()
    assert who == b'dn:gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth', who
    s.restart(variant='V2')
    assert 'syncprov-sessionlog-source cn=log' in open(s.conf_path).read()
    assert s.uuids() == before
    s.add_people(1, start=10)
    assert len(s.uuids()) == len(before) + 1
    s.stop()
    s.wipe()
    s.start()
    assert sorted(s.search()) == sorted(s.base_dns())


@test
def ldapi_external(tmp):
    # Scenario: the ldapi listener answers SASL EXTERNAL as the root peercred identity, unlimited.
    s = Slapd(tmp, ldapi=True, size_limit=5)
    assert s.ldapi_url.startswith('ldapi://%2F') and '/' not in s.ldapi_url[len('ldapi://'):]
    s.add_people(20)
    r = s.tool('ldapsearch', ['-LLL', '-b', s.suffix, '(objectClass=*)', '1.1'], bind='external')
    assert len(parse_ldif(r.stdout)) == 20 + len(s.base_dns())
    # anonymous users hit the size limit
    r = s.tool('ldapsearch', ['-LLL', '-b', s.suffix, '(objectClass=*)', '1.1'], bind='anon', check=False)
    assert r.returncode == 4, r
    # the reader (limits unlimited) does not
    assert len(s.search(bind='reader', attrs=['1.1'])) == 20 + len(s.base_dns())


def _client_send(consumer, key, msgs, fmt):
    fam = {'unix': 'AF_UNIX', 'abstract': 'AF_UNIX', 'inet': 'AF_INET'}[consumer.family]
    c = Client(consumer.listen_address, family=fam, authkey=key)
    for m in msgs:
        if fmt == 'json':
            c.send_bytes(json.dumps(m).encode())
        else:
            c.send(m)
    return c


@test
def consumer_families_pickle(tmp):
    # Scenario: Client over unix, abstract and inet delivers pickled dicts in order; closes are recorded.
    for fam in ('unix', 'abstract', 'inet'):
        con = Consumer(tmp, family=fam)
        assert os.stat(con.keyfile).st_mode & 0o777 == 0o600
        assert open(con.keyfile, 'rb').read() == con.key
        if fam == 'unix':
            assert con.address == con.listen_address and con.address.startswith(tmp)
        elif fam == 'abstract':
            assert con.address.startswith('@') and con.listen_address[0] == '\0'
        else:
            assert con.address == '127.0.0.1:%d' % con.listen_address[1]
        msgs = [{'type': 'hello', 'worker': 0, 'workers': 1}, {'type': 'add', 'seq': 1, 'attrs': {'cn': [b'\x00x']}},
                {'type': 'refresh_done', 'seq': 2}]
        c = _client_send(con, con.key, msgs, 'pickle')
        con.wait_messages(3)
        assert con.messages() == msgs, (fam, con.messages())
        assert con.messages('add') == [msgs[1]] and con.hellos() == [msgs[0]]
        assert con.messages(('hello', 'refresh_done')) == [msgs[0], msgs[2]]
        assert con.closed == {0: None}
        c.close()
        con.wait_closed()
        assert con.closed == {0: 'eof'}
        c2 = _client_send(con, con.key, [{'type': 'x'}], 'pickle')
        con.wait_messages(4)
        assert con.per_connection() == {0: msgs, 1: [{'type': 'x'}]}
        assert con.records()[-1] == (1, {'type': 'x'})
        c2.close()
        con.close()


@test
def consumer_json_and_inet6(tmp):
    # Scenario: JSON payloads are decoded; an IPv6 listener takes a hand-rolled client (Client cannot do v6).
    con = Consumer(tmp, family='inet', fmt='json', key=b'k\x00\n')
    msgs = [{'type': 'add', 'seq': 1, 'attrs': {'jpegPhoto': [{'base64': 'AAE='}], 'cn': ['é']}}]
    c = _client_send(con, b'k\x00\n', msgs, 'json')
    c.send_bytes(b'{not json')
    c.send_bytes(json.dumps({'type': 'refresh_done', 'seq': 2}).encode())
    con.wait_messages(2)
    assert con.messages()[0] == msgs[0]
    assert len(con.errors) == 1 and con.errors[0][0] == 0
    c.close()
    try:
        con6 = Consumer(tmp, family='inet6')
    except OSError as e:
        raise Skip('no IPv6 loopback: %s' % e)
    assert con6.address.startswith('[::1]:')
    s = socket.create_connection(con6.listen_address[:2], timeout=5)
    s.settimeout(None)
    conn = Connection(s.detach())
    answer_challenge(conn, con6.key)
    deliver_challenge(conn, con6.key)
    conn.send({'type': 'hello', 'v6': True})
    con6.wait_messages(1)
    assert con6.messages() == [{'type': 'hello', 'v6': True}]
    conn.close()


@test
def consumer_bad_key_and_close(tmp):
    # Scenario: a wrong key is counted, not fatal; close() makes a connected client see EOF.
    con = Consumer(tmp, family='unix')
    try:
        Client(con.listen_address, family='AF_UNIX', authkey=b'wrong')
        raise AssertionError('wrong key accepted')
    except AuthenticationError:
        pass
    con.wait_auth_failures(1)
    assert con.auth_failures == 1 and con.connections == 0
    c = _client_send(con, con.key, [{'type': 'hello'}], 'pickle')
    con.wait_messages(1)
    c2 = _client_send(con, con.key, [], 'pickle')
    wait_until(lambda: con.connections == 2, what='second connection')
    con.close_connection(1)
    c2_eof = False
    try:
        c2.recv()
    except EOFError:
        c2_eof = True
    assert c2_eof
    con.close()
    try:
        c.recv()
        raise AssertionError('recv after close returned')
    except (EOFError, ConnectionResetError):
        pass
    assert all(r is not None for r in con.closed.values()), con.closed
    try:
        Client(con.listen_address, family='AF_UNIX', authkey=con.key)
        raise AssertionError('connected after close')
    except (FileNotFoundError, ConnectionRefusedError):
        pass


def _add(seq, dn, uuid, **attrs):
    return {'type': 'add', 'seq': seq, 'dn': dn, 'uuid': uuid, 'attrs': {k: [v.encode() for v in vs]
                                                                             for k, vs in attrs.items()}}


@test
def model_synthetic(tmp):
    # Scenario: two runs over two connections each: the reload snapshot drops a stale entry; rename, modify,
    # delete are applied in seq order across connections.
    B = 'ou=people,dc=example,dc=com'
    run1 = [
        (0, {'type': 'hello', 'worker': 0, 'workers': 2, 'reload': True}),
        (1, {'type': 'hello', 'worker': 1, 'workers': 2, 'reload': True}),
        (0, _add(1, 'uid=a,' + B, 'u-a', uid=['a'], cn=['A'])),
        (1, _add(2, 'uid=b,' + B, 'u-b', uid=['b'], cn=['B'])),
        (0, _add(3, 'uid=stale,' + B, 'u-stale', uid=['stale'])),
        (1, {'type': 'refresh_done', 'seq': 4}),
        (0, {'type': 'refresh_done', 'seq': 4}),
    ]
    # second run, a full reload again (store wiped), stale is not re-sent; seq restarted.
    # A rename arrives on one connection before, in arrival order, the add it follows (by seq) on the other.
    run2 = [
        (2, {'type': 'hello', 'worker': 0, 'workers': 2, 'reload': True}),
        (3, {'type': 'hello', 'worker': 1, 'workers': 2, 'reload': True}),
        (3, {'type': 'rename', 'seq': 3, 'old_dn': 'uid=a,' + B, 'dn': 'uid=a2,' + B, 'uuid': 'u-a'}),
        (2, _add(1, 'uid=a,' + B, 'u-a', uid=['a'], cn=['A'])),
        (2, _add(2, 'uid=b,' + B, 'u-b', uid=['b'], cn=['B'])),
        (2, {'type': 'refresh_done', 'seq': 4}),
        (3, {'type': 'refresh_done', 'seq': 4}),
        (3, {'type': 'modify', 'seq': 5, 'dn': 'uid=a2,' + B, 'uuid': 'u-a',
             'old': {'uid': [b'a'], 'cn': [b'A']}, 'new': {'uid': [b'a2'], 'cn': [b'A']}, 'changed': ['uid']}),
        (2, {'type': 'delete', 'seq': 6, 'dn': 'uid=b,' + B, 'uuid': 'u-b', 'old': {'uid': [b'b'], 'cn': [b'B']}}),
        (3, _add(7, 'uid=c,' + B, 'u-c', uid=['c'], description=['x'])),
    ]
    m = Model()
    m.apply_records(run1)
    assert m.as_dict() == {'uid=a,' + B: {'uid': [b'a'], 'cn': [b'A']}, 'uid=b,' + B: {'uid': [b'b'], 'cn': [b'B']},
                           'uid=stale,' + B: {'uid': [b'stale']}}, m.as_dict()
    m.apply_records(run2)
    assert m.as_dict() == {'uid=a2,' + B: {'uid': [b'a2'], 'cn': [b'A']}, 'uid=c,' + B: {'uid': [b'c'],
                           'description': [b'x']}}, m.as_dict()
    assert m.swept == [('u-stale', 'uid=stale,' + B)], m.swept
    assert m.anomalies == [], m.anomalies
    # the same through one list and harness._group_runs
    m2 = Model()
    m2.apply_records(run1 + run2)
    assert m2.as_dict() == m.as_dict() and m2.anomalies == []
    assert [r['conns'] for r in harness._group_runs(run1 + run2)] == [[0, 1], [2, 3]]
    # no reload: nothing swept; JSON values; anomalies recorded
    m3 = Model()
    m3.apply({'type': 'hello', 'worker': 0, 'workers': 1, 'reload': False})
    m3.apply({'type': 'add', 'seq': 10, 'dn': 'cn=j', 'uuid': 'j', 'attrs': {'cn': ['j'], 'p': [{'base64': 'AP8='}]}})
    m3.apply({'type': 'refresh_done', 'seq': 11})
    m3.apply({'type': 'delete', 'seq': 12, 'dn': 'cn=zz', 'uuid': 'zz', 'old': {}})
    m3.apply({'type': 'modify', 'seq': 12, 'dn': 'cn=j', 'uuid': 'j', 'old': {'cn': ['x']}, 'new': {'cn': ['k']},
              'changed': ['cn', 'p']})
    assert m3.as_dict() == {'cn=j': {'cn': [b'k']}}
    assert len(m3.anomalies) == 3 and 'unknown uuid' in m3.anomalies[0] and 'seq not increasing' in \
        m3.anomalies[1] and 'old differs' in m3.anomalies[2], m3.anomalies


@test
def model_against_slapd(tmp):
    # Scenario: a model fed add events built from the server equals it; a divergence gives a readable diff.
    s = Slapd(tmp)
    s.add_people(5)
    s.add_entry('uid=bin,ou=people,' + s.suffix, {'objectClass': 'inetOrgPerson', 'uid': 'bin', 'cn': 'b',
                                                   'sn': 'b', 'jpegPhoto': b'\xff\x00'})
    attrs = ['cn', 'uid', 'jpegPhoto']
    base = 'ou=people,' + s.suffix
    server = s.search(base, attrs=attrs, operational=False)
    uuids = s.uuids(base)
    m = Model()
    m.apply({'type': 'hello', 'worker': 0, 'workers': 1, 'reload': True})
    for n, (dn, a) in enumerate(sorted(server.items()), 1):
        # JSON-style values for half of them
        if n % 2:
            a = {k: [v.decode() if b'\x00' not in v and v.isascii() else {'base64': base64.b64encode(v).decode()}
                     for v in vs] for k, vs in a.items()}
        m.apply({'type': 'add', 'seq': n, 'dn': dn, 'uuid': uuids[dn], 'attrs': a})
    m.apply({'type': 'refresh_done', 'seq': n + 1})
    assert_model_equals_server(m, s, base, attrs=attrs)
    s.replace('uid=user00003,' + base, 'cn', 'Someone Else')
    s.delete('uid=user00004,' + base)
    try:
        assert_model_equals_server(m, s, base, attrs=attrs)
        raise RuntimeError('no difference found')
    except AssertionError as e:
        text = str(e)
    assert 'only in model:  uid=user00004,' + base in text, text
    assert "differs: uid=user00003," + base in text and "cn: model=[b'User 3'] server=[b'Someone Else']" in text, text


@test
def ldap_url_encoding(tmp):
    # Scenario: ldap_url builds RFC 4516 URLs that libldap (ldapurl) parses back to the same parts.
    u = ldap_url('ldap://127.0.0.1:389/', 'ou=a b,dc=example,dc=com', ['cn', 'uid'], 'one',
                 '(&(uid=a?b)(cn=x%y*))', ['bindname=cn=reader,dc=example,dc=com', '!x-saslmech=EXTERNAL'])
    assert u.startswith('ldap://127.0.0.1:389/ou=a%20b,dc=example,dc=com?cn,uid?one?'), u
    out = subprocess.run(['ldapurl', '-H', u], capture_output=True, check=True).stdout.decode()
    for line in ['dn: ou=a b,dc=example,dc=com', 'selector: cn', 'selector: uid', 'scope: one',
                 'filter: (&(uid=a?b)(cn=x%y*))', 'extension: bindname=cn=reader,dc=example,dc=com',
                 'extension: !x-saslmech=EXTERNAL']:
        assert line in out, (line, out)
    assert ldap_url('ldap://h:1', 'dc=x') == 'ldap://h:1/dc=x'
    assert ldap_url('ldap://h:1', 'dc=x', filt='(a=b)') == 'ldap://h:1/dc=x???(a=b)'
    s = Slapd(tmp, ldapi=True, start=False)
    assert ldap_url(s, 'dc=x', ldapi=True).startswith('ldapi://%2F')


@test
def daemon_runner_plumbing(tmp):
    # Scenario: Daemon builds the command line of ldapfeed.8, SYNOPSIS, captures stderr, reports exit status (a
    # stand-in binary).
    s = Slapd(tmp, start=False)
    s.port = 389
    con = Consumer(tmp, family='abstract', fmt='json')
    d = Daemon(tmp, s, con, processes=4, mode='refresh', password='readerpw', extra=['-v'], binary='/bin/true',
               start=False, bind='anon')
    expected = ['-H', 'ldap://127.0.0.1:389/dc=example,dc=com', '-D', os.path.join(tmp, 'data'), '-m',
                os.path.join(tmp, 'marker'), '-o', con.address, '-k', con.keyfile, '-p', '4', '--mode', 'refresh',
                '--format', 'json', '-f']
    assert d.cmd[d.cmd.index('-H'):][:len(expected)] == expected, d.cmd
    assert d.cmd[d.cmd.index('-H') - 1] == '/bin/true'
    i = d.cmd.index('-y')
    assert open(d.cmd[i + 1], 'rb').read() == b'readerpw\n' and d.cmd[-1] == '-v'
    assert d.cmd[d.cmd.index('--format') + 1] == 'json' and '-f' in d.cmd and d.bind == 'anon'
    # bind='reader': bindname extension (comma-escaped, as libldap parses it back) and the password file
    dr = Daemon(tmp, s, con, bind='reader', binary='/bin/true', start=False)
    url = dr.cmd[dr.cmd.index('-H') + 1]
    parsed = subprocess.run(['ldapurl', '-H', url], capture_output=True, check=True).stdout.decode()
    assert 'extension: bindname=cn=reader,dc=example,dc=com' in parsed and 'dn: dc=example,dc=com' in parsed, parsed
    assert open(dr.cmd[dr.cmd.index('-y') + 1], 'rb').read() == b'readerpw\n'
    assert os.stat(dr.cmd[dr.cmd.index('-y') + 1]).st_mode & 0o777 == 0o600
    d2 = Daemon(tmp, binary='/bin/sh', argv=['-c', 'echo oops >&2; sleep 0.2 & sleep 0.3; exit 3'])
    assert d2.wait(10) == 3 and 'oops' in d2.stderr()
    assert d2.stderr_path != d.stderr_path
    d3 = Daemon(tmp, binary='/bin/sh', argv=['-c', 'sleep 60 & sleep 60 & wait'])
    wait_until(lambda: len(d3.children()) == 2, what='two children')
    assert d3.alive() and len(d3.group()) == 3 and d3.descendants() == d3.children()
    d3.kill_group(signal.SIGTERM)
    assert d3.wait(10) == -signal.SIGTERM
    wait_until(lambda: not d3.group(), what='group gone')
    saved = os.environ.pop('LDAPFEED', None)
    try:
        os.environ['LDAPFEED'] = os.path.join(tmp, 'nonexistent')
        try:
            Daemon(tmp, s, con)
            raise AssertionError('no Skip for a missing binary')
        except Skip:
            pass
    finally:
        os.environ.pop('LDAPFEED', None)
        if saved is not None:
            os.environ['LDAPFEED'] = saved


_leftover = {}


@test
def teardown_kills_by_pid_part1(tmp):
    # Scenario: a test leaves a process group (leader and child, ignoring SIGTERM) running on purpose.
    p = subprocess.Popen(['sh', '-c', 'trap "" TERM; sleep 300 & sleep 300 & wait'], start_new_session=True)
    register_process(p, group=True, name='stubborn', term_timeout=0.3)
    wait_until(lambda: len(group_members(p.pid)) == 3, what='three group members')
    _leftover['pids'] = group_members(p.pid)
    _leftover['slapd'] = Slapd(tmp).pid


@test
def teardown_kills_by_pid_part2():
    # Scenario: everything part1 started is gone, killed by pid after part1 ended.
    if 'pids' not in _leftover:
        raise Skip('run together with teardown_kills_by_pid_part1')
    for pid in _leftover['pids'] + [_leftover['slapd']]:
        assert not pid_alive(pid), pid


@test
def wait_until_reports(tmp):
    # Scenario: wait_until returns the predicate's value, or names what it waited for on timeout.
    assert wait_until(lambda: 42, timeout=1) == 42
    t0 = time.monotonic()
    try:
        wait_until(lambda: False, timeout=0.2, what='the moon')
        raise RuntimeError('no timeout')
    except AssertionError as e:
        assert 'the moon' in str(e)
    assert time.monotonic() - t0 < 2


if __name__ == '__main__':
    main()
