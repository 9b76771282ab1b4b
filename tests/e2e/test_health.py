"""Health an operator can alert on, and what each event says of itself
(doc/safety.md, "Health figures"; doc/events.md; ldapfeed.8, --status-file
and SIGUSR1): a lab slapd, ldapfeed, a Python Listener.

The status file's figures (lag, the last change's server time, both
connections, bytes sent, the store and its map, the last error with its
text), checked by promtool when it is installed and by a format check
always; the SIGUSR1 lines; and the events' csn (the entry's entryCSN) and a
modify's added and removed values, in pickle and in JSON.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F403
from test_conformance import (  # noqa: E402
    PEOPLE, GROUPS, SUFFIX, csn_time, feed, lab, metric, parse_metrics, read_status, stop_clean,
    wait_cookie_current, wait_run)

def promtool(path):
    # make check puts Debian's promtool into tests/tools/ (scripts/deps, fetch_promtool)
    tool = os.path.join(TOP, 'tests/tools/promtool')
    if not os.access(tool, os.X_OK):
        tool = shutil.which('promtool')
    if tool is None:
        note('promtool not found: the format check above stands alone')
        return
    r = subprocess.run([tool, 'check', 'metrics'], stdin=open(path, 'rb'), capture_output=True)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
        'promtool check metrics:\n%s%s' % (r.stdout.decode(), r.stderr.decode())


def entry_csn(s, dn):
    return s.search(dn, 'base', attrs=['entryCSN'])[dn]['entryCSN'][0].decode()


def usr1_lines(d, since):
    d.signal(signal.SIGUSR1)
    wait_until(lambda: len(re.findall(r'status worker0 pid', d.stderr()[since:])) >= 1, 10, 'the status lines')
    return [ln for ln in d.stderr()[since:].splitlines() if ': status ' in ln]


@test(timeout=120)
def status_file_health(tmp):
    # Scenario: persist, --status-file, two workers.  After the load a person's mail changes: the status file says
    # the last event's server time is that entry's entryCSN time, the lag is 0 (current), LDAP and both consumer
    # connections are up, bytes were sent, the store has a size and a map with pages in use, and no error; promtool
    # finds nothing to say.  SIGUSR1 logs the same in its lines.  Then slapd stops: LDAP down, the lag counts from
    # that change, and the last error carries the lost connection's text, with its time.
    s = lab(tmp)
    con = Consumer(tmp)
    status = os.path.join(tmp, 'ldapfeed.prom')
    d = feed(tmp, s, con, processes=4, extra=['--status-file', status])
    wait_run(con, 0)
    dn = 'uid=alice,' + PEOPLE
    s.replace(dn, 'mail', 'alice@new.example.com')
    wait_cookie_current(s, d)
    want = csn_time(entry_csn(s, dn))
    st = read_status(status, lambda m: abs(metric(m, 'ldapfeed_last_event_timestamp_seconds') - want) < 1e-3)
    assert metric(st, 'ldapfeed_lag_seconds') == 0, metric(st, 'ldapfeed_lag_seconds')
    assert metric(st, 'ldapfeed_ldap_connected') == 1
    for w in ('worker0', 'worker1'):
        assert metric(st, 'ldapfeed_consumer_connected', process=w) == 1
        assert metric(st, 'ldapfeed_last_error_timestamp_seconds', process=w) == 0
    assert sum(metric(st, 'ldapfeed_sent_bytes_total', process=w) for w in ('worker0', 'worker1')) > 1000
    assert metric(st, 'ldapfeed_store_size_bytes') > 0
    assert 0 < metric(st, 'ldapfeed_store_map_used_bytes') < metric(st, 'ldapfeed_store_map_size_bytes')
    assert metric(st, 'ldapfeed_store_map_grows_total') == 0
    assert metric(st, 'ldapfeed_store_entries') == 7
    assert not [k for k in st if k[0] == 'ldapfeed_last_error_info'], 'an error while all is well'
    promtool(status)
    lines = usr1_lines(d, 0)
    reader = [ln for ln in lines if 'status reader' in ln][-1]
    assert 'ldap connected, lag 0 s' in reader and 'map ' in reader, reader
    w0 = [ln for ln in lines if 'status worker0' in ln][-1]
    assert 'consumer connected, sent ' in w0, w0

    s.stop()
    st = read_status(status, lambda m: metric(m, 'ldapfeed_ldap_connected') == 0 and
                     metric(m, 'ldapfeed_last_error_timestamp_seconds', process='reader') > 0)
    errs = [dict(k[1]) for k in st if k[0] == 'ldapfeed_last_error_info']
    assert any(e['process'] == 'reader' and 'LDAP connection lost' in e['message'] for e in errs) or \
        any(e['process'] == 'reader' and 'reconnecting' in e['message'] for e in errs), errs
    assert metric(st, 'ldapfeed_lag_seconds') >= time.time() - want - 5, metric(st, 'ldapfeed_lag_seconds')
    promtool(status)
    since = len(d.stderr())
    reader = [ln for ln in usr1_lines(d, since) if 'status reader' in ln][-1]
    assert 'ldap disconnected' in reader and 'last error' in reader, reader
    s.start()
    stop_clean(d)


def _csn_and_values(tmp, fmt):
    s = lab(tmp, people=('alice', 'bob'))
    group = 'cn=staff,' + GROUPS
    members = ['uid=m%05d,%s' % (i, PEOPLE) for i in range(3000)]
    s.add_entry(group, {'objectClass': 'groupOfNames', 'cn': 'staff', 'member': members})
    con = Consumer(tmp, fmt=fmt)
    d = feed(tmp, s, con, fmt=fmt)
    wait_run(con, 0)
    adds = {m['dn']: m for m in con.messages('add')}
    assert adds[group]['csn'] == entry_csn(s, group), (adds[group].get('csn'), entry_csn(s, group))
    s.modify(ldif_modify(group, [('add', 'member', 'uid=new,' + PEOPLE),
                                 ('delete', 'member', members[1500]),
                                 ('add', 'description', 'the staff')]))
    s.modrdn('uid=bob,' + PEOPLE, 'uid=robert')
    wait_cookie_current(s, d)
    wait_until(lambda: con.messages('rename'), 10, 'the rename')
    mod = [m for m in con.messages('modify') if m['dn'] == group][-1]
    val = (lambda v: v.encode()) if fmt == 'json' else (lambda v: v)

    def values(attrs):
        return {k: [val(x) for x in v] for k, v in attrs.items()}
    assert mod['csn'] == entry_csn(s, group), (mod.get('csn'), entry_csn(s, group))
    assert mod['changed'] == ['description', 'member'], mod['changed']
    assert values(mod['added']) == \
        {'description': [b'the staff'], 'member': [('uid=new,' + PEOPLE).encode()]}, mod['added']
    assert values(mod['removed']) == \
        {'description': [], 'member': [members[1500].encode()]}, mod['removed']
    ren = con.messages('rename')[-1]
    assert ren['csn'] == entry_csn(s, 'uid=robert,' + PEOPLE), ren
    bobmod = [m for m in con.messages('modify') if m['dn'] == 'uid=robert,' + PEOPLE][-1]
    assert values(bobmod['added']) == {'uid': [b'robert']} and values(bobmod['removed']) == {'uid': [b'bob']}, \
        bobmod
    stop_clean(d)


@test(timeout=90)
def events_carry_csn_and_changed_values(tmp):
    # Scenario: pickle; a group of 3000 members.  Its add carries csn, its entryCSN.  One modify adds a member,
    # removes another and adds a description: the modify carries the new entryCSN as csn, changed
    # [description, member], added {description: [the staff], member: [the new one]} and removed
    # {description: [], member: [the one that went]}.  A modrdn of bob to robert: the rename carries csn, and
    # its modify added {uid: [robert]}, removed {uid: [bob]}.
    _csn_and_values(tmp, 'pickle')


@test(timeout=90)
def events_carry_csn_and_changed_values_json(tmp):
    # Scenario: the same in JSON: the same fields, the values as strings.
    _csn_and_values(tmp, 'json')


if __name__ == '__main__':
    main()
