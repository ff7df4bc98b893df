"""ImageNet-1k class labels (the bundled copy of ../shared/labels/synset_words.txt)."""

from __future__ import annotations

import functools
from pathlib import Path

__all__ = ["labels", "wnids", "label", "class_of_filename"]

_FILE = Path(__file__).parent / "data" / "synset_words.txt"


@functools.cache
def _table() -> tuple[tuple[str, ...], tuple[str, ...]]:
    ids, names = [], []
    for line in _FILE.read_text().splitlines():
        wnid, _, name = line.partition(" ")
        ids.append(wnid)
        names.append(name.strip())
    return tuple(ids), tuple(names)


def labels() -> tuple[str, ...]:
    return _table()[1]


def wnids() -> tuple[str, ...]:
    return _table()[0]


def label(index: int) -> str:
    """The short label of class ``index`` (the first name of its synset)."""
    return labels()[index].split(",")[0]


def class_of_filename(name: str) -> int | None:
    """Class index from an ImageNet-style ``<wnid>_<name>.JPEG`` file name, or None."""
    wnid = Path(name).name.split("_")[0]
    try:
        return _index()[wnid]
    except KeyError:
        return None


@functools.cache
def _index() -> dict[str, int]:
    return {w: i for i, w in enumerate(wnids())}
