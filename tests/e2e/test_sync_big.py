#!/usr/bin/env python3
"""End-to-end tests of large and binary values (doc/events.md, "Encoding":
values as bytes, no size limit): a 5 MiB group entry (100,000 member values)
and an entry with non-UTF-8 binary values, loaded and then modified, in both
payload formats.  The checks and helpers are test_sync.py's (complete event
lists, seq, routing, no duplicates, the consumer's copy equal to the
server)."""

import base64
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F403
import harness  # noqa: E402

_registered = len(harness._tests)
import test_sync as sync  # noqa: E402
del harness._tests[_registered:]        # use its helpers, not its tests

PEOPLE = sync.PEOPLE
GROUPS = sync.GROUPS
BIG_DN = 'cn=big,' + GROUPS
BIN_DN = 'uid=binary,' + PEOPLE
MEMBERS = 100000


def member(i):
    # 56 bytes each: 100,000 of them make an entry of more than 5 MiB
    return 'uid=member-%06d,ou=members,%s' % (i, PEOPLE)


def der_certificate(tmp):
    """A real DER X.509 certificate (slapd checks the syntax of userCertificate)."""
    key, cert = os.path.join(tmp, 'cert.key'), os.path.join(tmp, 'cert.der')
    try:
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
                        '-nodes', '-keyout', key, '-subj', '/CN=ldapfeed test', '-days', '2', '-outform', 'DER',
                        '-out', cert], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.CalledProcessError) as e:
        raise Skip('openssl cannot make a test certificate: %s' % e)
    with open(cert, 'rb') as f:
        return f.read()


def is_text(v):
    """What doc/events.md, "Encoding", sends as a JSON string: valid UTF-8
    without NUL."""
    if b'\x00' in v:
        return False
    try:
        v.decode('utf-8')
        return True
    except UnicodeDecodeError:
        return False


def check_value_types(msgs, fmt, expect_values):
    """Every value is bytes (pickle), or a str for UTF-8 without NUL and
    {"base64": ...} otherwise (json); expect_values maps values (bytes) that
    must be seen in that form to a description."""
    seen = set()
    bad = []
    for m in msgs:
        for field in ('attrs', 'old', 'new'):
            for name, vals in (m.get(field) or {}).items():
                for v in vals:
                    raw = harness._norm_value(v)
                    if fmt == 'pickle':
                        ok = isinstance(v, bytes)
                    elif is_text(raw):
                        ok = isinstance(v, str)
                    else:
                        ok = isinstance(v, dict) and set(v) == {'base64'} and isinstance(v['base64'], str)
                    if not ok and len(bad) < 10:
                        bad.append('%s %s.%s: %s value %s' % (m['type'], field, name, type(v).__name__,
                                                              harness._short(raw, 60)))
                    if raw in expect_values:
                        seen.add(raw)
    assert not bad, 'values in the wrong %s form:\n%s' % (fmt, '\n'.join(bad))
    missing = [d for v, d in expect_values.items() if v not in seen]
    assert not missing, 'values never delivered: %s' % missing


def _big_and_binary(tmp, fmt):
    # 5.6 MB adds exceed slapd's default 4 MiB limit on an incoming PDU
    s = Slapd(tmp, variant='V1', extra_global_conf='sockbuf_max_incoming_auth 16777215')
    rnd = random.Random(4533)
    every_byte = bytes(range(256))
    photo = every_byte * 64 + rnd.randbytes(100000) + b'\x00\xff\xd8\xff'
    pkcs12 = bytes(range(255, -1, -1)) * 3
    cert = der_certificate(tmp)
    utf8 = 'Jörg Müller – ☃ 日本'.encode()
    nul = b'nul\x00inside'
    s.add_entry(BIG_DN, {'objectClass': 'groupOfNames', 'cn': 'big', 'description': 'a 5 MiB group',
                         'member': [member(i) for i in range(MEMBERS)]})
    s.add_entry(BIN_DN, {'objectClass': ['inetOrgPerson'], 'uid': 'binary', 'cn': 'binary', 'sn': 'bin',
                         'audio': every_byte, 'jpegPhoto': photo, 'userCertificate;binary': cert,
                         'userPKCS12': pkcs12, 'description': [utf8, nul], 'displayName': utf8})
    s.add_people(3)
    snap = sync.snapshot(s)
    big_uuid = [u for u, (dn, _) in snap.items() if dn == BIG_DN][0]
    big = snap[big_uuid][1]
    assert len(big['member']) == MEMBERS and sum(len(v) for v in big['member']) > 5 * 1024 * 1024
    binary = [a for dn, a in snap.values() if dn == BIN_DN][0]
    assert binary['userCertificate;binary'] == [cert] and binary['audio'] == [every_byte], sorted(binary)

    con = Consumer(tmp, fmt=fmt)
    d = sync.feed(tmp, s, con)
    sync.wait_run(con, 1, timeout=60)
    expected = sync.full_load(snap)
    sync.wait_events(con, len(expected), timeout=30)

    # one member more: one modify, changed == ['member'], old and new exact
    base = len(con.events())
    s.modify_entry(BIG_DN, [('add', 'member', member(MEMBERS))])
    after = sync.snapshot(s)
    want = sync.expected_changes(snap, after)
    assert [(e['type'], e['changed']) for e in want] == [('modify', ['member'])], want
    assert len(want[0]['old']['member']) == MEMBERS and len(want[0]['new']['member']) == MEMBERS + 1
    sync.wait_events(con, base + 1, timeout=30)
    got = sorted(con.events()[base:], key=sync.seq_of)
    sync.assert_events(got, want, what='big group modify')
    assert got[0]['changed'] == ['member'], got[0]['changed']
    expected += want

    # a binary value replaced by another
    base, before = len(con.events()), after
    photo2 = rnd.randbytes(70000) + every_byte
    s.replace(BIN_DN, 'jpegPhoto', photo2)
    want = sync.expected_changes(before, sync.snapshot(s))
    assert [(e['type'], e['changed']) for e in want] == [('modify', ['jpegPhoto'])], want
    sync.wait_events(con, base + 1, timeout=30)
    sync.assert_events(sorted(con.events()[base:], key=sync.seq_of), want, what='binary modify')
    expected += want

    sync.stop_clean(d)
    evs = sync.run_events(con, 0)
    sync.assert_events(evs, expected, ordered=False, what='the whole run')
    check_value_types(evs, fmt, {every_byte: 'audio (all 256 byte values)', photo: 'jpegPhoto',
                                 photo2: 'the new jpegPhoto', cert: 'userCertificate;binary',
                                 pkcs12: 'userPKCS12', utf8: 'UTF-8 description', nul: 'description with NUL',
                                 member(MEMBERS).encode(): 'the added member'})
    if fmt == 'json':
        # the JSON forms themselves, not only what they decode to
        add = [m for m in evs if m['type'] == 'add' and m['dn'] == BIN_DN][0]['attrs']
        assert utf8.decode() in add['description'] and add['displayName'] == [utf8.decode()], add['description']
        assert {'base64': base64.b64encode(nul).decode()} in add['description']
    sync.check_feed(con, [True], workers=2, fmt=fmt)
    sync.check_copy(con, s)


@test(timeout=110)
def big_group_and_binary_pickle(tmp):
    # Scenario: a groupOfNames with 100,000 member values (over 5 MiB) and an entry
    # with non-UTF-8 binary values (audio with all 256 byte values, jpegPhoto,
    # userCertificate;binary, userPKCS12, a NUL-bearing and a non-ASCII UTF-8
    # description) are loaded whole and exact in pickle (bytes values); then one
    # member is added (one modify, changed == ['member'], exact 100,000 / 100,001
    # values) and the photo replaced (one modify, exact bytes).
    _big_and_binary(tmp, 'pickle')


@test(timeout=110)
def big_group_and_binary_json(tmp):
    # Scenario: the same in JSON: values that are UTF-8 without NUL are strings,
    # all others {"base64": ...}; the decoded values are exact.
    _big_and_binary(tmp, 'json')


if __name__ == '__main__':
    main()
