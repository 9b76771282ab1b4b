#!/usr/bin/env python3
"""Scenario: tests/tools/encode_sample encodes a fixed list of events (every
kind of value, odd DNs, boundary seqs, a 1 MiB value, a 100,000-value
attribute) as pickle and as JSON; real Python decodes each payload with
pickle.loads / json.loads and must get exactly the values this script
builds on its own from the same recipe (doc/events.md, "Encoding").  The
pickles must use the opcodes of pickle version 3 only, and no memo."""
import base64
import json
import os
import pickle
import pickletools
import struct
import subprocess
import sys
import uuid

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(TOP, 'tests', 'tools', 'encode_sample')
VERSION = '0.1.0'   # LDAPFEED_VERSION

SEQS = [0, 1, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
        2**63 - 1, 2**63, 2**64 - 1]
ODD_DNS = [
    b'cn=caf\xc3\xa9,dc=example',
    b'cn=\xff\xfe,dc=x',
    b'cn="quoted",dc=x',
    b'cn=back\\slash,dc=x',
    b'cn=ctl\x01\x02\n\t\r\b\f\x1f\x7f',
    b'cn=nul\x00x',
    b'cn=trunc\xe2\x82',
    b'cn=surr\xed\xa0\x80',
    b'cn=\xf0\x9d\x84\x9e',
    b'',
    b'cn=\xe6\x97\xa5\xe6\x9c\xac',
    b'cn=overlong\xc0\xaf,dc=x',
]

n_checks = 0
n_failed = 0


def check(cond, what, *diag):
    global n_checks, n_failed
    n_checks += 1
    print('%sok %d - %s' % ('' if cond else 'not ', n_checks, what))
    if not cond:
        n_failed += 1
        for line in diag:
            for part in str(line).splitlines() or ['']:
                print('#   ' + part)
    sys.stdout.flush()
    return cond


def text(b):
    """A DN or attribute name as the consumer sees it."""
    return b.decode('utf-8', 'replace')


def events():
    """The list encode_sample writes, as (description, dict) with ATTRS
    values as bytes and DNs/names still as bytes (see expected())."""
    evs = []

    def ev(what, **fields):
        i = len(evs)
        fields['uuid'] = str(uuid.UUID(bytes=bytes((i * 17 + k * 13) & 0xff for k in range(16))))
        if fields['type'] == 'hello':   # a hello's uuid field is the epoch
            fields['epoch'] = fields['uuid'].replace('-', '')
        evs.append((what, fields))

    ev('hello reload', type='hello', worker=0, workers=1, reload=True)
    ev('hello', type='hello', worker=3, workers=8, reload=False)
    attrs = [
        (b'objectClass', [b'top', b'person']),
        (b'allBytes', [bytes(range(256))]),
        (b'eachByte', [bytes([i]) for i in range(256)]),
        (b'nonUtf8', [b'\xc3\x28', b'\xe2\x82', b'\xe2\x82A', b'\xed\xa0\x80',
                      b'\xed\xbf\xbf', b'\xf4\x90\x80\x80', b'\xc0\xaf',
                      b'\xe0\x80\xaf', b'\xf0\x80\x80\xaf', b'\xf5\x80\x80\x80',
                      b'\xff', b'\x80', b'ok\xfe', b'\xf0\x9d\x84']),
        (b'utf8', [s.encode('utf-8') for s in [
            '\u00e9', '\u20ac', '\U0001d11e', '\U0010ffff', '\ud7ff', '\ue000',
            '\uffff', 'tab\there', 'quote"back\\slash', 'ctl\x01\x1f\x7f',
            'nl\ncr\r', '\u00fcn\u00efc\u00f6d\u00e9 \u2211 \u65e5\u672c\u8a9e']]),
        (b'nul', [b'a\x00b', b'\x00', b'\x00\x00\x00']),
        (b'empty', [b'']),
        (b'noValues', []),
        (b'bad\xffname', [b'v']),
        (b'quo"te\\name', [b'v2']),
    ]
    ev('add, every kind of value', type='add', seq=1,
       dn=b'cn=binary,dc=example,dc=com', attrs=attrs)
    ev('add, no attributes', type='add', seq=2, dn=b'cn=empty', attrs=[])
    photo = bytes((i * 7 + (i >> 8)) & 0xff for i in range(1 << 20))
    desc = bytes(0x20 + (i * 31) % 95 for i in range(1 << 20))
    ev('add, two 1 MiB values', type='add', seq=3, dn=b'cn=large',
       attrs=[(b'jpegPhoto', [photo]), (b'description', [desc])])
    ev('add, 100,000-member group', type='add', seq=4, dn=b'cn=group', attrs=[
        (b'member', [b'uid=user%06d,ou=people,dc=example,dc=com' % i for i in range(100000)]),
        (b'batch999', [b'%d' % i for i in range(999)]),
        (b'batch1001', [b'%d' % i for i in range(1001)])])
    ev('modify', type='modify', seq=5, dn=b'cn=mod',
       csn=b'20261206065619.276973Z#000000#000#000000',
       old=[(b'cn', [b'old']), (b'description', [b'x'])],
       new=[(b'cn', [b'new']), (b'mail', [b'a@b'])],
       changed=[b'cn', b'description', b'mail'],
       added=[(b'cn', [b'new']), (b'description', []), (b'mail', [b'a@b'])],
       removed=[(b'cn', [b'old']), (b'description', [b'x']), (b'mail', [])])
    ev('modify, empty', type='modify', seq=6, dn=b'cn=mod', old=[], new=[], changed=[])
    ev('modify, 2500 changed names', type='modify', seq=7, dn=b'cn=mod', old=[], new=[],
       changed=[b'n%04d' % i for i in range(2500)])
    ev('rename', type='rename', seq=8, old_dn=b'cn=old,dc=x', dn=b'cn=new,dc=x')
    ev('delete', type='delete', seq=9, dn=b'cn=gone,dc=x',
       old=[(b'cn', [b'gone']), (b'jpegPhoto', [b'\xff\xd8\xff'])])
    for s in SEQS:
        ev('refresh_done seq %d' % s, type='refresh_done', seq=s)
    for i, dn in enumerate(ODD_DNS):
        nxt = ODD_DNS[(i + 1) % len(ODD_DNS)]
        ev('rename %r -> %r, seq %d' % (dn, nxt, SEQS[i % len(SEQS)]), type='rename',
           seq=SEQS[i % len(SEQS)], old_dn=dn, dn=nxt)
        s = SEQS[len(SEQS) - 1 - i % len(SEQS)]
        ev('delete %r, seq %d' % (dn, s), type='delete', seq=s, dn=dn, old=[(dn, [dn])])
    return evs


def json_value(v):
    try:
        s = v.decode('utf-8')
    except UnicodeDecodeError:
        s = None
    if s is None or '\x00' in s:
        return {'base64': base64.b64encode(v).decode('ascii')}
    return s


KEYS = {
    'hello': ['type', 'worker', 'workers', 'format', 'version', 'epoch', 'reload'],
    'add': ['type', 'seq', 'dn', 'uuid', 'attrs'],
    'modify': ['type', 'seq', 'dn', 'uuid', 'csn', 'old', 'new', 'changed', 'added', 'removed'],
    'rename': ['type', 'seq', 'old_dn', 'dn', 'uuid'],
    'delete': ['type', 'seq', 'dn', 'uuid', 'old'],
    'refresh_done': ['type', 'seq'],
}


def expected(fields, fmt):
    """The dict the consumer must get for one event in one format."""
    value = bytes if fmt == 'pickle' else json_value
    out = {}
    for k in KEYS[fields['type']]:
        if k in ('csn', 'added', 'removed') and k not in fields:
            continue        # only when the reader has them (doc/events.md)
        if k == 'format':
            v = fmt
        elif k == 'version':
            v = VERSION
        else:
            v = fields[k]
        if k in ('dn', 'old_dn', 'csn'):
            v = text(v)
        elif k in ('attrs', 'old', 'new', 'added', 'removed'):
            v = {text(name): [value(x) for x in vals] for name, vals in v}
        elif k == 'changed':
            v = [text(x) for x in v]
        out[k] = v
    return out


def diff(got, want, path='payload'):
    """The first place got and want differ (types too: True is not 1), or
    None."""
    if type(got) is not type(want):
        return '%s: got %s %s, want %s %s' % (path, type(got).__name__, short(got),
                                              type(want).__name__, short(want))
    if isinstance(want, dict):
        if set(got) != set(want):
            return '%s: keys got %s, want %s' % (path, sorted(got), sorted(want))
        for k in want:
            d = diff(got[k], want[k], '%s[%r]' % (path, k))
            if d:
                return d
        return None
    if isinstance(want, list):
        if len(got) != len(want):
            return '%s: %d items, want %d' % (path, len(got), len(want))
        for i, (g, w) in enumerate(zip(got, want)):
            d = diff(g, w, '%s[%d]' % (path, i))
            if d:
                return d
        return None
    if got != want:
        return '%s: got %s, want %s' % (path, short(got), short(want))
    return None


def short(v):
    r = repr(v)
    return r if len(r) <= 200 else r[:200] + '... (%d chars)' % len(r)


def frames(data):
    out, off = [], 0
    while off < len(data):
        if len(data) - off < 4:
            raise ValueError('truncated length at offset %d' % off)
        (n,) = struct.unpack('>I', data[off:off + 4])
        off += 4
        if len(data) - off < n:
            raise ValueError('truncated payload at offset %d' % off)
        out.append(data[off:off + n])
        off += n
    return out


def pickle_shape(payload):
    """None if payload is one protocol-3 pickle without memo opcodes and
    nothing after its STOP, else what is wrong."""
    try:
        ops = list(pickletools.genops(payload))
    except Exception as e:
        return 'pickletools cannot parse it: %s' % e
    if not ops or ops[0][0].name != 'PROTO' or ops[0][1] != 3:
        return 'does not start with PROTO 3'
    for op, arg, pos in ops:
        if op.proto > 3:
            return '%s at %d is protocol %d' % (op.name, pos, op.proto)
        if 'PUT' in op.name or 'GET' in op.name or op.name == 'MEMOIZE':
            return 'memo opcode %s at %d' % (op.name, pos)
    if ops[-1][0].name != 'STOP' or ops[-1][2] != len(payload) - 1:
        return 'STOP is not the last byte'
    return None


def run(fmt, evs):
    try:
        p = subprocess.run([TOOL, fmt], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        check(False, '%s: run %s' % (fmt, TOOL), e, 'build it with: make tests/tools/encode_sample')
        return
    if not check(p.returncode == 0, '%s: encode_sample exits 0' % fmt,
                 'status %d' % p.returncode, p.stderr.decode(errors='replace')):
        return
    try:
        payloads = frames(p.stdout)
    except ValueError as e:
        check(False, '%s: the output is whole frames' % fmt, e)
        return
    check(len(payloads) == len(evs), '%s: %d payloads' % (fmt, len(evs)),
          'got %d' % len(payloads))
    for i, ((what, fields), payload) in enumerate(zip(evs, payloads)):
        want = expected(fields, fmt)
        if fmt == 'pickle':
            shape = pickle_shape(payload)
            check(shape is None, 'pickle %d (%s): protocol 3 opcodes, no memo' % (i, what), shape)
            try:
                got = pickle.loads(payload)
            except Exception as e:
                check(False, 'pickle %d (%s): loads' % (i, what), repr(e), short(payload))
                continue
        else:
            try:
                payload.decode('utf-8')
                utf8 = None
            except UnicodeDecodeError as e:
                utf8 = e
            check(utf8 is None, 'json %d (%s): strict UTF-8' % (i, what), utf8)
            try:
                got = json.loads(payload)
            except Exception as e:
                check(False, 'json %d (%s): loads' % (i, what), repr(e), short(payload))
                continue
        d = diff(got, want)
        check(d is None, '%s %d (%s): decodes to the expected value' % (fmt, i, what), d)
        if fmt == 'pickle' and fields['type'] == 'refresh_done':
            # Small enough to hold byte for byte against Python's own pickler.
            ref = pickletools.optimize(pickle.dumps(want, 3))
            check(payload == ref, 'pickle %d (%s): same bytes as pickle.dumps' % (i, what),
                  'got  %r' % payload, 'want %r' % ref)


def main():
    evs = events()
    run('pickle', evs)
    run('json', evs)
    return 1 if n_failed or n_checks == 0 else 0


if __name__ == '__main__':
    sys.exit(main())
