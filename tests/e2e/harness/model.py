"""The model of the consumer's copy of the directory (Model), rebuilt from
the events, and assert_model_equals_server(), which compares it with an
ldapsearch of the server."""

import base64

from .core import _short


def _norm_value(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, str):
        return v.encode('utf-8')
    if isinstance(v, dict) and set(v) == {'base64'}:
        return base64.b64decode(v['base64'])
    raise TypeError('bad attribute value %r' % (v,))


def normalize_attrs(attrs, fold_names=False):
    """ATTRS from an event (pickle bytes or JSON str/{"base64"}) or from
    Slapd.search -> {name: sorted [bytes]}."""
    out = {}
    for name, vals in (attrs or {}).items():
        if not isinstance(vals, (list, tuple)):
            raise TypeError('attribute %r: values must be a list, got %r' % (name, vals))
        key = name.lower() if fold_names else name
        out.setdefault(key, []).extend(_norm_value(v) for v in vals)
    return {k: sorted(v) for k, v in out.items()}


def _group_runs(records):
    """Group connections into daemon runs.  A run is a set of connections whose
    hellos carry distinct worker numbers for the same `workers` count;
    connections are taken in accept order.  Returns [{'conns', 'workers',
    'reload', 'hellos'}]; connections without a hello are left out."""
    first = {}
    for idx, m in records:
        if idx not in first:
            first[idx] = m
    runs, cur = [], None
    for idx in sorted(first):
        m = first[idx]
        if not (isinstance(m, dict) and m.get('type') == 'hello'):
            continue
        w, ws = m.get('worker'), m.get('workers')
        if cur is None or len(cur['conns']) >= cur['workers'] or ws != cur['workers'] or \
                w in cur['seen']:
            cur = {'conns': [], 'workers': ws if isinstance(ws, int) and ws > 0 else 1, 'reload': False,
                   'hellos': [], 'seen': set()}
            runs.append(cur)
        cur['conns'].append(idx)
        cur['seen'].add(w)
        cur['hellos'].append(m)
        cur['reload'] = cur['reload'] or bool(m.get('reload'))
    return runs


class Model:
    """The consumer's copy of the directory, rebuilt from events as
    doc/events.md, "What a consumer does", describes.

    Entries are keyed by uuid.  apply(msg) takes one message; apply_records()
    takes Consumer.records() (connection index, message), groups connections
    into runs by their hellos and applies each run's events in seq order.  A
    run whose hello says reload starts a snapshot; when refresh_done has come
    from every worker, entries not received in the snapshot are dropped.
    `anomalies` lists what a correct feed never produces (modify/rename/delete
    of an unknown uuid, stale old_dn, non-increasing seq...)."""

    def __init__(self):
        self.entries = {}           # uuid -> {'dn': str, 'attrs': {name: [bytes]}}
        self.anomalies = []
        self.swept = []             # (uuid, dn) dropped at the end of a reload snapshot
        self.last_seq = None
        self.applied = 0
        self._snap = None

    @classmethod
    def from_consumer(cls, consumer):
        m = cls()
        m.apply_records(consumer.records())
        return m

    def _anomaly(self, text, msg):
        self.anomalies.append('%s: %s' % (text, _short(msg, 300)))

    def apply_records(self, records):
        runs = _group_runs(records)
        conn_run = {}
        for n, run in enumerate(runs):
            for c in run['conns']:
                conn_run[c] = n
        events = [[] for _ in runs]
        for order, (idx, m) in enumerate(records):
            if idx not in conn_run:
                self._anomaly('message on a connection without a hello', m)
                continue
            if isinstance(m, dict) and m.get('type') == 'hello':
                continue
            events[conn_run[idx]].append((order, idx, m))
        per_conn_seq = {}
        for run, evs in zip(runs, events):
            for h in run['hellos']:
                self.apply(h)
            for _, idx, m in evs:
                s = m.get('seq') if isinstance(m, dict) else None
                if isinstance(s, int):
                    if idx in per_conn_seq and s <= per_conn_seq[idx]:
                        self._anomaly('seq not increasing on connection %d' % idx, m)
                    per_conn_seq[idx] = s

            def key(e):
                m = e[2]
                s = m.get('seq') if isinstance(m, dict) else None
                rd = isinstance(m, dict) and m.get('type') == 'refresh_done'
                return (s if isinstance(s, int) else float('inf'), rd, e[0])
            for _, _, m in sorted(evs, key=key):
                self.apply(m, check_seq=False)
        return self

    def apply(self, msg, check_seq=True):
        if not isinstance(msg, dict):
            self._anomaly('not a dict', msg)
            return
        t = msg.get('type')
        if t == 'hello':
            if msg.get('reload'):
                w = msg.get('worker')
                if self._snap is None or w in self._snap['hellos']:
                    ws = msg.get('workers')
                    self._snap = {'workers': ws if isinstance(ws, int) and ws > 0 else 1,
                                  'hellos': set(), 'done': 0, 'seen': set()}
                self._snap['hellos'].add(w)
            return
        seq = msg.get('seq')
        if t in ('add', 'modify', 'rename', 'delete', 'refresh_done'):
            if not isinstance(seq, int):
                self._anomaly('missing seq', msg)
            elif check_seq and t != 'refresh_done' and self.last_seq is not None and seq <= self.last_seq:
                self._anomaly('seq not increasing', msg)
            if isinstance(seq, int) and t != 'refresh_done':
                self.last_seq = seq
        self.applied += 1
        try:
            getattr(self, '_on_' + t)(msg) if t in ('add', 'modify', 'rename', 'delete', 'refresh_done') \
                else self._anomaly('unknown type', msg)
        except (KeyError, TypeError, ValueError) as e:
            self._anomaly('malformed (%r)' % e, msg)

    def _seen(self, uuid):
        if self._snap is not None:
            self._snap['seen'].add(uuid)

    def _on_add(self, m):
        self.entries[m['uuid']] = {'dn': m['dn'], 'attrs': normalize_attrs(m['attrs'])}
        self._seen(m['uuid'])

    def _on_modify(self, m):
        u = m['uuid']
        new = normalize_attrs(m['new'])
        e = self.entries.get(u)
        if e is None:
            self._anomaly('modify of an unknown uuid', m)
        else:
            if normalize_attrs(m['old']) != e['attrs']:
                self._anomaly('modify: old differs from the model', m)
            changed = sorted(k for k in set(new) | set(e['attrs']) if new.get(k) != e['attrs'].get(k))
            if 'changed' in m and sorted(m['changed']) != changed:
                self._anomaly('modify: changed=%r, expected %r' % (m['changed'], changed), m)
        self.entries[u] = {'dn': m['dn'], 'attrs': new}
        self._seen(u)

    def _on_rename(self, m):
        u = m['uuid']
        e = self.entries.get(u)
        if e is None:
            self._anomaly('rename of an unknown uuid', m)
            return
        if e['dn'] != m['old_dn']:
            self._anomaly('rename: old_dn %r but the model has %r' % (m['old_dn'], e['dn']), m)
        e['dn'] = m['dn']
        self._seen(u)

    def _on_delete(self, m):
        u = m['uuid']
        if self.entries.pop(u, None) is None:
            self._anomaly('delete of an unknown uuid', m)
        if self._snap is not None:
            self._snap['seen'].discard(u)

    def _on_refresh_done(self, m):
        if self._snap is None:
            return
        self._snap['done'] += 1
        if self._snap['done'] >= self._snap['workers']:
            seen = self._snap['seen']
            for u in [u for u in self.entries if u not in seen]:
                self.swept.append((u, self.entries.pop(u)['dn']))
            self._snap = None

    def as_dict(self, fold_names=False):
        """{dn: {attr: sorted [bytes]}}."""
        out = {}
        for u, e in self.entries.items():
            if e['dn'] in out:
                self.anomalies.append('two uuids share the DN %r' % e['dn'])
            out[e['dn']] = {(k.lower() if fold_names else k): list(v) for k, v in e['attrs'].items()}
        return out

    def uuid_of(self, dn):
        for u, e in self.entries.items():
            if e['dn'] == dn:
                return u
        return None

    def dn_of(self, uuid):
        e = self.entries.get(uuid)
        return e and e['dn']


def _fmt_vals(vals, limit=3):
    shown = [_short(v, 80) for v in vals[:limit]]
    if len(vals) > limit:
        shown.append('... (%d values)' % len(vals))
    return '[' + ', '.join(shown) + ']'


def assert_model_equals_server(model, slapd, base=None, filt='(objectClass=*)', attrs=None, scope='sub',
                               bind='root', fold_dn=False, max_lines=60):
    """Compare the model (a Model or an as_dict()) with ldapsearch of the same
    base/scope/filter/attrs, bound as `bind` (use the daemon's identity,
    Daemon.bind: an anonymous daemon never sees userPassword); attribute
    names compare case-insensitively.  Raises AssertionError with a readable
    diff."""
    mine = model.as_dict() if isinstance(model, Model) else model
    theirs = slapd.search(base, scope, filt, attrs, bind=bind)

    def norm(d):
        out = {}
        for dn, a in d.items():
            out[dn.lower() if fold_dn else dn] = normalize_attrs(a, fold_names=True)
        return out
    a, b = norm(mine), norm(theirs)
    if a == b:
        return
    lines = ['model (%d entries) differs from the server (%d entries) for base=%s scope=%s filter=%s attrs=%s:'
             % (len(a), len(b), base or slapd.suffix, scope, filt, attrs)]
    for dn in sorted(set(a) - set(b)):
        lines.append('  only in model:  %s' % dn)
    for dn in sorted(set(b) - set(a)):
        lines.append('  only on server: %s' % dn)
    for dn in sorted(set(a) & set(b)):
        if a[dn] == b[dn]:
            continue
        lines.append('  differs: %s' % dn)
        for k in sorted(set(a[dn]) | set(b[dn])):
            va, vb = a[dn].get(k), b[dn].get(k)
            if va != vb:
                lines.append('    %s: model=%s server=%s' % (k, _fmt_vals(va) if va is not None else '-',
                                                             _fmt_vals(vb) if vb is not None else '-'))
    if len(lines) > max_lines:
        lines = lines[:max_lines] + ['  ... %d more lines' % (len(lines) - max_lines)]
    if isinstance(model, Model) and model.anomalies:
        lines.append('model anomalies: %s' % '; '.join(model.anomalies[:10]))
    raise AssertionError('\n'.join(lines))
