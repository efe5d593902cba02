"""On-device update (imports torch): a bundle learns new classes from a few labelled frames.

See :mod:`reminder.update.increment` for the steps, and ``docs/update.md``.
"""

from reminder.update.frames import NewClass, parse_class
from reminder.update.increment import UpdateOptions, UpdateResult, update_bundle
from reminder.update.quality import format_report

__all__ = ["NewClass", "UpdateOptions", "UpdateResult", "format_report", "parse_class", "update_bundle"]
