"""The one exception type for bad input that the CLI turns into a one-line message."""


class ReminderError(ValueError):
    """Bad input from the user: a missing folder, a bad value in a file, an impossible setting.

    The message names the file, folder or value and fits on one line.
    """


class LocalError(ReminderError):
    """A failure of this machine, not of the input: a full disk, a read-only folder. The
    fleet never refuses a version for it; the next attempt may succeed."""
