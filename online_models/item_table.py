"""Item-owned MF parameters held as dense arrays, so one user is scored against every item at once.

The Flink job keeps the authoritative item parameters in state keyed by item; each user-side
subtask holds an :class:`ItemTable` replica. Every row carries a version (how many updates
the owner had applied when it produced the row): a replica takes a row from the owner only
when it is newer than what the replica has, so at parallelism 1 -- where the replica sees
every update first -- the replica is exactly the sequential model.

>>> from online_models.mf import MFConfig, UserParams, GlobalParams, ItemParams
>>> table = ItemTable(MFConfig(n_factors=2))
>>> table.put("a", ItemParams(1.0, np.array([1.0, 0.0])), version=1)
True
>>> table.put("b", ItemParams(0.0, np.array([0.0, 1.0])), version=1)
True
>>> table.top_k(UserParams(0.0, np.array([0.0, 3.0])), GlobalParams(0.5, 1), k=1)
[('b', 3.5)]
>>> table.put("a", ItemParams(9.0, np.zeros(2)), version=1)  # not newer: ignored
False
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

from online_models.mf_params import (
    GlobalParams,
    ItemParams,
    MFConfig,
    UserParams,
    initial_item,
    score_items,
    top_k_rows,
)
from schemas.events import ItemId

__all__ = ["ItemTable"]


class ItemTable:
    """Rows of item bias + factors with a version each; grows by doubling."""

    def __init__(self, cfg: MFConfig, capacity: int = 1024) -> None:
        self.cfg = cfg
        self._rows: dict[ItemId, int] = {}
        self._items: list[ItemId] = []
        self._biases: NDArray[np.float64] = np.zeros(capacity)
        self._factors: NDArray[np.float64] = np.zeros((capacity, cfg.n_factors))
        self._versions: NDArray[np.int64] = np.zeros(capacity, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item: object) -> bool:
        return item in self._rows

    def get(self, item: ItemId) -> ItemParams:
        """The item's parameters (seeded initial ones for an item never seen)."""
        row = self._rows.get(item)
        if row is None:
            return initial_item(self.cfg, item)
        return ItemParams(float(self._biases[row]), self._factors[row].copy())

    def know(self, item: ItemId) -> int:
        """The item's row, appended with its initial parameters (version 0) if it has none yet."""
        row = self._rows.get(item)
        if row is None:
            row = self._append(item)
            initial = initial_item(self.cfg, item)
            self._biases[row], self._factors[row] = initial.bias, initial.factors
        return row

    def row(self, item: ItemId) -> int | None:
        """The item's row, if it has one."""
        return self._rows.get(item)

    def rows_params(self, rows: list[int]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Copies of the biases and factors of ``rows`` (one row each, in order)."""
        return self._biases[rows], self._factors[rows]

    def store_rows(self, rows: list[int], biases: NDArray[np.float64], factors: NDArray[np.float64]) -> None:
        """Store new parameters in existing ``rows`` (each once), one version newer each."""
        self._biases[rows] = biases
        self._factors[rows] = factors
        self._versions[rows] += 1

    def item_at(self, row: int) -> ItemId:
        """The item of ``row``."""
        return self._items[row]

    def version(self, item: ItemId) -> int:
        """How many owner updates the row reflects (0 for an unseen item)."""
        row = self._rows.get(item)
        return 0 if row is None else int(self._versions[row])

    def put(self, item: ItemId, params: ItemParams, version: int) -> bool:
        """Store ``params`` if ``version`` is newer than the row's; True when stored."""
        row = self._rows.get(item)
        if row is None:
            row = self._append(item)
        elif version <= self._versions[row]:
            return False
        self._biases[row] = params.bias
        self._factors[row] = params.factors
        self._versions[row] = version
        return True

    def scores(self, user: UserParams, global_params: GlobalParams) -> NDArray[np.float64]:
        """Predicted target of ``user`` for every item, in row order: one matrix-vector product."""
        n = len(self._items)
        return score_items(user, self._biases[:n], self._factors[:n], global_params)

    def top_k(
        self, user: UserParams, global_params: GlobalParams, k: int, exclude: Iterable[ItemId] = ()
    ) -> list[tuple[ItemId, float]]:
        """The ``k`` best items for ``user``, best first, without ``exclude``."""
        if not self._items:
            return []
        scores = self.scores(user, global_params)
        skip = [self._rows[item] for item in exclude if item in self._rows]
        rows = top_k_rows(scores, k, skip)
        # Python ints and floats made by numpy in one call each, not a numpy scalar per item (k is 50 by default).
        return list(zip(map(self._items.__getitem__, rows.tolist()), scores[rows].tolist(), strict=True))

    def _append(self, item: ItemId) -> int:
        row = len(self._items)
        if row == len(self._biases):
            grow = max(1, row)
            self._biases = np.concatenate([self._biases, np.zeros(grow)])
            self._factors = np.vstack([self._factors, np.zeros((grow, self.cfg.n_factors))])
            self._versions = np.concatenate([self._versions, np.zeros(grow, dtype=np.int64)])
        self._rows[item] = row
        self._items.append(item)
        return row
