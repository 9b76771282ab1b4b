"""The last events known to be read (doc/safety.md, "The last event read";
ldapfeed.8, SIGNALS): a lab slapd, ldapfeed, a Python Listener.

At a clean shutdown a worker shuts down the write side of its connection
and waits, at most 10 seconds, for the consumer to close its end, which a
multiprocessing.connection consumer does once it has read everything (it
sees EOF).  A consumer that has not read the last events, and so does not
close, means no marker.
"""

import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F403
from test_conformance import PEOPLE, feed, lab, stop_clean, wait_cookie_current, wait_run  # noqa: E402


def three_changes(s):
    for n in ('alice', 'bob', 'carol'):
        s.replace('uid=%s,%s' % (n, PEOPLE), 'description', '%s, changed at the end' % n)


@test(timeout=90)
def unread_last_events_mean_no_marker(tmp):
    # Scenario: persist, one worker; after the load the consumer stops reading (alive, connection open), three
    # modifies follow and ldapfeed writes them into the socket, where they wait unread.  SIGTERM: the worker has
    # nothing left to send, but the consumer has not read it: no clean shutdown.  ldapfeed waits 10 s for the
    # consumer to close, then exits 70 without the marker, saying why.  (Before, it wrote the marker and exited
    # 0 with the three events unread.)  The consumer, reading again, finds them.
    s = lab(tmp)
    con = Consumer(tmp)
    d = feed(tmp, s, con)
    wait_run(con, 0)
    con.pause()
    time.sleep(0.3)
    three_changes(s)
    wait_cookie_current(s, d)
    time.sleep(0.5)
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    rc = d.wait(40)
    took = time.monotonic() - t0
    assert rc == 70, 'exit %s; stderr:\n%s' % (rc, d.stderr()[-2000:])
    assert not d.marker_exists(), 'marker written while the last events were unread'
    assert 'did not close its end within 10 s' in d.stderr(), d.stderr()[-2000:]
    assert 9 <= took < 30, took
    con.resume()
    wait_until(lambda: len(con.messages('modify')) == 3, 10, 'the three modifies, read late')


@test(timeout=90)
def consumer_reading_late_closes_in_time(tmp):
    # Scenario: the same, but the consumer reads again 2 s after the SIGTERM: it reads the three modifies, sees
    # EOF and closes; ldapfeed exits 0 and writes the marker.
    s = lab(tmp)
    con = Consumer(tmp)
    d = feed(tmp, s, con)
    wait_run(con, 0)
    con.pause()
    time.sleep(0.3)
    three_changes(s)
    wait_cookie_current(s, d)
    threading.Timer(2, con.resume).start()
    stop_clean(d)
    assert len(con.messages('modify')) == 3 and con.closed == {0: 'eof'}, (con.messages('modify'), con.closed)


@test(timeout=60)
def stock_listener_loop_closes(tmp):
    # Scenario: the README's consumer loop, a stock Listener whose recv() raises EOFError at the end and whose
    # connection is then closed (with-block), in a thread: SIGTERM gives exit 0 and the marker at once.
    from multiprocessing.connection import Listener
    s = lab(tmp)
    con_key = b'k' * 32
    addr = os.path.join(tmp, 'stock.sock')
    got = []

    def serve():
        with Listener(addr, authkey=con_key) as listener:
            with listener.accept() as conn:
                while True:
                    try:
                        got.append(conn.recv())
                    except EOFError:
                        break
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    wait_until(lambda: os.path.exists(addr), 5, 'the listener')
    keyfile = write_secret(os.path.join(tmp, 'stock.key'), con_key)
    d = Daemon(tmp, s, None, output=addr, keyfile=keyfile, fmt='pickle')
    wait_until(lambda: any(m.get('type') == 'refresh_done' for m in got), 15, 'refresh_done')
    t0 = time.monotonic()
    rc = d.stop()
    assert rc == 0 and d.marker_exists(), (rc, d.stderr()[-1000:])
    assert time.monotonic() - t0 < 5
    t.join(5)


if __name__ == '__main__':
    main()
