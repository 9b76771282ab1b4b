"""End-to-end test harness for ldapfeed: TAP test registration, a lab slapd
(variants V0-V4, defined by the Slapd class; what each variant's syncprov
setting does: doc/syncrepl.md, "Provider settings"), a Python
multiprocessing.connection consumer, a model of the consumer's copy of the
directory, and the daemon.

Python 3 stdlib only.  LDAP is driven with the ldap-utils command-line tools.
Every process a test starts is registered and torn down by pid after the
test, on every path: normal end, failure, a per-test deadline (SIGALRM),
SIGTERM/SIGINT from the runner, interpreter exit; and a watchdog process kills
what is left if this interpreter itself is SIGKILLed.

Environment:
  KEEP_TMP=1          keep each test's temp dir and print its path
  LDAPFEED=PATH       the daemon binary (default: ldapfeed at the repo root)
  TEST_WRAP=CMD       a command prefix for every ldapfeed (shlex-split)
  E2E_TIME_SCALE=F    multiply every deadline by F (default 1, 5 with TEST_WRAP)
  E2E_TEST_TIMEOUT=S  per-test deadline in seconds (default 120, scaled)
  SLAPD=PATH          slapd binary (default /usr/sbin/slapd)
"""

import atexit
import base64
import errno
import fnmatch
import inspect
import json
import os
import pickle
import random
import secrets
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.request
from multiprocessing.connection import AuthenticationError, Listener

__all__ = [
    'test', 'main', 'Skip', 'note', 'wait_until', 'scaled', 'TOP',
    'Slapd', 'LdapError', 'SlapdError', 'parse_ldif', 'ldif_entry', 'ldif_modify',
    'Consumer', 'Model', 'assert_model_equals_server', 'normalize_attrs',
    'Daemon', 'ldap_url', 'free_port', 'pid_alive', 'proc_children', 'proc_descendants',
    'group_members', 'register_process', 'terminate_pid', 'instance_procs', 'store_snapshot',
    'write_secret', 'prepared_store', 'TestCA', 'Acceptor',
]

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SLAPD_BIN = os.environ.get('SLAPD', '/usr/sbin/slapd')
SCHEMA_DIR = '/etc/ldap/schema'
MODULE_DIR = '/usr/lib/ldap'

_default_scale = '5' if os.environ.get('TEST_WRAP') else '1'
TIME_SCALE = float(os.environ.get('E2E_TIME_SCALE', _default_scale) or 1)


def scaled(seconds):
    """A deadline stretched by E2E_TIME_SCALE (slow wrappers such as valgrind)."""
    return seconds * TIME_SCALE


def note(*lines):
    """Print diagnostic lines as TAP comments."""
    for text in lines:
        for line in str(text).splitlines() or ['']:
            sys.stdout.write('# ' + line + '\n')
    sys.stdout.flush()


class Skip(Exception):
    """Raise to report a test as skipped (prints `skip N - name: reason`)."""


class TestTimeout(Exception):
    pass


class _Interrupted(BaseException):
    def __init__(self, sig):
        super().__init__('interrupted by signal %d' % sig)
        self.sig = sig


# ---------------------------------------------------------------- waiting

def wait_until(pred, timeout=10, what='condition', interval=0.02):
    """Poll pred() every `interval` seconds until it returns something truthy
    (returned), or raise AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError('timed out after %gs waiting for %s' % (scaled(timeout), what))
        time.sleep(interval)


# ---------------------------------------------------------------- /proc helpers

def _proc_stat(pid):
    """(state, ppid, pgrp) of a pid from /proc, or None if it is gone."""
    try:
        with open('/proc/%d/stat' % pid, 'rb') as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = data[data.rindex(b')') + 2:].split()
    return fields[0].decode(), int(fields[1]), int(fields[2])


def _all_stats():
    out = {}
    for name in os.listdir('/proc'):
        if name.isdigit():
            st = _proc_stat(int(name))
            if st:
                out[int(name)] = st
    return out


def pid_alive(pid):
    """True while pid exists and is not a zombie."""
    st = _proc_stat(pid)
    return st is not None and st[0] not in ('Z', 'X')



def instance_procs(token):
    """Live pids whose command line holds token (an instance's data dir)."""
    out = []
    tok = token.encode()
    for name in os.listdir('/proc'):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open('/proc/%s/cmdline' % name, 'rb') as f:
                args = f.read().split(b'\0')
        except OSError:
            continue
        if tok in args and pid_alive(int(name)):
            out.append(int(name))
    return sorted(out)


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

def proc_children(pid, include_zombies=False):
    """Sorted pids whose parent is pid."""
    return sorted(p for p, (state, ppid, _) in _all_stats().items()
                  if ppid == pid and (include_zombies or state not in ('Z', 'X')))


def proc_descendants(pid, include_zombies=False):
    """Sorted pids below pid in the process tree."""
    stats = _all_stats()
    kids = {}
    for p, (state, ppid, _) in stats.items():
        if include_zombies or state not in ('Z', 'X'):
            kids.setdefault(ppid, []).append(p)
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return sorted(out)


def group_members(pgid):
    """Live (non-zombie) pids of process group pgid."""
    return sorted(p for p, (state, _, pg) in _all_stats().items()
                  if pg == pgid and state not in ('Z', 'X'))


# ---------------------------------------------------------------- watchdog

_WATCHDOG = r'''
import os, shutil, signal, sys, time
procs, dirs = {}, set()
for line in sys.stdin:
    parts = line.split()
    if len(parts) == 3 and parts[0] == '+':
        procs[int(parts[1])] = parts[2] == 'g'
    elif len(parts) >= 2 and parts[0] == '-':
        procs.pop(int(parts[1]), None)
    elif line.startswith('d+ '):
        dirs.add(line[3:].rstrip('\n'))
    elif line.startswith('d- '):
        dirs.discard(line[3:].rstrip('\n'))
def alive(pid, group):
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            data = open('/proc/%s/stat' % name, 'rb').read()
        except OSError:
            continue
        f = data[data.rindex(b')') + 2:].split()
        if f[0] in (b'Z', b'X'):
            continue
        if (group and int(f[2]) == pid) or int(name) == pid:
            return True
    return False
for sig in (signal.SIGTERM, signal.SIGKILL):
    for pid, group in procs.items():
        try:
            (os.killpg if group else os.kill)(pid, sig)
        except OSError:
            pass
    end = time.time() + 3
    while time.time() < end and any(alive(p, g) for p, g in procs.items()):
        time.sleep(0.05)
for d in dirs:
    shutil.rmtree(d, ignore_errors=True)
'''

_watchdog = None
_watchdog_lock = threading.Lock()


def _watchdog_send(line):
    global _watchdog
    with _watchdog_lock:
        try:
            if _watchdog is None:
                _watchdog = subprocess.Popen([sys.executable, '-c', _WATCHDOG], stdin=subprocess.PIPE,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                             start_new_session=True)
            _watchdog.stdin.write(line.encode() + b'\n')
            _watchdog.stdin.flush()
        except OSError:
            pass


def _watchdog_close():
    global _watchdog
    with _watchdog_lock:
        if _watchdog is not None:
            try:
                _watchdog.stdin.close()
                _watchdog.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
            _watchdog = None


# ---------------------------------------------------------------- resources

_resources = []          # LIFO stack of objects with _teardown() (and maybe _diagnostics())
_resources_lock = threading.Lock()


def _register(obj):
    with _resources_lock:
        _resources.append(obj)
    return obj


def _teardown_from(mark):
    """Tear down (LIFO) every resource registered after index `mark`.
    SIGTERM/SIGINT arriving meanwhile are held until the end."""
    global _tearing_down, _pending_signal
    errors = []
    outer = _tearing_down
    _tearing_down = True
    try:
        while True:
            with _resources_lock:
                if len(_resources) <= mark:
                    break
                obj = _resources.pop()
            try:
                obj._teardown()
            except BaseException as e:      # keep going: everything must go
                errors.append('%s: %r' % (type(obj).__name__, e))
    finally:
        _tearing_down = outer
    if not outer and _pending_signal is not None:
        sig, _pending_signal = _pending_signal, None
        raise _Interrupted(sig)
    return errors


def terminate_pid(popen=None, pid=None, group=False, term_timeout=5.0, sig=signal.SIGTERM):
    """Stop a process by pid: `sig`, wait up to term_timeout, then SIGKILL.
    With group=True the signals go to its process group (pid == pgid), and
    members that outlive the leader are waited for and killed too.  `popen`
    (a subprocess.Popen we started) is reaped; a bare pid is polled in /proc."""
    if popen is not None:
        pid = popen.pid

    def send(s):
        try:
            if group:
                os.killpg(pid, s)
            else:
                os.kill(pid, s)
        except (ProcessLookupError, PermissionError):
            pass

    def leader_gone():
        if popen is not None:
            return popen.poll() is not None
        return not pid_alive(pid)

    def all_gone():
        return leader_gone() and (not group or not group_members(pid))

    if all_gone():
        return
    send(sig)
    deadline = time.monotonic() + scaled(term_timeout)
    while not all_gone() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not all_gone():
        send(signal.SIGKILL)
        if group:
            # members may have left the group leader's control; kill them by pid too
            for p in group_members(pid):
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
        deadline = time.monotonic() + 10
        while not all_gone() and time.monotonic() < deadline:
            time.sleep(0.02)
    if popen is not None:
        try:
            popen.wait(5)
        except subprocess.TimeoutExpired:
            pass


class _ProcRes:
    """A registered process: a Popen (our child) or a bare pid (detached)."""

    def __init__(self, popen=None, pid=None, group=False, name='', term_timeout=5.0):
        self.popen, self.pid, self.group, self.name = popen, (popen.pid if popen else pid), group, name
        self.term_timeout = term_timeout
        _watchdog_send('+ %d %s' % (self.pid, 'g' if group else 'p'))

    def _teardown(self):
        try:
            terminate_pid(self.popen, self.pid if self.popen is None else None, self.group, self.term_timeout)
        finally:
            _watchdog_send('- %d' % self.pid)


def register_process(popen=None, pid=None, group=False, name='', term_timeout=5.0):
    """Have the harness tear a process down after the current test (LIFO).
    group=True: it leads its own process group (start_new_session)."""
    return _register(_ProcRes(popen, pid, group, name, term_timeout))


def _spawn(argv, group=True, name='', term_timeout=5.0, **kw):
    kw.setdefault('stdin', subprocess.DEVNULL)
    popen = subprocess.Popen(argv, start_new_session=group, **kw)
    res = register_process(popen, group=group, name=name, term_timeout=term_timeout)
    return popen, res


# ---------------------------------------------------------------- test registry / TAP

_tests = []
_current_tmp = None


def test(arg=None, *, timeout=None, name=None):
    """Register a test function.  Forms: @test, @test('name'), @test(timeout=60).
    The function gets the fresh temp dir as its argument if it takes one."""
    def deco(fn, _name=None):
        tname = _name or name or fn.__name__
        if tname.startswith('test_'):
            tname = tname[5:]
        _tests.append((tname, fn, timeout))
        return fn
    if callable(arg):
        return deco(arg)
    return lambda fn: deco(fn, arg)


_tearing_down = False
_pending_signal = None


def _on_signal(sig, frame):
    global _pending_signal
    if _tearing_down:
        _pending_signal = sig       # re-raised once teardown is complete
        return
    raise _Interrupted(sig)


def _on_alarm(sig, frame):
    raise TestTimeout('test exceeded its deadline')


def _tail(path, lines=25):
    try:
        with open(path, 'rb') as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 65536))
            data = f.read().decode('utf-8', 'replace')
    except OSError:
        return ''
    return '\n'.join(data.splitlines()[-lines:])


def _run_one(n, name, fn, timeout):
    global _current_tmp
    tmp = tempfile.mkdtemp(prefix='e2e-%s-' % ''.join(c if c.isalnum() else '_' for c in name)[:40])
    _current_tmp = tmp
    keep = os.environ.get('KEEP_TMP') == '1'
    if not keep:
        _watchdog_send('d+ ' + tmp)     # removed even if this interpreter is SIGKILLed
    with _resources_lock:
        mark = len(_resources)
    status, detail, interrupted = 'ok', '', None
    limit = scaled(timeout or float(os.environ.get('E2E_TEST_TIMEOUT', '120')))
    diag = []
    try:
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            if len(inspect.signature(fn).parameters) >= 1:
                fn(tmp)
            else:
                fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except Skip as e:
        status, detail = 'skip', str(e)
    except _Interrupted as e:
        status, detail, interrupted = 'not ok', traceback.format_exc(), e
    except BaseException:
        status, detail = 'not ok', traceback.format_exc()
    finally:
        if status == 'not ok':
            with _resources_lock:
                objs = list(_resources[mark:])
        else:
            objs = []
        try:
            errors = _teardown_from(mark)
        except _Interrupted as e:
            errors, interrupted = [], e
            if status != 'not ok':
                status, detail = 'not ok', 'interrupted by signal %d during teardown' % e.sig
        for obj in objs:
            d = getattr(obj, '_diagnostics', None)
            if d:
                try:
                    diag.extend(d())
                except Exception as e:
                    diag.append('(diagnostics failed: %r)' % e)
        _current_tmp = None
    if errors and status == 'ok':
        status, detail = 'not ok', 'teardown failed: ' + '; '.join(errors)
    if status == 'ok':
        print('ok %d - %s' % (n, name))
    elif status == 'skip':
        print('skip %d - %s: %s' % (n, name, detail))
    else:
        print('not ok %d - %s' % (n, name))
        note(detail.rstrip())
        for line in diag:
            note(line)
    if keep:
        note('kept temp dir: %s' % tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
        _watchdog_send('d- ' + tmp)
    sys.stdout.flush()
    if interrupted is not None:
        raise interrupted
    return status


def main(argv=None):
    """Run the registered tests in order (only those named, or matching a glob,
    on argv when given); print TAP; exit 1 if any failed."""
    argv = sys.argv[1:] if argv is None else argv
    selected = [t for t in _tests if not argv or any(a == t[0] or fnmatch.fnmatch(t[0], a) for a in argv)]
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGALRM, _on_alarm)
    print('1..%d' % len(selected))
    sys.stdout.flush()
    failed = 0
    try:
        for n, (name, fn, timeout) in enumerate(selected, 1):
            if _run_one(n, name, fn, timeout) == 'not ok':
                failed += 1
        _teardown_from(0)
    except _Interrupted as e:
        try:
            _teardown_from(0)
        except _Interrupted:
            pass
        _watchdog_close()
        sys.stdout.flush()
        os._exit(128 + e.sig)
    _watchdog_close()
    sys.exit(1 if failed else 0)


@atexit.register
def _at_exit():
    try:
        _teardown_from(0)
    except _Interrupted:
        pass
    _watchdog_close()


def _current_dir(tmpdir):
    d = tmpdir or _current_tmp
    if d is None:
        d = tempfile.mkdtemp(prefix='e2e-')
    return d


def _unique_path(directory, stem, ext=''):
    path = os.path.join(directory, stem + ext)
    n = 2
    while os.path.exists(path):
        path = os.path.join(directory, '%s%d%s' % (stem, n, ext))
        n += 1
    return path


# ---------------------------------------------------------------- LDIF

class LdapError(AssertionError):
    """An ldap-utils command failed.  .rc is its exit status (the LDAP result
    code for ldapsearch and friends), .stderr its error output."""

    def __init__(self, argv, rc, stderr, stdout=b''):
        self.argv, self.rc, self.stderr, self.stdout = argv, rc, stderr, stdout
        super().__init__('%s exited %d: %s' % (' '.join(shlex.quote(a) for a in _redact(argv)), rc,
                                               stderr.decode('utf-8', 'replace').strip()))


class SlapdError(AssertionError):
    pass


def _redact(argv):
    out, hide = [], False
    for a in argv:
        out.append('***' if hide else a)
        hide = a == '-w'
    return out


def _b(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, int):
        return str(v).encode()
    return str(v).encode('utf-8')


def _ldif_safe(v):
    if not v:
        return True
    if v[0] in b' :<' or v[-1:] == b' ':
        return False
    return all(0 < c < 0x80 and c not in (10, 13) for c in v)


def _ldif_line(attr, value):
    v = _b(value)
    if _ldif_safe(v):
        return b'%s: %s' % (attr.encode(), v)
    return b'%s:: %s' % (attr.encode(), base64.b64encode(v))


def _values(v):
    if isinstance(v, (list, tuple)):
        return list(v)
    return [v]


def ldif_entry(dn, attrs):
    """LDIF (bytes) for one entry; attrs maps name -> value or list of values
    (str, bytes or int); unsafe values are base64-encoded."""
    lines = [_ldif_line('dn', dn)]
    for name, vals in attrs.items():
        if vals is None:
            continue
        lines.extend(_ldif_line(name, v) for v in _values(vals))
    return b'\n'.join(lines) + b'\n\n'


def ldif_modify(dn, changes):
    """LDIF (bytes) for one modify: changes is a list of (op, attr, values)
    with op 'add', 'replace' or 'delete' (values may be empty / None)."""
    lines = [_ldif_line('dn', dn), b'changetype: modify']
    for op, attr, vals in changes:
        lines.append(b'%s: %s' % (op.encode(), attr.encode()))
        lines.extend(_ldif_line(attr, v) for v in ([] if vals is None else _values(vals)))
        lines.append(b'-')
    return b'\n'.join(lines) + b'\n\n'


def parse_ldif(data):
    """Parse ldapsearch -LLL output: {dn: {attr: [bytes, ...]}} with attribute
    names and value order as printed.  Handles folding, `attr:: base64`,
    `dn:: base64` and `attr:< file://` values."""
    if isinstance(data, str):
        data = data.encode('utf-8')
    # unfold: a line starting with one space continues the previous one
    lines = []
    for raw in data.split(b'\n'):
        raw = raw[:-1] if raw.endswith(b'\r') else raw
        if raw.startswith(b' ') and lines and lines[-1] is not None:
            lines[-1] += raw[1:]
        elif raw == b'':
            lines.append(None)
        else:
            lines.append(raw)
    out, dn, attrs = {}, None, None
    for line in lines + [None]:
        if line is None:
            if dn is not None:
                out[dn] = attrs
            dn, attrs = None, None
            continue
        if line.startswith(b'#'):
            continue
        name, sep, rest = line.partition(b':')
        if not sep:
            raise ValueError('bad LDIF line: %r' % line[:200])
        if rest.startswith(b':'):
            value = base64.b64decode(rest[1:].strip())
        elif rest.startswith(b'<'):
            url = rest[1:].strip().decode()
            with urllib.request.urlopen(url) as f:     # file:// in practice
                value = f.read()
        else:
            value = rest[1:] if rest.startswith(b' ') else rest
        key = name.decode('utf-8')
        if dn is None:
            if key.lower() == 'dn':
                dn, attrs = value.decode('utf-8'), {}
            elif key.lower() == 'version':
                continue
            else:
                raise ValueError('LDIF record without dn: %r' % line[:200])
        else:
            attrs.setdefault(key, []).append(value)
    return out


# ---------------------------------------------------------------- ports

def _ephemeral_low():
    try:
        with open('/proc/sys/net/ipv4/ip_local_port_range') as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class TestCA:
    """A throwaway certificate authority (openssl, EC P-256) in `directory`:
    .cert is its certificate; issue(ip) returns (cert, key) paths of a server
    certificate for that IP address."""

    def __init__(self, directory):
        os.makedirs(directory, exist_ok=True)
        self.dir = directory
        self.cert, self.key = os.path.join(directory, 'ca.pem'), os.path.join(directory, 'ca.key')
        self._openssl(['req', '-x509', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
                       '-nodes', '-keyout', self.key, '-out', self.cert, '-days', '2',
                       '-subj', '/CN=ldapfeed test CA', '-addext', 'basicConstraints=critical,CA:TRUE',
                       '-addext', 'keyUsage=critical,keyCertSign,cRLSign'])

    def _openssl(self, args):
        r = subprocess.run(['openssl'] + args, cwd=self.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise AssertionError('openssl %s: %s' % (args[0], r.stdout.decode('utf-8', 'replace')))

    def issue(self, ip):
        cert, key, csr = (os.path.join(self.dir, ip + ext) for ext in ('.pem', '.key', '.csr'))
        ext = os.path.join(self.dir, ip + '.ext')
        with open(ext, 'w') as f:
            f.write('subjectAltName=IP:%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' % ip)
        self._openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
                       '-keyout', key, '-out', csr, '-subj', '/CN=%s' % ip])
        self._openssl(['x509', '-req', '-in', csr, '-CA', self.cert, '-CAkey', self.key, '-CAcreateserial',
                       '-out', cert, '-days', '2', '-extfile', ext])
        return cert, key


class Acceptor:
    """A listening socket served by a thread, for tests that play a peer by
    hand: every accepted connection is kept in .conns and handed to
    on_accept(conn) on the accept thread; teardown closes them, the socket
    and its unix path.  .address is what the socket is bound to."""

    def __init__(self, family, address, on_accept=None):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen(16)
        self.address = self.sock.getsockname()
        self.path = address if family == socket.AF_UNIX else None
        self.conns = []
        self._on_accept = on_accept
        threading.Thread(target=self._loop, daemon=True).start()
        _register(self)

    def _loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            if self._on_accept:
                self._on_accept(c)

    def _teardown(self):
        for s in [self.sock] + self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)    # wakes a thread blocked in accept()
            except OSError:
                pass
            s.close()
        if self.path:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def free_port(host='127.0.0.1'):
    """A port that is free now, chosen below the ephemeral range when possible
    so that client sockets will not grab it between a stop and a restart."""
    low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(10000, low) if low > 11000 else rng.randrange(1025, 65535)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    s = socket.socket()
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------- slapd

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
    """

    def __init__(self, tmpdir=None, variant='V0', suffix='dc=example,dc=com', ldapi=False,
                 extra_db_conf='', size_limit=None, reader=True, sessionlog=100,
                 checkpoint='100 10', acl_prefix='', extra_global_conf='', reader_limits=True,
                 debug='none', name='slapd', port=None, populate=True, start=True, nosync=True,
                 tls=False):
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
        self.rootpw = 'secret'
        self.reader_dn = 'cn=reader,' + suffix
        self.reader_pw = 'readerpw'
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
                         nosync=nosync)
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
        extra_db_conf=, extra_global_conf=, size_limit=, reader_limits=,
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
        L = ['# written by tests/e2e/harness.py: variant %s' % variant]
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
        db_common = ['maxsize 4294967296']
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

    # -- lifecycle
    def start(self, timeout=15):
        """Start slapd (again: same port, same DB) and wait until it answers."""
        if self.running:
            raise SlapdError('slapd already running (pid %d)' % self.pid)
        os.makedirs(self.db_dir, exist_ok=True)
        if self.variant == 'V2':
            os.makedirs(self.log_db_dir, exist_ok=True)
        with open(self.conf_path, 'w') as f:
            f.write(self.config_text())
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
                                                'cn': 'reader', 'userPassword': self.reader_pw})
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


def _register_untrack(res):
    """Drop a _ProcRes from the LIFO stack (its owner tears it down) but keep
    the watchdog entry."""
    with _resources_lock:
        for i in range(len(_resources) - 1, -1, -1):
            if _resources[i] is res:
                del _resources[i]
                break


def _ldap_env():
    env = dict(os.environ)
    env['LDAPNOINIT'] = '1'     # no ldap.conf / ~/.ldaprc surprises
    return env


# ---------------------------------------------------------------- consumer

class _Undecodable:
    def __init__(self, data, error):
        self.data, self.error = data, error

    def __repr__(self):
        return '<undecodable %d bytes: %r>' % (len(self.data), self.error)


class Consumer:
    """A multiprocessing.connection Listener that records every message.

    family: 'unix' (a path in tmpdir), 'abstract' ('\\0name'), 'inet'
    (127.0.0.1, any port) or 'inet6' (::1).  `address` is ldapfeed's -o form;
    `listen_address` what was passed to the listener.  listener_factory(address,
    family=..., authkey=...) replaces multiprocessing.connection.Listener.
    listen: reuse a given listener address (for a consumer that comes back)."""

    _FAMILIES = {'unix': 'AF_UNIX', 'abstract': 'AF_UNIX', 'inet': 'AF_INET', 'inet6': 'AF_INET6'}

    def __init__(self, tmpdir=None, family='unix', fmt='pickle', key=None, listener_factory=None,
                 listen=None, keep_raw=False, name='consumer'):
        if family not in self._FAMILIES:
            raise ValueError('family must be one of %s' % ', '.join(self._FAMILIES))
        if fmt not in ('pickle', 'json'):
            raise ValueError('fmt must be pickle or json')
        tmpdir = _current_dir(tmpdir)
        self.family, self.fmt, self.keep_raw = family, fmt, keep_raw
        self.key = secrets.token_bytes(32) if key is None else key
        self.keyfile = _unique_path(tmpdir, name, '.key')
        fd = os.open(self.keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, 'wb') as f:
            f.write(self.key)
        if listen is None:
            if family == 'unix':
                listen = _unique_path(tmpdir, name, '.sock')
                if len(listen.encode()) > 100:
                    raise ValueError('socket path too long for sun_path: %s' % listen)
            elif family == 'abstract':
                listen = '\0ldapfeed-test-%d-%s' % (os.getpid(), secrets.token_hex(6))
            elif family == 'inet':
                listen = ('127.0.0.1', 0)
            else:
                listen = ('::1', 0)
        factory = listener_factory or Listener
        self._listener = factory(listen, family=self._FAMILIES[family], authkey=self.key)
        addr = getattr(self._listener, 'address', None) or listen
        if isinstance(addr, bytes):             # abstract names come back as bytes
            addr = addr.decode('utf-8', 'surrogateescape')
        self.listen_address = addr
        if family == 'unix':
            self.address = addr
        elif family == 'abstract':
            self.address = '@' + addr[1:]
        elif family == 'inet':
            self.address = '%s:%d' % (addr[0], addr[1])
        else:
            self.address = '[%s]:%d' % (addr[0], addr[1])
        self._cond = threading.Condition()
        self._records = []              # (connection index, message), arrival order
        self._raw = []
        self._conns = []                # per connection: dict(conn=, closed=None|reason, thread=)
        self.auth_failures = 0
        self.accept_errors = []
        self.errors = []                # (connection index, repr) for undecodable payloads
        self._closing = False
        self._resume = threading.Event()
        self._resume.set()
        self._accept_thread = threading.Thread(target=self._accept_loop, name='consumer-accept', daemon=True)
        self._accept_thread.start()
        _register(self)

    # -- threads
    def _accept_loop(self):
        while not self._closing:
            try:
                conn = self._listener.accept()
            except AuthenticationError:
                if self._closing:
                    break
                with self._cond:
                    self.auth_failures += 1
                    self._cond.notify_all()
                continue
            except (EOFError, OSError) as e:
                if self._closing:
                    break
                with self._cond:
                    self.accept_errors.append(repr(e))
                    self._cond.notify_all()
                if isinstance(e, OSError) and e.errno in (errno.EBADF, errno.EINVAL):
                    break
                time.sleep(0.01)
                continue
            if self._closing:
                conn.close()
                break
            with self._cond:
                idx = len(self._conns)
                info = {'conn': conn, 'closed': None}
                self._conns.append(info)
                self._cond.notify_all()
            t = threading.Thread(target=self._read_loop, args=(idx, conn), name='consumer-conn-%d' % idx,
                                 daemon=True)
            info['thread'] = t
            t.start()

    def _decode(self, data):
        if self.fmt == 'json':
            return json.loads(data)
        return pickle.loads(data)

    def _read_loop(self, idx, conn):
        reason = 'eof'
        try:
            while True:
                self._resume.wait()
                data = conn.recv_bytes()
                try:
                    msg = self._decode(data)
                except Exception as e:
                    with self._cond:
                        self.errors.append((idx, repr(e)))
                        if self.keep_raw:
                            self._raw.append((idx, data))
                        self._cond.notify_all()
                    continue
                with self._cond:
                    self._records.append((idx, msg))
                    if self.keep_raw:
                        self._raw.append((idx, data))
                    self._cond.notify_all()
        except EOFError:
            reason = 'eof'
        except Exception as e:
            reason = repr(e)
        finally:
            with self._cond:
                self._conns[idx]['closed'] = reason
                self._cond.notify_all()
            try:
                conn.close()
            except OSError:
                pass

    # -- inspection
    def records(self):
        """[(connection index, message)] in arrival order."""
        with self._cond:
            return list(self._records)

    def raw(self):
        """[(connection index, payload bytes)] (keep_raw=True only)."""
        with self._cond:
            return list(self._raw)

    def messages(self, type=None):
        """Messages in arrival order; type: a type name or a tuple of them."""
        with self._cond:
            msgs = [m for _, m in self._records]
        if type is None:
            return msgs
        types = (type,) if isinstance(type, str) else tuple(type)
        return [m for m in msgs if isinstance(m, dict) and m.get('type') in types]

    def events(self):
        """Every message but hellos and refresh_done."""
        return [m for m in self.messages() if not (isinstance(m, dict) and m.get('type') in ('hello', 'refresh_done'))]

    def hellos(self):
        return self.messages('hello')

    def per_connection(self):
        """{connection index: [messages]} (every accepted connection appears)."""
        with self._cond:
            out = {i: [] for i in range(len(self._conns))}
            for i, m in self._records:
                out[i].append(m)
        return out

    @property
    def connections(self):
        """Number of connections accepted (authenticated) so far."""
        with self._cond:
            return len(self._conns)

    @property
    def closed(self):
        """{connection index: None while open, else 'eof' or the error}."""
        with self._cond:
            return {i: c['closed'] for i, c in enumerate(self._conns)}

    def open_connections(self):
        return [i for i, r in self.closed.items() if r is None]

    def connection_pids(self):
        """{connection index: peer pid} of the open connections (SO_PEERCRED:
        unix sockets only); a connection that closes meanwhile is left out."""
        with self._cond:
            conns = [(i, c['conn']) for i, c in enumerate(self._conns) if c['closed'] is None]
        out = {}
        for i, c in conns:
            try:
                s = socket.socket(fileno=os.dup(c.fileno()))
            except OSError:
                continue
            try:
                cred = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize('3i'))
            except OSError:
                continue
            finally:
                s.close()
            out[i] = struct.unpack('3i', cred)[0]
        return out

    def worker_pids(self):
        """{worker index: pid} of the workers connected (the index from each
        connection's hello)."""
        per = self.per_connection()
        out = {}
        for i, pid in self.connection_pids().items():
            msgs = per.get(i)
            if msgs and isinstance(msgs[0], dict) and msgs[0].get('type') == 'hello':
                out[msgs[0]['worker']] = pid
        return out

    def runs(self):
        """Connections grouped into daemon runs, from their hellos: a list of
        lists of connection indices (see Model)."""
        return [r['conns'] for r in _group_runs(self.records())]

    # -- waiting
    def wait_for(self, pred, timeout=10, what='consumer condition'):
        """Wait until pred(messages) is truthy; returns its value."""
        return wait_until(lambda: pred(self.messages()), timeout, what)

    def wait_messages(self, n, type=None, timeout=10):
        return wait_until(lambda: len(self.messages(type)) >= n and self.messages(type), timeout,
                          '%d %s messages (have %d)' % (n, type or 'any', len(self.messages(type))))

    def wait_hellos(self, n, timeout=10):
        wait_until(lambda: len(self.hellos()) >= n, timeout, '%d hello messages' % n)
        return self.hellos()

    def wait_refresh_done(self, n=None, timeout=30):
        """n: total refresh_done messages to wait for.  n=None: wait until
        the latest run (every worker connected) has a refresh_done on each of
        its connections."""
        if n is not None:
            wait_until(lambda: len(self.messages('refresh_done')) >= n, timeout,
                       '%d refresh_done messages' % n)
            return self.messages('refresh_done')

        def done():
            runs = _group_runs(self.records())
            if not runs:
                return False
            run = runs[-1]
            if len(run['conns']) < run['workers']:
                return False
            per = self.per_connection()
            return all(any(isinstance(m, dict) and m.get('type') == 'refresh_done' for m in per[c])
                       for c in run['conns'])
        wait_until(done, timeout, 'refresh_done from every worker of the latest run')
        return self.messages('refresh_done')

    def wait_closed(self, n=None, timeout=10):
        """Wait until n connections (default: all accepted, at least one) have closed."""
        def ok():
            c = self.closed
            if n is None:
                return c and all(r is not None for r in c.values())
            return sum(r is not None for r in c.values()) >= n
        return wait_until(ok, timeout, '%s consumer connections to close' % ('all' if n is None else n))

    def wait_auth_failures(self, n=1, timeout=10):
        return wait_until(lambda: self.auth_failures >= n, timeout, '%d failed authentications' % n)

    # -- control
    def pause(self):
        """Stop reading (after the message in progress): lets the daemon's
        queues and socket buffers fill up."""
        self._resume.clear()

    def resume(self):
        self._resume.set()

    @staticmethod
    def _shutdown_conn(conn):
        try:
            s = socket.socket(fileno=os.dup(conn.fileno()))
        except (OSError, ValueError, AttributeError):
            try:
                conn.close()
            except OSError:
                pass
            return
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            s.close()

    def close_connection(self, idx):
        """Shut one connection down (the worker on it sees its consumer vanish)."""
        with self._cond:
            conn = self._conns[idx]['conn']
        self._shutdown_conn(conn)

    def _wake_accept(self):
        fam = {'unix': socket.AF_UNIX, 'abstract': socket.AF_UNIX, 'inet': socket.AF_INET,
               'inet6': socket.AF_INET6}[self.family]
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(1)
        try:
            addr = self.listen_address
            s.connect(addr[:2] if fam == socket.AF_INET else addr)
        except OSError:
            pass
        finally:
            s.close()

    def close(self):
        """Close the listener and every connection (the daemon sees its consumer vanish)."""
        if self._closing:
            return
        self._closing = True
        self._resume.set()
        if self._accept_thread.is_alive():
            self._wake_accept()
            self._accept_thread.join(2)
        if self._accept_thread.is_alive():
            # Still inside accept() (a handshake with a silent peer): shut the
            # listening socket so it returns, before its fd may be reused.
            sock = getattr(getattr(self._listener, '_listener', None), '_socket', None)
            try:
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._accept_thread.join(10)
        try:
            self._listener.close()
        except OSError:
            pass
        with self._cond:
            conns = [(c['conn'], c.get('thread')) for c in self._conns]
        for conn, _ in conns:
            self._shutdown_conn(conn)
        for _, t in conns:
            if t is not None:
                t.join(2)

    def _teardown(self):
        self.close()

    def _diagnostics(self):
        c = self.closed
        out = ['--- consumer %s (%s, %s): %d connections, %d messages, %d auth failures, closed=%r'
               % (self.address, self.family, self.fmt, len(c), len(self.messages()), self.auth_failures, c)]
        if self.errors:
            out.append('undecodable payloads: %r' % self.errors[:5])
        for i, m in self.records()[-8:]:
            out.append('  [%d] %s' % (i, _short(m)))
        return out


def _short(obj, limit=200):
    s = repr(obj)
    return s if len(s) <= limit else s[:limit] + '...'


# ---------------------------------------------------------------- model

def _norm_value(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, str):
        return v.encode('utf-8')
    if isinstance(v, dict) and set(v) == {'base64'}:
        return base64.b64decode(v['base64'])
    raise TypeError('bad attribute value %r' % (v,))


def normalize_attrs(attrs, fold_names=False):
    """ATTRS from an event (pickle bytes or JSON str/{"base64"}) or from
    Slapd.search -> {name: sorted [bytes]}."""
    out = {}
    for name, vals in (attrs or {}).items():
        if not isinstance(vals, (list, tuple)):
            raise TypeError('attribute %r: values must be a list, got %r' % (name, vals))
        key = name.lower() if fold_names else name
        out.setdefault(key, []).extend(_norm_value(v) for v in vals)
    return {k: sorted(v) for k, v in out.items()}


def _group_runs(records):
    """Group connections into daemon runs.  A run is a set of connections whose
    hellos carry distinct worker numbers for the same `workers` count;
    connections are taken in accept order.  Returns [{'conns', 'workers',
    'reload', 'hellos'}]; connections without a hello are left out."""
    first = {}
    for idx, m in records:
        if idx not in first:
            first[idx] = m
    runs, cur = [], None
    for idx in sorted(first):
        m = first[idx]
        if not (isinstance(m, dict) and m.get('type') == 'hello'):
            continue
        w, ws = m.get('worker'), m.get('workers')
        if cur is None or len(cur['conns']) >= cur['workers'] or ws != cur['workers'] or \
                w in cur['seen']:
            cur = {'conns': [], 'workers': ws if isinstance(ws, int) and ws > 0 else 1, 'reload': False,
                   'hellos': [], 'seen': set()}
            runs.append(cur)
        cur['conns'].append(idx)
        cur['seen'].add(w)
        cur['hellos'].append(m)
        cur['reload'] = cur['reload'] or bool(m.get('reload'))
    return runs


class Model:
    """The consumer's copy of the directory, rebuilt from events as
    doc/events.md, "What a consumer does", describes.

    Entries are keyed by uuid.  apply(msg) takes one message; apply_records()
    takes Consumer.records() (connection index, message), groups connections
    into runs by their hellos and applies each run's events in seq order.  A
    run whose hello says reload starts a snapshot; when refresh_done has come
    from every worker, entries not received in the snapshot are dropped.
    `anomalies` lists what a correct feed never produces (modify/rename/delete
    of an unknown uuid, stale old_dn, non-increasing seq...)."""

    def __init__(self):
        self.entries = {}           # uuid -> {'dn': str, 'attrs': {name: [bytes]}}
        self.anomalies = []
        self.swept = []             # (uuid, dn) dropped at the end of a reload snapshot
        self.last_seq = None
        self.applied = 0
        self._snap = None

    @classmethod
    def from_consumer(cls, consumer):
        m = cls()
        m.apply_records(consumer.records())
        return m

    def _anomaly(self, text, msg):
        self.anomalies.append('%s: %s' % (text, _short(msg, 300)))

    def apply_records(self, records):
        runs = _group_runs(records)
        conn_run = {}
        for n, run in enumerate(runs):
            for c in run['conns']:
                conn_run[c] = n
        events = [[] for _ in runs]
        for order, (idx, m) in enumerate(records):
            if idx not in conn_run:
                self._anomaly('message on a connection without a hello', m)
                continue
            if isinstance(m, dict) and m.get('type') == 'hello':
                continue
            events[conn_run[idx]].append((order, idx, m))
        per_conn_seq = {}
        for run, evs in zip(runs, events):
            for h in run['hellos']:
                self.apply(h)
            for _, idx, m in evs:
                s = m.get('seq') if isinstance(m, dict) else None
                if isinstance(s, int):
                    if idx in per_conn_seq and s <= per_conn_seq[idx]:
                        self._anomaly('seq not increasing on connection %d' % idx, m)
                    per_conn_seq[idx] = s

            def key(e):
                m = e[2]
                s = m.get('seq') if isinstance(m, dict) else None
                rd = isinstance(m, dict) and m.get('type') == 'refresh_done'
                return (s if isinstance(s, int) else float('inf'), rd, e[0])
            for _, _, m in sorted(evs, key=key):
                self.apply(m, check_seq=False)
        return self

    def apply(self, msg, check_seq=True):
        if not isinstance(msg, dict):
            self._anomaly('not a dict', msg)
            return
        t = msg.get('type')
        if t == 'hello':
            if msg.get('reload'):
                w = msg.get('worker')
                if self._snap is None or w in self._snap['hellos']:
                    ws = msg.get('workers')
                    self._snap = {'workers': ws if isinstance(ws, int) and ws > 0 else 1,
                                  'hellos': set(), 'done': 0, 'seen': set()}
                self._snap['hellos'].add(w)
            return
        seq = msg.get('seq')
        if t in ('add', 'modify', 'rename', 'delete', 'refresh_done'):
            if not isinstance(seq, int):
                self._anomaly('missing seq', msg)
            elif check_seq and t != 'refresh_done' and self.last_seq is not None and seq <= self.last_seq:
                self._anomaly('seq not increasing', msg)
            if isinstance(seq, int) and t != 'refresh_done':
                self.last_seq = seq
        self.applied += 1
        try:
            getattr(self, '_on_' + t)(msg) if t in ('add', 'modify', 'rename', 'delete', 'refresh_done') \
                else self._anomaly('unknown type', msg)
        except (KeyError, TypeError, ValueError) as e:
            self._anomaly('malformed (%r)' % e, msg)

    def _seen(self, uuid):
        if self._snap is not None:
            self._snap['seen'].add(uuid)

    def _on_add(self, m):
        self.entries[m['uuid']] = {'dn': m['dn'], 'attrs': normalize_attrs(m['attrs'])}
        self._seen(m['uuid'])

    def _on_modify(self, m):
        u = m['uuid']
        new = normalize_attrs(m['new'])
        e = self.entries.get(u)
        if e is None:
            self._anomaly('modify of an unknown uuid', m)
        else:
            if normalize_attrs(m['old']) != e['attrs']:
                self._anomaly('modify: old differs from the model', m)
            changed = sorted(k for k in set(new) | set(e['attrs']) if new.get(k) != e['attrs'].get(k))
            if 'changed' in m and sorted(m['changed']) != changed:
                self._anomaly('modify: changed=%r, expected %r' % (m['changed'], changed), m)
        self.entries[u] = {'dn': m['dn'], 'attrs': new}
        self._seen(u)

    def _on_rename(self, m):
        u = m['uuid']
        e = self.entries.get(u)
        if e is None:
            self._anomaly('rename of an unknown uuid', m)
            return
        if e['dn'] != m['old_dn']:
            self._anomaly('rename: old_dn %r but the model has %r' % (m['old_dn'], e['dn']), m)
        e['dn'] = m['dn']
        self._seen(u)

    def _on_delete(self, m):
        u = m['uuid']
        if self.entries.pop(u, None) is None:
            self._anomaly('delete of an unknown uuid', m)
        if self._snap is not None:
            self._snap['seen'].discard(u)

    def _on_refresh_done(self, m):
        if self._snap is None:
            return
        self._snap['done'] += 1
        if self._snap['done'] >= self._snap['workers']:
            seen = self._snap['seen']
            for u in [u for u in self.entries if u not in seen]:
                self.swept.append((u, self.entries.pop(u)['dn']))
            self._snap = None

    def as_dict(self, fold_names=False):
        """{dn: {attr: sorted [bytes]}}."""
        out = {}
        for u, e in self.entries.items():
            if e['dn'] in out:
                self.anomalies.append('two uuids share the DN %r' % e['dn'])
            out[e['dn']] = {(k.lower() if fold_names else k): list(v) for k, v in e['attrs'].items()}
        return out

    def uuid_of(self, dn):
        for u, e in self.entries.items():
            if e['dn'] == dn:
                return u
        return None

    def dn_of(self, uuid):
        e = self.entries.get(uuid)
        return e and e['dn']


def _fmt_vals(vals, limit=3):
    shown = [_short(v, 80) for v in vals[:limit]]
    if len(vals) > limit:
        shown.append('... (%d values)' % len(vals))
    return '[' + ', '.join(shown) + ']'


def assert_model_equals_server(model, slapd, base=None, filt='(objectClass=*)', attrs=None, scope='sub',
                               bind='root', fold_dn=False, max_lines=60):
    """Compare the model (a Model or an as_dict()) with ldapsearch of the same
    base/scope/filter/attrs, bound as `bind` (use the daemon's identity,
    Daemon.bind: an anonymous daemon never sees userPassword); attribute
    names compare case-insensitively.  Raises AssertionError with a readable
    diff."""
    mine = model.as_dict() if isinstance(model, Model) else model
    theirs = slapd.search(base, scope, filt, attrs, bind=bind)

    def norm(d):
        out = {}
        for dn, a in d.items():
            out[dn.lower() if fold_dn else dn] = normalize_attrs(a, fold_names=True)
        return out
    a, b = norm(mine), norm(theirs)
    if a == b:
        return
    lines = ['model (%d entries) differs from the server (%d entries) for base=%s scope=%s filter=%s attrs=%s:'
             % (len(a), len(b), base or slapd.suffix, scope, filt, attrs)]
    for dn in sorted(set(a) - set(b)):
        lines.append('  only in model:  %s' % dn)
    for dn in sorted(set(b) - set(a)):
        lines.append('  only on server: %s' % dn)
    for dn in sorted(set(a) & set(b)):
        if a[dn] == b[dn]:
            continue
        lines.append('  differs: %s' % dn)
        for k in sorted(set(a[dn]) | set(b[dn])):
            va, vb = a[dn].get(k), b[dn].get(k)
            if va != vb:
                lines.append('    %s: model=%s server=%s' % (k, _fmt_vals(va) if va is not None else '-',
                                                             _fmt_vals(vb) if vb is not None else '-'))
    if len(lines) > max_lines:
        lines = lines[:max_lines] + ['  ... %d more lines' % (len(lines) - max_lines)]
    if isinstance(model, Model) and model.anomalies:
        lines.append('model anomalies: %s' % '; '.join(model.anomalies[:10]))
    raise AssertionError('\n'.join(lines))


# ---------------------------------------------------------------- LDAP URLs

_DN_SAFE = "=,+;@:!$&'()*"
_FILTER_SAFE = "=()&|!*<>~:,;@+$'"
_EXT_SAFE = "=;@:!$&'()*+"


def ldap_url(server, base, attrs=None, scope=None, filt=None, exts=None, ldapi=False):
    """An RFC 4516 URL.  server: a Slapd (its TCP URL, or ldapi_url with
    ldapi=True) or a 'ldap://host:port' prefix.  exts: list of 'type=value'
    strings (a leading '!' marks critical); commas and '?' in values are
    percent-encoded as the RFC requires."""
    if isinstance(server, Slapd):
        prefix = server.ldapi_url if ldapi else server.url
    else:
        prefix = server
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


# ---------------------------------------------------------------- the daemon

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
