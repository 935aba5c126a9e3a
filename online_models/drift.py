"""Drift watch: River's Page-Hinkley on the prequential error, ADWIN on the input mix (event-type shares).

* the error (of each prediction made before learning: a squared error, or ``1 - hit`` for a
  ranker): block means divided by a slow moving average of the earlier blocks go to a one-sided
  (``mode="up"``) Page-Hinkley test, so it alarms when the error *rises* by more than its
  tolerance, whatever the error's scale (a learner that improves while it warms up is no alarm).
  ADWIN was tried here first: on the squared errors of a learner still converging it missed a
  swap of every user's tastes in one seed of four (its window mixes the warm-up's high errors
  with the post-change ones), and it alarms both ways;
* the mix: one ADWIN per watched event type on the share of that type in blocks of events;
  a share that moves either way alarms.

Each alarm is a :class:`DriftAlarm` (what moved, from what mean to what, at which event);
:attr:`DriftWatch.last_drift_ms` is the event time of the latest one. The detectors are River
objects: the watch is rebuilt fresh after a restore rather than checkpointed (a re-warm of a
few hundred events costs nothing; a pickled River object would tie state to River's version).

>>> import random
>>> rng, watch = random.Random(1), DriftWatch(types=(EventType.CLICK,))
>>> errors = [rng.random() * (1 if n < 4_000 else 2) for n in range(8_000)]
>>> alarms = [a for n, e in enumerate(errors) for a in watch.observe_error(e, n)]
>>> [a.signal for a in alarms], 4_000 <= alarms[0].n <= 4_200, alarms[0].after > alarms[0].before
(['error'], True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schemas.events import Event, EventType

__all__ = ["DEFAULT_MIX", "DriftAlarm", "DriftWatch"]

#: Event types whose shares are watched unless the caller says otherwise.
DEFAULT_MIX = (EventType.VIEW, EventType.CLICK, EventType.ADD_TO_CART, EventType.PURCHASE, EventType.IMPRESSION)


@dataclass(frozen=True)
class DriftAlarm:
    """A detector saw its mean move from ``before`` (the older values it dropped) to ``after`` (the recent ones).

    ``signal`` is ``"error"`` or ``"mix:<event type>"``.
    """

    signal: str
    n: int
    time_ms: int
    before: float
    after: float

    @property
    def event_time_ms(self) -> int:
        """``time_ms``, under the name the job's messages carry their event time."""
        return self.time_ms


class _BlockDetector:
    """ADWIN on the means of blocks of values (the caller averages each block).

    Far cheaper per value, and block means are near-normal even when the values are 0/1 and
    clustered in sessions.
    """

    def __init__(self, delta: float, clock: int) -> None:
        # Here, not at the top: river.drift's package imports every detector it has (KSWIN's scipy.stats,
        # its datasets' pandas: ~1 s), which `pulse job run` and every import of the job's graph paid.
        from river.drift import ADWIN

        self.adwin = ADWIN(delta=delta, clock=clock)  # type: ignore[no-untyped-call]

    def add_block(self, mean: float) -> tuple[float, float] | None:
        """Add a block's mean; ``(mean of the part ADWIN dropped, of the part it kept)`` when it cut its window."""
        adwin = self.adwin
        width, sum_before = adwin.width + 1, adwin.estimation * adwin.width + mean
        adwin.update(mean)  # type: ignore[no-untyped-call]
        if not adwin.drift_detected or adwin.width >= width:
            return None
        dropped = (sum_before - adwin.estimation * adwin.width) / (width - adwin.width)
        return dropped, adwin.estimation


class _RelativeRise:
    """Page-Hinkley (one-sided, up) on block means divided by a slow moving average of earlier blocks."""

    def __init__(self, block: int, tolerance: float, threshold: float, half_life_blocks: float) -> None:
        self.block, self.total, self.count = block, 0.0, 0
        self.reference: float | None = None
        self.keep = 0.5 ** (1.0 / half_life_blocks)
        from river.drift import PageHinkley  # here: see _BlockDetector

        self.test = PageHinkley(min_instances=30, delta=tolerance, threshold=threshold, mode="up")

    def add(self, value: float) -> tuple[float, float] | None:
        """Add a value; ``(reference mean, latest block mean)`` when the test finds a rise."""
        self.total += value
        self.count += 1
        if self.count < self.block:
            return None
        mean, self.total, self.count = self.total / self.count, 0.0, 0
        reference = self.reference
        if reference is None or reference <= 0.0:
            self.reference = mean
            return None
        self.test.update(mean / reference)  # type: ignore[no-untyped-call]
        self.reference = self.keep * reference + (1.0 - self.keep) * mean
        return (reference, mean) if self.test.drift_detected else None


class DriftWatch:
    """Page-Hinkley on the prequential error's relative rise, ADWIN on the share of each event type.

    Errors are averaged in blocks of ``error_block``; a block mean ``tolerance`` (relative) above
    the reference adds to the test's sum, which alarms past ``threshold``. Event shares are taken
    over blocks of ``mix_block`` events and ADWIN checks for a cut every ``clock`` blocks.
    """

    def __init__(
        self,
        types: Sequence[EventType] = DEFAULT_MIX,
        *,
        error_block: int = 20,
        tolerance: float = 0.1,
        threshold: float = 5.0,
        half_life_blocks: float = 200.0,
        delta: float = 0.002,
        mix_block: int = 10,
        clock: int = 64,
    ) -> None:
        self.types = tuple(types)
        self._error = _RelativeRise(error_block, tolerance, threshold, half_life_blocks)
        self._mix = {kind: _BlockDetector(delta, clock) for kind in self.types}
        self.mix_block = mix_block
        self._block_counts: dict[EventType, int] = {}
        self._in_block = 0
        self.n_errors = 0
        self.n_events = 0
        self.last_drift_ms: int | None = None
        self.alarms: dict[str, int] = {}

    def _alarm(self, signal: str, n: int, time_ms: int, moved: tuple[float, float]) -> DriftAlarm:
        self.alarms[signal] = self.alarms.get(signal, 0) + 1
        self.last_drift_ms = time_ms if self.last_drift_ms is None else max(self.last_drift_ms, time_ms)
        return DriftAlarm(signal, n, time_ms, *moved)

    def observe_error(self, error: float, time_ms: int) -> list[DriftAlarm]:
        """Add one prequential error; an alarm when the error's mean rose."""
        self.n_errors += 1
        moved = self._error.add(error)
        return [] if moved is None else [self._alarm("error", self.n_errors, time_ms, moved)]

    def observe_event(self, event: Event) -> list[DriftAlarm]:
        """Add one event to the type shares; an alarm per share that moved."""
        self.n_events += 1
        counts = self._block_counts
        counts[event.type] = counts.get(event.type, 0) + 1  # one step per event; the detectors per block
        self._in_block += 1
        if self._in_block < self.mix_block:
            return []
        size, self._in_block, self._block_counts = self._in_block, 0, {}
        alarms = []
        for kind, detector in self._mix.items():
            moved = detector.add_block(counts.get(kind, 0) / size)
            if moved is not None:
                alarms.append(self._alarm(f"mix:{kind.value}", self.n_events, event.event_time_ms, moved))
        return alarms
