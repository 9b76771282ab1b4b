"""The consumer side: Consumer, a multiprocessing.connection Listener that
records every message ldapfeed sends (per connection, in arrival order),
with waits on what arrived and controls to pause, drop or close."""

import errno
import json
import os
import pickle
import secrets
import socket
import struct
import threading
import time
from multiprocessing.connection import AuthenticationError, Listener

from .core import _short, _unique_path, wait_until
from .model import _group_runs
from .procs import _register
from .runner import _current_dir


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
