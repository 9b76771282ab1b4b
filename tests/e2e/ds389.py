"""A throwaway 389 Directory Server (Debian's 389-ds-base 2.3) for the
end-to-end tests: the provider side of test_389ds.py, with an interface
close to harness.Slapd (start/stop/restart/kill, add/modify/modrdn/delete
through ldap-utils, search, url, suffix, ...).

How it is built, without systemd and without touching the system's paths:

  * lib389's tools (dscreate, dsctl) read their paths from
    PREFIX/share/dirsrv/inf/defaults.inf when PREFIX is set.  The fixture
    copies /usr/share/dirsrv to a private prefix under its temp dir, with
    with_systemd = 0 and every writable path (config, db, logs, run, lock)
    under that prefix; dscreate then starts ns-slapd itself, and nothing is
    written outside the prefix.  lib389 creates only the leaf directories,
    as the server user (dirsrv): their parents are made writable by it.
  * The copy of template-dse.ldif listens on 127.0.0.1 only
    (nsslapd-listenhost), from the very first start.
  * After dscreate, cn=config is changed over LDAP as cn=Directory Manager:
    the Retro Changelog plugin on, with nsslapd-attribute:
    nsuniqueid:targetUniqueId (without it the Content Synchronization
    plugin cannot tell which entry a changelog record is about, and
    cookie refreshes lose changes), the Content Synchronization plugin on;
    then a restart, since plugins start and stop with the server.
  * The feed identity uid=feed,ou=services,SUFFIX (password
    self.feed_pw) gets an ACI at the suffix to read, search and compare
    every attribute, nsUniqueId and entryUUID included (389-ds's default
    ACIs let it see the suffix entry only), and unlimited nsSizeLimit and
    nsLookThroughLimit (the defaults, 2000 and 5000, end a full load of a
    larger directory with result 4 or 11).
  * ns-slapd is started as `ns-slapd -D CONFIG_DIR -i PIDFILE`: it
    daemonises; it is up when an anonymous root DSE search answers.  Its
    pid (from the pidfile) is given to the harness's watchdog.
  * Teardown (harness resource, LIFO like every other): SIGTERM, then
    `dsctl NAME remove --do-it` under the same PREFIX, then the temp dir
    goes.  The watchdog removes the temp dir and kills ns-slapd even if the
    test interpreter is SIGKILLed.

Creating an instance takes about ten seconds: a test file creates one
DS389(lazy=True) at import time (so that the harness keeps it across
tests and tears it down at the end of the file) and calls reset() at the
start of each test: create() the first time, then the configuration a test
changed is put back (plugins, the feed's ACI and limits) and the suffix is
emptied, save the feed identity's branch.

389-ds's RFC 4533 identity of an entry (the syncUUID of the Sync State
control) is its nsUniqueId read as 16 bytes: the 32 hex digits of
'a1b2c3d4-e5f611ee-8a1bb2c3-d4e5f6a7' in that order.  nsuniqueid_uuid()
maps an nsUniqueId to the RFC 4122 text form ldapfeed prints
('a1b2c3d4-e5f6-11ee-8a1b-b2c3d4e5f6a7').  The entryUUID attribute (the
entryuuid plugin) is another, unrelated value.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
import secrets

import harness
from harness import LdapError, SlapdError, free_port, ldif_entry, ldif_modify, parse_ldif, scaled

NS_SLAPD = os.environ.get('NS_SLAPD', '/usr/sbin/ns-slapd')
DSCREATE = 'dscreate'
DSCTL = 'dsctl'
SYSTEM_DATA = '/usr/share/dirsrv'

RETRO = 'cn=Retro Changelog Plugin,cn=plugins,cn=config'
CONTENT_SYNC = 'cn=Content Synchronization,cn=plugins,cn=config'
TARGET_UNIQUE_ID = 'nsuniqueid:targetUniqueId'
SYNC_OID = '1.3.6.1.4.1.4203.1.9.1.1'

# Paths of defaults.inf that lib389 writes to: all of them under the prefix.
_PATHS = {
    'prefix': '{R}',
    'data_dir': '{R}/share',
    'tmp_dir': '{R}/tmp',
    'initconfig_dir': '{R}/etc/default',
    'config_dir': '{R}/etc/dirsrv/slapd-{{instance_name}}',
    'local_state_dir': '{R}/var',
    'run_dir': '{R}/run',
    'ldapi': '{R}/run/slapd-{{instance_name}}.socket',
    'pid_file': '{R}/run/slapd-{{instance_name}}.pid',
    'inst_dir': '{R}/lib/slapd-{{instance_name}}',
    'tmpfiles_d': '{R}/tmpfiles.d',
    'schema_dir': '{R}/etc/dirsrv/slapd-{{instance_name}}/schema',
    'cert_dir': '{R}/etc/dirsrv/slapd-{{instance_name}}',
    'lock_dir': '{R}/lock/slapd-{{instance_name}}',
    'log_dir': '{R}/log/slapd-{{instance_name}}',
    'access_log': '{R}/log/slapd-{{instance_name}}/access',
    'audit_log': '{R}/log/slapd-{{instance_name}}/audit',
    'error_log': '{R}/log/slapd-{{instance_name}}/errors',
    'security_log': '{R}/log/slapd-{{instance_name}}/security',
    'db_dir': '{R}/var/slapd-{{instance_name}}/db',
    'db_home_dir': '{R}/var/slapd-{{instance_name}}/dbhome',
    'backup_dir': '{R}/var/slapd-{{instance_name}}/bak',
    'ldif_dir': '{R}/var/slapd-{{instance_name}}/ldif',
}
# Directories whose leaves lib389 creates as the server user.
_OWNED = ('etc/dirsrv', 'etc/default', 'var', 'log', 'lock', 'run', 'lib', 'tmp')


def nsuniqueid_uuid(nsuniqueid):
    """389-ds's nsUniqueId 'a1b2c3d4-e5f611ee-8a1bb2c3-d4e5f6a7' as the
    syncUUID ldapfeed prints: the same 32 hex digits, in the same order,
    grouped 8-4-4-4-12 ('a1b2c3d4-e5f6-11ee-8a1b-b2c3d4e5f6a7')."""
    h = nsuniqueid.replace('-', '').lower()
    if len(h) != 32:
        raise ValueError('not an nsUniqueId: %r' % nsuniqueid)
    return '%s-%s-%s-%s-%s' % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def available():
    """None when an instance can be made here, else why not (for Skip)."""
    if os.geteuid() != 0:
        return 'not root (ns-slapd must switch to the dirsrv user)'
    for path in (NS_SLAPD, os.path.join(SYSTEM_DATA, 'inf/defaults.inf')):
        if not os.path.exists(path):
            return '%s missing: sh scripts/deps 389ds' % path
    for prog in (DSCREATE, DSCTL, 'ldapsearch'):
        if shutil.which(prog) is None:
            return '%s not installed: sh scripts/deps 389ds' % prog
    return None


class DS389:
    """A 389-ds instance on 127.0.0.1, under a temp dir of its own.

    suffix: the one backend's suffix (userroot), created with its entry.
    lazy=True: nothing is created until create() (or reset()).  Attributes
    like Slapd's: url, port, suffix, rootdn/rootpw (cn=Directory Manager),
    reader_dn/reader_pw (the feed identity, also feed_dn/feed_pw), pidfile,
    access_log, error_log, running, pid."""

    def __init__(self, suffix='dc=example,dc=com', lazy=False, name=None):
        self.suffix = suffix
        self.name = name or 'lf%d%s' % (os.getpid(), secrets.token_hex(2))
        self.rootdn = 'cn=Directory Manager'
        self.rootpw = 'DM-' + secrets.token_hex(8)
        self.services_dn = 'ou=services,' + suffix
        self.feed_dn = 'uid=feed,' + self.services_dn
        self.feed_pw = 'Feed-' + secrets.token_hex(8)
        self.reader_dn, self.reader_pw = self.feed_dn, self.feed_pw      # Slapd's names
        self.port = None
        self.secure_port = None
        self.created = False
        self.create_seconds = None
        self.starts = 0
        self._pid = None
        self._watched = set()
        self._config = {}            # what cn=config holds now (see configure())
        self._paths()
        harness._register(self)
        if not lazy:
            self.create()

    def _paths(self):
        """A temp dir of its own, and the paths under it."""
        self.dir = tempfile.mkdtemp(prefix='e2e-389ds-')
        os.chmod(self.dir, 0o755)   # ns-slapd (user dirsrv) must reach the prefix
        self.root = os.path.join(self.dir, 'root')
        self.config_dir = os.path.join(self.root, 'etc/dirsrv/slapd-' + self.name)
        self.pidfile = os.path.join(self.root, 'run/slapd-%s.pid' % self.name)
        self.access_log = os.path.join(self.root, 'log/slapd-%s/access' % self.name)
        self.error_log = os.path.join(self.root, 'log/slapd-%s/errors' % self.name)
        self.stderr_path = os.path.join(self.dir, 'ns-slapd.stderr')
        harness._watchdog_send('d+ ' + self.dir)

    def recreate(self):
        """remove() and create() again, under another name and temp dir: for
        a server whose database a crash left damaged (ns-slapd recovers it
        at its next start, but an entry can keep children that no search
        shows, and the suffix can no longer be emptied)."""
        self.remove()
        self.name = 'lf%d%s' % (os.getpid(), secrets.token_hex(2))
        self._config = {}
        self._paths()
        return self.create()

    # -- properties
    @property
    def url(self):
        """ldap://127.0.0.1:PORT (no trailing slash)."""
        return 'ldap://127.0.0.1:%d' % self.port

    @property
    def pid(self):
        return self._pid if self._pid is not None and harness.pid_alive(self._pid) else None

    @property
    def running(self):
        return self.pid is not None

    def _env(self):
        env = dict(os.environ)
        env['PREFIX'] = self.root
        env['LDAPNOINIT'] = '1'
        return env

    # -- creation
    def _prefix(self):
        """The private lib389 prefix: share/dirsrv copied, defaults.inf and
        template-dse.ldif rewritten, the writable directories."""
        share = os.path.join(self.root, 'share')
        os.makedirs(share)
        shutil.copytree(SYSTEM_DATA, os.path.join(share, 'dirsrv'), symlinks=True)
        for d in (self.root, share):
            os.chmod(d, 0o755)
        inf = os.path.join(share, 'dirsrv/inf/defaults.inf')
        with open(inf) as f:
            lines = f.read().splitlines()
        out = []
        for line in lines:
            key = line.split('=', 1)[0].strip()
            if '=' in line and not line.lstrip().startswith(';'):
                if key == 'with_systemd':
                    line = 'with_systemd = 0'
                elif key == 'with_selinux':
                    line = 'with_selinux = no'
                elif key in _PATHS:
                    line = '%s = %s' % (key, _PATHS[key].format(R=self.root))
            out.append(line)
        with open(inf, 'w') as f:
            f.write('\n'.join(out) + '\n')
        tpl = os.path.join(share, 'dirsrv/data/template-dse.ldif')
        with open(tpl) as f:
            text = f.read()
        port_line = 'nsslapd-port: %ds_port%\n'
        if port_line not in text:
            raise SlapdError('%s: no "%s" line to put nsslapd-listenhost after' % (tpl, port_line.strip()))
        with open(tpl, 'w') as f:
            f.write(text.replace(port_line, port_line + 'nsslapd-listenhost: 127.0.0.1\n', 1))
        import pwd
        pw = pwd.getpwnam('dirsrv')
        for d in _OWNED:
            p = os.path.join(self.root, d)
            os.makedirs(p, exist_ok=True)
            os.chown(p, pw.pw_uid, pw.pw_gid)
            os.chmod(p, 0o770)
        os.chmod(os.path.join(self.root, 'etc'), 0o755)

    def create(self, timeout=120):
        """dscreate from-file (it starts the server), then the plugins, a
        restart, the feed identity and its ACI."""
        if self.created:
            return self
        why = available()
        if why:
            raise harness.Skip('389-ds: ' + why)
        t0 = time.monotonic()
        self._prefix()
        self.port, self.secure_port = free_port(), free_port()
        while self.secure_port == self.port:
            self.secure_port = free_port()
        inf = os.path.join(self.dir, 'instance.inf')
        with open(inf, 'w') as f:
            f.write('[general]\nconfig_version = 2\nfull_machine_name = localhost\nstart = True\n'
                    'selinux = False\nstrict_host_checking = False\n\n'
                    '[slapd]\ninstance_name = %s\nport = %d\nsecure_port = %d\nself_sign_cert = False\n'
                    'root_password = %s\n\n'
                    '[backend-userroot]\nsuffix = %s\ncreate_suffix_entry = True\nsample_entries = no\n'
                    % (self.name, self.port, self.secure_port, self.rootpw, self.suffix))
        os.chmod(inf, 0o600)
        log = os.path.join(self.dir, 'dscreate.log')
        with open(log, 'wb') as out:
            try:
                r = subprocess.run([DSCREATE, 'from-file', inf], env=self._env(), stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.STDOUT, timeout=scaled(timeout))
                rc = r.returncode
            except subprocess.TimeoutExpired:
                rc = 'timeout'
        self.created = True          # there may be something to remove, whatever happened
        self._adopt_pid()
        if rc != 0:
            raise SlapdError('dscreate from-file exited %s:\n%s' % (rc, harness._tail(log, 30)))
        self._wait_ready(time.monotonic() + scaled(30))
        self.starts += 1
        # The access log unbuffered, with a line per entry sent (level 512 on
        # top of the default 256): entries_sent() counts what a search got.
        # DNs as the DN index has them, as the README asks of a server ldapfeed
        # follows: with nsslapd-return-original-entrydn on (the default
        # since 2.2) the server answers with each entry's stored dsEntryDN,
        # which a subtree moved while searches run can leave stale below it
        # (https://github.com/389ds/389-ds-base/issues/7183; seen here as the
        # chaos writer's tree differing from ldapsearch's until a restart).
        self.modify(ldif_modify('cn=config', [('replace', 'nsslapd-accesslog-logbuffering', 'off'),
                                              ('replace', 'nsslapd-accesslog-level', '768'),
                                              ('replace', 'nsslapd-return-original-entrydn', 'off')]))
        self._config = {'retro': False, 'target_unique_id': False, 'content_sync': False, 'sync_sessions': None}
        self.configure()            # plugins on, restart
        self.add_entry(self.services_dn, {'objectClass': ['top', 'organizationalUnit'], 'ou': 'services'})
        self.add_entry(self.feed_dn, {'objectClass': ['top', 'account', 'simpleSecurityObject'],
                                      'uid': 'feed', 'userPassword': self.feed_pw,
                                      'nsSizeLimit': '-1', 'nsLookThroughLimit': '-1'})
        self.feed_access(True)
        # What the README asks of a feed identity on 389-ds: read the Retro
        # Changelog's settings, so that ldapfeed can check targetUniqueId.
        self.modify(ldif_modify(RETRO, [('add', 'aci', (
            '(targetattr="*")(version 3.0; '
            'acl "ldapfeed reads the retro changelog settings"; allow (read, search, compare) '
            'userdn="ldap:///%s";)' % self.feed_dn))]))
        self.create_seconds = time.monotonic() - t0
        return self

    # -- configuration
    def configure(self, content_sync=True, retro=True, target_unique_id=True, sync_sessions=None):
        """Put the two plugins in the state asked for (the Retro Changelog's
        nsslapd-attribute: nsuniqueid:targetUniqueId with
        target_unique_id; the Content Synchronization plugin's limit on
        refreshAndPersist sessions, its nsslapd-pluginarg0, with
        sync_sessions, None for its default of 10), restarting the server
        when anything changed.  Returns True when it did."""
        want = {'retro': retro or content_sync, 'target_unique_id': target_unique_id,
                'content_sync': content_sync, 'sync_sessions': sync_sessions}
        if want == self._config:
            return False
        if want['target_unique_id'] != self._config.get('target_unique_id'):
            op = 'add' if target_unique_id else 'delete'
            self.modify(ldif_modify(RETRO, [(op, 'nsslapd-attribute', TARGET_UNIQUE_ID)]))
        if want['sync_sessions'] != self._config.get('sync_sessions'):
            # The plugin reads its argument when it starts: the restart below.
            self.modify(ldif_modify(CONTENT_SYNC, [('replace', 'nsslapd-pluginarg0',
                                                    [] if sync_sessions is None else str(sync_sessions))]))
        for dn, key in ((RETRO, 'retro'), (CONTENT_SYNC, 'content_sync')):
            if want[key] != self._config.get(key):
                self.modify(ldif_modify(dn, [('replace', 'nsslapd-pluginEnabled', 'on' if want[key] else 'off')]))
        self._config = want
        self.restart()
        return True

    def feed_access(self, grant=True):
        """The feed identity's ACI at the suffix: present (read, search and
        compare on every attribute, nsUniqueId and entryUUID included) or
        not (389-ds's default ACIs then show it the suffix entry only)."""
        aci = ('(targetattr="*|| nsUniqueId || entryUUID")(version 3.0; acl "ldapfeed read"; '
               'allow (read, search, compare) userdn="ldap:///%s";)' % self.feed_dn)
        have = [v.decode() for v in self.search(self.suffix, 'base', attrs=['aci']).get(self.suffix, {})
                .get('aci', [])]
        if grant and aci not in have:
            self.modify(ldif_modify(self.suffix, [('add', 'aci', aci)]))
        elif not grant and aci in have:
            self.modify(ldif_modify(self.suffix, [('delete', 'aci', aci)]))
        self.feed_aci = aci

    def wipe(self):
        """Delete everything under the suffix but the feed identity and its
        branch (ou=services); the suffix entry itself stays."""
        keep = {self.services_dn.lower(), self.feed_dn.lower(), self.suffix.lower()}
        dns = list(self.search(self.suffix, 'sub', attrs=['1.1']))
        # deepest first: a DN with more RDNs is never an ancestor of one with fewer
        dns = sorted((dn for dn in dns if dn.lower() not in keep), key=lambda d: -d.count(','))
        # DN depth by comma count is right for the DNs the tests make (no escaped commas)
        if dns:
            self.tool('ldapdelete', ['-c'], input='\n'.join(dns) + '\n')

    def reset(self, **conf):
        """For the start of a test: create() the first time; the server
        running, the plugins as configure(**conf) says, the feed identity's
        ACI and limits in place, the suffix empty but for the feed's branch."""
        self.create()
        if not self.running:
            self.start()
        self.configure(**conf)
        self.modify(ldif_modify(self.feed_dn, [('replace', 'nsSizeLimit', '-1'),
                                               ('replace', 'nsLookThroughLimit', '-1')]))
        self.feed_access(True)
        self.wipe()
        return self

    # -- lifecycle
    def _adopt_pid(self):
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        self._pid = pid
        if pid not in self._watched:
            self._watched.add(pid)
            harness._watchdog_send('+ %d p' % pid)
        return pid

    def _forget_pid(self):
        if self._pid is not None and self._pid in self._watched:
            self._watched.discard(self._pid)
            harness._watchdog_send('- %d' % self._pid)
        self._pid = None

    def _answers(self):
        r = subprocess.run(['ldapsearch', '-x', '-LLL', '-H', self.url, '-b', '', '-s', 'base',
                            '-o', 'nettimeout=2', '1.1'], env=self._env(), stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        return r.returncode == 0

    def _wait_ready(self, deadline):
        while True:
            if self._pid is None:
                self._adopt_pid()
            if self._pid is not None and self._answers():
                return
            if time.monotonic() > deadline:
                raise SlapdError('389-ds did not answer on port %d; errors log tail:\n%s'
                                 % (self.port, harness._tail(self.error_log, 30)))
            time.sleep(0.05)

    def _clear_stale_locks(self):
        """ns-slapd refuses to start while its lock directory names a pid
        that exists.  One that crashed stays a zombie here (nothing reaps
        orphans promptly), holding its lock for ever: its lock file goes."""
        d = os.path.join(self.root, 'lock/slapd-%s/server' % self.name)
        try:
            names = os.listdir(d)
        except OSError:
            return
        for name in names:
            if name.isdigit() and not harness.pid_alive(int(name)):
                try:
                    os.unlink(os.path.join(d, name))
                except OSError:
                    pass

    def start(self, timeout=60):
        """ns-slapd -D CONFIG_DIR -i PIDFILE, and wait until it answers."""
        if self.running:
            raise SlapdError('389-ds already running (pid %d)' % self.pid)
        try:
            os.unlink(self.pidfile)
        except FileNotFoundError:
            pass
        self._clear_stale_locks()
        self._pid = None
        deadline = time.monotonic() + scaled(timeout)
        with open(self.stderr_path, 'ab') as err:
            r = subprocess.run([NS_SLAPD, '-D', self.config_dir, '-i', self.pidfile], stdin=subprocess.DEVNULL,
                               stdout=err, stderr=err, env=self._env(), timeout=scaled(timeout))
        if r.returncode != 0:
            raise SlapdError('ns-slapd exited %d; errors log tail:\n%s'
                             % (r.returncode, harness._tail(self.error_log, 30)))
        self._wait_ready(deadline)
        self.starts += 1
        return self

    def stop(self, timeout=30, sig=signal.SIGTERM):
        """SIGTERM (or sig), wait for the process to go (SIGKILL after timeout s)."""
        pid = self.pid or self._adopt_pid()
        if pid is not None and harness.pid_alive(pid):
            harness.terminate_pid(pid=pid, term_timeout=timeout, sig=sig)
            # Gone from /proc, not just a zombie: the next ns-slapd takes a
            # pid lock that a zombie still holds (kill(pid, 0) succeeds).
            end = time.monotonic() + 10
            while os.path.exists('/proc/%d' % pid) and time.monotonic() < end:
                time.sleep(0.02)
        self._forget_pid()
        return self

    def kill(self):
        """SIGKILL: no clean shutdown of the databases."""
        return self.stop(timeout=5, sig=signal.SIGKILL)

    def restart(self):
        self.stop()
        return self.start()

    def remove(self):
        """Stop, `dsctl NAME remove --do-it`, delete the temp dir."""
        try:
            self.stop()
            if self.created and os.path.isdir(self.config_dir):
                subprocess.run([DSCTL, self.name, 'remove', '--do-it'], env=self._env(),
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=120)
        finally:
            self.created = False
            shutil.rmtree(self.dir, ignore_errors=True)
            # the SNMP counters' POSIX semaphore, the one thing outside the
            # prefix (dsctl remove takes it away, but not after a SIGKILL)
            try:
                os.unlink('/dev/shm/sem.slapd-%s.stats' % self.name)
            except OSError:
                pass
            harness._watchdog_send('d- ' + self.dir)

    def _teardown(self):
        self.remove()

    def _diagnostics(self):
        return ['--- 389-ds %s (port %s) errors log tail:' % (self.name, self.port)] + \
            harness._tail(self.error_log, 15).splitlines()

    # -- the access log
    def access_mark(self):
        """The access log's size now: entries_sent(mark) reads past it."""
        try:
            return os.path.getsize(self.access_log)
        except OSError:
            return 0

    def entries_sent(self, mark=0, scope=None, base=None, filt=None, all_attrs=False):
        """[(conn, op, dn)] of the entries the server sent since mark, from
        the access log's ENTRY lines, optionally only for searches of that
        scope (0 base, 1 one level, 2 subtree), base and filter (compared
        case-insensitively), and with all_attrs only for searches whose
        attribute list starts with `*`.  An ldapfeed's sync search is a
        subtree search of its base with its filter for `*` and what it adds
        (the log shows `* hasSubordinates entrycsn aci`); its start-up check
        of the base a base one; its listing of a resumed search the same
        search for nsUniqueId alone; its lookups and subtree tasks search
        the base by nsUniqueId, or below an entry."""
        import re
        try:
            with open(self.access_log, 'rb') as f:
                f.seek(mark)
                text = f.read().decode('utf-8', 'replace')
        except OSError:
            return []
        scopes, out = {}, []
        for line in text.splitlines():
            m = re.search(r' conn=(\d+) op=(\d+) SRCH base="(.*)" scope=(\d+) filter="(.*)" attrs=(".*"|ALL)', line)
            if m:
                scopes[m.group(1), m.group(2)] = (int(m.group(4)), m.group(3).lower(), m.group(5).lower(),
                                                  m.group(6).strip('"').lower())
                continue
            m = re.search(r' conn=(\d+) op=(\d+) ENTRY dn="(.*)"', line)
            sc, b, f, a = scopes.get((m.group(1), m.group(2)), (None,) * 4) if m else (None,) * 4
            if m and (scope is None or sc == scope) and (base is None or b == base.lower()) and \
                    (filt is None or f == filt.lower()) and (not all_attrs or a.startswith('*')):
                out.append((int(m.group(1)), int(m.group(2)), m.group(3)))
        return out

    # -- ldap-utils
    def tool(self, prog, args, input=None, bind='root', check=True, timeout=120):
        """An ldap-utils program against this server.  bind: 'root'
        (cn=Directory Manager), 'feed' or 'reader' (the feed identity),
        'anon', or a (dn, password) tuple.  Raises LdapError on a non-zero
        exit when check is true."""
        argv = [prog, '-x', '-H', self.url]
        if bind == 'root':
            argv += ['-D', self.rootdn, '-w', self.rootpw]
        elif bind in ('feed', 'reader'):
            argv += ['-D', self.feed_dn, '-w', self.feed_pw]
        elif isinstance(bind, tuple):
            argv += ['-D', bind[0], '-w', bind[1]]
        elif bind != 'anon':
            raise ValueError('bad bind %r' % (bind,))
        argv += list(args)
        if isinstance(input, str):
            input = input.encode('utf-8')
        r = subprocess.run(argv, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self._env(),
                           timeout=scaled(timeout))
        if check and r.returncode != 0:
            raise LdapError(argv, r.returncode, r.stderr, r.stdout)
        return r

    def add(self, ldif, cont=False):
        return self.tool('ldapadd', ['-c'] if cont else [], input=ldif)

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
               bind='root', extra_args=()):
        """ldapsearch -LLL: {dn: {attr: [bytes]}} (as Slapd.search)."""
        args = ['-LLL', '-o', 'ldif-wrap=no', '-b', base or self.suffix, '-s', scope] + list(extra_args) + [filt]
        a = list(attrs) if attrs else []
        if operational:
            a = (a or ['*']) + ['+']
        return parse_ldif(self.tool('ldapsearch', args + a, bind=bind).stdout)

    def nsuniqueids(self, base=None, scope='sub', filt='(objectClass=*)', bind='root'):
        """{dn: nsUniqueId}."""
        res = self.search(base, scope, filt, attrs=['nsUniqueId'], bind=bind)
        return {dn: a['nsUniqueId'][0].decode() for dn, a in res.items() if 'nsUniqueId' in a}

    def uuids(self, base=None, scope='sub', filt='(objectClass=*)', bind='root'):
        """{dn: the syncUUID 389-ds sends for it, in ldapfeed's text form}."""
        return {dn: nsuniqueid_uuid(v) for dn, v in self.nsuniqueids(base, scope, filt, bind).items()}

    def sync_search(self, mode='ro', cookie=None, base=None, bind='root', check=True, critical=True,
                    attrs=('1.1',)):
        """ldapsearch -E [!]sync=ro[/cookie]; the CompletedProcess."""
        spec = '%ssync=%s%s' % ('!' if critical else '', mode, '/' + cookie if cookie else '')
        return self.tool('ldapsearch', ['-E', spec, '-b', base or self.suffix, '(objectClass=*)'] + list(attrs),
                         bind=bind, check=check)

    def root_dse(self, *attrs):
        """The root DSE's attributes (all operational ones by default)."""
        r = self.tool('ldapsearch', ['-LLL', '-o', 'ldif-wrap=no', '-b', '', '-s', 'base', '(objectClass=*)']
                      + (list(attrs) or ['+']), bind='anon')
        return parse_ldif(r.stdout).get('', {})
