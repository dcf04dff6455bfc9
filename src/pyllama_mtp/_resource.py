"""One owner of a native pointer: explicit close, context manager, ``__del__`` as a fallback."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from typing_extensions import Self

from .errors import ClosedError


class NativeResource:
    """Base of the classes that own a native handle; subclasses implement :meth:`_free`."""

    _ptr: Any = None
    _kind = "resource"

    def _free(self, ptr: Any) -> None:
        raise NotImplementedError

    @property
    def ptr(self) -> Any:
        """The native handle (raises :class:`ClosedError` after :meth:`close`)."""
        if self._ptr is None:
            raise ClosedError(f"{self._kind} is closed")
        return self._ptr

    def close(self) -> None:
        """Free the native handle. Idempotent."""
        if self._ptr is not None:
            ptr, self._ptr = self._ptr, None
            self._free(ptr)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
