"""The daemon: Daemon runs ldapfeed against a Slapd and a Consumer (or with
any argument list), and finds its supervisor, children and output;
prepared_store(), store_snapshot() and write_secret() set up and check
what it keeps on disk."""

import os
import shlex
import shutil
import signal
import subprocess

from .consumer import Consumer
from .core import Skip, TOP, _tail, _unique_path, scaled, wait_until
from .ldif import _b
from .procs import (_proc_stat, _register, _register_untrack, _spawn, _watchdog_send, group_members,
                    pid_alive, proc_children, proc_descendants, terminate_pid)
from .runner import _current_dir
from .slapd import Slapd, ldap_url


def ldapfeed_binary():
    return os.environ.get('LDAPFEED') or os.path.join(TOP, 'ldapfeed')


class Daemon:
    """Runs ldapfeed against a Slapd and a Consumer (ldapfeed.8, SYNOPSIS and
    OPTIONS):

      [TEST_WRAP...] ldapfeed -H URL -D DATADIR -m MARKER -o ADDRESS -k KEYFILE
                     -p N --mode M --format F [-f] [-y PWFILE] [-P PIDFILE] [extra...]

    url defaults to ldap_url(slapd, slapd.suffix) bound as the lab's consumer
    identity cn=reader (bind=None or 'reader': bindname=cn=reader + its
    password, no size limit).  Other binds: 'anon' (anonymous, which slapd
    limits to 500 entries and which cannot read userPassword), 'root'
    (rootdn), 'external' (the ldapi URL
    with x-saslmech=EXTERNAL; Slapd(ldapi=True)).  self.bind names the identity
    for Slapd.search(bind=...) / assert_model_equals_server(bind=...).
    datadir/marker default to
    TMPDIR/data and TMPDIR/marker (so a second Daemon in the same test resumes
    the first one's store).  password: written to a 0600 file passed with -y.
    output/keyfile override the consumer's.  argv: the complete argument list
    instead (for usage-error tests).  Not running in the foreground, the
    launcher exits once startup is done; the supervisor is found with the
    pidfile.  Raises Skip when the binary is missing."""

    def __init__(self, tmpdir=None, slapd=None, consumer=None, processes=3, mode='persist', fmt=None,
                 url=None, extra=(), datadir=None, marker=None, password=None, foreground=True,
                 argv=None, output=None, keyfile=None, pidfile=None, env=None, start=True,
                 term_timeout=10, binary=None, bind=None):
        tmpdir = _current_dir(tmpdir)
        self.tmpdir = tmpdir
        self.binary = binary or ldapfeed_binary()
        self._watched_supervisor = None
        if not (os.path.isfile(self.binary) and os.access(self.binary, os.X_OK)):
            raise Skip('ldapfeed binary not built (%s)' % self.binary)
        self.slapd, self.consumer = slapd, consumer
        self.datadir = datadir or os.path.join(tmpdir, 'data')
        self.marker = marker or os.path.join(tmpdir, 'marker')
        self.foreground = foreground
        self.pidfile = pidfile or (None if foreground else _unique_path(tmpdir, 'ldapfeed', '.pid'))
        self.term_timeout = term_timeout
        self.bind = bind or 'reader'
        if argv is None:
            if url is None:
                if self.bind == 'anon':
                    url = ldap_url(slapd, slapd.suffix)
                elif self.bind == 'reader':
                    url = ldap_url(slapd, slapd.suffix, exts=['bindname=' + slapd.reader_dn])
                    password = slapd.reader_pw if password is None else password
                elif self.bind == 'root':
                    url = ldap_url(slapd, slapd.suffix, exts=['bindname=' + slapd.rootdn])
                    password = slapd.rootpw if password is None else password
                elif self.bind == 'external':
                    url = ldap_url(slapd, slapd.suffix, exts=['x-saslmech=EXTERNAL'], ldapi=True)
                else:
                    raise ValueError('bad bind %r' % (bind,))
            fmt = fmt or (consumer.fmt if consumer is not None else 'pickle')
            output = output or consumer.address
            keyfile = keyfile if consumer is None else (keyfile or consumer.keyfile)
            argv = ['-H', url, '-D', self.datadir, '-m', self.marker, '-o', output] + \
                (['-k', keyfile] if keyfile else []) + \
                ['-p', str(processes), '--mode', mode, '--format', fmt]
            if foreground:
                argv.append('-f')
            if password is not None:
                pw = _unique_path(tmpdir, 'password')
                fd = os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, 'wb') as f:
                    f.write(_b(password) + b'\n')
                argv += ['-y', pw]
                self.password_file = pw
            if self.pidfile:
                argv += ['-P', self.pidfile]
            argv += list(extra)
        self.url = url
        wrap = shlex.split(os.environ.get('TEST_WRAP', ''))
        self.cmd = wrap + [self.binary] + list(argv)
        self.env = env
        self.stdout_path = _unique_path(tmpdir, 'ldapfeed', '.stdout')
        self.stderr_path = self.stdout_path[:-len('.stdout')] + '.stderr'
        for path in (self.stdout_path, self.stderr_path):
            open(path, 'ab').close()            # claims the names for this instance
        self.popen = None
        _register(self)
        if start:
            self.start()

    def start(self):
        with open(self.stdout_path, 'ab') as out, open(self.stderr_path, 'ab') as err:
            self.popen, res = _spawn(self.cmd, group=True, name='ldapfeed', stdout=out, stderr=err,
                                     cwd=self.tmpdir, env=self.env, term_timeout=self.term_timeout)
        _register_untrack(res)
        self._res = res
        return self

    @property
    def pid(self):
        """The launched process: the supervisor when in the foreground."""
        return self.popen.pid

    def supervisor_pid(self):
        """The supervisor's pid (from the pidfile when detached)."""
        if self.foreground or not self.pidfile:
            return self.pid
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if pid != self._watched_supervisor:
            # detached: not our child, so tell the watchdog about it
            self._watched_supervisor = pid
            _watchdog_send('+ %d p' % pid)
        return pid

    def wait(self, timeout=30):
        """The exit status (negative: killed by that signal); raises
        AssertionError after `timeout` s."""
        try:
            return self.popen.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            raise AssertionError('ldapfeed (pid %d) still running after %gs; stderr tail:\n%s'
                                 % (self.pid, scaled(timeout), _tail(self.stderr_path, 30))) from None

    @property
    def returncode(self):
        return self.popen.poll()

    def alive(self):
        return self.popen.poll() is None

    def signal(self, sig):
        """Send sig to the supervisor."""
        pid = self.supervisor_pid()
        if pid:
            os.kill(pid, sig)

    def kill_group(self, sig=None):
        """Send sig (default SIGKILL) to the daemon's whole process group."""
        sig = signal.SIGKILL if sig is None else sig
        pid = self.supervisor_pid()
        try:
            os.killpg(os.getpgid(pid), sig)
        except (ProcessLookupError, TypeError):
            pass

    def children(self):
        """Sorted live pids whose parent is the supervisor (reader and workers,
        order not determinable from outside)."""
        pid = self.supervisor_pid()
        return proc_children(pid) if pid else []

    def descendants(self):
        pid = self.supervisor_pid()
        return proc_descendants(pid) if pid else []

    def group(self):
        """Live pids of the daemon's process group."""
        pid = self.supervisor_pid()
        try:
            return group_members(os.getpgid(pid)) if pid else []
        except ProcessLookupError:
            return []

    def stderr(self):
        try:
            with open(self.stderr_path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''

    def stdout(self):
        try:
            with open(self.stdout_path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''

    def wait_stderr(self, text, timeout=10):
        """Wait until stderr contains text."""
        return wait_until(lambda: text in self.stderr(), timeout, 'ldapfeed stderr to contain %r' % text)

    def marker_exists(self):
        return os.path.exists(self.marker)

    def stop(self, timeout=30):
        """SIGTERM to the supervisor, then wait(); returns the exit status."""
        if self.alive() or not self.foreground:
            self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def _teardown(self):
        try:
            if self.popen is not None:
                terminate_pid(self.popen, group=True, term_timeout=self.term_timeout)
            if not self.foreground:
                pid = self.supervisor_pid()
                if pid and pid_alive(pid):
                    grp = _proc_stat(pid)
                    terminate_pid(pid=pid, group=bool(grp and grp[2] == pid), term_timeout=self.term_timeout)
        finally:
            if self.popen is not None:
                _watchdog_send('- %d' % self.popen.pid)
            if self._watched_supervisor:
                _watchdog_send('- %d' % self._watched_supervisor)

    def _diagnostics(self):
        status = self.popen.poll() if self.popen else None
        return ['--- ldapfeed %s (exit %s) stderr tail:' % (' '.join(self.cmd), status)] + \
            _tail(self.stderr_path, 30).splitlines()


def write_secret(path, data):
    """A new 0600 file (ldapfeed rightly warns about secrets others can read)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'wb') as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return path


def prepared_store(tmp, people=5, **slapd_kw):
    """A slapd with people, and a store left by one clean foreground run (the
    marker exists).  Returns (slapd, datadir, marker)."""
    s = Slapd(tmp, **slapd_kw)
    s.add_people(people)
    con = Consumer(tmp, name='prep')
    d = Daemon(tmp, s, con, processes=4)
    con.wait_refresh_done()
    assert d.stop() == 0, d.stderr()
    assert d.marker_exists()
    con.close()
    assert 'data.mdb' in os.listdir(d.datadir), os.listdir(d.datadir)
    return s, d.datadir, d.marker


def store_snapshot(datadir, marker):
    """What a failed start must leave as it was: every store file's checksum
    (not LMDB's lock.mdb, which holds only runtime reader slots), the list of
    names, and the marker (existence, contents, mtime)."""
    import hashlib
    files = {}
    for name in sorted(os.listdir(datadir)) if os.path.isdir(datadir) else []:
        path = os.path.join(datadir, name)
        if name == 'lock.mdb' or not os.path.isfile(path):
            files[name] = None
            continue
        with open(path, 'rb') as f:
            files[name] = hashlib.sha256(f.read()).hexdigest()
    try:
        st = os.stat(marker)
        with open(marker, 'rb') as f:
            mark = (f.read(), st.st_mtime_ns)
    except FileNotFoundError:
        mark = None
    return {'files': files, 'marker': mark}


# Words of a crash or a sanitizer report in a process's stderr.
CRASH_WORDS = ('Segmentation', 'AddressSanitizer', 'runtime error:', 'LeakSanitizer', 'Aborted',
               'stack smashing', 'double free', 'corrupted')


def unescape_mdb(text):
    """A value of `mdb_dump -p` (backslash-hex escapes) as bytes."""
    out, i = bytearray(), 0
    raw = text.encode('latin-1')
    while i < len(raw):
        if raw[i:i + 1] == b'\\':
            if raw[i + 1:i + 2] == b'\\':
                out.append(0x5c)
                i += 2
            elif all(c in b'0123456789abcdefABCDEF' for c in raw[i + 1:i + 3]) and i + 3 <= len(raw):
                out.append(int(raw[i + 1:i + 3], 16))
                i += 3
            else:   # a lone backslash (the random epoch can hold one)
                out.append(0x5c)
                i += 1
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def store_info(datadir):
    """{'entries': N, 'cookie': bytes or None} of an LMDB store, read with
    mdb_stat / mdb_dump (lmdb-utils); None when they are missing."""
    if not shutil.which('mdb_stat') or not shutil.which('mdb_dump'):
        return None
    st = subprocess.run(['mdb_stat', '-s', 'entries', datadir], capture_output=True, text=True, timeout=30)
    entries = None
    for ln in st.stdout.splitlines():
        if ln.strip().startswith('Entries:'):
            entries = int(ln.split(':')[1])
    dump = subprocess.run(['mdb_dump', '-p', '-s', 'meta', datadir], capture_output=True, text=True,
                          timeout=30, encoding='latin-1')
    lines = dump.stdout.split('\n')
    try:
        body = lines[lines.index('HEADER=END') + 1:lines.index('DATA=END')]
    except ValueError:
        body = []
    meta = {}
    for k, v in zip(body[0::2], body[1::2]):
        meta[unescape_mdb(k[1:])] = unescape_mdb(v[1:])
    return {'entries': entries, 'cookie': meta.get(b'cookie'), 'rc': (st.returncode, dump.returncode)}


def crash_lines(text):
    return [ln for ln in text.splitlines() if any(w in ln for w in CRASH_WORDS)]
