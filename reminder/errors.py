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


# errnos of a machine that cannot take a write: a full disk or quota, a file-size limit, a
# read-only file system, a folder without write permission
WRITE_ERRNOS = (28, 122, 27, 30, 13)  # ENOSPC, EDQUOT, EFBIG, EROFS, EACCES


def write_failure(error: BaseException, path) -> "LocalError | None":
    """A one-line :class:`LocalError` for a failed write of ``path`` (naming it and the free
    space left there), or None when ``error`` is not one. Writers that are not Python's own
    (safetensors, ONNX) report the OS error in their message: 'No space left', 'os error 28'."""
    import errno as errnos
    import os
    import re
    import shutil

    code = getattr(error, "errno", None)
    if code not in WRITE_ERRNOS:
        found = re.search(r"os error (\d+)|(No space left on device|Disk quota exceeded|File too large|Read-only file "
                          r"system)", str(error))
        if found is None:
            return None
        code = int(found.group(1)) if found.group(1) else {
            "No space left on device": errnos.ENOSPC, "Disk quota exceeded": errnos.EDQUOT,
            "File too large": errnos.EFBIG, "Read-only file system": errnos.EROFS}[found.group(2)]
        if code not in WRITE_ERRNOS:
            return None
    folder = os.path.dirname(os.path.abspath(str(getattr(error, "filename", None) or path))) or "."
    while folder and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    try:
        free = f"{shutil.disk_usage(folder).free / 1e6:.0f} MB free on its disk"
    except OSError:
        free = "free space unknown"
    target = getattr(error, "filename", None) or path
    return LocalError(f"cannot write {target}: {os.strerror(code)} ({free}); nothing was replaced, free some "
                      f"space (or fix the folder) and run the command again")
