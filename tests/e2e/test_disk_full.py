"""A full disk under the store (doc/safety.md, "A full disk"; ldapfeed.8, EXIT
STATUS): a lab slapd, ldapfeed, a Python Listener, and the data directory on
a small tmpfs that the test mounts (as root; skipped otherwise).

Filled during a full load and during persist, the store's commit fails:
the run ends with 70 and an error that says the disk is full, the consumer
holds nothing the store does not (events go out only after the commit
that stores them), and the next start, with room, reloads and delivers
everything.
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F403
import harness  # noqa: E402
from test_conformance import StrictModel, check_model, feed, lab, stop_clean, wait_run  # noqa: E402


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

    def _teardown(self):
        subprocess.run(['umount', '-l', self.path], capture_output=True)


def stored_uuids(datadir):
    r = subprocess.run(['mdb_dump', '-s', 'entries', datadir], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    data = lines[lines.index('HEADER=END') + 1:lines.index('DATA=END')]
    keys = [bytes.fromhex(x.strip()) for x in data[0::2]]
    return {'%s-%s-%s-%s-%s' % (k.hex()[:8], k.hex()[8:12], k.hex()[12:16], k.hex()[16:20], k.hex()[20:])
            for k in keys}


def full_stop(d, con):
    rc = d.wait(60)
    err = d.stderr()
    assert rc == 70, 'exit %s:\n%s' % (rc, err[-2000:])
    assert 'No space left on device' in err and 'disk' in err, err[-2000:]
    assert not d.marker_exists()
    sent = {m['uuid'] for m in con.messages('add')}
    held = stored_uuids(d.datadir)
    assert sent <= held, '%d events for entries the store does not hold' % len(sent - held)
    note('%d adds sent, %d entries stored when the disk filled' % (len(sent), len(held)))
    return sent


def reload_with_room(tmp, fs, s, con, k):
    fs.resize('256m')
    d = feed(tmp, s, con, datadir=os.path.join(fs.path, 'data'))
    wait_run(con, k, timeout=120)
    stop_clean(d)
    check_model(con, s, d)


@test(timeout=300)
def disk_full_during_full_load(tmp):
    # Scenario: 3000 people (about 3 MB of LDIF), the data directory on a 1 MB tmpfs: the full load's store
    # fills the disk.  ldapfeed exits 70 saying the disk is full, without the marker; every add the consumer got
    # is of an entry in the store.  The tmpfs grows to 256 MB; the next start reloads and the consumer's copy
    # equals the server.
    s = lab(tmp, people=())
    s.add_people(3000)
    fs = Tmpfs(os.path.join(tmp, 'small'), '1m')
    con = Consumer(tmp)
    d = feed(tmp, s, con, datadir=os.path.join(fs.path, 'data'))
    full_stop(d, con)
    reload_with_room(tmp, fs, s, con, 1)


@test(timeout=300)
def disk_full_during_persist(tmp):
    # Scenario: 200 people loaded with room to spare on a 4 MB tmpfs; then a file takes all but about 300 KB
    # of it, and 400 people with 4 KB descriptions are added while ldapfeed follows: a commit fails.  ldapfeed
    # exits 70 saying the disk is full, without the marker, and the consumer holds nothing the store does not.
    # With the file gone and room, the next start reloads everything.
    s = lab(tmp, people=())
    s.add_people(200)
    fs = Tmpfs(os.path.join(tmp, 'small'), '4m')
    con = Consumer(tmp)
    d = feed(tmp, s, con, datadir=os.path.join(fs.path, 'data'))
    wait_run(con, 0)
    st = os.statvfs(fs.path)
    filler = os.path.join(tmp, 'small', 'filler')
    with open(filler, 'wb') as f:
        f.write(b'\0' * max(0, st.f_bavail * st.f_frsize - 300 * 1024))
    s.add_people(400, start=1000, extra=lambda i: {'description': 'x' * 4096})
    full_stop(d, con)
    os.unlink(filler)
    reload_with_room(tmp, fs, s, con, 1)


if __name__ == '__main__':
    main()
