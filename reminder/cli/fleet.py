"""``reminder fleet``: publish and sync signed bundles."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group()
def fleet() -> None:
    """Publish bundles to a signed (TUF) repository; sync, roll back and inspect devices."""


@fleet.command("init")
@click.option("--repo", type=click.Path(path_type=Path), required=True, help="Repository folder to create.")
def fleet_init(repo: Path) -> None:
    """Create the four role keys and signed metadata; print the root devices must trust."""
    from reminder.fleet import init_repository

    root = init_repository(repo)
    click.echo(f"repository in {repo}; give devices {root} as --trusted-root, and keep {repo / 'keys' / 'root.pem'} "
               f"offline")


@fleet.command("publish")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--repo", type=click.Path(path_type=Path), required=True)
@click.option("--channel", default="stable", show_default=True)
def fleet_publish(bundle: Path, repo: Path, channel: str) -> None:
    """Add a bundle (folder or .tar) to a channel as its newest version."""
    from reminder.fleet import publish

    publish(repo, bundle, channel=channel, log=click.echo)


@fleet.command("resign")
@click.option("--repo", type=click.Path(path_type=Path), required=True)
def fleet_resign(repo: Path) -> None:
    """Sign a fresh timestamp (daily, when nothing is published, so devices do not refuse it as expired)."""
    from reminder.fleet import resign_timestamp

    resign_timestamp(repo, log=click.echo)


@fleet.command("sync")
@click.option("--url", required=True, help="Base URL of the repository (serving metadata/ and targets/).")
@click.option("--trusted-root", type=click.Path(path_type=Path), default=None,
              help="The repository's root.json, obtained out of band (needed on the first sync).")
@click.option("--install-dir", type=click.Path(path_type=Path), required=True)
@click.option("--channel", default="stable", show_default=True)
@click.option("--keep", type=int, default=3, show_default=True, help="Installed versions kept for rollback.")
@click.option("--watch", type=float, default=None, metavar="SECONDS", help="Sync again every SECONDS.")
def fleet_sync(url, trusted_root, install_dir, channel, keep, watch) -> None:
    """Fetch, verify, smoke-test and install the channel's newest bundle; switch atomically."""
    from reminder import fleet as fleet_module

    options = dict(url=url, trusted_root=trusted_root, channel=channel, keep=keep, log=click.echo)
    if watch:
        fleet_module.watch(install_dir, every=watch, **options)
    else:
        fleet_module.sync(install_dir, **options)


@fleet.command("rollback")
@click.option("--install-dir", type=click.Path(path_type=Path), required=True)
def fleet_rollback(install_dir: Path) -> None:
    """Switch back to the previous installed version (the abandoned one is not reinstalled)."""
    from reminder.fleet import rollback

    rollback(install_dir, log=click.echo)


@fleet.command("status")
@click.option("--install-dir", type=click.Path(path_type=Path), required=True)
@click.option("--json", "as_json", is_flag=True)
def fleet_status(install_dir: Path, as_json: bool) -> None:
    """Installed and previous versions, and the last sync's time and result."""
    from reminder.fleet import read_status

    status = read_status(install_dir)
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    last = status.get("last_sync") or {}
    click.echo(f"installed: {status.get('installed') or 'nothing'} (channel {status.get('channel', '-')})")
    click.echo(f"previous: {', '.join(status.get('previous', [])) or 'none'}")
    click.echo(f"refused: {', '.join(status.get('refused', [])) or 'none'}")
    click.echo(f"last sync: {last.get('time', 'never')} {last.get('result', '')} {last.get('error', '')}".rstrip())
