"""Where things are, deadlines, and the small helpers every other part of
the harness uses: TOP, SLAPD_BIN, E2E_TIME_SCALE (TIME_SCALE, scaled()),
wait_until(), note() for TAP comments, Skip, and text and path helpers."""

import os
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
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


def _unique_path(directory, stem, ext=''):
    path = os.path.join(directory, stem + ext)
    n = 2
    while os.path.exists(path):
        path = os.path.join(directory, '%s%d%s' % (stem, n, ext))
        n += 1
    return path


def _short(obj, limit=200):
    s = repr(obj)
    return s if len(s) <= limit else s[:limit] + '...'
