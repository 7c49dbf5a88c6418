"""The one shape of "it failed" (``library/failure.py``) and the exceptions that carry it."""

import copy
import pickle

import pytest

from redis_functions_operator.k8s.resolve import ResolveError
from redis_functions_operator.library import Failure, LibraryError, Refused, parse_shebang
from redis_functions_operator.reconcile.spec import SpecError, parse_spec


def test_failure_defaults_and_located() -> None:
    failure = Failure("InvalidSpec", "bad")
    assert (failure.line, failure.permanent) == (None, True)
    assert failure.located == "bad"
    assert Failure("UnsafeLibrary", "boom", line=3).located == "line 3: boom"
    with pytest.raises(TypeError):
        Failure("X", "y", 3)  # type: ignore[misc]  # line and permanent are named, never positional


@pytest.mark.parametrize("cls", [Refused, LibraryError, SpecError, ResolveError])
def test_every_refusal_carries_one_failure_in_the_same_order(cls: type[Refused]) -> None:
    error = cls("SomeReason", "what is wrong", line=2, permanent=False)
    assert error.failure == Failure("SomeReason", "what is wrong", line=2, permanent=False)
    assert (error.reason, error.message, error.line) == ("SomeReason", "what is wrong", 2)
    assert str(error) == "what is wrong"
    for twin in (copy.copy(error), pickle.loads(pickle.dumps(error))):
        assert type(twin) is cls
        assert twin.failure == error.failure


def test_the_layers_raise_it() -> None:
    with pytest.raises(LibraryError) as library:
        parse_shebang(b"return 1")
    assert library.value.failure == Failure("InvalidLibrary", "Missing library metadata", line=1)
    with pytest.raises(SpecError) as spec:
        parse_spec({})
    assert spec.value.failure.reason == "InvalidSpec"
    assert spec.value.failure.permanent
