"""Write contract snapshots: ``python -m tests.unit.online_models.make_snapshots [ClassName ...]``.

Run it with the pinned River/numpy when a learner's byte layout changes (and bump its
``STATE_VERSION``, keeping old versions readable).
"""

from __future__ import annotations

import sys

from tests.unit.online_models.contract_support import learner_classes, write_snapshot


def main(names: list[str]) -> None:
    for cls in learner_classes():
        if not names or cls.__name__ in names:
            print(write_snapshot(cls))


if __name__ == "__main__":
    main(sys.argv[1:])
