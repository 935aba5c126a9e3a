"""The archive job's Python function: one record's bytes to its decoded row (``archive/rows.py``), inside Flink.

Kept apart from ``job.py`` so the function Flink pickles carries only what it needs; it loads the
schema registry when Flink opens it (on the TaskManager), not when the job is built.
"""

from __future__ import annotations

import logging
from typing import Any

from pyflink.table import DataTypes
from pyflink.table.udf import FunctionContext, ScalarFunction, UserDefinedScalarFunctionWrapper, udf

from archive.rows import ArchivedKind, RecordDecoder
from config import Settings
from schemas import load_registry

log = logging.getLogger(__name__)

_TYPES = {"BIGINT": DataTypes.BIGINT(), "STRING": DataTypes.STRING(), "DOUBLE": DataTypes.DOUBLE()}
_ITEMS = DataTypes.ARRAY(DataTypes.ROW([DataTypes.FIELD("item_id", DataTypes.STRING()),
                                        DataTypes.FIELD("position", DataTypes.INT()),
                                        DataTypes.FIELD("score", DataTypes.DOUBLE())]))


def row_type(kind: ArchivedKind) -> Any:
    """The function's result: the record's position and bytes, the kind's columns, its hour and the dead letter.

    Position and bytes go through the function so that both branches (files, DLQ) read one
    function call: the planner then computes it once for both instead of once per branch.
    """
    fields = [DataTypes.FIELD(name, _TYPES.get(sql, _ITEMS)) for name, sql in kind.columns]
    return DataTypes.ROW([
        DataTypes.FIELD("partition", DataTypes.INT()), DataTypes.FIELD("offset", DataTypes.BIGINT()),
        DataTypes.FIELD("raw", DataTypes.BYTES()), *fields, DataTypes.FIELD("hour", DataTypes.STRING()),
        DataTypes.FIELD("dead_letter", DataTypes.BYTES())])


class _Decode(ScalarFunction):  # type: ignore[misc]  # pyflink has no type hints
    def __init__(self, kind: ArchivedKind, topic: str, registry_url: str | None) -> None:
        self.kind, self.topic, self.registry_url = kind, topic, registry_url
        # PyFlink's thread mode cannot hand back a null array (its ArrayDataConverter calls tuple(None)):
        # a dead letter's array columns are empty instead.
        self._arrays = [sql.startswith("ARRAY") for _, sql in kind.columns] + [False, False]
        self._decoder: RecordDecoder | None = None
        self._dead_letters: Any = None

    def open(self, function_context: FunctionContext) -> None:
        self._decoder = RecordDecoder(self.kind, self.topic, load_registry(self.registry_url))
        self._dead_letters = function_context.get_metric_group().add_group("pulse").counter("archive_dead_letters")

    def eval(self, raw: bytes, partition: int, offset: int) -> Any:
        from pyflink.common import Row

        assert self._decoder is not None
        values = self._decoder.decode(raw, partition, offset)
        if values[-1] is not None:
            self._dead_letters.inc()
            log.warning("%s[%s]@%s does not decode (%s): sent to the DLQ", self.topic, partition, offset,
                        self._decoder.last_error)
        columns = [[Row(*item) for item in v or ()] if array else v
                   for v, array in zip(values, self._arrays, strict=True)]
        return Row(partition, offset, raw, *columns)


def decode_function(kind: ArchivedKind, topic: str, settings: Settings) -> UserDefinedScalarFunctionWrapper:
    """``decode_<folder>(raw, partition, offset)`` for the archive job's SQL."""
    return udf(_Decode(kind, topic, settings.schema_registry_url), result_type=row_type(kind))
