#!/usr/bin/env python3
"""A scriptable fake LDAP server on loopback for hostile-peer tests: a small
BER encoder/decoder for the LDAPMessages of RFC 4511 and the syncrepl
elements of RFC 4533, and a server that answers a client's bind and base
search like a real directory and then runs a test's script for the sync
search.  Python 3 stdlib only.

    srv = FakeLdap(script)        # script(session, n): n = 0, 1, ... per connection
    srv.url                       # ldap://127.0.0.1:PORT
    srv.close()

In a script, `s.serve_until_sync()` answers the bind and any plain search
and returns the sync search (a Request with .mode and .cookie); then the
script sends whatever it likes with s.send(bytes) and the encoders below.
Run as a program it serves one canned refresh (for poking at a client):
    python3 fake_ldap.py [PORT]
"""

import socket
import sys
import threading
import time
import traceback

SYNC_REQUEST = '1.3.6.1.4.1.4203.1.9.1.1'
SYNC_STATE = '1.3.6.1.4.1.4203.1.9.1.2'
SYNC_DONE = '1.3.6.1.4.1.4203.1.9.1.3'
SYNC_INFO = '1.3.6.1.4.1.4203.1.9.1.4'
CANCEL = '1.3.6.1.1.8'

PRESENT, ADD, MODIFY, DELETE = 0, 1, 2, 3

# resultCodes beyond RFC 4511's: canceled (RFC 3909), e-syncRefreshRequired (RFC 4533 section 2.6)
CANCELED, SYNC_REFRESH_REQUIRED = 118, 4096

# protocolOp tags (RFC 4511 4.2-4.14)
BIND_REQ, BIND_RESP, UNBIND_REQ = 0x60, 0x61, 0x42
SEARCH_REQ, SEARCH_ENTRY, SEARCH_DONE = 0x63, 0x64, 0x65
ABANDON_REQ, EXT_REQ, EXT_RESP, INTERMEDIATE = 0x50, 0x77, 0x78, 0x79


# ---------------------------------------------------------------- BER encoding

def ber_len(n):
    if n < 0x80:
        return bytes([n])
    out = n.to_bytes((n.bit_length() + 7) // 8, 'big')
    return bytes([0x80 | len(out)]) + out


def tlv(tag, content):
    return bytes([tag]) + ber_len(len(content)) + content


def _b(v):
    return v if isinstance(v, bytes) else str(v).encode('utf-8')


def octets(v, tag=0x04):
    return tlv(tag, _b(v))


def integer(n, tag=0x02):
    return tlv(tag, n.to_bytes(max(1, (n.bit_length() + 8) // 8), 'big', signed=True))


def enum(n):
    return integer(n, 0x0a)


def boolean(v):
    return tlv(0x01, b'\xff' if v else b'\x00')


def seq(*parts, tag=0x30):
    return tlv(tag, b''.join(parts))


def set_of(*parts):
    return seq(*parts, tag=0x31)


def control(oid, value=None, critical=False):
    return seq(octets(oid), boolean(True) if critical else b'', octets(value) if value is not None else b'')


def message(msgid, op, controls=None):
    """An LDAPMessage: op is a complete protocolOp TLV; controls a list of
    control() TLVs (None: no [0] element; [] an empty one)."""
    ctl = b'' if controls is None else seq(*controls, tag=0xa0)
    return seq(integer(msgid), op, ctl)


def ldap_result(tag, code, matched='', text='', extra=b''):
    return seq(enum(code), octets(matched), octets(text), extra, tag=tag)


def bind_response(msgid, code=0, text=''):
    return message(msgid, ldap_result(BIND_RESP, code, text=text))


def search_done(msgid, code=0, text='', controls=None):
    return message(msgid, ldap_result(SEARCH_DONE, code, text=text), controls)


def refresh_required(msgid, cookie=None, text=''):
    """SearchResultDone e-syncRefreshRequired (4096); with a cookie it carries
    a Sync Done control {cookie} (RFC 4533 section 3.8: an incremental refresh
    from that cookie is needed), without one none (a full refresh)."""
    return search_done(msgid, SYNC_REFRESH_REQUIRED, text, [sync_done(cookie)] if cookie is not None else None)


def extended_response(msgid, code=0, name=None, value=None):
    extra = (octets(name, 0x8a) if name else b'') + (octets(value, 0x8b) if value is not None else b'')
    return message(msgid, ldap_result(EXT_RESP, code, extra=extra))


def entry(msgid, dn, attrs, controls=None):
    """A SearchResultEntry; attrs maps name -> list of values."""
    pattrs = [seq(octets(name), set_of(*[octets(v) for v in vals])) for name, vals in attrs.items()]
    return message(msgid, seq(octets(dn), seq(*pattrs), tag=SEARCH_ENTRY), controls)


def intermediate(msgid, name=SYNC_INFO, value=None, controls=None):
    body = (octets(name, 0x80) if name is not None else b'') + (octets(value, 0x81) if value is not None else b'')
    return message(msgid, tlv(INTERMEDIATE, body), controls)


# -- syncrepl values (RFC 4533 section 2)

def sync_state_value(state, uuid, cookie=None):
    return seq(enum(state), octets(uuid), octets(cookie) if cookie is not None else b'')


def sync_state(state, uuid, cookie=None):
    return control(SYNC_STATE, sync_state_value(state, uuid, cookie))


def sync_done(cookie=None, refresh_deletes=False):
    return control(SYNC_DONE, seq(octets(cookie) if cookie is not None else b'',
                                  boolean(True) if refresh_deletes else b''))


def info_new_cookie(cookie):
    return octets(cookie, 0x80)


def info_refresh(kind, cookie=None, done=True):
    """kind 'delete' ([1]) or 'present' ([2])."""
    return seq(octets(cookie) if cookie is not None else b'', b'' if done else boolean(False),
               tag=0xa1 if kind == 'delete' else 0xa2)


def info_id_set(uuids, cookie=None, refresh_deletes=False, members=None):
    """members: raw TLVs for the SET instead of OCTET STRINGs of uuids."""
    if members is None:
        members = [octets(u) for u in uuids]
    return seq(octets(cookie) if cookie is not None else b'', boolean(True) if refresh_deletes else b'',
               set_of(*members), tag=0xa3)


def uuid_bytes(text):
    """'3906f8c4-7c8b-1041-92e1-057ae57b83af' -> 16 bytes."""
    return bytes.fromhex(text.replace('-', ''))


# ---------------------------------------------------------------- BER decoding

class BerError(ValueError):
    pass


def read_tlv(data, pos=0):
    """(tag, content, next position) of the element at pos."""
    if pos + 2 > len(data):
        raise BerError('truncated element at %d' % pos)
    tag = data[pos]
    n = data[pos + 1]
    pos += 2
    if n & 0x80:
        k = n & 0x7f
        if k == 0 or k > 8 or pos + k > len(data):
            raise BerError('bad length at %d' % pos)
        n = int.from_bytes(data[pos:pos + k], 'big')
        pos += k
    if pos + n > len(data):
        raise BerError('element at %d runs past the end' % pos)
    return tag, data[pos:pos + n], pos + n


def children(content):
    out, pos = [], 0
    while pos < len(content):
        tag, c, pos = read_tlv(content, pos)
        out.append((tag, c))
    return out


def to_int(content):
    return int.from_bytes(content, 'big', signed=True) if content else 0


class Request:
    """One decoded client LDAPMessage."""

    def __init__(self, raw):
        self.raw = raw
        tag, body, _ = read_tlv(raw)
        if tag != 0x30:
            raise BerError('LDAPMessage is not a SEQUENCE')
        parts = children(body)
        if len(parts) < 2 or parts[0][0] != 0x02:
            raise BerError('LDAPMessage without messageID and protocolOp')
        self.msgid = to_int(parts[0][1])
        self.op, self.body = parts[1]
        self.controls = {}          # oid -> (critical, value or None)
        self.control_list = []
        for t, c in parts[2:]:
            if t == 0xa0:
                for _, ctl in children(c):
                    f = children(ctl)
                    oid = f[0][1].decode()
                    crit, value = False, None
                    for ft, fc in f[1:]:
                        if ft == 0x01:
                            crit = fc != b'\x00'
                        elif ft == 0x04:
                            value = fc
                    self.controls[oid] = (crit, value)
                    self.control_list.append(oid)
        # the fields tests look at
        self.mode = self.cookie = self.reload_hint = None
        self.base = self.scope = self.attrs = None
        self.bind_dn = self.ext_name = self.ext_value = None
        if self.op == SEARCH_REQ:
            f = children(self.body)
            self.base = f[0][1].decode('utf-8', 'replace')
            self.scope = to_int(f[1][1])
            self.attrs = [a.decode() for _, a in children(f[7][1])] if len(f) > 7 else []
            if SYNC_REQUEST in self.controls:
                self._sync_request(self.controls[SYNC_REQUEST][1] or b'')
        elif self.op == BIND_REQ:
            f = children(self.body)
            self.bind_dn = f[1][1].decode('utf-8', 'replace')
        elif self.op == EXT_REQ:
            for t, c in children(self.body):
                if t == 0x80:
                    self.ext_name = c.decode()
                elif t == 0x81:
                    self.ext_value = c

    def _sync_request(self, value):
        tag, body, _ = read_tlv(value)
        for t, c in children(body):
            if t == 0x0a:
                self.mode = to_int(c)
            elif t == 0x04:
                self.cookie = c
            elif t == 0x01:
                self.reload_hint = c != b'\x00'

    @property
    def is_sync(self):
        return self.op == SEARCH_REQ and self.mode is not None

    def cancel_id(self):
        """The messageID a Cancel request names."""
        tag, body, _ = read_tlv(self.ext_value)
        return to_int(children(body)[0][1])

    def __repr__(self):
        names = {BIND_REQ: 'bind', UNBIND_REQ: 'unbind', SEARCH_REQ: 'search', ABANDON_REQ: 'abandon',
                 EXT_REQ: 'extended'}
        extra = ''
        if self.op == SEARCH_REQ:
            extra = ' base=%r scope=%r mode=%r cookie=%r' % (self.base, self.scope, self.mode, self.cookie)
        elif self.op == EXT_REQ:
            extra = ' %s' % self.ext_name
        return '<%s #%d%s>' % (names.get(self.op, hex(self.op)), self.msgid, extra)


# ---------------------------------------------------------------- the server

class Closed(Exception):
    """The client closed the connection."""


class Session:
    """One client connection, handed to the script."""

    def __init__(self, server, sock, n):
        self.server, self.sock, self.n = server, sock, n
        self.accepted = time.monotonic()
        self.buf = b''
        self.requests = []
        self.sync = None                # the sync search Request, once seen

    def send(self, data):
        self.sock.sendall(data)

    def recv(self, timeout=30):
        """The next client message (a Request); raises Closed at EOF and
        TimeoutError after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                try:
                    _, _, end = read_tlv(self.buf)
                except BerError:
                    end = None
                if end is not None:
                    raw, self.buf = self.buf[:end], self.buf[end:]
                    req = Request(raw)
                    self.requests.append(req)
                    self.server._log(self, req)
                    return req
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError('no client message within %gs' % timeout)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError('no client message within %gs' % timeout) from None
            except OSError:
                raise Closed() from None
            if not chunk:
                raise Closed()
            self.buf += chunk

    def serve_until_sync(self, timeout=30):
        """Answer binds (success) and plain searches (one done, success)
        until the sync search comes; return it."""
        while True:
            req = self.recv(timeout)
            if req.op == BIND_REQ:
                self.send(bind_response(req.msgid))
            elif req.op == SEARCH_REQ and not req.is_sync:
                self.send(search_done(req.msgid))
            elif req.is_sync:
                self.sync = req
                with self.server._lock:
                    self.server.syncs.append(req)
                return req
            elif req.op == UNBIND_REQ:
                raise Closed()

    def serve_rest(self, timeout=60):
        """After the script's part: answer a Cancel of the sync search as
        slapd does (done 118, then the extended response), binds and plain
        searches, until the client hangs up.  Returns the requests seen."""
        seen = []
        try:
            while True:
                req = self.recv(timeout)
                seen.append(req)
                if req.op == EXT_REQ and req.ext_name == CANCEL:
                    self.send(search_done(req.cancel_id(), 118))
                    self.send(extended_response(req.msgid, 0))
                elif req.op == BIND_REQ:
                    self.send(bind_response(req.msgid))
                elif req.op == SEARCH_REQ:
                    self.send(search_done(req.msgid))
                elif req.op == UNBIND_REQ:
                    break
        except (Closed, TimeoutError):
            pass
        return seen

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class FakeLdap:
    """Listens on 127.0.0.1 (any port); runs script(session, n) for the n-th
    connection (0-based) in its own thread, then closes that connection.
    Exceptions in a script are kept in .errors; .sessions lists every
    session; .log the requests seen, as text."""

    def __init__(self, script, port=0):
        self.script = script
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(('127.0.0.1', port))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self.url = 'ldap://127.0.0.1:%d' % self.port
        self.sessions, self.errors, self.log, self.syncs = [], [], [], []
        self._lock = threading.Lock()
        self._closing = False
        self._threads = []
        self._accept = threading.Thread(target=self._accept_loop, daemon=True, name='fake-ldap')
        self._accept.start()

    def _log(self, session, req):
        with self._lock:
            self.log.append('conn %d: %r' % (session.n, req))

    def _accept_loop(self):
        while not self._closing:
            try:
                sock, _ = self._sock.accept()
            except OSError:
                break
            if self._closing:
                sock.close()
                break
            with self._lock:
                s = Session(self, sock, len(self.sessions))
                self.sessions.append(s)
            t = threading.Thread(target=self._run, args=(s,), daemon=True, name='fake-ldap-%d' % s.n)
            self._threads.append(t)
            t.start()

    def _run(self, s):
        try:
            self.script(s, s.n)
        except (Closed, BrokenPipeError, ConnectionResetError):
            pass
        except Exception:
            with self._lock:
                self.errors.append('conn %d: %s' % (s.n, traceback.format_exc()))
        finally:
            s.close()

    def accept_times(self):
        """time.monotonic() of each accept, in order."""
        with self._lock:
            return [s.accepted for s in self.sessions]

    @property
    def connections(self):
        with self._lock:
            return len(self.sessions)

    def sync_requests(self):
        """Every sync search seen, in order."""
        with self._lock:
            return list(self.syncs)

    def close(self):
        self._closing = True
        try:
            self._sock.close()
        except OSError:
            pass
        with self._lock:
            sessions = list(self.sessions)
        for s in sessions:
            try:
                s.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(2)


def _demo(session, n):
    req = session.serve_until_sync()
    uid = bytes(range(16))
    session.send(entry(req.msgid, 'cn=demo,dc=example,dc=com', {'objectClass': ['device'], 'cn': ['demo']},
                       [sync_state(ADD, uid)]))
    session.send(search_done(req.msgid, controls=[sync_done(b'rid=000,csn=20240101000000.000000Z#000000#000#000000',
                                                            True)]))
    session.serve_rest()


if __name__ == '__main__':
    srv = FakeLdap(_demo, int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print(srv.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.close()
