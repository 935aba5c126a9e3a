"""The user side's replica of item-owned parameters: owner snapshots plus this subtask's own updates.

Pure (no Flink): the user stage holds one per subtask. An update this subtask makes to an item
applies to the replica at once and travels to the item's owner numbered ``(sender, seq)``; the
owner's snapshots say, per sender, the last ``seq`` they include (``acks``). A replica row is
*the newest snapshot + this subtask's updates that snapshot does not acknowledge yet*, so a
snapshot never takes back what this subtask learned, and never counts an update twice.

>>> from online_models.mf import ItemParams, MFConfig
>>> import numpy as np
>>> replica = ItemReplica(MFConfig(n_factors=2), subtask=0)
>>> old = replica.items.get("i1")
>>> new = ItemParams(old.bias + 0.5, old.factors)
>>> replica.learned("i1", old, new).seq  # this subtask's first update to i1
1
>>> snapshot = ItemSnapshot("i1", 3, 0, ItemParams(1.0, np.zeros(2)).to_bytes(), acks={})
>>> replica.take(snapshot)  # the owner has not applied seq 1 yet: it is added back
True
>>> replica.items.get("i1").bias
1.5
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from flink_jobs.messages import ItemSnapshot
from online_models.item_table import ItemTable
from online_models.mf import ItemParams, MFConfig
from schemas import ItemId

#: Own updates kept per item until the owner's snapshot includes them; with no snapshots coming
#: (e.g. a bounded run) the oldest are dropped so memory stays bounded.
MAX_UNACKED = 256


#: A learning step over several items at once: their replica rows, old biases and factors, new ones.
Matrix = NDArray[np.float64]
RowsStep = tuple[list[int], Matrix, Matrix, Matrix, Matrix]


class ItemUpdate(NamedTuple):
    """One update this subtask made to an item: its number and the change of bias and factors."""

    seq: int
    d_bias: float
    d_factors: NDArray[np.float64]


@dataclass
class ItemReplica:
    """Item parameters as this user-side subtask sees them (dense, so a user is scored in one product)."""

    mf: MFConfig
    subtask: int
    items: ItemTable = field(init=False)
    snapshot_versions: dict[ItemId, int] = field(default_factory=dict)
    update_seq: dict[ItemId, int] = field(default_factory=dict)
    unacked: dict[ItemId, list[ItemUpdate]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.items = ItemTable(self.mf)

    def take(self, snapshot: ItemSnapshot) -> bool:
        """Replica row := the owner's snapshot + own updates it does not include; False if it is older."""
        item = snapshot.item_id
        if snapshot.version <= self.snapshot_versions.get(item, 0):
            return False  # an older snapshot overtaken on another partition
        self.snapshot_versions[item] = snapshot.version
        acked = snapshot.acks.get(self.subtask, 0)
        pending = [update for update in self.unacked.get(item, ()) if update.seq > acked]
        self.unacked[item] = pending
        params = ItemParams.from_bytes(snapshot.params)
        for update in pending:
            params = ItemParams(params.bias + update.d_bias, params.factors + update.d_factors)
        self.items.put(item, params, self.items.version(item) + 1)
        return True

    def learned_rows(self, rows: list[int], old_biases: Matrix, old_factors: Matrix,
                     new_biases: Matrix, new_factors: Matrix) -> list[ItemUpdate]:
        """:meth:`learned` for several rows (each once) at once; their updates in row order."""
        self.items.store_rows(rows, new_biases, new_factors)
        d_biases, d_factors = (new_biases - old_biases).tolist(), new_factors - old_factors
        updates = []
        for n, row in enumerate(rows):
            item = self.items.item_at(row)
            seq = self.update_seq[item] = self.update_seq.get(item, 0) + 1
            update = ItemUpdate(seq, d_biases[n], d_factors[n])
            updates.append(update)
            self._pending(item, update)
        return updates

    def learned(self, item: ItemId, old: ItemParams, new: ItemParams) -> ItemUpdate:
        """Apply this subtask's update ``old -> new`` of ``item``; the update as the owner gets it."""
        self.items.put(item, new, self.items.version(item) + 1)
        seq = self.update_seq[item] = self.update_seq.get(item, 0) + 1
        update = ItemUpdate(seq, new.bias - old.bias, new.factors - old.factors)
        self._pending(item, update)
        return update

    def _pending(self, item: ItemId, update: ItemUpdate) -> None:
        pending = self.unacked.setdefault(item, [])
        pending.append(update)
        if len(pending) > MAX_UNACKED:
            del pending[: len(pending) - MAX_UNACKED]
