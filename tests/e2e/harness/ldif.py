"""LDIF: writing entries and modifies for ldap-utils (ldif_entry,
ldif_modify), reading ldapsearch -LLL output (parse_ldif), and LdapError,
the failure of an ldap-utils command."""

import base64
import shlex
import urllib.request


class LdapError(AssertionError):
    """An ldap-utils command failed.  .rc is its exit status (the LDAP result
    code for ldapsearch and friends), .stderr its error output."""

    def __init__(self, argv, rc, stderr, stdout=b''):
        self.argv, self.rc, self.stderr, self.stdout = argv, rc, stderr, stdout
        super().__init__('%s exited %d: %s' % (' '.join(shlex.quote(a) for a in _redact(argv)), rc,
                                               stderr.decode('utf-8', 'replace').strip()))


def _redact(argv):
    out, hide = [], False
    for a in argv:
        out.append('***' if hide else a)
        hide = a == '-w'
    return out


def _b(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, int):
        return str(v).encode()
    return str(v).encode('utf-8')


def _ldif_safe(v):
    if not v:
        return True
    if v[0] in b' :<' or v[-1:] == b' ':
        return False
    return all(0 < c < 0x80 and c not in (10, 13) for c in v)


def _ldif_line(attr, value):
    v = _b(value)
    if _ldif_safe(v):
        return b'%s: %s' % (attr.encode(), v)
    return b'%s:: %s' % (attr.encode(), base64.b64encode(v))


def _values(v):
    if isinstance(v, (list, tuple)):
        return list(v)
    return [v]


def ldif_entry(dn, attrs):
    """LDIF (bytes) for one entry; attrs maps name -> value or list of values
    (str, bytes or int); unsafe values are base64-encoded."""
    lines = [_ldif_line('dn', dn)]
    for name, vals in attrs.items():
        if vals is None:
            continue
        lines.extend(_ldif_line(name, v) for v in _values(vals))
    return b'\n'.join(lines) + b'\n\n'


def ldif_modify(dn, changes):
    """LDIF (bytes) for one modify: changes is a list of (op, attr, values)
    with op 'add', 'replace' or 'delete' (values may be empty / None)."""
    lines = [_ldif_line('dn', dn), b'changetype: modify']
    for op, attr, vals in changes:
        lines.append(b'%s: %s' % (op.encode(), attr.encode()))
        lines.extend(_ldif_line(attr, v) for v in ([] if vals is None else _values(vals)))
        lines.append(b'-')
    return b'\n'.join(lines) + b'\n\n'


def parse_ldif(data):
    """Parse ldapsearch -LLL output: {dn: {attr: [bytes, ...]}} with attribute
    names and value order as printed.  Handles folding, `attr:: base64`,
    `dn:: base64` and `attr:< file://` values."""
    if isinstance(data, str):
        data = data.encode('utf-8')
    # unfold: a line starting with one space continues the previous one
    lines = []
    for raw in data.split(b'\n'):
        raw = raw[:-1] if raw.endswith(b'\r') else raw
        if raw.startswith(b' ') and lines and lines[-1] is not None:
            lines[-1] += raw[1:]
        elif raw == b'':
            lines.append(None)
        else:
            lines.append(raw)
    out, dn, attrs = {}, None, None
    for line in lines + [None]:
        if line is None:
            if dn is not None:
                out[dn] = attrs
            dn, attrs = None, None
            continue
        if line.startswith(b'#'):
            continue
        name, sep, rest = line.partition(b':')
        if not sep:
            raise ValueError('bad LDIF line: %r' % line[:200])
        if rest.startswith(b':'):
            value = base64.b64decode(rest[1:].strip())
        elif rest.startswith(b'<'):
            url = rest[1:].strip().decode()
            with urllib.request.urlopen(url) as f:     # file:// in practice
                value = f.read()
        else:
            value = rest[1:] if rest.startswith(b' ') else rest
        key = name.decode('utf-8')
        if dn is None:
            if key.lower() == 'dn':
                dn, attrs = value.decode('utf-8'), {}
            elif key.lower() == 'version':
                continue
            else:
                raise ValueError('LDIF record without dn: %r' % line[:200])
        else:
            attrs.setdefault(key, []).append(value)
    return out
