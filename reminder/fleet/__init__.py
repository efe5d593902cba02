"""Fleet updates (torch-free): publish signed bundles, and keep devices up to date.

:mod:`reminder.fleet.repository` is the publisher's side (TUF keys, metadata, channels);
:mod:`reminder.fleet.device` is the device's (verify, smoke-test, install, switch, roll
back, status). See ``docs/fleet.md``.
"""

from reminder.fleet.device import rollback, smoke_test, sync, watch
from reminder.fleet.status import read_status
from reminder.fleet.repository import init_repository, publish, resign_timestamp

__all__ = ["init_repository", "publish", "read_status", "resign_timestamp", "rollback", "smoke_test", "sync",
           "watch"]
