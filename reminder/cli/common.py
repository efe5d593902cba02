"""Option parsing shared by the command groups: the only place that reads user input."""

from __future__ import annotations

import functools
import json

import click

from reminder.errors import LocalError, ReminderError, write_failure


def option_words(message: str, command: click.Command | None, root: click.Command | None = None) -> str:
    """A library message in the CLI's words: the library names its arguments in backticks
    (`max_frames`), and each becomes the option that sets it (``--max-frames``): an option of
    the command that ran, else of any command under ``root``; a name no option sets loses
    its backticks."""
    import re

    own, every = _options(command), _options(root)
    return re.sub(r"`([a-z][a-z0-9_]*)`", lambda m: own.get(m.group(1)) or every.get(m.group(1)) or m.group(1),
                  message)


@functools.lru_cache(maxsize=None)  # every log line is translated: walk each command tree once
def _options(root: click.Command | None) -> dict[str, str]:
    """Argument name (and option name, dashes as underscores) -> the longest flag, for every
    option of ``root`` and the commands under it."""
    found: dict[str, str] = {}
    stack = [root] if root is not None else []
    while stack:
        cmd = stack.pop(0)
        stack.extend(getattr(cmd, "commands", {}).values())
        for param in cmd.params:
            if isinstance(param, click.Option):
                flag = max(param.opts, key=len)
                for key in [param.name] + [o.lstrip("-").replace("-", "_") for o in param.opts]:
                    found.setdefault(key, flag)
    return found


def say(message: str, *, err: bool = False) -> None:
    """Echo a library message (a log line, a warning) in the CLI's words (:func:`option_words`);
    from a worker thread, where click has no context, any command's options name it."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        from reminder.cli import main as root

        click.echo(option_words(message, None, root), err=err)
    else:
        click.echo(option_words(message, ctx.command, ctx.find_root().command), err=err)


def say_err(message: str) -> None:
    say(message, err=True)


class ReminderGroup(click.Group):
    """Turns a :class:`ReminderError` anywhere below into a one-line error in the CLI's words
    (:func:`option_words`) and exit code 2; a :class:`LocalError`, and a write this machine
    could not take (a full disk, a read-only folder: one line naming the file and the free
    space), into exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LocalError as error:  # the machine, not the input: trying again after fixing it can succeed
            click.echo(f"Error: {option_words(str(error), self._invoked(ctx), ctx.find_root().command)}", err=True)
            ctx.exit(1)
        except ReminderError as error:
            click.echo(f"Error: {option_words(str(error), self._invoked(ctx), ctx.find_root().command)}", err=True)
            ctx.exit(2)
        except Exception as error:  # OSError, or a writer's own error type that wraps one
            failure = write_failure(error, getattr(error, "filename", None) or "a file")
            if failure is None:
                raise
            click.echo(f"Error: {failure}", err=True)
            ctx.exit(1)

    def _invoked(self, ctx) -> click.Command | None:
        name = ctx.invoked_subcommand
        return self.commands.get(name) if name else None


def parse_order(value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        return [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise ReminderError(f"class order {value!r} must be comma-separated class ids") from None


def parse_overrides(pairs: tuple[str, ...]) -> dict:
    """``--set key=value`` pairs; values parsed as JSON when they can be (numbers, null, lists)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ReminderError(f"--set {pair!r} must be key=value")
        try:
            overrides[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.replace("-", "_")] = value
    return overrides


def parse_eval_size(value: str | None) -> int | None | str:
    if value is None:
        return None
    if value == "full":
        return "full"
    try:
        return int(value)
    except ValueError:
        raise ReminderError(f"--eval-size must be a number of pixels or 'full', got {value!r}") from None


def parse_size(value: str) -> tuple[int, int]:
    """``512`` -> (512, 512); ``480x640`` -> (480, 640) as HEIGHTxWIDTH."""
    try:
        parts = [int(v) for v in value.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise ReminderError(f"size {value!r} must be N or HEIGHTxWIDTH in pixels, e.g. 512 or 480x640")
    return (parts[0], parts[-1])


def parse_list(value: str, what: str, convert=str) -> list:
    try:
        items = [convert(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise ReminderError(f"{what} {value!r} must be a comma-separated list") from None
    if not items:
        raise ReminderError(f"{what} is empty")
    return items
