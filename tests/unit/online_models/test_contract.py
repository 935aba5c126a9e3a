"""The learner contract (see online_models/base.py), run on every concrete Learner subclass."""

from __future__ import annotations

import copy
import json

import pytest

from online_models.base import Learner
from tests.unit.online_models.contract_support import (
    SNAPSHOT_SEED,
    close,
    learner_classes,
    run,
    snapshot_paths,
)

LEARNERS = learner_classes()


@pytest.fixture(params=LEARNERS, ids=lambda cls: cls.__name__)
def cls(request: pytest.FixtureRequest) -> type[Learner]:
    return request.param  # type: ignore[no-any-return]


def test_discovers_learners() -> None:
    assert {"OwnerSplitMF", "DecayedPopularity"} <= {c.__name__ for c in LEARNERS}


def test_inputs_are_not_mutated(cls: type[Learner]) -> None:
    case = cls._contract_case(1)
    stream_before = copy.deepcopy(list(case.stream))
    for event in case.stream:
        before = copy.deepcopy(event)
        case.observe(case.learner, event)
        assert event == before
    assert list(case.stream) == stream_before


def test_state_bytes_round_trip(cls: type[Learner]) -> None:
    case = cls._contract_case(2)
    half = len(case.stream) // 2
    run(case, stop=half)
    blob = case.learner.to_bytes()
    restored = cls.from_bytes(blob)
    assert type(restored) is cls
    assert restored.to_bytes() == blob
    assert run(case, restored, start=half) == run(case, start=half)
    assert restored.to_bytes() == case.learner.to_bytes()


def test_same_seed_same_outputs(cls: type[Learner]) -> None:
    a, b = cls._contract_case(3), cls._contract_case(3)
    assert run(a) == run(b)
    assert a.learner.to_bytes() == b.learner.to_bytes()


def test_clone_is_fresh(cls: type[Learner]) -> None:
    case = cls._contract_case(4)
    run(case)
    learned_state = case.learner.to_bytes()
    clone = case.learner.clone()
    fresh = cls._contract_case(4)
    assert type(clone) is cls and clone is not case.learner
    assert clone.to_bytes() == fresh.learner.to_bytes()  # same hyperparameters, nothing learned
    assert run(case, clone) == run(fresh)
    assert case.learner.to_bytes() == learned_state  # the clone shares no state


def test_snapshot_from_pinned_river_loads(cls: type[Learner]) -> None:
    bin_path, json_path = snapshot_paths(cls)
    if not bin_path.exists():
        command = f"python -m tests.unit.online_models.make_snapshots {cls.__name__}"
        pytest.fail(f"no snapshot {bin_path.name}: run `{command}` with the pinned River")
    blob = bin_path.read_bytes()
    meta = json.loads(json_path.read_text())
    restored = cls.from_bytes(blob)
    assert restored.to_bytes() == blob
    case = cls._contract_case(SNAPSHOT_SEED)
    assert meta["seed"] == SNAPSHOT_SEED
    assert close(run(case, restored, start=meta["split"]), meta["outputs_after_split"])
