"""The lab slapd (class Slapd: variants V0-V4 and NONE, its configuration,
start/stop/restart on the same port, ldap-utils against it) and
ldap_url(), RFC 4516 URLs that point at it.  The tests, bench/lab.py and
scripts/demo all start their slapd with this class."""

import os
import shutil
import signal
import subprocess
import time
import urllib.parse

from .core import MODULE_DIR, SCHEMA_DIR, SLAPD_BIN, _tail, _unique_path, scaled
from .ldif import LdapError, ldif_entry, ldif_modify, parse_ldif
from .net import TestCA, free_port
from .procs import _register, _register_untrack, _spawn, _watchdog_send, terminate_pid
from .runner import _current_dir


class SlapdError(AssertionError):
    pass


VARIANTS = ('V0', 'V1', 'V2', 'V3', 'V4', 'NONE')


class Slapd:
    """A lab slapd in its own directory under tmpdir (what each variant's
    syncprov setting does to a resume: doc/syncrepl.md, "Provider settings").

    variant: V0 checkpoint only; V1 + session log (sessionlog entries);
    V2 accesslog-backed session log (cn=log DB first); V3 + reloadhint;
    V4 nopresent; NONE: no syncprov overlay at all.  checkpoint=None drops
    the syncprov-checkpoint line.  acl_prefix: access lines placed before the
    default ones.  extra_db_conf: lines appended to the main database (after
    its overlays).  extra_global_conf: lines before the first database.
    size_limit: global `sizelimit`.  reader/reader_limits: create cn=reader
    (userPassword readerpw) / give it unlimited size and time.  ldapi: also
    listen on a unix socket; EXTERNAL as root binds as
    gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth, which also gets
    unlimited limits.  debug: slapd -d level ('none' prints only uncategorised
    and critical messages, such as bind failures; '0' prints nothing).
    rootpw (of cn=admin,SUFFIX), reader_dn (default cn=reader,SUFFIX) and
    reader_pw name the lab's two identities; maxsize is the mdb map size.
    populate=False: no entry is added (load the data yourself; write_config()
    writes slapd.conf for slapadd before the first start).
    """

    def __init__(self, tmpdir=None, variant='V0', suffix='dc=example,dc=com', ldapi=False,
                 extra_db_conf='', size_limit=None, reader=True, sessionlog=100,
                 checkpoint='100 10', acl_prefix='', extra_global_conf='', reader_limits=True,
                 debug='none', name='slapd', port=None, populate=True, start=True, nosync=True,
                 tls=False, rootpw='secret', reader_dn=None, reader_pw='readerpw', maxsize=4294967296):
        tmpdir = _current_dir(tmpdir)
        self.dir = _unique_path(tmpdir, name)
        os.makedirs(self.dir)
        # tls: a certificate for 127.0.0.1 from a CA of its own (self.ca), for
        # StartTLS on the ldap:// port and an ldaps:// port (self.ldaps_port)
        self.ca = self.tls = None
        self.ldaps_port = None
        if tls:
            self.ca = TestCA(os.path.join(self.dir, 'ca'))
            self.tls = self.ca.issue('127.0.0.1')
            extra_global_conf = ('TLSCACertificateFile %s\nTLSCertificateFile %s\nTLSCertificateKeyFile %s\n%s'
                                 % (self.ca.cert, self.tls[0], self.tls[1], extra_global_conf))
        self.suffix = suffix
        self.rootdn = 'cn=admin,' + suffix
        self.rootpw = rootpw
        self.reader_dn = reader_dn or 'cn=reader,' + suffix
        self.reader_pw = reader_pw
        self.reader = reader
        self.conf_path = os.path.join(self.dir, 'slapd.conf')
        self.log_path = os.path.join(self.dir, 'slapd.log')
        self.pidfile = os.path.join(self.dir, 'slapd.pid')
        self.db_dir = os.path.join(self.dir, 'db')
        self.log_db_dir = os.path.join(self.dir, 'log')
        self.ldapi_path = os.path.join(self.dir, 'ldapi') if ldapi else None
        if self.ldapi_path and len(self.ldapi_path.encode()) > 100:
            raise SlapdError('ldapi socket path too long for sun_path: %s (set a shorter TMPDIR)' % self.ldapi_path)
        self.conf = dict(variant=variant, extra_db_conf=extra_db_conf, size_limit=size_limit,
                         sessionlog=sessionlog, checkpoint=checkpoint, acl_prefix=acl_prefix,
                         extra_global_conf=extra_global_conf, reader_limits=reader_limits,
                         nosync=nosync, maxsize=maxsize)
        self.debug = debug
        self.port = port
        self._fixed_port = port is not None
        self.popen = None
        self._res = None
        self._populate = populate
        self._populated = False
        self.starts = 0
        _register(self)
        if start:
            self.start()

    # -- properties
    @property
    def variant(self):
        return self.conf['variant']

    @property
    def url(self):
        """ldap://127.0.0.1:PORT (no trailing slash)."""
        return 'ldap://127.0.0.1:%d' % self.port

    @property
    def ldaps_url(self):
        return 'ldaps://127.0.0.1:%d' % self.ldaps_port if self.ldaps_port else None

    @property
    def ldapi_url(self):
        if not self.ldapi_path:
            return None
        return 'ldapi://' + urllib.parse.quote(self.ldapi_path, safe='')

    @property
    def pid(self):
        return self.popen.pid if self.popen is not None and self.popen.poll() is None else None

    @property
    def running(self):
        return self.pid is not None

    def base_dns(self):
        """The entries populate() creates, in order."""
        dns = [self.suffix, 'ou=people,' + self.suffix, 'ou=groups,' + self.suffix]
        if self.reader:
            dns.append(self.reader_dn)
        return dns

    # -- configuration
    def set_conf(self, **kw):
        """Change configuration (variant=, sessionlog=, checkpoint=, acl_prefix=,
        extra_db_conf=, extra_global_conf=, size_limit=, reader_limits=, maxsize=,
        debug=); takes effect at the next start()."""
        if self.running:
            raise SlapdError('set_conf() while slapd is running: stop() first')
        for k, v in kw.items():
            if k == 'debug':
                self.debug = v
            elif k in self.conf:
                self.conf[k] = v
            else:
                raise TypeError('unknown slapd setting %r' % k)

    def config_text(self):
        c = self.conf
        variant = c['variant']
        if variant not in VARIANTS:
            raise SlapdError('unknown variant %r' % variant)
        L = ['# written by tests/e2e/harness/slapd.py: variant %s' % variant]
        for s in ('core', 'cosine', 'inetorgperson', 'nis'):
            L.append('include %s/%s.schema' % (SCHEMA_DIR, s))
        L += ['modulepath %s' % MODULE_DIR, 'moduleload back_mdb', 'moduleload syncprov']
        if variant == 'V2':
            L.append('moduleload accesslog')
        L += ['pidfile %s' % self.pidfile, 'argsfile %s' % os.path.join(self.dir, 'slapd.args')]
        if c['size_limit'] is not None:
            L.append('sizelimit %s' % c['size_limit'])
        if c['extra_global_conf']:
            L.append(c['extra_global_conf'].rstrip('\n'))
        db_common = ['maxsize %d' % c['maxsize']]
        if c['nosync']:
            db_common.append('dbnosync')
        if variant == 'V2':
            L += ['', '# accesslog DB: must come before the main DB',
                  'database mdb', 'suffix "cn=log"', 'rootdn "%s"' % self.rootdn,
                  'directory %s' % self.log_db_dir] + db_common + [
                  'index objectClass,entryCSN,reqStart,reqDN,reqResult eq',
                  'overlay syncprov', 'syncprov-nopresent TRUE', 'syncprov-reloadhint TRUE']
        L += ['', '# main DB', 'database mdb', 'suffix "%s"' % self.suffix, 'rootdn "%s"' % self.rootdn,
              'rootpw %s' % self.rootpw, 'directory %s' % self.db_dir] + db_common + [
              'index objectClass eq', 'index entryCSN,entryUUID eq']
        if self.reader and c['reader_limits']:
            L.append('limits dn.exact="%s" size=unlimited time=unlimited' % self.reader_dn)
        if self.ldapi_path:
            L.append('limits dn.exact="gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth" '
                     'size=unlimited time=unlimited')
        if c['acl_prefix']:
            L.append(c['acl_prefix'].rstrip('\n'))
        L += ['access to attrs=userPassword by self write by anonymous auth by * none',
              'access to * by * read']
        if variant != 'NONE':
            L.append('overlay syncprov')
            if c['checkpoint']:
                L.append('syncprov-checkpoint %s' % c['checkpoint'])
            if variant == 'V1':
                L.append('syncprov-sessionlog %d' % c['sessionlog'])
            elif variant == 'V2':
                L.append('syncprov-sessionlog-source cn=log')
            elif variant == 'V3':
                L.append('syncprov-reloadhint TRUE')
            elif variant == 'V4':
                L.append('syncprov-nopresent TRUE')
        if variant == 'V2':
            L += ['overlay accesslog', 'logdb cn=log', 'logops writes', 'logsuccess TRUE']
        if c['extra_db_conf']:
            L.append(c['extra_db_conf'].rstrip('\n'))
        return '\n'.join(L) + '\n'

    def write_config(self):
        """Write slapd.conf and make the database directories (start() does
        it; slapadd needs them before a first start)."""
        os.makedirs(self.db_dir, exist_ok=True)
        if self.variant == 'V2':
            os.makedirs(self.log_db_dir, exist_ok=True)
        with open(self.conf_path, 'w') as f:
            f.write(self.config_text())

    # -- lifecycle
    def start(self, timeout=15):
        """Start slapd (again: same port, same DB) and wait until it answers."""
        if self.running:
            raise SlapdError('slapd already running (pid %d)' % self.pid)
        self.write_config()
        deadline = time.monotonic() + scaled(timeout)
        attempts = 0
        while True:
            attempts += 1
            if self.port is None:
                self.port = free_port()
            if self.tls and self.ldaps_port is None:
                self.ldaps_port = free_port()
            result = self._start_once(deadline)
            if result == 'ok':
                break
            if result == 'addrinuse' and time.monotonic() < deadline and attempts < 50:
                if self._fixed_port or self.starts > 0:
                    time.sleep(0.1)         # restart: the port is ours; wait for it
                else:
                    self.port = None        # first start: just pick others
                    self.ldaps_port = None
                continue
            raise SlapdError('slapd did not start (%s) on port %s:\n%s'
                             % (result, self.port, self._log_since(self._log_offset)))
        self.starts += 1
        if self._populate and not self._populated:
            self.populate()
        return self

    def _urls(self):
        urls = ['ldap://127.0.0.1:%d/' % self.port]
        if self.ldaps_port:
            urls.append(self.ldaps_url + '/')
        if self.ldapi_path:
            urls.append(self.ldapi_url + '/')
        return ' '.join(urls)

    def _log_since(self, offset, limit=40):
        try:
            with open(self.log_path, 'rb') as f:
                f.seek(offset)
                data = f.read().decode('utf-8', 'replace')
        except OSError:
            return ''
        return '\n'.join(data.splitlines()[-limit:])

    def _start_once(self, deadline):
        try:
            os.unlink(self.pidfile)
        except FileNotFoundError:
            pass
        self._log_offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        with open(self.log_path, 'ab') as log:
            log.write(b'=== harness: starting slapd on port %d\n' % self.port)
            log.flush()
            argv = [SLAPD_BIN, '-h', self._urls(), '-f', self.conf_path, '-d', str(self.debug)]
            self.popen, self._res = _spawn(argv, group=True, name='slapd', stdout=log,
                                           stderr=subprocess.STDOUT, cwd=self.dir)
        _register_untrack(self._res)   # Slapd itself is the registered resource
        pid = self.popen.pid
        # The pidfile is written after the listeners are bound and the DBs opened:
        # seeing our pid there proves that the port is ours, not an older slapd's.
        while True:
            if self.popen.poll() is not None:
                self._reap()
                text = self._log_since(self._log_offset)
                return 'addrinuse' if 'errno=98' in text else 'exited with status %s' % self.popen.returncode
            try:
                with open(self.pidfile) as f:
                    if f.read().strip() == str(pid):
                        break
            except FileNotFoundError:
                pass
            if time.monotonic() > deadline:
                self._kill_now()
                return 'no pidfile before the deadline'
            time.sleep(0.02)
        while True:
            if self.popen.poll() is not None:
                self._reap()
                return 'exited with status %s' % self.popen.returncode
            r = subprocess.run(['ldapsearch', '-x', '-LLL', '-H', self.url, '-b', '', '-s', 'base',
                                '-o', 'nettimeout=2', '1.1'], env=_ldap_env(), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
            if r.returncode == 0:
                return 'ok'
            if time.monotonic() > deadline:
                self._kill_now()
                return 'no answer before the deadline'
            time.sleep(0.02)

    def _kill_now(self):
        if self.popen is not None:
            terminate_pid(self.popen, group=True, term_timeout=0.5, sig=signal.SIGKILL)
            self._reap()

    def _reap(self):
        if self._res is not None:
            _watchdog_send('- %d' % self._res.pid)
            self._res = None

    def stop(self, timeout=10):
        """SIGTERM, wait for the pid to go (SIGKILL after `timeout` s)."""
        if self.popen is not None:
            terminate_pid(self.popen, group=True, term_timeout=timeout)
            self._reap()
        return self

    def kill(self):
        """SIGKILL, no chance to write checkpoints or remove the socket."""
        if self.popen is not None:
            terminate_pid(self.popen, group=True, term_timeout=5, sig=signal.SIGKILL)
            self._reap()
        return self

    def restart(self, **conf):
        """stop(), apply set_conf(**conf), start()."""
        self.stop()
        if conf:
            self.set_conf(**conf)
        return self.start()

    def wipe(self):
        """Remove the databases (slapd must be stopped); the next start() begins
        empty and populates again."""
        if self.running:
            raise SlapdError('wipe() while slapd is running')
        shutil.rmtree(self.db_dir, ignore_errors=True)
        shutil.rmtree(self.log_db_dir, ignore_errors=True)
        self._populated = False

    def _teardown(self):
        self.stop(timeout=5)

    def _diagnostics(self):
        return ['--- %s (variant %s, port %s) log tail:' % (self.dir, self.variant, self.port)] + \
            _tail(self.log_path, 15).splitlines()

    # -- ldap-utils
    def tool(self, prog, args, input=None, bind='root', check=True, timeout=120):
        """Run an ldap-utils program against this slapd's TCP URL.
        bind: 'root' (rootdn), 'reader', 'anon', 'external' (ldapi, SASL
        EXTERNAL) or a (dn, password) tuple.  Returns the CompletedProcess;
        raises LdapError on a non-zero exit when check is true."""
        argv = [prog]
        if bind == 'external':
            argv += ['-Y', 'EXTERNAL', '-H', self.ldapi_url]
        else:
            argv += ['-x', '-H', self.url]
            if bind == 'root':
                argv += ['-D', self.rootdn, '-w', self.rootpw]
            elif bind == 'reader':
                argv += ['-D', self.reader_dn, '-w', self.reader_pw]
            elif isinstance(bind, tuple):
                argv += ['-D', bind[0], '-w', bind[1]]
            elif bind != 'anon':
                raise ValueError('bad bind %r' % (bind,))
        argv += list(args)
        if isinstance(input, str):
            input = input.encode('utf-8')
        r = subprocess.run(argv, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_ldap_env(),
                           timeout=scaled(timeout))
        if check and r.returncode != 0:
            raise LdapError(argv, r.returncode, r.stderr, r.stdout)
        return r

    def add(self, ldif, cont=False):
        """ldapadd the LDIF (str or bytes) as rootdn; cont=True adds -c."""
        return self.tool('ldapadd', ['-c'] if cont else [], input=ldif)

    def modify(self, ldif):
        """ldapmodify the LDIF (changetype records, or modify records) as rootdn."""
        return self.tool('ldapmodify', [], input=ldif)

    def delete(self, dn, recursive=False):
        return self.tool('ldapdelete', (['-r'] if recursive else []) + [dn])

    def modrdn(self, dn, newrdn, deleteoldrdn=True, newsuperior=None):
        args = (['-r'] if deleteoldrdn else []) + (['-s', newsuperior] if newsuperior else []) + [dn, newrdn]
        return self.tool('ldapmodrdn', args)

    def add_entry(self, dn, attrs):
        """Add one entry from a dict (values str/bytes/int or lists of them)."""
        return self.add(ldif_entry(dn, attrs))

    def modify_entry(self, dn, changes):
        """changes: list of (op, attr, values), op in add/replace/delete."""
        return self.modify(ldif_modify(dn, changes))

    def replace(self, dn, attr, values):
        return self.modify(ldif_modify(dn, [('replace', attr, values)]))

    def populate(self):
        """Create the suffix entry, ou=people, ou=groups and (reader=True) cn=reader."""
        rdn = self.suffix.split(',', 1)[0]
        typ, _, val = rdn.partition('=')
        typ = typ.strip().lower()
        if typ == 'dc':
            top = {'objectClass': ['dcObject', 'organization'], 'dc': val, 'o': val}
        elif typ == 'o':
            top = {'objectClass': ['organization'], 'o': val}
        elif typ == 'ou':
            top = {'objectClass': ['organizationalUnit'], 'ou': val}
        else:
            raise SlapdError('populate(): cannot make a suffix entry for %r' % self.suffix)
        ldif = ldif_entry(self.suffix, top)
        for ou in ('people', 'groups'):
            ldif += ldif_entry('ou=%s,%s' % (ou, self.suffix), {'objectClass': 'organizationalUnit', 'ou': ou})
        if self.reader:
            ldif += ldif_entry(self.reader_dn, {'objectClass': ['organizationalRole', 'simpleSecurityObject'],
                                                'cn': self.reader_dn.split(',', 1)[0].partition('=')[2],
                                                'userPassword': self.reader_pw})
        self.add(ldif)
        self._populated = True

    @staticmethod
    def person(i, ou_dn):
        """(dn, attrs) of test person number i under ou_dn."""
        uid = 'user%05d' % i
        return 'uid=%s,%s' % (uid, ou_dn), {
            'objectClass': ['top', 'person', 'organizationalPerson', 'inetOrgPerson'],
            'uid': uid, 'cn': 'User %d' % i, 'sn': 'Surname%d' % i, 'givenName': 'Given%d' % i,
            'mail': '%s@example.com' % uid, 'description': 'person number %d' % i,
            'employeeNumber': str(i), 'telephoneNumber': '+1 555 %07d' % i,
        }

    def add_people(self, n, start=0, ou='people', extra=None):
        """Add n inetOrgPerson entries uid=userNNNNN,ou=OU,SUFFIX (numbers start..)
        in one ldapadd.  extra(i) returns a dict merged into each entry (a None
        value removes the attribute).  Returns the DNs."""
        ou_dn = 'ou=%s,%s' % (ou, self.suffix)
        chunks, dns = [], []
        for i in range(start, start + n):
            dn, attrs = self.person(i, ou_dn)
            if extra:
                attrs.update(extra(i))
            chunks.append(ldif_entry(dn, attrs))
            dns.append(dn)
        if chunks:
            self.add(b''.join(chunks))
        return dns

    def search(self, base=None, scope='sub', filt='(objectClass=*)', attrs=None, operational=False,
               bind='root', extra_args=()):
        """ldapsearch -LLL: {dn: {attr: [bytes]}}.  attrs=None: all user
        attributes; operational=True adds '+'.  Raises LdapError (e.g. rc 32
        for a missing base)."""
        args = ['-LLL', '-o', 'ldif-wrap=no', '-b', base or self.suffix, '-s', scope] + list(extra_args) + [filt]
        a = list(attrs) if attrs else []
        if operational:
            a = (a or ['*']) + ['+']
        r = self.tool('ldapsearch', args + a, bind=bind)
        return parse_ldif(r.stdout)

    def uuids(self, base=None, scope='sub', filt='(objectClass=*)'):
        """{dn: entryUUID}."""
        res = self.search(base, scope, filt, attrs=['entryUUID'])
        return {dn: a['entryUUID'][0].decode() for dn, a in res.items()}

    def context_csn(self):
        """The main DB's contextCSN values (list of str)."""
        res = self.search(self.suffix, 'base', attrs=['contextCSN'])
        return [v.decode() for v in res.get(self.suffix, {}).get('contextCSN', [])]

    def sync_search(self, mode='ro', cookie=None, base=None, bind='root', check=True, critical=False):
        """ldapsearch -E [!]sync=ro|rp[/cookie] (rp never ends: use only with
        care); returns the CompletedProcess.  Without critical=True a slapd
        lacking syncprov silently ignores the control."""
        spec = '%ssync=%s%s' % ('!' if critical else '', mode, '/' + cookie if cookie else '')
        return self.tool('ldapsearch', ['-E', spec, '-b', base or self.suffix, '(objectClass=*)'],
                         bind=bind, check=check)


def _ldap_env():
    env = dict(os.environ)
    env['LDAPNOINIT'] = '1'     # no ldap.conf / ~/.ldaprc surprises
    return env


# ---------------------------------------------------------------- LDAP URLs

_DN_SAFE = "=,+;@:!$&'()*"
_FILTER_SAFE = "=()&|!*<>~:,;@+$'"
_EXT_SAFE = "=;@:!$&'()*+"


def ldap_url(server, base, attrs=None, scope=None, filt=None, exts=None, ldapi=False):
    """An RFC 4516 URL.  server: a Slapd (its TCP URL, or ldapi_url with
    ldapi=True), another server with a `url` (ds389.DS389), or a
    'ldap://host:port' prefix.  exts: list of 'type=value' strings (a
    leading '!' marks critical); commas and '?' in values are
    percent-encoded as the RFC requires."""
    if isinstance(server, Slapd):
        prefix = server.ldapi_url if ldapi else server.url
    elif isinstance(server, str):
        prefix = server
    else:
        prefix = server.url
    prefix = prefix.rstrip('/')
    q = urllib.parse.quote
    parts = [q(base or '', safe=_DN_SAFE),
             ','.join(q(a, safe=';-') for a in (attrs or [])),
             scope or '',
             q(filt or '', safe=_FILTER_SAFE)]
    ext_parts = []
    for e in exts or []:
        crit = e.startswith('!')
        typ, eq, val = e[1 if crit else 0:].partition('=')
        ext_parts.append(('!' if crit else '') + q(typ, safe='-.') + (eq + q(val, safe=_EXT_SAFE) if eq else ''))
    parts.append(','.join(ext_parts))
    while len(parts) > 1 and parts[-1] == '':
        parts.pop()
    return prefix + '/' + '?'.join(parts)
