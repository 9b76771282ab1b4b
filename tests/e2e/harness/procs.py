"""Processes: /proc helpers, the watchdog, and the teardown stack.

The harness's module-level state about processes lives here and only here:
the LIFO stack of registered resources (every process, Slapd, Consumer,
Daemon and Acceptor a test starts, torn down after it), the watchdog
process that kills what is left if this interpreter is SIGKILLed, and the
state that holds SIGTERM/SIGINT back while a teardown runs."""

import os
import signal
import subprocess
import sys
import threading
import time

from .core import scaled


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


def _register_untrack(res):
    """Drop a _ProcRes from the LIFO stack (its owner tears it down) but keep
    the watchdog entry."""
    with _resources_lock:
        for i in range(len(_resources) - 1, -1, -1):
            if _resources[i] is res:
                del _resources[i]
                break


# SIGTERM/SIGINT (main() installs _on_signal) interrupt a test, but not a
# teardown: one that arrives meanwhile is raised when the teardown is done.
class _Interrupted(BaseException):
    def __init__(self, sig):
        super().__init__('interrupted by signal %d' % sig)
        self.sig = sig


_tearing_down = False
_pending_signal = None


def _on_signal(sig, frame):
    global _pending_signal
    if _tearing_down:
        _pending_signal = sig       # re-raised once teardown is complete
        return
    raise _Interrupted(sig)


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
