"""``python -m reminder.cli``: the command line."""

from reminder.cli import main

main()
