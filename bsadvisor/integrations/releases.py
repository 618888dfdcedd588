"""The one test of a framework release an integration was written against (its loop internals are that release's)."""
from __future__ import annotations

import re

from bsadvisor.core.errors import UserError


def requirement(package: str, tested: tuple[int, int]) -> str:
    """The pip requirement for the tested MAJOR.MINOR series: ``package>=M.m,<M.(m+1)``."""
    return f"{package}>={tested[0]}.{tested[1]},<{tested[0]}.{tested[1] + 1}"


def check_release(version: str, tested: tuple[int, int], message: str) -> None:
    """A UserError with ``message`` unless ``version`` is in the ``tested`` MAJOR.MINOR series."""
    found = re.match(r"(\d+)\.(\d+)", str(version))
    if found is None or (int(found.group(1)), int(found.group(2))) != tested:
        raise UserError(message)
