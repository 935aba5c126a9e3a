"""``quick_init`` builds what the dataclass's own ``__init__`` builds, for every way of calling it."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.events import Decision, Event, EventType, quick_init

#: The same fields, for the dataclass's own __init__ (Plain) and quick_init's (Quick).
_FIELDS: list[Any] = [("a", int), ("b", str), ("c", float | None, field(default=None)),
                      ("d", dict[str, str], field(default_factory=dict)), ("e", tuple[int, ...], field(default=()))]


def _made(name: str) -> Any:
    made = dataclasses.make_dataclass(name, _FIELDS, frozen=True, slots=True)
    made.__module__ = __name__  # pickle finds it here (make_dataclass's module= is Python 3.12's)
    return made


Plain, Quick = _made("Plain"), quick_init(_made("Quick"))


@dataclass(frozen=True, slots=True)
class Base:
    a: int


@quick_init
@dataclass(frozen=True, slots=True)
class Derived(Base):
    b: str = "x"


def _fields(obj: Any) -> tuple[Any, ...]:
    return tuple(getattr(obj, f.name) for f in dataclasses.fields(obj))


@given(a=st.integers(), b=st.text(max_size=5), c=st.none() | st.floats(allow_nan=False),
       d=st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=3), e=st.tuples(st.integers()),
       given_n=st.integers(2, 5), keywords=st.booleans())
def test_every_call_builds_the_dataclass_s_own_object(a: int, b: str, c: float | None, d: dict[str, str],
                                                      e: tuple[int, ...], given_n: int, keywords: bool) -> None:
    values = {"a": a, "b": b, "c": c, "d": d, "e": e}
    chosen = dict(list(values.items())[:given_n])  # the rest left to defaults and factories
    if keywords:
        quick, plain = Quick(**chosen), Plain(**chosen)
    else:
        quick, plain = Quick(*chosen.values()), Plain(*chosen.values())
    assert _fields(quick) == _fields(plain)


def test_defaults_are_fresh_and_instances_stay_frozen_hashable_and_picklable() -> None:
    one, two = Quick(1, "b"), Quick(1, "b")
    assert one.d is not two.d and one == two and repr(one) == "Quick(a=1, b='b', c=None, d={}, e=())"
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.a = 2  # type: ignore[misc]
    assert hash(Quick(1, "b", e=(1,), d=None)) == hash(Quick(1, "b", e=(1,), d=None))  # type: ignore[arg-type]
    assert pickle.loads(pickle.dumps(Quick(3, "c", 0.5, {"k": "v"}))) == Quick(3, "c", 0.5, {"k": "v"})
    assert _fields(Derived(4)) == (4, "x") and _fields(Derived(4, b="y")) == (4, "y")
    with pytest.raises(TypeError, match="missing"):
        Quick(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected"):
        Quick(1, "b", f=2)  # type: ignore[call-arg]


def test_the_events_keep_their_fields() -> None:
    event = Event("e1", EventType.IMPRESSION, "u1", 5, "a", None, {"k": "v"}, Decision("r", "ts", "a", 0.5))
    assert _fields(event) == ("e1", EventType.IMPRESSION, "u1", 5, "a", None, {"k": "v"},
                              Decision("r", "ts", "a", 0.5), None)
    assert Event(event_id="e", type=EventType.VIEW, user_id="u", event_time_ms=1).context == {}
    assert pickle.loads(pickle.dumps(event)) == event


@pytest.mark.parametrize("options", [{"frozen": False, "slots": True}, {"frozen": True, "slots": False}])
def test_only_frozen_slotted_dataclasses_are_taken(options: dict[str, bool]) -> None:
    with pytest.raises(TypeError, match="quick_init is for"):
        quick_init(dataclass(**options)(type("C", (), {"__annotations__": {"a": "int"}})))


def test_post_init_and_fields_outside_init_are_refused() -> None:
    with pytest.raises(TypeError, match="quick_init is for"):
        @quick_init
        @dataclass(frozen=True, slots=True)
        class WithPostInit:
            a: int

            def __post_init__(self) -> None:
                pass

    with pytest.raises(TypeError, match="quick_init is for"):
        @quick_init
        @dataclass(frozen=True, slots=True)
        class Hidden:
            a: int
            b: int = field(default=0, init=False)
