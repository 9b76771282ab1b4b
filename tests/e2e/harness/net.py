"""Sockets and TLS for tests: free_port() (below the ephemeral range), a
throwaway certificate authority (TestCA), and Acceptor, a listening socket
for tests that play a peer by hand."""

import os
import random
import socket
import subprocess
import threading

from .procs import _register


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
