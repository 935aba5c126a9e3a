"""Discovery of learners and helpers shared by the contract suite and the snapshot writer."""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import json
import math
import pkgutil
from pathlib import Path
from typing import Any

import numpy as np
import river

import online_models
from online_models.base import ContractCase, Learner

SNAPSHOTS = Path(__file__).with_name("snapshots")
SNAPSHOT_SEED = 11


def learner_classes() -> list[type[Learner]]:
    """Every concrete Learner subclass defined in the online_models package."""
    for module in pkgutil.walk_packages(online_models.__path__, "online_models."):
        importlib.import_module(module.name)
    found: dict[str, type[Learner]] = {}
    stack = list(Learner.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if not inspect.isabstract(cls) and cls.__module__.startswith("online_models."):
            found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return [found[name] for name in sorted(found)]


def plain(obj: Any) -> Any:
    """Outputs as JSON-able data, so they compare with == and store in a snapshot."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        return {"__type__": type(obj).__name__, **fields}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, np.ndarray):
        return plain(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot compare output of type {type(obj).__name__}")


def close(a: Any, b: Any, rel: float = 1e-9) -> bool:
    """Equal plain data, floats within ``rel`` (snapshots may cross BLAS builds)."""
    if isinstance(a, float) or isinstance(b, float):
        numbers = isinstance(a, int | float) and isinstance(b, int | float)
        return numbers and math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, rel) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], rel) for k in a)
    return bool(a == b)


def run(case: ContractCase, learner: Learner | None = None, start: int = 0, stop: int | None = None) -> Any:
    """Plain outputs of ``observe`` over ``case.stream[start:stop]``."""
    target = case.learner if learner is None else learner
    return plain([case.observe(target, event) for event in case.stream[start:stop]])


def snapshot_paths(cls: type[Learner]) -> tuple[Path, Path]:
    return SNAPSHOTS / f"{cls.__name__}.bin", SNAPSHOTS / f"{cls.__name__}.json"


def write_snapshot(cls: type[Learner]) -> Path:
    """Learn half the contract stream, store the state bytes and the outputs of the rest."""
    case = cls._contract_case(SNAPSHOT_SEED)
    split = len(case.stream) // 2
    run(case, stop=split)
    blob = case.learner.to_bytes()
    bin_path, json_path = snapshot_paths(cls)
    SNAPSHOTS.mkdir(exist_ok=True)
    bin_path.write_bytes(blob)
    meta = {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "state_version": cls.STATE_VERSION,
        "river": river.__version__,
        "numpy": np.__version__,
        "seed": SNAPSHOT_SEED,
        "split": split,
        "outputs_after_split": run(case, start=split),
    }
    json_path.write_text(json.dumps(meta, indent=1) + "\n")
    return bin_path
