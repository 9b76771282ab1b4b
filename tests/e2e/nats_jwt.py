"""NKeys and JWTs for a nats-server in operator mode, made here because
Debian has no nsc: an operator, accounts signed by it, users signed by
their account, and the .creds file a user logs in with (ldapfeed.8, -k).

An NKey is an ed25519 key; its public key is a type byte, the 32-byte key
and a CRC-16 (XMODEM, little-endian), in base32 without padding; its seed
is the same around the 32-byte private seed, with two bytes that say "seed"
and the type.  A JWT is signed by an NKey ("alg": "ed25519-nkey").  The
signing uses the openssl command (OpenSSL 3 signs ed25519 with -rawin), so
that the tests need nothing besides what scripts/deps installs.
"""

import base64
import hashlib
import json
import os
import subprocess
import tempfile
import time

OPERATOR, ACCOUNT, USER = 14 << 3, 0 << 3, 20 << 3      # 'O', 'A', 'U'
SEED = 18 << 3                                          # 'S'
# DER around a raw ed25519 key (RFC 8410): PKCS#8 private, SubjectPublicKeyInfo public
PKCS8_PREFIX = bytes.fromhex('302e020100300506032b657004220420')
SPKI_PREFIX = bytes.fromhex('302a300506032b6570032100')


def crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xffff
    return crc


def b32(raw):
    return base64.b32encode(raw + crc16(raw).to_bytes(2, 'little')).decode().rstrip('=')


def b64url(raw):
    return base64.urlsafe_b64encode(raw).decode().rstrip('=')


def _openssl(args, data=None):
    r = subprocess.run(['openssl'] + args, input=data, capture_output=True)
    if r.returncode != 0:
        raise AssertionError('openssl %s: %s' % (' '.join(args[:2]), r.stderr.decode(errors='replace')))
    return r.stdout


class NKey:
    """An ed25519 NKey of one type: .public ('O...', 'A...', 'U...'),
    .seed ('SO...', 'SA...', 'SU...'), sign(data)."""

    def __init__(self, kind):
        self.kind = kind
        self.raw_seed = os.urandom(32)
        with tempfile.NamedTemporaryFile(suffix='.der') as f:
            f.write(PKCS8_PREFIX + self.raw_seed)
            f.flush()
            spki = _openssl(['pkey', '-inform', 'DER', '-in', f.name, '-pubout', '-outform', 'DER'])
        assert spki.startswith(SPKI_PREFIX) and len(spki) == len(SPKI_PREFIX) + 32, spki.hex()
        self.raw_public = spki[len(SPKI_PREFIX):]
        self.public = b32(bytes([kind]) + self.raw_public)
        self.seed = b32(bytes([SEED | kind >> 5, (kind & 31) << 3]) + self.raw_seed)

    def sign(self, data):
        with tempfile.NamedTemporaryFile(suffix='.der') as k, tempfile.NamedTemporaryFile() as d:
            k.write(PKCS8_PREFIX + self.raw_seed)
            k.flush()
            d.write(data)
            d.flush()
            return _openssl(['pkeyutl', '-sign', '-inkey', k.name, '-keyform', 'DER', '-rawin', '-in', d.name])


def jwt(issuer, subject, name, nats):
    """A JWT about `subject` (a public key), signed by `issuer` (an NKey)."""
    claims = {'iat': int(time.time()), 'iss': issuer.public, 'name': name, 'sub': subject, 'nats': nats}
    claims['jti'] = base64.b32encode(hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
                                     ).decode().rstrip('=')
    head = b64url(json.dumps({'typ': 'JWT', 'alg': 'ed25519-nkey'}).encode())
    body = b64url(json.dumps(claims).encode())
    signed = ('%s.%s' % (head, body)).encode()
    return '%s.%s' % (signed.decode(), b64url(issuer.sign(signed)))


UNLIMITED = {'subs': -1, 'data': -1, 'payload': -1, 'imports': -1, 'exports': -1, 'wildcards': True,
             'conn': -1, 'leaf': -1}


class Operator:
    """An operator, its self-signed JWT and its system account (JetStream
    will not start in operator mode without one); account() and user()
    sign the rest."""

    def __init__(self, name='lab'):
        self.key = NKey(OPERATOR)
        self.jwt = jwt(self.key, self.key.public, name, {'type': 'operator', 'version': 2})
        self.system = self.account('SYS', jetstream=False)

    def account(self, name, jetstream=True):
        """(NKey, JWT) of an account, JetStream enabled without limits."""
        key = NKey(ACCOUNT)
        limits = dict(UNLIMITED)
        if jetstream:
            limits.update({'mem_storage': -1, 'disk_storage': -1, 'streams': -1, 'consumer': -1})
        return key, jwt(self.key, key.public, name, {'limits': limits, 'type': 'account', 'version': 2})


def user(account_key, name, signer=None):
    """(NKey, JWT) of a user of the account; `signer` (default: the account's
    key) signs it: another key makes a JWT the server must refuse."""
    key = NKey(USER)
    claims = {'pub': {}, 'sub': {}, 'subs': -1, 'data': -1, 'payload': -1, 'type': 'user', 'version': 2}
    if signer is not None:
        claims['issuer_account'] = account_key.public
    return key, jwt(signer or account_key, key.public, name, claims)


def creds(user_jwt, user_key):
    """A .creds file's text, as nsc writes it."""
    return ('-----BEGIN NATS USER JWT-----\n%s\n------END NATS USER JWT------\n\n'
            '************************* IMPORTANT *************************\n'
            'NKEY Seed printed below can be used to sign and prove identity.\n'
            'NKEYs are sensitive and should be treated as secrets.\n\n'
            '-----BEGIN USER NKEY SEED-----\n%s\n------END USER NKEY SEED------\n\n'
            '*************************************************************\n' % (user_jwt, user_key.seed))


def server_conf(operator, accounts):
    """nats-server configuration lines for operator mode: the operator's
    JWT, its system account, and the accounts' JWTs ((NKey, JWT) pairs)
    preloaded into a memory resolver."""
    accounts = [operator.system] + list(accounts)
    return ['operator: "%s"' % operator.jwt, 'system_account: %s' % operator.system[0].public,
            'resolver: MEMORY',
            'resolver_preload: { %s }' % ', '.join('%s: "%s"' % (k.public, j) for k, j in accounts)]
