"""``reminder fleet``: publish and sync signed bundles."""

from __future__ import annotations

import json
from pathlib import Path

import click

from reminder.cli.common import say, say_err


@click.group()
def fleet() -> None:
    """Publish bundles to a signed (TUF) repository; sync, roll back and inspect devices."""


@fleet.command("init")
@click.option("--repo", type=click.Path(path_type=Path), required=True,
              help="Repository folder to create: serve exactly this folder (it holds nothing secret).")
@click.option("--keys", type=click.Path(path_type=Path), default=None,
              help="Folder of the private keys, outside the served repository (default: REPO.keys beside it).")
def fleet_init(repo: Path, keys: Path | None) -> None:
    """Create the four role keys and signed metadata; print the root devices must trust."""
    from reminder.fleet import init_repository
    from reminder.fleet.repository import keys_folder

    root = init_repository(repo, keys=keys)
    click.echo(f"repository in {repo} (serve this folder); keys in {keys_folder(repo, keys)}; give devices {root} "
               f"as --trusted-root, and keep root.pem offline")


@fleet.command("publish")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--repo", type=click.Path(path_type=Path), required=True)
@click.option("--channel", default="stable", show_default=True)
@click.option("--keys", type=click.Path(path_type=Path), default=None,
              help="Folder of the private keys, outside the served repository (default: REPO.keys beside it).")
@click.option("--reset-classes", is_flag=True,
              help="Devices accept this bundle even though its classes do not extend theirs.")
@click.option("--allow-weak-classes", is_flag=True,
              help="Publish even though a class it adds is not learnt (its IoU under 10).")
def fleet_publish(bundle: Path, repo: Path, channel: str, keys: Path | None, reset_classes: bool,
                  allow_weak_classes: bool) -> None:
    """Add a bundle (folder or .tar) to a channel as its newest version; shows its per-class IoU."""
    from reminder.fleet import publish

    publish(repo, bundle, channel=channel, keys=keys, reset_classes=reset_classes,
            allow_weak_classes=allow_weak_classes, log=say)


@fleet.command("resign")
@click.option("--repo", type=click.Path(path_type=Path), required=True)
@click.option("--keys", type=click.Path(path_type=Path), default=None,
              help="Folder of the private keys, outside the served repository (default: REPO.keys beside it).")
def fleet_resign(repo: Path, keys: Path | None) -> None:
    """Sign a fresh timestamp (daily, when nothing is published, so devices do not refuse it as expired)."""
    from reminder.fleet import resign_timestamp

    resign_timestamp(repo, keys=keys, log=say)


@fleet.command("sync")
@click.option("--url", required=True, help="Base URL of the repository (serving metadata/ and targets/).")
@click.option("--trusted-root", type=click.Path(path_type=Path), default=None,
              help="The repository's root.json, obtained out of band (needed on the first sync).")
@click.option("--install-dir", type=click.Path(path_type=Path), required=True)
@click.option("--channel", default="stable", show_default=True)
@click.option("--keep", type=int, default=3, show_default=True, help="Installed versions kept for rollback.")
@click.option("--watch", type=float, default=None, metavar="SECONDS", help="Sync again every SECONDS.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait for another sync on the same install folder, or stop at once.")
@click.option("--deadline", type=float, default=60.0, show_default=True,
              help="Seconds each download may take, plus its size at --min-rate.")
@click.option("--min-rate", type=float, default=50_000.0, show_default=True, help="Slowest download (bytes/s).")
def fleet_sync(url, trusted_root, install_dir, channel, keep, watch, wait, deadline, min_rate) -> None:
    """Fetch, verify, smoke-test and install the channel's newest bundle; switch atomically."""
    from reminder import fleet as fleet_module

    options = dict(url=url, trusted_root=trusted_root, channel=channel, keep=keep, wait=wait, deadline=deadline,
                   min_rate=min_rate, log=say)
    if watch:
        fleet_module.watch(install_dir, every=watch, **options)
    else:
        fleet_module.sync(install_dir, **options)


@fleet.command("rollback")
@click.option("--install-dir", type=click.Path(path_type=Path), required=True)
def fleet_rollback(install_dir: Path) -> None:
    """Switch back to the previous installed version (the abandoned one is not reinstalled)."""
    from reminder.fleet import rollback

    rollback(install_dir, log=say)


@fleet.command("status")
@click.option("--install-dir", type=click.Path(path_type=Path), required=True)
@click.option("--json", "as_json", is_flag=True)
def fleet_status(install_dir: Path, as_json: bool) -> None:
    """Installed and previous versions, and the last sync's time and result."""
    from reminder.fleet import read_status

    status = read_status(install_dir, log=say_err)
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    last = status.get("last_sync") or {}
    click.echo(f"installed: {status.get('installed') or 'nothing'} (channel {status.get('channel', '-')})")
    click.echo(f"previous: {', '.join(status.get('previous', [])) or 'none'}")
    click.echo(f"refused: {', '.join(status.get('refused', [])) or 'none'}")
    click.echo(f"last sync: {last.get('time', 'never')} {last.get('result', '')} {last.get('error', '')}".rstrip())
