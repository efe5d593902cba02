"""The one exception type for bad input that the CLI turns into a one-line message."""


class ReminderError(ValueError):
    """Bad input from the user: a missing folder, a bad value in a file, an impossible setting.

    The message names the file, folder or value and fits on one line.
    """
