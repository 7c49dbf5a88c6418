"""One shape for "it failed", shared by every layer: why (a PascalCase ``reason``), what (``message``), where (an
optional 1-based ``line``) and whether retrying can help (``permanent``).

It lives in the library wing, the lowest layer, so that the engine, the reconcile layer, the operator and the CLI
all speak it. The exceptions that refuse something (:class:`LibraryError`, ``SpecError``, ``ResolveError``) carry one
as :attr:`Refused.failure`, built from the same arguments in the same order; the edges (the controller's status,
the CLI's messages and exit codes) turn it into what they show.
"""

import functools
from dataclasses import KW_ONLY, dataclass
from typing import Any


@dataclass(frozen=True)
class Failure:
    """Why something cannot be done: ``reason`` is a PascalCase condition reason, ``message`` says what is wrong,
    ``line`` (1-based) where in a library's code when known; ``permanent`` is False when retrying may help."""

    reason: str
    message: str
    _: KW_ONLY
    line: int | None = None
    permanent: bool = True

    @property
    def located(self) -> str:
        """The message with its line in front, when there is one."""
        return f"line {self.line}: {self.message}" if self.line else self.message


class Refused(Exception):
    """An exception that carries a :class:`Failure`; ``str()`` of it is the message."""

    def __init__(self, reason: str, message: str, *, line: int | None = None, permanent: bool = True) -> None:
        super().__init__(message)
        self.failure = Failure(reason, message, line=line, permanent=permanent)

    def __reduce__(self) -> tuple[Any, ...]:
        """Copies and pickles rebuild the whole failure (``args`` holds only the message)."""
        failure = self.failure
        rebuild = functools.partial(type(self), line=failure.line, permanent=failure.permanent)
        return rebuild, (failure.reason, failure.message)

    @property
    def reason(self) -> str:
        return self.failure.reason

    @property
    def message(self) -> str:
        return self.failure.message

    @property
    def line(self) -> int | None:
        return self.failure.line
