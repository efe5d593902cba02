"""Progress bars that cost nothing when off (tqdm is imported only when one is shown)."""

from __future__ import annotations

from typing import Iterable


def progress(iterable: Iterable, enabled: bool, **options) -> Iterable:
    """``iterable`` wrapped in a tqdm bar when ``enabled`` (``options`` go to tqdm)."""
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, **options)
