#!/usr/bin/env python3
"""Scenario: tests/tools/wire_client (wire.c's handshake and framing) talks
to a real multiprocessing.connection.Listener of this python3 (legacy
HMAC-MD5) on a unix path, an abstract name, 127.0.0.1 and ::1, and to
ModernListener (Python 3.12's {digest} handshake); the frames it sends must
arrive through conn.recv_bytes()/recv().  A wrong key on either side, in
either half of the handshake, must make wire_client exit 77 and the
listener raise AuthenticationError; a garbage challenge must make it exit 77
with a clear message; an address nobody listens on, 69.
"""
import os
import pickle
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import AuthenticationError, Listener

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(TOP, 'tests', 'e2e'))
from modern_listener import ModernListener  # noqa: E402

CLIENT = os.path.join(TOP, 'tests', 'tools', 'wire_client')
KEY = b'ldapfeed e2e key \x00\xff with binary bytes'
CASE_SECONDS = 20

n = 0
failed = 0


def report(cond, what, diag=()):
    global n, failed
    n += 1
    if cond:
        print('ok %d - %s' % (n, what))
    else:
        failed += 1
        print('not ok %d - %s' % (n, what))
        for line in diag:
            for part in str(line).splitlines():
                print('# ' + part)
    sys.stdout.flush()
    return cond


def skip(what):
    print('skip - %s' % what)
    sys.stdout.flush()


def listener_fd(listener):
    if isinstance(listener, ModernListener):
        return listener.fileno()
    return listener._listener._socket.fileno()


def serve(listener, nframes, result, deadline, use_recv):
    """The consumer: accept one client, then read nframes frames."""
    try:
        left = deadline - time.monotonic()
        r, _, _ = select.select([listener_fd(listener)], [], [], max(left, 0))
        if not r:
            result['error'] = 'no client connected before the deadline'
            return
        conn = listener.accept()
    except BaseException as e:      # AuthenticationError, EOFError, ...
        result['exc'] = e
        return
    frames = []
    try:
        for _ in range(nframes):
            if not conn.poll(max(deadline - time.monotonic(), 0)):
                result['error'] = 'frame %d not there before the deadline' % len(frames)
                break
            frames.append(conn.recv() if use_recv else conn.recv_bytes())
    except BaseException as e:
        result['exc'] = e
    finally:
        conn.close()
    result['frames'] = frames


def run_case(listener, address, keyfile, messages, use_recv=False):
    """Runs wire_client against listener; returns (rc, stderr, result)."""
    deadline = time.monotonic() + CASE_SECONDS
    result = {}
    t = threading.Thread(target=serve, daemon=True,
                         args=(listener, len(messages), result, deadline, use_recv))
    t.start()
    proc = subprocess.Popen([CLIENT, address, keyfile] + list(messages),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 0.1))
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, 9)
        out, err = proc.communicate()
        rc = 'timeout'
    t.join(max(deadline - time.monotonic(), 0.1))
    if t.is_alive():
        result['error'] = 'the listener thread is still running'
    listener.close()
    return rc, (out + err).decode(errors='replace'), result


def check_ok(what, listener, address, keyfile, messages=(b'one', b'two')):
    rc, err, res = run_case(listener, address, keyfile,
                            [m.decode() for m in messages])
    diag = ['wire_client exit status %r' % (rc,), err, 'listener: %r' % (res,)]
    report(rc == 0 and 'exc' not in res, what + ': authenticated', diag)
    report(res.get('frames') == list(messages),
           what + ': frames arrived through recv_bytes()', diag)


def check_refused(what, listener, address, keyfile, stderr_has, exc=AuthenticationError):
    rc, err, res = run_case(listener, address, keyfile, ['never'])
    diag = ['wire_client exit status %r' % (rc,), err, 'listener: %r' % (res,)]
    report(rc == 77, what + ': wire_client exits 77', diag)
    report(stderr_has in err, what + ': wire_client says %r' % stderr_has, diag)
    if exc is not None:
        report(isinstance(res.get('exc'), exc),
               what + ': the listener raises %s' % exc.__name__, diag)


def ipv6_loopback():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(('::1', 0))
        return True
    except OSError:
        return False


def main():
    if not os.access(CLIENT, os.X_OK):
        report(False, 'tests/tools/wire_client is built',
               ['run: make tests/tools/wire_client'])
        return 1
    tmp = tempfile.mkdtemp(prefix='ldapfeed-wire-')
    try:
        keyfile = os.path.join(tmp, 'key')
        badkey = os.path.join(tmp, 'badkey')
        with open(keyfile, 'wb') as f:
            f.write(KEY)
        with open(badkey, 'wb') as f:
            f.write(KEY + b'!')
        tag = '%d-%s' % (os.getpid(), os.urandom(3).hex())

        # (a) The real Listener of this python3 (3.11: legacy HMAC-MD5).
        path = os.path.join(tmp, 'sock')
        check_ok('%s Listener on a unix path' % sys.version.split()[0],
                 Listener(path, 'AF_UNIX', authkey=KEY), path, keyfile)
        check_ok('Listener on an abstract name',
                 Listener('\0ldapfeed-' + tag, 'AF_UNIX', authkey=KEY),
                 '@ldapfeed-' + tag, keyfile)
        lst = Listener(('127.0.0.1', 0), 'AF_INET', authkey=KEY)
        check_ok('Listener on 127.0.0.1', lst,
                 '127.0.0.1:%d' % lst.address[1], keyfile)
        if ipv6_loopback():
            lst = Listener(('::1', 0), 'AF_INET6', authkey=KEY)
            check_ok('Listener on [::1]', lst, '[::1]:%d' % lst.address[1], keyfile)
        else:
            skip('Listener on [::1]: no IPv6 loopback here')
            skip('Listener on [::1]: frames')

        # A pickle that conn.recv() loads (protocol 0 fits in argv).
        lst = Listener(path, 'AF_UNIX', authkey=KEY)
        obj = {'type': 'hello', 'seq': 1}
        rc, err, res = run_case(lst, path, keyfile,
                                [pickle.dumps(obj, protocol=0).decode()],
                                use_recv=True)
        report(rc == 0 and res.get('frames') == [obj],
               'a pickled frame arrives through conn.recv()',
               ['rc %r' % (rc,), err, repr(res)])

        # (b) ModernListener: the 3.12 handshake with several digests.
        for digest in ('sha256', 'sha384', 'md5', 'sha3_256', 'sha3_384'):
            check_ok('ModernListener {%s} on a unix path' % digest,
                     ModernListener(path, authkey=KEY, digest=digest),
                     path, keyfile)
        lst = ModernListener(('127.0.0.1', 0), authkey=KEY)
        check_ok('ModernListener {sha256} on 127.0.0.1', lst,
                 '127.0.0.1:%d' % lst.address[1], keyfile)

        # (c) Wrong keys.  The listener challenges first, so a mismatch is
        # found by it (#FAILURE#) unless it welcomes anything, in which case
        # our own challenge must catch the listener's wrong key.
        check_refused('client with the wrong key vs Listener',
                      Listener(path, 'AF_UNIX', authkey=KEY), path, badkey,
                      'consumer refused our key')
        check_refused('client with the wrong key vs ModernListener',
                      ModernListener(path, authkey=KEY), path, badkey,
                      'consumer refused our key')
        check_refused('ModernListener with the wrong key',
                      ModernListener(path, authkey=KEY, wrong_key=True),
                      path, keyfile, 'consumer refused our key')
        check_refused('ModernListener that welcomes anything, wrong key: '
                      'our challenge catches it',
                      ModernListener(path, authkey=KEY, wrong_key=True,
                                     welcome_any=True),
                      path, keyfile, 'consumer failed our challenge')

        # (d) Garbage challenges: refused, with a line saying why.
        check_refused('a {sha512} challenge',
                      ModernListener(path, authkey=KEY, garbage_challenge=True),
                      path, keyfile, 'has no supported {digest} prefix',
                      exc=EOFError)
        check_refused('a frame that is no challenge',
                      ModernListener(path, authkey=KEY,
                                     garbage_challenge=b'HELLO there, client'),
                      path, keyfile, 'sent no #CHALLENGE#', exc=EOFError)
        check_refused('a 19-byte challenge',
                      ModernListener(path, authkey=KEY,
                                     garbage_challenge=b'#CHALLENGE#' + b'x' * 19),
                      path, keyfile, 'challenge is too short', exc=EOFError)

        # Nobody listening: 69.
        p = subprocess.run([CLIENT, os.path.join(tmp, 'nobody'), keyfile],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=CASE_SECONDS)
        report(p.returncode == 69, 'no listener: wire_client exits 69',
               ['exit status %d' % p.returncode, p.stdout.decode(errors='replace')])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
