"""`with thing:` closes the thing on the way out, however the block ends.

One base for the harness's drivers, streams and files, instead of the same `__enter__` /
`__exit__` pair in each.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self


class Closing(ABC):
    """A resource with a `close()` that `with` calls: the link, the session, the file."""

    @abstractmethod
    def close(self) -> None:
        """Release the resource; safe to call more than once."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
