"""The exceptions the CLI turns into one-line messages, by whose problem it is:

- ``ReminderError``: bad input (a missing folder, a bad value in a file, an impossible setting);
- ``LocalError``: this machine, not the input (a full disk, a read-only folder, a missing
  dependency): trying again after fixing the machine can succeed, and the fleet never
  refuses a version for it;
- ``IntegrityError``: content that is not what it claims (a hash mismatch, a tampered file).
"""


class ReminderError(ValueError):
    """Bad input from the user: a missing folder, a bad value in a file, an impossible setting.

    The message names the file, folder or value and fits on one line.
    """


class LocalError(ReminderError):
    """A failure of this machine, not of the input: a full disk, a read-only folder. The
    fleet never refuses a version for it; the next attempt may succeed."""


class MissingDependency(LocalError):
    """An optional package this work needs is not installed; the message says what to install."""


class IntegrityError(ReminderError):
    """Content that does not match what vouches for it (a manifest's hash, a signature)."""
