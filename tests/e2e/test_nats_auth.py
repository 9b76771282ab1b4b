#!/usr/bin/env python3
"""The NATS output's logins and TLS end to end (ldapfeed.8, -k and
--nats-ca; doc/outputs.md): a real slapd, a real nats-server on 127.0.0.1
and the real daemon.

* A .creds file against a nats-server in operator mode: an operator, its
  accounts and users made here (nats_jwt.py; Debian has no nsc), the
  accounts preloaded into the server's memory resolver.  The right user
  gets the feed, and again after the server restarts (the seed signs the
  new server's nonce); a user of an account the server does not know, a
  user JWT signed by a key its account does not name, and a JWT with
  another user's seed are refused at startup with 77; a user whose account
  has no JetStream gets 78.
* A token (the -k file's first line, CR LF or not) gets the feed, and
  again after a restart; a wrong token is test_nats.py's.
* tls:// with a test CA given with --nats-ca: the feed arrives; without the
  CA the server is not trusted, and a certificate for another address is
  refused: 69 each, one line saying why.  A nats:// URL of that server
  goes TLS (the server requires it) and is verified with the CA given.

Each feed is read back with ldapfeed-nats-tail, logging in the same way,
and the copy compared with ldapsearch.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F403
import nats_jwt as J  # noqa: E402
import nats_lab as N  # noqa: E402
from nats_lab import check_stream, loaded, person_dn, settled  # noqa: E402


def start(tmp, s, url, **kw):
    return Daemon(tmp, s, None, output=url, fmt='json', processes=4, **kw)


def refused(d, status, *words):
    """ldapfeed exited with `status` at startup, having said why in one line
    that names NATS, and made no store."""
    rc = d.wait(30)
    assert rc == status, 'exit %s, expected %s: %s' % (rc, status, d.stderr())
    lines = [ln for ln in d.stderr().splitlines() if 'NATS' in ln]
    assert lines and all(w.lower() in lines[-1].lower() for w in words), d.stderr()
    assert not os.path.exists(os.path.join(d.datadir, 'data.mdb')), 'a refused start made a store'
    return lines[-1]


def feed_survives_restart(tmp, s, n, d, **kw):
    """The copy equals the server, and still does after a change made while
    the server restarts (ldapfeed logs in again)."""
    assert_model_equals_server(check_stream(loaded(n.url, **kw)), s, bind='reader')
    n.stop()
    s.modify_entry(person_dn(1), [('replace', 'description', ['while NATS restarts'])])
    n.start()
    s.modify_entry(person_dn(2), [('replace', 'description', ['after the restart'])])
    settled(n.url, s, **kw)
    assert d.alive(), d.stderr()
    assert 'reconnected' in d.stderr(), d.stderr()
    assert d.stop() == 0, d.stderr()


@test(timeout=180)
def test_creds_in_operator_mode(tmp):
    s = Slapd(tmp)
    s.add_people(15)
    op = J.Operator()
    feed, nojs = op.account('feed'), op.account('nojs', jetstream=False)
    stranger = op.account('stranger')           # not preloaded: the server does not know it
    n = N.NatsServer(tmp, conf=J.server_conf(op, [feed, nojs]))

    def creds(name, account, **kw):
        key, token = J.user(account[0], name, **kw)
        return write_secret(os.path.join(tmp, name + '.creds'), J.creds(token, key)), key, token

    good, _, good_jwt = creds('ldapfeed', feed)
    other = creds('other', feed)[1]
    bad = {
        'an unknown account': creds('stranger', stranger)[0],
        'a JWT its account did not sign': creds('forged', feed, signer=J.NKey(J.ACCOUNT))[0],
        'another user\'s seed': write_secret(os.path.join(tmp, 'swapped.creds'), J.creds(good_jwt, other)),
    }
    for what, path in sorted(bad.items()):
        note('refused: %s: %s' % (what, refused(start(tmp, s, n.url, keyfile=path), 77)))
    refused(start(tmp, s, n.url, keyfile=creds('nojs', nojs)[0]), 78, 'JetStream')

    d = start(tmp, s, n.url, keyfile=good)
    feed_survives_restart(tmp, s, n, d, token_file=good)


@test(timeout=120)
def test_token(tmp):
    s = Slapd(tmp)
    s.add_people(15)
    n = N.NatsServer(tmp, token='t0ken-%d' % os.getpid())
    # The first line only, its CR LF dropped: the rest of the file is not the token.
    path = write_secret(os.path.join(tmp, 'nats.token'), '%s\r\na comment line\n' % n.token)
    d = start(tmp, s, n.url, keyfile=path)
    feed_survives_restart(tmp, s, n, d, token_file=path)


@test(timeout=120)
def test_tls(tmp):
    s = Slapd(tmp)
    s.add_people(15)
    ca = TestCA(os.path.join(tmp, 'ca'))
    n = N.NatsServer(tmp, tls=ca.issue('127.0.0.1'))
    assert n.url.startswith('tls://'), n.url
    # Not trusted: the test CA is not in OpenSSL's default paths.
    note('untrusted: %s' % refused(start(tmp, s, n.url), 69))
    # Trusted, but issued for another address.
    other = N.NatsServer(tmp, name='n2', tls=ca.issue('127.0.0.2'))
    note('another address: %s' % refused(start(tmp, s, other.url, extra=['--nats-ca', ca.cert]), 69))
    other.stop()
    # nats:// to a server that requires TLS: libnats goes TLS all the same,
    # and the CA given must verify it (--check connects and changes nothing).
    d = start(tmp, s, 'nats://127.0.0.1:%d' % n.port, extra=['--nats-ca', ca.cert, '--check'])
    assert d.wait(30) == 0, d.stdout() + d.stderr()

    d = start(tmp, s, n.url, extra=['--nats-ca', ca.cert])
    feed_survives_restart(tmp, s, n, d, ca=ca.cert)


if __name__ == '__main__':
    main()
