"""The Lua library wing: what a library is, what loading it does, and hints about its code.

The face is small on purpose. The engine and the reconcile layer need :class:`Library` (name, exact bytes, sha256)
and :func:`vet` (run the load as FUNCTION LOAD would: the functions it registers, and whether it can take a server
down); the CLI's ``lint`` adds :func:`lint`. The static Lua reader under ``_lua`` is private to lint.
"""

from redis_functions_operator.library.failure import Failure, Refused
from redis_functions_operator.library.model import (
    Library,
    LibraryError,
    RegisteredFunction,
    as_bytes,
    code_sha256,
    parse_library,
    parse_shebang,
)
from redis_functions_operator.library.vet import REFUSAL_PREFIX, LoadOutcome, Vetting, vet, vetted

__all__ = [
    "REFUSAL_PREFIX",
    "Failure",
    "Library",
    "LibraryError",
    "LoadOutcome",
    "Refused",
    "RegisteredFunction",
    "Vetting",
    "as_bytes",
    "code_sha256",
    "parse_library",
    "parse_shebang",
    "vet",
    "vetted",
]
