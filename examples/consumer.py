#!/usr/bin/env python3
"""An example ldapfeed consumer: keeps a JSON-lines copy of the directory.

    consumer.py -a ADDRESS -k KEYFILE [-o COPY.jsonl] [--print] [options]

It listens with multiprocessing.connection.Listener (stdlib only), accepts
every ldapfeed worker that connects (one thread per connection) and applies
the events of ldapfeed(8), keyed by entryUUID, to an in-memory copy that it
writes to COPY as one JSON object per line, sorted by DN:

    {"dn": "uid=alice,ou=people,dc=example,dc=com", "uuid": "...",
     "attrs": {"cn": ["Alice"], "jpegPhoto": [{"base64": "/9j/..."}]}}

A value is a string when it is UTF-8 without NUL, else {"base64": ...}, as in
ldapfeed's JSON format.  COPY is replaced atomically (written beside itself,
fsynced, renamed over) a moment after each burst of changes, and read back at
start, so a consumer restarted between two clean ldapfeed runs carries on.

What a consumer has to get right, and how this one does it:

* reload.  A hello with "reload": true starts a snapshot: the daemon began
  from an empty store and sends every entry as an add.  Entries the snapshot
  does not send are dropped once it is complete, that is once every worker
  of a run has sent refresh_done.  Until then COPY keeps the previous state.
  A snapshot cut short (a crash, a clean stop, this consumer stopping) is
  sent again whole by ldapfeed's next run, which says "reload" again: a
  snapshot is only ever completed by the run that began it.
* Order across connections.  The events of one DN arrive in order on one
  connection, but an entry changes connection when it is renamed (events go
  by DN hash).  So each entry remembers the seq of the last event that set
  its DN, its attributes, or deleted it, and an older event arriving late
  changes only what no newer one has set: the result is the same as applying
  the events in seq order, without waiting for idle connections.
* Runs.  Each daemon run opens one connection per worker.  Connections are
  grouped into runs by their hellos (worker numbers, worker count, accept
  order); events still arriving from a run older than the latest reload run
  are ignored, the snapshot replaces them.

A consumer that goes away makes ldapfeed stop without its clean-shutdown
marker, so the next ldapfeed run is a reload: this consumer never has to
resynchronise on its own.  Payloads are pickles or JSON (--format auto tells
them apart); pickle is only ever loaded from a peer that proved it holds the
key.  SIGTERM or SIGINT: stop accepting, write COPY, exit 0.
"""

import argparse
import base64
import json
import os
import pickle
import signal
import socket
import stat
import sys
import threading
import time
from multiprocessing.connection import AuthenticationError, Listener


def log(*parts):
    sys.stderr.write('consumer: ' + ' '.join(str(p) for p in parts) + '\n')
    sys.stderr.flush()


# ---------------------------------------------------------------- values

def json_value(v):
    """An attribute value as it goes into COPY: str, or {"base64": ...}."""
    if isinstance(v, (bytes, bytearray)):
        try:
            s = bytes(v).decode('utf-8')
        except UnicodeDecodeError:
            s = None
        if s is not None and '\0' not in s:
            return s
        return {'base64': base64.b64encode(bytes(v)).decode('ascii')}
    return v        # JSON format: already a str or {"base64": ...}


def json_attrs(attrs):
    return {name: [json_value(v) for v in vals] for name, vals in (attrs or {}).items()}


def show_value(v, limit=60):
    if isinstance(v, dict):
        return '<%d bytes, base64>' % len(base64.b64decode(v.get('base64', '')))
    s = v if isinstance(v, str) else str(v)
    return s if len(s) <= limit else s[:limit] + '...'


def show_values(vals):
    return ', '.join(show_value(v) for v in vals) if vals else '(none)'


def replace(path, lines):
    """Write a file beside itself, fsync, rename it over: readers see the
    old file or the new one, never half of one."""
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


# ---------------------------------------------------------------- the copy

class Directory:
    """The copy, the runs and the snapshot.  Every method that takes a
    message runs under self.lock, so the connection threads apply events
    one at a time."""

    def __init__(self, path, printing, verbose, write_delay):
        self.path = path
        self.printing = printing
        self.verbose = verbose
        self.write_delay = write_delay
        self.lock = threading.Condition()
        self.write_lock = threading.Lock()     # one writer of COPY at a time
        self.entries = {}       # uuid -> {'dn': str, 'attrs': {name: [json values]} or None}
        self.clock = {}         # uuid -> [dn seq, attrs seq, delete seq], this seq lineage
        self.runs = []          # see _join_run
        self.open_conns = {}    # accept index -> connection info, hello or not
        self.snapshot = None    # {'run', 'seen': set of uuids}
        self.reload_run = None  # the latest run that began with a reload: older ones are ignored
        self.dirty = False
        self.written = 0
        self.stopping = False
        self.ignored = 0
        if path and os.path.exists(path):
            self._load()

    # -- COPY on disk
    def _load(self):
        with open(self.path, encoding='utf-8') as f:
            text = f.read()
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    e = json.loads(line)
                    self.entries[e['uuid']] = {'dn': e['dn'], 'attrs': e['attrs']}
                except (ValueError, KeyError, TypeError) as err:
                    raise SystemExit('consumer: %s line %d: %s' % (self.path, n, err))
        log('loaded %d entries from %s' % (len(self.entries), self.path))

    def _lines(self):
        """COPY's lines (called under the lock; the attrs dicts are replaced,
        never changed in place, so they can be serialised outside it)."""
        # An entry known only from a rename whose add is still on its way
        # on another connection waits for it.
        return [(e['dn'], u, e['attrs']) for u, e in self.entries.items() if e['attrs'] is not None]

    def write(self):
        """Replace COPY if it changed.  Not while a snapshot is open, so that
        COPY is always a whole state: one this consumer stops in is sent
        again whole by ldapfeed's next run (see the docstring)."""
        with self.write_lock:
            with self.lock:
                if not self.path or self.snapshot is not None or not self.dirty:
                    return
                rows = self._lines()
                self.dirty = False
                self._prune()
            rows.sort(key=lambda r: (r[0].count(','), r[0].lower()))
            text = ''.join(json.dumps({'dn': dn, 'uuid': u, 'attrs': attrs}, ensure_ascii=False) + '\n'
                           for dn, u, attrs in rows)
            replace(self.path, [text])
            self.written += 1
            if self.verbose:
                log('wrote %d entries to %s' % (len(rows), self.path))

    def writer(self):
        """Thread: write COPY a moment after a burst of changes."""
        while True:
            with self.lock:
                while not self.dirty and not self.stopping:
                    self.lock.wait()
                if self.stopping:
                    return
            time.sleep(self.write_delay)      # let the burst finish: one write, not thousands
            try:
                self.write()
            except OSError as e:
                log('error: writing %s: %s' % (self.path, e))

    def _changed(self):
        self.dirty = True
        self.lock.notify_all()

    def _prune(self):
        """Forget delete seqs that no late event can undercut any more: every
        open connection has already delivered something newer."""
        open_seqs = [c['last_seq'] for c in self.open_conns.values()]
        low = min(open_seqs) if open_seqs else float('inf')
        for u in [u for u, c in self.clock.items() if c[2] and c[2] < low and u not in self.entries]:
            del self.clock[u]

    # -- runs
    def _join_run(self, conn, hello):
        """The run a connection belongs to.  All the connections of one run
        are accepted one after another (each worker authenticates before any
        hello is sent), so a run's members lie within `workers` consecutive
        accept indices; they have distinct worker numbers and one count."""
        w, ws = hello.get('worker'), hello.get('workers')
        ws = ws if isinstance(ws, int) and ws > 0 else 1
        a = conn['accepted']
        for run in reversed(self.runs):
            if run['workers'] == ws and w not in run['seen'] and len(run['conns']) < ws and \
                    all(abs(a - c['accepted']) < ws for c in run['conns']):
                break
        else:
            run = {'workers': ws, 'conns': [], 'seen': set(), 'done': set(), 'reload': False,
                   'n': len(self.runs) + 1}
            self.runs.append(run)
        run['conns'].append(conn)
        run['seen'].add(w)
        if hello.get('reload'):
            run['reload'] = True
        conn['run'] = run
        return run

    def _live(self, run):
        return self.reload_run is None or run['n'] >= self.reload_run['n']

    # -- messages
    def receive(self, conn, msg):
        with self.lock:
            if not isinstance(msg, dict) or not isinstance(msg.get('type'), str):
                log('warning: connection %d: not an event: %r' % (conn['accepted'], msg))
                return
            t = msg['type']
            if t == 'hello':
                self._hello(conn, msg)
                return
            run = conn.get('run')
            if run is None:
                log('warning: connection %d: %s before hello, ignored' % (conn['accepted'], t))
                return
            seq = msg.get('seq')
            if isinstance(seq, int):
                conn['last_seq'] = max(conn['last_seq'], seq)
            if not self._live(run):
                self.ignored += 1
                return
            if self.printing:
                print_event(conn, msg)
            if t == 'refresh_done':
                self._refresh_done(run, conn)
            elif t in ('add', 'modify', 'rename', 'delete'):
                self._apply(t, seq, msg)
            else:
                log('warning: unknown event type %r ignored' % t)

    def _hello(self, conn, msg):
        run = self._join_run(conn, msg)
        conn['worker'] = msg.get('worker')
        if self.printing:
            print_event(conn, msg)
        if msg.get('reload') and (self.snapshot is None or self.snapshot['run'] is not run):
            if not self._live(run):
                return      # a late hello of an older run
            # A new seq lineage (seq restarts after a wipe) and a new snapshot.
            self.reload_run = run
            self.snapshot = {'run': run, 'seen': set()}
            self.clock = {}
            log('run %d: reload, a full snapshot follows (%d entries held)' % (run['n'], len(self.entries)))
        elif len(run['conns']) == 1 and not msg.get('reload'):
            log('run %d: %d workers, resuming' % (run['n'], run['workers']))

    def _refresh_done(self, run, conn):
        run['done'].add(conn.get('worker'))
        if len(run['done']) < run['workers']:
            return
        snap = self.snapshot
        if snap is None:
            log('run %d: refresh done, %d entries' % (run['n'], len(self.entries)))
            return
        gone = [u for u in self.entries if u not in snap['seen']]
        for u in gone:
            del self.entries[u]
        self.snapshot = None
        log('run %d: snapshot complete: %d entries, %d dropped' % (run['n'], len(self.entries), len(gone)))
        self._changed()

    def _apply(self, t, seq, msg):
        """Apply one event so that the result does not depend on the order in
        which events of different connections arrive (see the docstring)."""
        if not isinstance(seq, int):
            log('warning: %s without seq ignored' % t)
            return
        try:
            u = msg['uuid']
            clk = self.clock.setdefault(u, [0, 0, 0])
            seen = self.snapshot['seen'] if self.snapshot is not None else None
            if t == 'delete':
                if seq < clk[0] or seq < clk[1]:
                    return          # it came back later (re-entered the scope)
                self.entries.pop(u, None)
                clk[2] = seq
                if seen is not None:
                    seen.discard(u)
                self._changed()
                return
            if clk[2] > seq:
                return              # deleted by a newer event already applied
            e = self.entries.get(u)
            if e is None:
                e = self.entries[u] = {'dn': None, 'attrs': None}
            if t in ('add', 'modify') and seq > clk[1]:
                e['attrs'] = json_attrs(msg['attrs'] if t == 'add' else msg['new'])
                clk[1] = seq
            if seq > clk[0]:
                e['dn'] = msg['dn']
                clk[0] = seq
            if seen is not None:
                seen.add(u)
            self._changed()
        except (KeyError, TypeError, AttributeError) as err:
            log('warning: malformed %s event (%r) ignored' % (t, err))

    def connection_opened(self, conn):
        with self.lock:
            self.open_conns[conn['accepted']] = conn

    def connection_closed(self, conn, reason):
        with self.lock:
            conn['open'] = False
            self.open_conns.pop(conn['accepted'], None)
            run = conn.get('run')
            if self.verbose or reason != 'eof':
                log('connection %d (worker %s) closed: %s' % (conn['accepted'], conn.get('worker'), reason))
            if run is not None and len(run['conns']) >= run['workers'] and \
                    not any(c['open'] for c in run['conns']):
                complete = len(run['done']) >= run['workers']
                log('run %d ended%s' % (run['n'], '' if complete else ' before its refresh was complete'))
            self.lock.notify_all()

    def runs_ended(self):
        """A run has come, and no connection is open."""
        with self.lock:
            return bool(self.runs) and not self.open_conns

    def stop(self):
        with self.lock:
            self.stopping = True
            self.lock.notify_all()


# ---------------------------------------------------------------- printing

_print_lock = threading.Lock()


def print_event(conn, m):
    """One event, readably, on stdout (called under the directory's lock)."""
    t = m.get('type')
    tag = '[w%s]' % conn.get('worker', '?')
    pad = ' ' * 8
    lines = []
    if t == 'hello':
        lines.append('%s hello: worker %s of %s, %s, ldapfeed %s%s' % (
            tag, m.get('worker'), m.get('workers'), m.get('format'), m.get('version'),
            ', reload: a full snapshot follows' if m.get('reload') else ''))
    elif t == 'refresh_done':
        lines.append('%s #%s refresh_done' % (tag, m.get('seq')))
    elif t == 'add':
        lines.append('%s #%s add %s' % (tag, m.get('seq'), m.get('dn')))
        for name, vals in json_attrs(m.get('attrs')).items():
            lines.append('%s%s: %s' % (pad, name, show_values(vals)))
    elif t == 'modify':
        lines.append('%s #%s modify %s' % (tag, m.get('seq'), m.get('dn')))
        old, new = json_attrs(m.get('old')), json_attrs(m.get('new'))
        for name in m.get('changed') or []:
            lines.append('%s%s: %s -> %s' % (pad, name, show_values(old.get(name)), show_values(new.get(name))))
    elif t == 'rename':
        lines.append('%s #%s rename %s -> %s' % (tag, m.get('seq'), m.get('old_dn'), m.get('dn')))
    elif t == 'delete':
        lines.append('%s #%s delete %s' % (tag, m.get('seq'), m.get('dn')))
    else:
        lines.append('%s %r' % (tag, m))
    with _print_lock:
        sys.stdout.write('\n'.join(lines) + '\n')
        sys.stdout.flush()


# ---------------------------------------------------------------- listening

def listen_address(address, family):
    """ldapfeed's -o syntax to a Listener address and family."""
    if family in (None, 'auto'):
        if address.startswith('['):
            family = 'inet6'
        elif address.startswith('@') or '/' in address:
            family = 'unix'
        else:
            host, sep, port = address.rpartition(':')
            family = 'inet' if sep and host and port.isdigit() else 'unix'
    if family == 'unix':
        return ('\0' + address[1:] if address.startswith('@') else address), 'AF_UNIX'
    host, _, port = address.rpartition(':')
    if not port.isdigit():
        raise SystemExit('consumer: --address %s: want HOST:PORT' % address)
    if family == 'inet6' or host.startswith('['):
        return (host.strip('[]'), int(port)), 'AF_INET6'
    return (host, int(port)), 'AF_INET'


def clear_stale_socket(path):
    """A socket file left by a consumer that died: remove it, but never a
    live one or anything that is not a socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SystemExit('consumer: %s exists and is not a socket' % path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        return
    except OSError:
        return
    finally:
        s.close()
    raise SystemExit('consumer: %s: another consumer is listening there' % path)


def decoder(fmt):
    def decode(data):
        if fmt == 'pickle' or (fmt == 'auto' and data[:1] == b'\x80'):
            return pickle.loads(data)
        return json.loads(data.decode('utf-8'))
    return decode


def serve(directory, conn, info, decode):
    reason = 'eof'
    try:
        while True:
            data = conn.recv_bytes()
            try:
                msg = decode(data)
            except Exception as e:      # a bad payload: say so, keep going
                log('warning: connection %d: undecodable payload (%r)' % (info['accepted'], e))
                continue
            directory.receive(info, msg)
    except EOFError:
        pass
    except OSError as e:
        reason = str(e)
    finally:
        conn.close()
        directory.connection_closed(info, reason)


def accept_loop(listener, directory, decode, done):
    n = 0
    while not done.is_set():
        try:
            conn = listener.accept()
        except AuthenticationError:
            log('warning: a client failed to authenticate (wrong key?)')
            continue
        except (OSError, EOFError) as e:
            if done.is_set():
                return
            log('warning: accept: %s' % e)
            time.sleep(0.1)
            continue
        info = {'accepted': n, 'open': True, 'last_seq': 0}
        n += 1
        directory.connection_opened(info)
        if directory.verbose:
            log('connection %d accepted' % info['accepted'])
        threading.Thread(target=serve, args=(directory, conn, info, decode), daemon=True,
                         name='conn-%d' % info['accepted']).start()


def main(argv=None):
    ap = argparse.ArgumentParser(description='An example ldapfeed consumer: keeps a JSON-lines '
                                 'copy of the directory (see ldapfeed(8)).')
    ap.add_argument('-a', '--address', required=True,
                    help="where to listen, in ldapfeed's -o syntax: a socket path, @abstract, "
                         'HOST:PORT or [V6ADDR]:PORT')
    ap.add_argument('-t', '--family', choices=('auto', 'unix', 'inet', 'inet6'), default='auto',
                    help='address family (default: inferred from the address)')
    ap.add_argument('-k', '--key-file', required=True,
                    help="the shared key: the file's whole contents, as ldapfeed -k reads it")
    ap.add_argument('-o', '--output', metavar='COPY',
                    help='the JSON-lines copy of the directory (read at start, replaced atomically)')
    ap.add_argument('-f', '--format', choices=('auto', 'pickle', 'json'), default='auto',
                    help='payload format (default auto: a pickle starts with 0x80)')
    ap.add_argument('-p', '--print', dest='printing', action='store_true',
                    help='print every event readably on standard output')
    ap.add_argument('--once', action='store_true',
                    help='exit once a run has come and all its connections have closed '
                         '(for ldapfeed --mode refresh)')
    ap.add_argument('--write-delay', type=float, default=0.1, metavar='SECONDS',
                    help='wait this long after a change before writing COPY (default 0.1)')
    ap.add_argument('-v', '--verbose', action='store_true', help='log connections and writes')
    args = ap.parse_args(argv)

    with open(args.key_file, 'rb') as f:
        key = f.read()
    if not key:
        raise SystemExit('consumer: %s is empty' % args.key_file)
    address, family = listen_address(args.address, args.family)
    if family == 'AF_UNIX' and not address.startswith('\0'):
        clear_stale_socket(address)

    directory = Directory(args.output, args.printing, args.verbose, args.write_delay)
    done = threading.Event()

    def on_signal(sig, frame):
        done.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    listener = Listener(address, family=family, authkey=key, backlog=64)
    shown = args.address
    if family in ('AF_INET', 'AF_INET6'):      # the port chosen for :0
        host, port = listener.address[:2]
        shown = ('[%s]:%d' if family == 'AF_INET6' else '%s:%d') % (host, port)
    log('listening on %s' % shown)
    threading.Thread(target=accept_loop, args=(listener, directory, decoder(args.format), done),
                     daemon=True, name='accept').start()
    writer = threading.Thread(target=directory.writer, daemon=True, name='writer')
    writer.start()
    while not done.wait(0.2):
        if args.once and directory.runs_ended():
            break
    done.set()
    try:
        listener.close()        # removes the socket file
    except OSError:
        pass
    directory.stop()
    writer.join(5)
    directory.write()
    with directory.lock:
        if directory.snapshot is not None and args.output:
            log('stopping during a snapshot: %s keeps the state before it' % args.output)
    with directory.lock:
        partial = sum(1 for e in directory.entries.values() if e['attrs'] is None)
    if partial:
        log('warning: %d entries were renamed but never added: not in the copy' % partial)
    log('exiting: %d entries held%s' % (len(directory.entries),
                                          ', %d events of superseded runs ignored' % directory.ignored
                                          if directory.ignored else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
