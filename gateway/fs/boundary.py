"""Where failures of the object layer and the grid become filesystem errors.

One table (:func:`fs_error`) and one decorator (:func:`grid_boundary`) on the
filesystem layer's public calls: inside, code lets object errors rise (catching
only those it answers differently, such as a missing child named by its path);
at the boundary they become the errors frontends map to wire codes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from gateway.fs.errors import GridUnavailable, NoSuchFile
from gateway.grid.interfaces import ServerUnavailable
from gateway.objects.dirformat import NoSuchChild
from gateway.objects.errors import NotEnoughShares, ObjectError, UploadUnhappy

P = ParamSpec("P")
R = TypeVar("R")

#: What the object layer and the storage clients raise when the grid fails a request.
GRID_FAILURES = (ObjectError, ServerUnavailable)


def fs_error(error: Exception) -> Exception:
    """The filesystem error a client sees for an object-layer or grid failure."""
    if isinstance(error, NoSuchChild):
        return NoSuchFile(str(error))
    if isinstance(error, ServerUnavailable | NotEnoughShares | UploadUnhappy):
        return GridUnavailable(f"the grid cannot serve this now: {error}")
    return error


def grid_boundary(
    call: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Run an async call of the filesystem layer, raising :func:`fs_error` of any object
    or grid failure that reaches it."""

    @functools.wraps(call)
    async def translated(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await call(*args, **kwargs)
        except GRID_FAILURES as e:
            raise fs_error(e) from None

    return translated
