"""Test registration (@test) and the TAP runner (main()): each test gets a
fresh temp dir and a deadline, and everything it registered is torn down
after it, on every path; failures print the diagnostics of what it left."""

import atexit
import fnmatch
import inspect
import os
import shutil
import signal
import sys
import tempfile
import traceback

from .core import Skip, TestTimeout, note, scaled
from .procs import (_Interrupted, _on_signal, _resources, _resources_lock, _teardown_from,
                    _watchdog_close, _watchdog_send)


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


def _on_alarm(sig, frame):
    raise TestTimeout('test exceeded its deadline')


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
