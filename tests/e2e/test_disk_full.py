"""A full disk under the store (doc/safety.md, "A full disk"; ldapfeed.8, EXIT
STATUS): a lab slapd, ldapfeed, a Python Listener, and the data directory on
a small tmpfs that the test mounts (as root; skipped otherwise).

Filled during a full load, during persist, and during one message's long
work (a subtree rename, whose cascade commits every 2000 steps), a commit
of the store fails: the run ends with 70 and an error that says the disk is
full, the consumer holds nothing the store does not, and the next start,
with room, reloads and delivers everything.

"Holds nothing the store does not" is checked on the store as ldapfeed left
it, read with mdb_dump after the exit: every event delivered has a seq no
higher than the store's committed `seq` (doc/store.md: it is written with
every commit that moves it, in the transaction that holds the events'
changes), and every entry the consumer last saw added or renamed is in the
store under that DN.
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F403
import harness  # noqa: E402
from test_conformance import (  # noqa: E402
    check_model, feed, lab, metric, parse_metrics, read_status, stop_clean, wait_run)


class Tmpfs:
    """A tmpfs of `size` mounted at path, unmounted at teardown."""

    def __init__(self, path, size):
        if os.geteuid() != 0:
            raise Skip('mounting a tmpfs needs root')
        os.makedirs(path)
        r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%s' % size, 'tmpfs', path], capture_output=True)
        if r.returncode != 0:
            raise Skip('cannot mount a tmpfs: %s' % r.stderr.decode().strip())
        self.path = path
        harness._register(self)

    def resize(self, size):
        subprocess.run(['mount', '-o', 'remount,size=%s' % size, self.path], check=True)

    def fill(self, leave=0):
        """A file that takes all the room but `leave` bytes; returns its path."""
        path = os.path.join(self.path, 'filler')
        st = os.statvfs(self.path)
        room = st.f_bavail * st.f_frsize - leave
        with open(path, 'wb') as f:
            try:
                while room > 0:
                    room -= f.write(b'\0' * min(room, 1 << 20))
                    f.flush()
            except OSError:
                pass
        return path

    def _teardown(self):
        subprocess.run(['umount', '-l', self.path], capture_output=True)


def table(datadir, name):
    """{key: value} (bytes) of one of the store's tables, read with mdb_dump."""
    r = subprocess.run(['mdb_dump', '-s', name, datadir], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    data = [bytes.fromhex(x.strip()) for x in lines[lines.index('HEADER=END') + 1:lines.index('DATA=END')]]
    return dict(zip(data[0::2], data[1::2]))


def uuid_text(k):
    h = k.hex()
    return '%s-%s-%s-%s-%s' % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def stored(datadir):
    """The store's committed seq and its entries {uuid: DN}."""
    meta = table(datadir, 'meta')
    seq = int.from_bytes(meta.get(b'seq', bytes(8)), 'little')
    entries = {}
    for k, v in table(datadir, 'entries').items():
        n = int.from_bytes(v[:4], 'little')
        entries[uuid_text(k)] = v[4:4 + n].decode()
    return seq, entries


def full_stop(d, con):
    """The run ended with 70 saying the disk is full, and the consumer holds
    nothing the store does not.  Returns the events delivered."""
    rc = d.wait(60)
    err = d.stderr()
    assert rc == 70, 'exit %s:\n%s' % (rc, err[-2000:])
    assert 'No space left on device' in err and 'disk' in err, err[-2000:]
    assert not d.marker_exists()
    con.wait_closed(timeout=30)         # every event the workers sent is counted
    events = con.messages(('add', 'modify', 'rename', 'delete'))
    seq, entries = stored(d.datadir)
    ahead = [m['seq'] for m in events if m['seq'] > seq]
    assert not ahead, '%d events delivered past the store\'s committed seq %d (seq %d..%d)' % (
        len(ahead), seq, min(ahead), max(ahead))
    last = {}
    for m in events:
        last[m['uuid']] = m
    missing = [m for m in last.values() if m['type'] != 'delete' and entries.get(m['uuid'], '').lower() !=
               m['dn'].lower()]
    assert not missing, '%d entries delivered that the store does not hold so, e.g. %s' % (
        len(missing), missing[0]['dn'])
    note('%d events delivered, the store holds %d entries up to seq %d when the disk filled' %
         (len(events), len(entries), seq))
    return events


def reload_with_room(tmp, fs, s, con, filler=None):
    """With room, the next start reloads and the copy equals the server.
    Its run is the next after those the consumer saw: a run whose first
    commit failed sent nothing, not even its hello."""
    if filler:
        os.unlink(filler)
    fs.resize('256m')
    k = len(con.runs())
    d = feed(tmp, s, con, datadir=os.path.join(fs.path, 'data'))
    wait_run(con, k, timeout=120)
    stop_clean(d)
    check_model(con, s, d)


@test(timeout=300)
def disk_full_during_full_load(tmp):
    # Scenario: 3000 people (about 3 MB of LDIF), the data directory on a 1 MB tmpfs: the full load's store
    # fills the disk.  ldapfeed exits 70 saying the disk is full, without the marker; every event the
    # consumer got is held by the store.  The tmpfs grows to 256 MB; the next start reloads and the
    # consumer's copy equals the server.
    s = lab(tmp, people=())
    s.add_people(3000)
    fs = Tmpfs(os.path.join(tmp, 'small'), '1m')
    con = Consumer(tmp)
    d = feed(tmp, s, con, datadir=os.path.join(fs.path, 'data'))
    full_stop(d, con)
    reload_with_room(tmp, fs, s, con)


@test(timeout=300)
def disk_full_during_persist(tmp):
    # Scenario: 200 people loaded with room to spare on a 4 MB tmpfs, --status-file outside it; the status
    # shows the store's size on disk and its map.  Then a file takes all but about 300 KB of the tmpfs, and
    # 400 people with 4 KB descriptions are added while ldapfeed follows: a commit fails.  ldapfeed exits 70
    # saying the disk is full, without the marker, the consumer holds nothing the store does not, and the
    # status file's last word is the reader's error.  With the file gone and room, the next start reloads
    # everything.
    s = lab(tmp, people=())
    s.add_people(200)
    fs = Tmpfs(os.path.join(tmp, 'small'), '4m')
    con = Consumer(tmp)
    status = os.path.join(tmp, 'ldapfeed.prom')
    d = feed(tmp, s, con, datadir=os.path.join(fs.path, 'data'), extra=['--status-file', status])
    wait_run(con, 0)
    st = read_status(status, lambda m: metric(m, 'ldapfeed_store_entries') >= 200)
    used, size = metric(st, 'ldapfeed_store_map_used_bytes'), metric(st, 'ldapfeed_store_map_size_bytes')
    on_disk = metric(st, 'ldapfeed_store_size_bytes')
    assert 0 < used < size and 0 < on_disk <= 4 << 20, (used, size, on_disk)
    note('before the fill: %d bytes on disk, %d of the %d-byte map used' % (on_disk, used, size))
    filler = fs.fill(leave=300 * 1024)
    s.add_people(400, start=1000, extra=lambda i: {'description': 'x' * 4096})
    full_stop(d, con)
    with open(status) as f:
        st = parse_metrics(f.read())
    errors = [dict(k[1]) for k in st if k[0] == 'ldapfeed_last_error_info' and ('process', 'reader') in k[1]]
    assert errors and 'the disk of the data directory is full' in errors[0]['message'], errors
    reload_with_room(tmp, fs, s, con, filler)


@test(timeout=300)
def disk_full_during_a_cascade(tmp):
    # Scenario: 3000 people under ou=people, loaded on a 32 MB tmpfs; then a file takes all the room left,
    # and ou=people is renamed to ou=staff while ldapfeed follows.  That one message renames 3001 entries,
    # and the reader commits in the middle of it, after 2000 (doc/subtrees.md, "Bounded work per message"):
    # that commit needs new pages and fails.  ldapfeed exits 70 saying the disk is full; none of the renames
    # reached the consumer (they are not in the store).  With the file gone, the next start reloads
    # everything, under ou=staff.
    s = lab(tmp, people=())
    s.add_people(3000)
    fs = Tmpfs(os.path.join(tmp, 'small'), '32m')
    con = Consumer(tmp)
    d = feed(tmp, s, con, datadir=os.path.join(fs.path, 'data'))
    wait_run(con, 0, timeout=120)
    filler = fs.fill()
    s.modrdn('ou=people,' + s.suffix, 'ou=staff')
    events = full_stop(d, con)
    renames = [m for m in events if m['type'] == 'rename']
    assert not renames, '%d renames delivered' % len(renames)
    reload_with_room(tmp, fs, s, con, filler)


if __name__ == '__main__':
    main()
