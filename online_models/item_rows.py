"""The item side of an owner-split learner held in one process: dense rows, one per item.

:class:`ItemRows` is a mixin for learners (``mf.OwnerSplitMF``, ``implicit.ImplicitMF``) that keep
every item's bias and factors in two growing arrays, rows in first-seen order, so scoring all items
is one matrix-vector product. The learner says what a new item starts from (:meth:`_initial_item`).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

import numpy as np

from online_models.base import ItemId, UserId
from online_models.mf_params import STATE_FLOAT, ItemParams, UserParams, Vector

__all__ = ["ItemRows"]

_COUNT = struct.Struct("<I")
_KEY_LEN = struct.Struct("<H")


def _pack_key(key: str) -> bytes:
    raw = key.encode()
    return _KEY_LEN.pack(len(raw)) + raw


def _unpack_keys(data: bytes, offset: int) -> tuple[list[str], int]:
    (n,) = _COUNT.unpack_from(data, offset)
    offset += _COUNT.size
    keys = []
    for _ in range(n):
        (size,) = _KEY_LEN.unpack_from(data, offset)
        offset += _KEY_LEN.size
        keys.append(data[offset : offset + size].decode())
        offset += size
    return keys, offset


def _unpack_matrix(data: bytes, offset: int, rows: int, cols: int) -> tuple[Vector, Vector, int]:
    biases = np.frombuffer(data, STATE_FLOAT, rows, offset).astype(np.float64)
    offset += 8 * rows
    factors = np.frombuffer(data, STATE_FLOAT, rows * cols, offset).astype(np.float64).reshape(rows, cols)
    return biases, factors, offset + 8 * rows * cols


class ItemRows:
    """Items' biases and factors by row (``_item_rows`` maps an item to its row)."""

    _item_rows: dict[ItemId, int]
    _item_keys: list[ItemId]
    _item_biases: Vector
    _item_factors: Vector

    def _init_items(self, n_factors: int) -> None:
        self._item_rows = {}
        self._item_keys = []
        self._item_biases = np.zeros(16)
        self._item_factors = np.zeros((16, n_factors))

    def _initial_item(self, item: ItemId) -> ItemParams:
        raise NotImplementedError

    @property
    def item_index(self) -> Mapping[ItemId, int]:
        """Row of every known item (rows of ``scores_all``)."""
        return self._item_rows

    @property
    def item_keys(self) -> Sequence[ItemId]:
        """Known items in row order."""
        return self._item_keys

    def item_params(self, item: ItemId) -> ItemParams:
        """The item's parameters (a copy), or its initial ones if never seen."""
        row = self._item_rows.get(item)
        if row is None:
            return self._initial_item(item)
        return ItemParams(float(self._item_biases[row]), self._item_factors[row].copy())

    def _item_row(self, item: ItemId) -> int:
        """The item's row, appended with its initial parameters when new (the arrays double when full)."""
        row = self._item_rows.get(item)
        if row is not None:
            return row
        row = len(self._item_keys)
        if row == len(self._item_biases):
            grow = max(row, 16)
            self._item_biases = np.concatenate([self._item_biases, np.zeros(grow)])
            self._item_factors = np.concatenate([self._item_factors, np.zeros((grow, self._item_factors.shape[1]))])
        init = self._initial_item(item)
        self._item_biases[row], self._item_factors[row] = init.bias, init.factors
        self._item_rows[item] = row
        self._item_keys.append(item)
        return row

    def _params(self, row: int) -> ItemParams:
        return ItemParams(float(self._item_biases[row]), self._item_factors[row])

    def _store(self, row: int, params: ItemParams) -> None:
        self._item_biases[row], self._item_factors[row] = params.bias, params.factors

    def _pack_parameters(self, users: Mapping[UserId, UserParams]) -> bytes:
        """Users, then items: each as a key list and raw float64 arrays (biases, factors)."""
        params, n_items, k = list(users.values()), len(self._item_keys), self._item_factors.shape[1]
        return b"".join((
            _COUNT.pack(len(params)),
            *map(_pack_key, users),
            np.array([u.bias for u in params], dtype=STATE_FLOAT).tobytes(),
            np.array([u.factors for u in params], dtype=STATE_FLOAT).reshape(len(params), k).tobytes(),
            _COUNT.pack(n_items),
            *map(_pack_key, self._item_keys),
            self._item_biases[:n_items].astype(STATE_FLOAT).tobytes(),
            self._item_factors[:n_items].astype(STATE_FLOAT).tobytes(),
        ))

    def _unpack_parameters(self, data: bytes, offset: int, n_factors: int) -> dict[UserId, UserParams]:
        """Inverse of :meth:`_pack_parameters` from ``offset`` to the end: the items restored, the users returned."""
        user_keys, offset = _unpack_keys(data, offset)
        biases, factors, offset = _unpack_matrix(data, offset, len(user_keys), n_factors)
        users = {key: UserParams(float(b), f) for key, b, f in zip(user_keys, biases, factors, strict=True)}
        item_keys, offset = _unpack_keys(data, offset)
        biases, factors, offset = _unpack_matrix(data, offset, len(item_keys), n_factors)
        if offset != len(data):
            raise ValueError(f"{len(data) - offset} trailing bytes after {type(self).__name__} state")
        self._item_keys = item_keys
        self._item_rows = {key: row for row, key in enumerate(item_keys)}
        self._item_biases, self._item_factors = biases, factors
        return users
