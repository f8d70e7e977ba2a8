"""Progress bars for long work (calibration, export, benchmarks), quiet when not on a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar on stderr (disabled when stderr is not a terminal)."""
    yield from tqdm(items, desc=description, total=total, disable=not sys.stderr.isatty(), leave=False)
