"""A throwaway Samba Active Directory domain controller (Debian's samba
4.17: samba, samba-ad-dc, samba-ad-provision, samba-dsdb-modules) for the
end-to-end tests: the provider side of test_ad.py, with an interface close
to harness.Slapd and ds389.DS389 (start/stop/restart/kill, add/modify/
modrdn/delete through ldap-utils, search, url, base, ...).

How it is built, without systemd and without any network socket:

  * `samba-tool domain provision --server-role=dc --dns-backend=NONE
    --use-rfc2307 --targetdir=DIR` writes a whole domain (EXAMPLE.TEST,
    base DC=example,DC=test) under DIR, smb.conf included.  That takes
    20-40 s, so it is done once per test file, into a template that
    reset() copies back before each test (a second or two).
  * smb.conf is then changed: `interfaces = 127.0.0.2` without a mask and
    `bind interfaces only = yes`, which matches no configured interface,
    so samba opens no TCP or UDP socket at all and serves LDAP on its unix
    socket DIR/private/ldapi alone (ldapi://, what the tests and ldapfeed
    use): runs in parallel cannot collide, and nothing listens on the
    network.  `server services = ldap` (no KDC, SMB, DNS, RPC), `ldap
    server require strong auth = no` (a simple bind without TLS), and
    every runtime path (pid, logs, sockets) under DIR.
  * samba runs as `samba -F -s DIR/etc/smb.conf --debug-stdout
    --maximum-runtime=N` in a session of its own: the whole process group
    is stopped with SIGTERM (SIGKILL after a deadline), and the DC exits by
    itself after N seconds should the test runner die; the harness's
    watchdog kills the group and removes the directory too.
  * The template holds three identities besides Administrator, made with
    samba's own Python bindings (samdb.newuser, security descriptors):
      feed    "Replicating Directory Changes" on the domain's root and List
              Contents + Read Property on CN=Deleted Objects: the rights
              ldapfeed.8 documents for a non-administrator;
      halfway "Replicating Directory Changes" only (DirSync works, deletes
              are not visible);
      plain   no right at all (DirSync is refused);
    and one tombstone (a user made and deleted), so that an identity
    that may see deletes sees one in CN=Deleted Objects.

Entries are named by objectGUID, whose text form (ad_uuid) is what
ldapfeed sends as `uuid`: the 16 bytes with the first three fields
byte-swapped, as AD's tools print it.
"""

import os
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import urllib.parse

import harness
from harness import LdapError, SlapdError, ldif_entry, ldif_modify, parse_ldif, scaled

SAMBA = os.environ.get('SAMBA', '/usr/sbin/samba')
SAMBA_TOOL = 'samba-tool'
PYTHON = '/usr/bin/python3'        # samba's bindings are Debian's python3-samba
REALM, DOMAIN = 'EXAMPLE.TEST', 'EXAMPLE'
BASE = 'DC=example,DC=test'
MAX_RUNTIME = 3600                 # seconds a DC lives at most

# Run by PYTHON inside the DC's directory, the DC running: the three
# identities and their rights (see the module's docstring).
_IDENTITIES = r'''
import sys
import ldb
from samba.auth import system_session
from samba.dcerpc import misc, security
from samba.ndr import ndr_pack, ndr_unpack
from samba.param import LoadParm
from samba.samdb import SamDB

conf, pw = sys.argv[1], sys.argv[2]
GET_CHANGES = '1131f6aa-9c07-11d1-f79f-00c04fc2dcd2'  # DS-Replication-Get-Changes
lp = LoadParm()
lp.load(conf)
db = SamDB(url=lp.private_path('sam.ldb'), session_info=system_session(), lp=lp)
root = str(db.domain_dn())


def sid_of(name):
    r = db.search(root, expression='(sAMAccountName=%s)' % name, attrs=['objectSid'])
    return ndr_unpack(security.dom_sid, r[0]['objectSid'][0])


def allow(dn, sid, mask, obj=None, controls=()):
    r = db.search(dn, scope=ldb.SCOPE_BASE, attrs=['nTSecurityDescriptor'], controls=list(controls))
    sd = ndr_unpack(security.descriptor, r[0]['nTSecurityDescriptor'][0])
    ace = security.ace()
    ace.trustee = sid
    ace.access_mask = mask
    if obj is None:
        ace.type = security.SEC_ACE_TYPE_ACCESS_ALLOWED
    else:
        ace.type = security.SEC_ACE_TYPE_ACCESS_ALLOWED_OBJECT
        ace.object.flags = security.SEC_ACE_OBJECT_TYPE_PRESENT
        ace.object.type = misc.GUID(obj)
    sd.dacl_add(ace)
    m = ldb.Message(ldb.Dn(db, dn))
    m['nTSecurityDescriptor'] = ldb.MessageElement(ndr_pack(sd), ldb.FLAG_MOD_REPLACE, 'nTSecurityDescriptor')
    db.modify(m, controls=list(controls))


for name in ('feed', 'halfway', 'plain'):
    db.newuser(name, pw)
for name in ('feed', 'halfway'):
    allow(root, sid_of(name), security.SEC_ADS_CONTROL_ACCESS, GET_CHANGES)
allow('CN=Deleted Objects,' + root, sid_of('feed'), security.SEC_ADS_LIST | security.SEC_ADS_READ_PROP,
      controls=['show_deleted:1'])
# one tombstone, as any domain in use has: who may see deletes sees it
db.newuser('tombstone', pw)
db.delete('CN=tombstone,CN=Users,' + root)
'''


def ad_uuid(guid):
    """objectGUID's 16 bytes as the text AD's tools show, and ldapfeed's
    `uuid`: the first three fields byte-swapped."""
    if len(guid) != 16:
        raise ValueError('not an objectGUID: %r' % (guid,))
    b = guid
    order = [3, 2, 1, 0, 5, 4, 7, 6] + list(range(8, 16))
    h = bytes(b[i] for i in order).hex()
    return '%s-%s-%s-%s-%s' % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def _sockets(d, names):
    """copytree's ignore: the sockets a stopped samba leaves behind."""
    out = []
    for n in names:
        try:
            if stat.S_ISSOCK(os.lstat(os.path.join(d, n)).st_mode):
                out.append(n)
        except OSError:
            pass
    return out


def available():
    """None when a DC can be made here, else why not (for Skip)."""
    if os.geteuid() != 0:
        return 'not root (samba must run as root)'
    for prog in (SAMBA, PYTHON):
        if not os.path.exists(prog):
            return '%s missing: sh scripts/deps samba' % prog
    for prog in (SAMBA_TOOL, 'ldapsearch'):
        if shutil.which(prog) is None:
            return '%s not installed: sh scripts/deps samba' % prog
    r = subprocess.run([PYTHON, '-c', 'import samba.samdb'], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    if r.returncode != 0:
        return 'python3-samba missing: sh scripts/deps samba'
    return None


class SambaDC:
    """A Samba AD DC on its ldapi socket alone, under a temp dir of its own.

    lazy=True: nothing is made until create() (or reset()).  Attributes:
    url (ldapi://...), base, admin_dn/admin_pw, feed_dn/feed_pw (and
    halfway_dn, plain_dn with the same password), running, pid,
    create_seconds (provision and template), start_seconds (the last
    start)."""

    def __init__(self, lazy=False):
        self.base = BASE
        self.dir = tempfile.mkdtemp(prefix='e2e-samba-')
        self.dc = os.path.join(self.dir, 'dc')
        self.template = os.path.join(self.dir, 'template')
        self.conf = os.path.join(self.dc, 'etc/smb.conf')
        self.out_path = os.path.join(self.dir, 'samba.out')
        # AD's default password policy: upper, lower, digit and symbol
        self.admin_pw = 'Ad1-' + secrets.token_hex(8)
        self.feed_pw = 'Fd1-' + secrets.token_hex(8)
        self.admin_dn = 'CN=Administrator,CN=Users,' + BASE
        self.feed_dn = 'CN=feed,CN=Users,' + BASE
        self.halfway_dn = 'CN=halfway,CN=Users,' + BASE
        self.plain_dn = 'CN=plain,CN=Users,' + BASE
        self.created = False
        self.create_seconds = None
        self.start_seconds = None
        self.starts = 0
        self._popen = None
        if len(os.path.join(self.dc, 'private/ldapi')) > 100:
            raise SlapdError('temp dir too deep for a unix socket: %s' % self.dir)
        harness._watchdog_send('d+ ' + self.dir)
        harness._register(self)
        if not lazy:
            self.create()

    # -- properties
    @property
    def url(self):
        return 'ldapi://' + urllib.parse.quote(os.path.join(self.dc, 'private/ldapi'), safe='')

    @property
    def pid(self):
        p = self._popen
        return p.pid if p is not None and p.poll() is None else None

    @property
    def running(self):
        return self.pid is not None

    # -- creation
    def _run(self, argv, what, timeout=120):
        log = os.path.join(self.dir, what + '.log')
        with open(log, 'wb') as out:
            try:
                r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   timeout=scaled(timeout), cwd=self.dir)
                rc = r.returncode
            except subprocess.TimeoutExpired:
                rc = 'timeout'
        if rc != 0:
            raise SlapdError('%s exited %s:\n%s' % (what, rc, harness._tail(log, 30)))

    def _configure(self):
        """smb.conf: the LDAP service alone, on the ldapi socket alone,
        simple binds allowed, every runtime path under the DC's dir."""
        with open(self.conf) as f:
            lines = f.read().splitlines()
        out = []
        for line in lines:
            key = line.split('=', 1)[0].strip().lower()
            if key in ('interfaces', 'bind interfaces only', 'server services', 'log file'):
                continue
            out.append(line)
            if line.strip() == '[global]':
                out += ['\tinterfaces = 127.0.0.2',
                        '\tbind interfaces only = yes',
                        '\tserver services = ldap',
                        '\tldap server require strong auth = no',
                        '\tlog file = %s/log/log.%%m' % self.dc,
                        '\tpid directory = %s/run' % self.dc,
                        '\tncalrpc dir = %s/run/ncalrpc' % self.dc,
                        '\twinbindd socket directory = %s/run/winbindd' % self.dc,
                        '\tntp signd socket directory = %s/run/ntp_signd' % self.dc]
        with open(self.conf, 'w') as f:
            f.write('\n'.join(out) + '\n')
        for d in ('run', 'log', 'cache'):
            os.makedirs(os.path.join(self.dc, d), exist_ok=True)

    def create(self):
        """Provision, configure, start, make the identities, stop, and keep
        the result as the template."""
        if self.created:
            return self
        why = available()
        if why:
            raise harness.Skip('samba: ' + why)
        t0 = time.monotonic()
        self.created = True
        self._run([SAMBA_TOOL, 'domain', 'provision', '--realm=' + REALM, '--domain=' + DOMAIN,
                   '--server-role=dc', '--dns-backend=NONE', '--use-rfc2307', '--host-ip=127.0.0.2',
                   '--adminpass=' + self.admin_pw, '--targetdir=' + self.dc,
                   '--option=interfaces=127.0.0.2', '--option=bind interfaces only=yes'],
                  'provision', timeout=300)
        self._configure()
        self.start()
        self._run([PYTHON, '-c', _IDENTITIES, self.conf, self.feed_pw], 'identities')
        self.stop()
        shutil.copytree(self.dc, self.template, symlinks=True, ignore=_sockets)
        self.create_seconds = time.monotonic() - t0
        return self

    def reset(self):
        """The DC as the template left it, running: every change a test
        made is gone."""
        self.create()
        self.stop()
        shutil.rmtree(self.dc, ignore_errors=True)
        shutil.copytree(self.template, self.dc, symlinks=True, ignore=_sockets)
        return self.start()

    # -- lifecycle
    def _answers(self):
        r = subprocess.run(['ldapsearch', '-x', '-LLL', '-H', self.url, '-b', '', '-s', 'base',
                            '-o', 'nettimeout=2', 'dnsHostName'], env=_ldap_env(),
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=30)
        return r.returncode == 0

    def start(self, timeout=60):
        if self.running:
            raise SlapdError('samba already running (pid %d)' % self.pid)
        t0 = time.monotonic()
        with open(self.out_path, 'ab') as out:
            self._popen = subprocess.Popen(
                [SAMBA, '-F', '-s', self.conf, '--debug-stdout', '-d', '1',
                 '--maximum-runtime=%d' % MAX_RUNTIME],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        harness._watchdog_send('+ %d g' % self._popen.pid)
        deadline = t0 + scaled(timeout)
        while not self._answers():
            if self._popen.poll() is not None:
                raise SlapdError('samba exited %s; output tail:\n%s'
                                 % (self._popen.returncode, harness._tail(self.out_path, 30)))
            if time.monotonic() > deadline:
                raise SlapdError('samba did not answer on %s; output tail:\n%s'
                                 % (self.url, harness._tail(self.out_path, 30)))
            time.sleep(0.1)
        self.start_seconds = time.monotonic() - t0
        self.starts += 1
        return self

    def stop(self, timeout=20, sig=signal.SIGTERM):
        """sig (SIGTERM) to samba's process group, SIGKILL after timeout s."""
        p = self._popen
        if p is not None:
            harness.terminate_pid(p, group=True, term_timeout=timeout, sig=sig)
            harness._watchdog_send('- %d' % p.pid)
        self._popen = None
        return self

    def kill(self):
        return self.stop(timeout=5, sig=signal.SIGKILL)

    def restart(self):
        self.stop()
        return self.start()

    def _teardown(self):
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            harness._watchdog_send('d- ' + self.dir)

    def _diagnostics(self):
        return ['--- samba (%s) output tail:' % self.url] + harness._tail(self.out_path, 15).splitlines()

    # -- ldap-utils
    def creds(self, bind):
        if bind in ('admin', 'root'):
            return self.admin_dn, self.admin_pw
        if bind in ('feed', 'halfway', 'plain'):
            return getattr(self, bind + '_dn'), self.feed_pw
        if isinstance(bind, tuple):
            return bind
        raise ValueError('bad bind %r' % (bind,))

    def tool(self, prog, args, input=None, bind='admin', check=True, timeout=120):
        """An ldap-utils program against this DC.  bind: 'admin', 'feed',
        'halfway', 'plain', or a (dn, password) tuple."""
        dn, pw = self.creds(bind)
        argv = [prog, '-x', '-H', self.url, '-D', dn, '-w', pw] + list(args)
        if isinstance(input, str):
            input = input.encode('utf-8')
        r = subprocess.run(argv, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_ldap_env(),
                           timeout=scaled(timeout))
        if check and r.returncode != 0:
            raise LdapError(argv, r.returncode, r.stderr, r.stdout)
        return r

    def add(self, ldif):
        return self.tool('ldapadd', [], input=ldif)

    def modify(self, ldif):
        return self.tool('ldapmodify', [], input=ldif)

    def delete(self, dn, recursive=False):
        return self.tool('ldapdelete', (['-r'] if recursive else []) + [dn])

    def modrdn(self, dn, newrdn, deleteoldrdn=True, newsuperior=None):
        args = (['-r'] if deleteoldrdn else []) + (['-s', newsuperior] if newsuperior else []) + [dn, newrdn]
        return self.tool('ldapmodrdn', args)

    def add_entry(self, dn, attrs):
        return self.add(ldif_entry(dn, attrs))

    def modify_entry(self, dn, changes):
        return self.modify(ldif_modify(dn, changes))

    def replace(self, dn, attr, values):
        return self.modify(ldif_modify(dn, [('replace', attr, values)]))

    def search(self, base=None, scope='sub', filt='(objectClass=*)', attrs=None, operational=False,
               bind='admin', extra_args=()):
        """ldapsearch -LLL: {dn: {attr: [bytes]}} (as Slapd.search)."""
        args = ['-LLL', '-o', 'ldif-wrap=no', '-b', base or self.base, '-s', scope] + list(extra_args) + [filt]
        a = list(attrs) if attrs else []
        if operational:
            a = (a or ['*']) + ['+']
        return parse_ldif(self.tool('ldapsearch', args + a, bind=bind).stdout)

    def guids(self, base=None, scope='sub', filt='(objectClass=*)', bind='admin'):
        """{dn: ldapfeed's uuid for it (objectGUID, ad_uuid)}."""
        res = self.search(base, scope, filt, attrs=['objectGUID'], bind=bind)
        return {dn: ad_uuid(a['objectGUID'][0]) for dn, a in res.items() if 'objectGUID' in a}

    def not_replicated(self):
        """{lowercase name} of the attributes the DC does not replicate
        (systemFlags bit 1), back links (odd linkID) aside: the ones
        ldapfeed leaves out, less the few it follows anyway."""
        schema = self.root_dse('schemaNamingContext')['schemaNamingContext'][0].decode()
        res = self.search(schema, 'one', '(&(objectClass=attributeSchema)'
                          '(systemFlags:1.2.840.113556.1.4.803:=1))', ['lDAPDisplayName', 'linkID'])
        return {a['lDAPDisplayName'][0].decode().lower() for a in res.values()
                if not ('linkID' in a and int(a['linkID'][0]) % 2)}

    def root_dse(self, *attrs):
        r = self.tool('ldapsearch', ['-LLL', '-o', 'ldif-wrap=no', '-b', '', '-s', 'base', '(objectClass=*)']
                      + (list(attrs) or ['*']))
        return parse_ldif(r.stdout).get('', {})


def _ldap_env():
    env = dict(os.environ)
    env['LDAPNOINIT'] = '1'
    return env
