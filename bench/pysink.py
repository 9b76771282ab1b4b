#!/usr/bin/env python3
"""pysink: the stock Python consumer for benchmarks.  A plain
multiprocessing.connection.Listener; one thread per connection doing
conn.recv_bytes() (no unpickling: the cost measured is the transport's).

    pysink.py ADDRESS KEYFILE W

Prints the same lines as sink.c: `ready`, `connected W T`,
`refresh_done T MSGS DATA BYTES` once every connection has sent one, and
`closed T MSGS DATA BYTES` when every connection has ended.  T is
time.monotonic().
"""
import sys
import threading
import time
from multiprocessing.connection import Listener


def main():
    address, keyfile, w = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(keyfile, 'rb') as f:
        key = f.read()
    family = 'AF_UNIX' if ':' not in address else 'AF_INET'
    if family == 'AF_INET':
        host, port = address.rsplit(':', 1)
        address = (host, int(port))
    listener = Listener(address, family, backlog=64, authkey=key)
    print('ready', flush=True)
    conns = [listener.accept() for _ in range(w)]
    print('connected %d %.9f' % (w, time.monotonic()), flush=True)
    lock = threading.Lock()
    totals = {'msgs': 0, 'data': 0, 'bytes': 0, 'done': 0}

    def reader(conn):
        msgs = data = nbytes = 0
        done = False
        while True:
            try:
                b = conn.recv_bytes()
            except (EOFError, OSError):
                break
            msgs += 1
            nbytes += len(b)
            head = b[:32]
            if b'refresh_done' in head:
                done = True
                with lock:
                    totals['done'] += 1
                    totals['msgs'] += msgs
                    totals['data'] += data
                    totals['bytes'] += nbytes
                    msgs = data = nbytes = 0
                    if totals['done'] == w:
                        print('refresh_done %.9f %d %d %d' % (time.monotonic(), totals['msgs'],
                              totals['data'], totals['bytes']), flush=True)
            elif b'hello' not in head:
                data += 1
        with lock:
            totals['msgs'] += msgs
            totals['data'] += data
            totals['bytes'] += nbytes
        del done

    threads = [threading.Thread(target=reader, args=(c,), daemon=True) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print('closed %.9f %d %d %d' % (time.monotonic(), totals['msgs'], totals['data'], totals['bytes']),
          flush=True)


if __name__ == '__main__':
    main()
