"""What crosses from one stage to the next, defined once and torch-free: the class table
(:mod:`reminder.contracts.classes`). Every room may import this one; it imports only
``reminder.errors``. docs/architecture.md shows who reads and writes each contract."""

from reminder.contracts.classes import VOID_COLOR, ClassTable, check_class_name, decode_colors, distinct_colors

__all__ = ["ClassTable", "VOID_COLOR", "check_class_name", "decode_colors", "distinct_colors"]
