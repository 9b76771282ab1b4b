"""A stand-in for Python >= 3.12's multiprocessing.connection.Listener, for
tests on a machine whose python3 is older: the same framing (the stdlib
Connection) and the 3.12 handshake, plus knobs to misbehave.

The handshake follows Lib/multiprocessing/connection.py of 3.12:
deliver_challenge sends b'#CHALLENGE#{sha256}' + 40 random bytes and accepts
a '{digest}'-prefixed response or a bare 16-byte HMAC-MD5; answer_challenge
answers '{digest}' challenges with '{digest}' + HMAC over the whole message
and 20-byte legacy ones with a bare HMAC-MD5.
"""
import hmac
import os
import socket

from multiprocessing.connection import AuthenticationError, Connection

MESSAGE_LENGTH = 40
_CHALLENGE = b'#CHALLENGE#'
_WELCOME = b'#WELCOME#'
_FAILURE = b'#FAILURE#'
_ALLOWED_DIGESTS = frozenset(
    {b'md5', b'sha256', b'sha384', b'sha3_256', b'sha3_384'})
_MAX_DIGEST_LEN = max(len(d) for d in _ALLOWED_DIGESTS)
_MD5ONLY_MESSAGE_LENGTH = 20
_MD5_DIGEST_LEN = 16
_LEGACY_LENGTHS = (_MD5ONLY_MESSAGE_LENGTH, _MD5_DIGEST_LEN)


def _get_digest_name_and_payload(message):
    if len(message) in _LEGACY_LENGTHS:
        return '', message
    if message.startswith(b'{'):
        curly = message.find(b'}', 1, _MAX_DIGEST_LEN + 2)
        if curly > 0:
            digest = message[1:curly]
            if digest in _ALLOWED_DIGESTS:
                return digest.decode('ascii'), message[curly + 1:]
    raise AuthenticationError(
        'unsupported message length, missing digest prefix, '
        'or unsupported digest: message=%r' % (message,))


def _create_response(authkey, message):
    digest_name = _get_digest_name_and_payload(message)[0]
    if not digest_name:
        return hmac.new(authkey, message, 'md5').digest()
    response = hmac.new(authkey, message, digest_name).digest()
    return b'{%s}%s' % (digest_name.encode('ascii'), response)


def _verify_challenge(authkey, message, response):
    response_digest, response_mac = _get_digest_name_and_payload(response)
    response_digest = response_digest or 'md5'
    expected = hmac.new(authkey, message, response_digest).digest()
    if len(expected) != len(response_mac):
        raise AuthenticationError('expected %r of length %d got %d' % (
            response_digest, len(expected), len(response_mac)))
    if not hmac.compare_digest(expected, response_mac):
        raise AuthenticationError('digest received was wrong')


class ModernListener:
    """Listener(address, family, authkey) as Python 3.12 has it.

    digest: the digest named in the challenge we deliver.
    wrong_key: authenticate with a key other than authkey, both ways.
    garbage_challenge: True, or the bytes to send as the challenge frame
        instead of a real one (True: a '{sha512}' challenge).
    welcome_any: welcome whatever answers our challenge, so that the
        client's own challenge is the one that decides.
    """

    def __init__(self, address=None, family=None, backlog=1, authkey=None,
                 digest='sha256', wrong_key=False, garbage_challenge=None,
                 welcome_any=False):
        if authkey is not None and not isinstance(authkey, bytes):
            raise TypeError('authkey should be a byte string')
        if family is None:
            if isinstance(address, tuple):
                family = 'AF_INET6' if ':' in address[0] else 'AF_INET'
            else:
                family = 'AF_UNIX'
        if isinstance(family, str):
            family = getattr(socket, family)
        if address is None:
            address = ('127.0.0.1', 0) if family == socket.AF_INET else (
                ('::1', 0) if family == socket.AF_INET6 else
                '\0modern-listener-%d-%s' % (os.getpid(), os.urandom(4).hex()))
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind(address)
            self._socket.listen(backlog)
            self.address = self._socket.getsockname()
        except OSError:
            self._socket.close()
            raise
        self._unlink = (address if family == socket.AF_UNIX and
                        isinstance(address, str) and
                        not address.startswith('\0') else None)
        self._authkey = authkey
        if authkey is not None and wrong_key:
            self._authkey = authkey + b'-but-wrong'
        self._digest = digest
        self._garbage = garbage_challenge
        self._welcome_any = welcome_any
        self.last_accepted = None

    def fileno(self):
        return self._socket.fileno()

    def accept(self):
        s, self.last_accepted = self._socket.accept()
        s.setblocking(True)
        conn = Connection(s.detach())
        if self._authkey is not None:
            try:
                self._deliver_challenge(conn)
                self._answer_challenge(conn)
            except BaseException:
                conn.close()
                raise
        return conn

    def _deliver_challenge(self, conn):
        if self._garbage is not None:
            garbage = self._garbage
            if garbage is True:
                garbage = _CHALLENGE + b'{sha512}' + os.urandom(MESSAGE_LENGTH)
            conn.send_bytes(garbage)
            conn.recv_bytes(256)    # the client hangs up: EOFError
            raise AuthenticationError('a garbage challenge was answered')
        message = b'{%s}%s' % (self._digest.encode('ascii'),
                               os.urandom(MESSAGE_LENGTH))
        conn.send_bytes(_CHALLENGE + message)
        response = conn.recv_bytes(256)
        try:
            if not self._welcome_any:
                _verify_challenge(self._authkey, message, response)
        except AuthenticationError:
            conn.send_bytes(_FAILURE)
            raise
        conn.send_bytes(_WELCOME)

    def _answer_challenge(self, conn):
        message = conn.recv_bytes(256)
        if not message.startswith(_CHALLENGE):
            raise AuthenticationError(
                'Protocol error, expected challenge: message=%r' % (message,))
        message = message[len(_CHALLENGE):]
        if len(message) < _MD5ONLY_MESSAGE_LENGTH:
            raise AuthenticationError(
                'challenge too short: %d bytes' % len(message))
        conn.send_bytes(_create_response(self._authkey, message))
        response = conn.recv_bytes(256)
        if response != _WELCOME:
            raise AuthenticationError('digest sent was rejected')

    def close(self):
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()
            if self._unlink is not None:
                try:
                    os.unlink(self._unlink)
                except FileNotFoundError:
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
