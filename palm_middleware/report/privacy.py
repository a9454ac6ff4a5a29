"""Small-group suppression: no number in the report describes fewer than ``k`` users.

A cell counting fewer than ``k`` users is withheld (primary suppression). A withheld cell of a
partition whose total is shown could be recovered by subtraction, so more cells are withheld,
smallest (among equals, last listed) first, until the withheld cells together hold at least
``k`` users (secondary suppression). Empty cells stay visible: "nobody" singles nobody out.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..exceptions import InvalidParameterError

__all__ = ["DEFAULT_MIN_GROUP_SIZE", "check_min_group_size", "suppressed"]

#: Default minimum number of users behind any number the report shows.
DEFAULT_MIN_GROUP_SIZE = 10


def check_min_group_size(k: object) -> int:
    """``k`` as an int >= 1, or a clear error naming the parameter."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidParameterError(f"min_group_size must be an int >= 1; got {k!r}")
    return k


def suppressed(users: Sequence[int], k: int, *, partition: bool = True) -> list[bool]:
    """Which cells to withhold, given the number of distinct users behind each.

    Args:
        users: Users per cell.
        k: Minimum group size.
        partition: The cells split one shown total (secondary suppression applies).

    Returns:
        One flag per cell; True means withhold.

    >>> suppressed([40, 3, 25, 0], 10)
    [False, True, True, False]
    """
    hide = [0 < n < k for n in users]
    if not partition:
        return hide
    hidden = sum(n for n, h in zip(users, hide) if h)
    if 0 < hidden < k:
        # Withhold the smallest visible non-empty cells until the hidden mass reaches k; among
        # equal cells the one listed last (callers list the most telling cells first).
        order = sorted((n, -i) for i, n in enumerate(users) if not hide[i] and n > 0)
        for n, j in order:
            i = -j
            hide[i] = True
            hidden += n
            if hidden >= k:
                break
    return hide
