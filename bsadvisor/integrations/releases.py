"""The one test of a framework release an integration was written against (its loop internals are that release's)."""
from __future__ import annotations

import re
from importlib import metadata
from types import ModuleType
from typing import Optional

from bsadvisor.core.errors import UserError


def requirement(package: str, tested: tuple[int, int]) -> str:
    """The pip requirement for the tested MAJOR.MINOR series: ``package>=M.m,<M.(m+1)``."""
    return f"{package}>={tested[0]}.{tested[1]},<{tested[0]}.{tested[1] + 1}"


def check_release(version: str, tested: tuple[int, int], message: str) -> None:
    """A UserError with ``message`` unless ``version`` is in the ``tested`` MAJOR.MINOR series."""
    found = re.match(r"(\d+)\.(\d+)", str(version))
    if found is None or (int(found.group(1)), int(found.group(2))) != tested:
        raise UserError(message)


def installed_version(module: ModuleType, package: str, fix: str) -> str:
    """``module.__version__``, else the version pip installed of ``package``; a UserError ending in ``fix``
    when neither says (a stripped or vendored copy)."""
    version: Optional[str] = getattr(module, "__version__", None)
    if not version:
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            raise UserError(f"cannot tell which {package} is installed ({module.__name__}.__version__ is missing "
                            f"and pip knows no '{package}' package): {fix}") from None
    return str(version)
