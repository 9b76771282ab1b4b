"""The benchmark's lab: generated data and a throwaway slapd with syncprov.

gen_ldif() writes N realistic inetOrgPerson entries of about 1 KiB (some
with binary jpegPhoto / userCertificate values, some with non-ASCII text)
and optional big groups; gen_subtree_ldif() the same people below
ou=big,ou=groups, outside an empty ou=staff (a search base).  Slapd is the
end-to-end tests' lab slapd (tests/e2e/harness/slapd.py) with its database
loaded offline with `slapadd -q -w` (entryUUID, entryCSN and the contextCSN
syncprov needs) and cached per data set; it runs on 127.0.0.1 on a free
port, and reconfigure() restarts it with extra access rules (hide_acl()).
"""
import base64
import json
import os
import random
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests', 'e2e'))
import harness  # noqa: E402

SUFFIX = 'dc=example,dc=com'
ROOTDN = 'cn=admin,' + SUFFIX
ROOTPW = 'secret'
READER_DN = 'cn=reader,' + SUFFIX
READER_PW = 'readerpw'
PEOPLE = 'ou=people,' + SUFFIX
GROUPS = 'ou=groups,' + SUFFIX
STAFF = 'ou=staff,' + SUFFIX           # the search base of the subtree data set
BIG_OUT = 'ou=big,' + GROUPS            # its big subtree, outside the base
GEN_VERSION = 3         # bump when the generated data change

SLAPD = harness.SLAPD_BIN
SLAPADD = os.environ.get('SLAPADD', '/usr/sbin/slapadd')
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def finish(name, res, server):
    """The end of a benchmark against a server of the tests' fixtures:
    res written to bench/results/NAME.json and printed, the server and the
    harness's other resources removed."""
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, name + '.json'), 'w') as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))
    server._teardown()
    harness._teardown_from(0)
    harness._watchdog_close()


def person_dn(i):
    return 'uid=u%07d,%s' % (i, PEOPLE)


PERSON_DN_FMT = 'uid=u%07d,' + PEOPLE
MEMBER_DN_FMT = 'uid=m%07d,' + PEOPLE


def group_dn(m):
    return 'cn=g%d,%s' % (m, GROUPS)


_GIVEN = ['James', 'Mary', 'John', 'Patricia', 'Robert', 'Jennifer', 'Michael', 'Linda', 'David',
          'Elizabeth', 'William', 'Barbara', 'Richard', 'Susan', 'Joseph', 'Jessica', 'Thomas',
          'Sarah', 'Karen', 'Lisa', 'Nancy', 'Chloé', 'Zoë', 'José', 'François', 'Jürgen', 'Søren',
          'Ægir', 'Łukasz', 'Dmitrij', 'Hiroshi', 'Aiko', 'Noémie', 'Björn', 'Íñigo']
_SN = ['Smith', 'Johnson', 'Williams', 'Brown', 'Jones', 'Garcia', 'Miller', 'Davis', 'Rodriguez',
       'Martinez', 'Hernandez', 'Lopez', 'Gonzalez', 'Wilson', 'Anderson', 'Thomas', 'Taylor',
       'Moore', 'Jackson', 'Martin', 'Lee', 'Perez', 'Thompson', 'White', 'Müller', 'Dvořák',
       'Øvergaard', 'Nakamura', 'Núñez', 'Kowalski']
_TITLES = ['Engineer', 'Senior Engineer', 'Staff Engineer', 'Manager', 'Director', 'Analyst',
           'Accountant', 'Designer', 'Technician', 'Consultant', 'Administrator', 'Scientist']
_DEPTS = ['Engineering', 'Finance', 'Sales', 'Marketing', 'Operations', 'Research', 'Legal',
          'Human Resources', 'Support', 'Facilities']
_CITIES = [('Springfield', 'Oregon', '97403'), ('Portland', 'Maine', '04101'),
           ('Austin', 'Texas', '73301'), ('Madison', 'Wisconsin', '53703'),
           ('Boulder', 'Colorado', '80302'), ('Raleigh', 'North Carolina', '27601')]
_WORDS = ('the of and to in is was for on are with as his they be at one have this from or had by '
          'word but what some we can out other were all there when up use your how said an each she '
          'which do their time if will way about many then them write would like so these her long '
          'make thing see him two has look more day could go come did number sound no most people '
          'my over know water than call first who may down side been now find').split()


def _line(attr, value):
    """One LDIF line; str values as they are when LDIF-safe, bytes base64."""
    if isinstance(value, str) and value.isascii() and value.isprintable() and \
            value[:1] not in (' ', ':', '<') and value[-1:] != ' ':
        return '%s: %s\n' % (attr, value)
    if isinstance(value, str):
        value = value.encode('utf-8')
    return '%s:: %s\n' % (attr, base64.b64encode(value).decode())


def person_ldif(i, rng, parent=PEOPLE):
    g = _GIVEN[rng.randrange(len(_GIVEN))]
    s = _SN[rng.randrange(len(_SN))]
    city, st, zipc = _CITIES[rng.randrange(len(_CITIES))]
    uid = 'u%07d' % i
    street = '%d %s Street' % (rng.randrange(1, 9999), _SN[rng.randrange(len(_SN))])
    words = ' '.join(rng.choice(_WORDS) for _ in range(12))
    out = ['dn: uid=%s,%s\n' % (uid, parent),
           'objectClass: top\nobjectClass: person\nobjectClass: organizationalPerson\n'
           'objectClass: inetOrgPerson\n',
           'uid: %s\n' % uid,
           _line('cn', '%s %s' % (g, s)),
           _line('sn', s), _line('givenName', g),
           _line('displayName', '%s %s (%s)' % (g, s, _DEPTS[i % len(_DEPTS)])),
           _line('initials', '%s. %s.' % (g[0], s[0])),
           'mail: %s@example.com\n' % uid,
           'mail: %s.%d@mail.example.com\n' % (uid, rng.randrange(100)),
           'telephoneNumber: +1 555 %07d\n' % i,
           'mobile: +1 555 %07d\n' % rng.randrange(10 ** 7),
           'title: %s\n' % _TITLES[rng.randrange(len(_TITLES))],
           'ou: %s\n' % _DEPTS[i % len(_DEPTS)],
           'departmentNumber: %d\n' % (1000 + i % 97),
           'employeeNumber: %d\n' % i,
           'employeeType: %s\n' % rng.choice(('full-time', 'part-time', 'contractor')),
           'o: Example Corporation\n',
           'l: %s\nst: %s\n' % (city, st),
           'street: %s\n' % street,
           'postalCode: %s\n' % zipc,
           'postalAddress: %s$%s, %s %s\n' % (street, city, st, zipc),
           'roomNumber: %s-%d\n' % ('ABCDEFG'[rng.randrange(7)], rng.randrange(1000, 9999)),
           'manager: %s\n' % person_dn(i // 10),
           'preferredLanguage: en-US\n',
           'labeledURI: https://wiki.example.com/~%s Home page\n' % uid,
           'carLicense: %s-%04d\n' % (''.join(rng.choice('ABCDEFGHJKLMNPRSTUVWXYZ') for _ in range(3)),
                                      rng.randrange(10000)),
           _line('description', words)]
    if i % 2 == 0:
        out.append(_line('jpegPhoto', b'\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00' + rng.randbytes(rng.randrange(80, 230))))
    if i % 4 == 1:
        out.append(_line('userSMIMECertificate', b'\x30\x82' + rng.randbytes(rng.randrange(200, 300))))
    out.append('\n')
    return ''.join(out)


def base_ldif():
    return ('dn: %s\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: example\n\n'
            'dn: %s\nobjectClass: organizationalUnit\nou: people\n\n'
            'dn: %s\nobjectClass: organizationalUnit\nou: groups\n\n'
            'dn: %s\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n'
            'cn: reader\nuserPassword: %s\n\n' % (SUFFIX, PEOPLE, GROUPS, READER_DN, READER_PW))


def group_ldif(m):
    lines = ['dn: %s\n' % group_dn(m), 'objectClass: groupOfNames\n', 'cn: g%d\n' % m]
    lines.extend('member: %s\n' % (MEMBER_DN_FMT % j) for j in range(m))
    lines.append('\n')
    return ''.join(lines)


def gen_ldif(path, n, groups=(), seed=1):
    """Write the data set; returns its size in bytes."""
    rng = random.Random(seed)
    with open(path + '.tmp', 'w', encoding='utf-8', buffering=1 << 20) as f:
        f.write(base_ldif())
        for i in range(n):
            f.write(person_ldif(i, rng))
        for m in groups:
            f.write(group_ldif(m))
    os.rename(path + '.tmp', path)
    return os.path.getsize(path)


def gen_subtree_ldif(path, n, seed=1):
    """The subtree data set: the base entries, an ou=staff (the search base)
    and ou=big under ou=groups (outside it) with n people below; returns its
    size in bytes."""
    rng = random.Random(seed)
    with open(path + '.tmp', 'w', encoding='utf-8', buffering=1 << 20) as f:
        f.write(base_ldif())
        f.write('dn: %s\nobjectClass: organizationalUnit\nou: staff\n\n' % STAFF)
        f.write('dn: %s\nobjectClass: organizationalUnit\nou: big\n\n' % BIG_OUT)
        for i in range(n):
            f.write(person_ldif(i, rng, BIG_OUT))
    os.rename(path + '.tmp', path)
    return os.path.getsize(path)


def sparse_copy(src, dst):
    """Copy an LMDB file keeping its holes: slapadd -q (MDB_WRITEMAP) leaves
    data.mdb as large as the map, mostly holes, and a plain copy would
    write every byte of them."""
    need = os.stat(src).st_blocks * 512
    if shutil.disk_usage(os.path.dirname(dst)).free < need + (4 << 30):
        raise RuntimeError('not enough free disk for %s (%d MiB)' % (dst, need >> 20))
    subprocess.run(['cp', '--sparse=always', src, dst], check=True)


def hide_acl(dn):
    """An access rule hiding the subtree at dn from the reader identity
    (slapd.access(5)): it goes before the general rule."""
    return 'access to dn.subtree="%s" by dn.exact="%s" none by * read' % (dn, READER_DN)


class Slapd(harness.Slapd):
    """The lab slapd in directory d (which must not exist yet), its database
    loaded from a cached slapadd of ldif: syncprov with a checkpoint, a
    session log of `sessionlog` entries if not 0, an 8 GiB map, no logging;
    cn=reader with unlimited size and time, as in the end-to-end tests."""

    def __init__(self, d, ldif, cache_key, cache_dir, sessionlog=0, log=print):
        if os.path.exists(d):
            raise RuntimeError('%s exists already' % d)
        super().__init__(os.path.dirname(d), name=os.path.basename(d), suffix=SUFFIX,
                         variant='V1' if sessionlog else 'V0', sessionlog=sessionlog,
                         rootpw=ROOTPW, reader_dn=READER_DN, reader_pw=READER_PW, maxsize=8 << 30,
                         extra_global_conf='loglevel 0\ntool-threads 2', populate=False, start=False)
        self.ldif = ldif
        self.acl = ()
        self.write_config()
        cached = os.path.join(cache_dir, cache_key + '.mdb')
        if not os.path.exists(cached):
            log('slapadd %s ...' % os.path.basename(ldif))
            t0 = time.monotonic()
            subprocess.run([SLAPADD, '-q', '-w', '-f', self.conf_path, '-l', ldif], check=True,
                           stdout=subprocess.DEVNULL)
            log('slapadd took %.1f s' % (time.monotonic() - t0))
            sparse_copy(os.path.join(self.db_dir, 'data.mdb'), cached + '.tmp')
            os.rename(cached + '.tmp', cached)
        else:
            sparse_copy(cached, os.path.join(self.db_dir, 'data.mdb'))

    def start(self, timeout=60):
        return super().start(timeout)

    def stop(self, timeout=60):
        return super().stop(timeout)

    def reconfigure(self, acl=()):
        """Restart with extra access rules (hide_acl()), same database."""
        self.acl = tuple(acl)
        return self.restart(acl_prefix='\n'.join(self.acl))

    def destroy(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def bind_args(self, who='reader'):
        if who == 'root':
            return ['-D', ROOTDN, '-w', ROOTPW]
        return ['-D', READER_DN, '-w', READER_PW]
