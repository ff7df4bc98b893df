"""Board support: one module per board on amaranth-boards platforms, and the build command.

``python -m boards build BOARD`` builds a bitstream with the YoWASP tools (``docs/boards.md``).
:data:`BOARDS` maps each board's name to its :class:`~boards.common.Board`.
"""

from __future__ import annotations

from .common import Board

__all__ = ["BOARDS", "get_board"]


def _boards() -> dict[str, Board]:
    from . import icebreaker, ulx3s
    return {b.name: b for b in (ulx3s.BOARD, icebreaker.BOARD)}


#: Board name -> :class:`~boards.common.Board`.
BOARDS: dict[str, Board] = _boards()


def get_board(name: str) -> Board:
    """The named board; a wrong name lists the valid ones."""
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"Unknown board {name!r}; expected one of "
                         f"{', '.join(sorted(BOARDS))}") from None
