"""End-to-end test harness for ldapfeed: TAP test registration, a lab slapd
(variants V0-V4, defined by the Slapd class; what each variant's syncprov
setting does: doc/syncrepl.md, "Provider settings"), a Python
multiprocessing.connection consumer, a model of the consumer's copy of the
directory, and the daemon.

Python 3 stdlib only.  LDAP is driven with the ldap-utils command-line tools.
Every process a test starts is registered and torn down by pid after the
test, on every path: normal end, failure, a per-test deadline (SIGALRM),
SIGTERM/SIGINT from the runner, interpreter exit; and a watchdog process kills
what is left if this interpreter itself is SIGKILLed.

A test script does `from harness import *` (the names in __all__ below) and,
for the few helpers without a public name, `import harness`.  Where each
part lives:

  core.py      TOP, SLAPD_BIN, TIME_SCALE and scaled(), wait_until(), note(),
               Skip, small text and path helpers
  procs.py     /proc helpers (pid_alive, proc_children, group_members...),
               the watchdog, the teardown stack (register_process,
               terminate_pid): all of the harness's state about processes
  runner.py    @test, main(): the TAP runner, each test's temp dir
  ldif.py      ldif_entry, ldif_modify, parse_ldif, LdapError
  net.py       free_port, TestCA (throwaway TLS certificates), Acceptor
  slapd.py     Slapd, the lab slapd (also used by bench/lab.py and
               scripts/demo), SlapdError, ldap_url
  consumer.py  Consumer, the Listener that records what ldapfeed sends
  model.py     Model, normalize_attrs, assert_model_equals_server
  daemon.py    Daemon (ldapfeed itself), prepared_store, store_snapshot,
               store_info (entries and cookie of a stopped store),
               write_secret, crash_lines

Environment:
  KEEP_TMP=1          keep each test's temp dir and print its path
  LDAPFEED=PATH       the daemon binary (default: ldapfeed at the repo root)
  TEST_WRAP=CMD       a command prefix for every ldapfeed (shlex-split)
  E2E_TIME_SCALE=F    multiply every deadline by F (default 1, 5 with TEST_WRAP)
  E2E_TEST_TIMEOUT=S  per-test deadline in seconds (default 120, scaled)
  SLAPD=PATH          slapd binary (default /usr/sbin/slapd)
"""

# Every public name, and the private ones test scripts use as harness.NAME
# (re-exported: the package answers for what the single module did).
from . import consumer, core, daemon, ldif, model, net, procs, runner, slapd  # noqa: F401
from .consumer import Consumer  # noqa: F401
from .core import (TOP, SLAPD_BIN, SCHEMA_DIR, MODULE_DIR, TIME_SCALE,  # noqa: F401
                   Skip, TestTimeout, note, scaled, wait_until, _short, _tail)
from .daemon import Daemon, ldapfeed_binary, prepared_store, store_snapshot, write_secret  # noqa: F401
from .ldif import LdapError, ldif_entry, ldif_modify, parse_ldif  # noqa: F401
from .model import (Model, assert_model_equals_server, normalize_attrs,  # noqa: F401
                    _fmt_vals, _group_runs, _norm_value)
from .net import Acceptor, TestCA, free_port  # noqa: F401
from .procs import (group_members, instance_procs, pid_alive, proc_children,  # noqa: F401
                    proc_descendants, register_process, terminate_pid, _proc_stat, _register)
from .runner import main, test, _tests  # noqa: F401
from .slapd import VARIANTS, Slapd, SlapdError, ldap_url  # noqa: F401

__all__ = [
    'test', 'main', 'Skip', 'note', 'wait_until', 'scaled', 'TOP',
    'Slapd', 'LdapError', 'SlapdError', 'parse_ldif', 'ldif_entry', 'ldif_modify',
    'Consumer', 'Model', 'assert_model_equals_server', 'normalize_attrs',
    'Daemon', 'ldap_url', 'free_port', 'pid_alive', 'proc_children', 'proc_descendants',
    'group_members', 'register_process', 'terminate_pid', 'instance_procs', 'store_snapshot',
    'write_secret', 'prepared_store', 'TestCA', 'Acceptor', 'store_info', 'crash_lines', 'CRASH_WORDS',
]

_PARTS = (core, procs, runner, ldif, net, slapd, consumer, model, daemon)


def __getattr__(name):
    """Any other name of the parts (harness._spawn, harness._current_tmp...),
    looked up when asked for, so that state a part rebinds is seen as it is
    now."""
    for part in _PARTS:
        try:
            return vars(part)[name]
        except KeyError:
            pass
    raise AttributeError('module %r has no attribute %r' % (__name__, name))
