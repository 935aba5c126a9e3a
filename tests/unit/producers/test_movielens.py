from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from producers.sources.movielens import detect_separator, read_movielens
from schemas.codec import EventCodec
from schemas.events import Event, EventType

U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n\n22\t377\t1\t878887116\n"
RATINGS_CSV = "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n"
RATINGS_DAT = "1::1193::5::978300760\n1::661::3::978302109\n"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_u_data(tmp_path: Path) -> None:
    events = list(read_movielens(_write(tmp_path, "u.data", U_DATA)))
    assert events == [
        Event("ml-1", EventType.RATING, "196", 881250949000, "242", 3.0),
        Event("ml-2", EventType.RATING, "186", 891717742000, "302", 3.0),
        Event("ml-4", EventType.RATING, "22", 878887116000, "377", 1.0),
    ]
    assert all(isinstance(e.value, float) and e.context == {} for e in events)


def test_ratings_csv_detected_by_content_not_name(tmp_path: Path) -> None:
    events = list(read_movielens(_write(tmp_path, "whatever.txt", RATINGS_CSV)))
    assert [(e.event_id, e.user_id, e.item_id, e.value, e.event_time_ms) for e in events] == [
        ("ml-2", "1", "31", 2.5, 1260759144000),
        ("ml-3", "1", "1029", 3.0, 1260759179000),
    ]


def test_ratings_dat_and_gzip(tmp_path: Path) -> None:
    path = tmp_path / "ratings.dat.gz"
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write(RATINGS_DAT)
    events = list(read_movielens(path))
    assert [(e.user_id, e.item_id, e.value) for e in events] == [("1", "1193", 5.0), ("1", "661", 3.0)]


def test_csv_with_crlf_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_bytes(RATINGS_CSV.replace("\n", "\r\n").encode())
    assert [e.item_id for e in read_movielens(path)] == ["31", "1029"]


def test_events_pass_the_codec(tmp_path: Path) -> None:
    # ML-1M times (2000-2003); ML-100K's are from 1997-98, which the codec rejects as bad_timestamp.
    codec = EventCodec()
    for e in read_movielens(_write(tmp_path, "ratings.dat", RATINGS_DAT)):
        assert codec.decode(codec.encode(e), now_ms=1_700_000_000_000) == e


def test_missing_file_fails_before_iteration(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.data"):
        read_movielens(tmp_path / "nope.data")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("196\t242\t3\t881250949\n186\t302\t3\n", 2, "expected 4 fields"),
        ("196\t242\tgood\t881250949\n", 1, "rating must be a number"),
        ("196\t242\t3\t8812.5\n", 1, "timestamp whole seconds"),
        ("userId,movieId,rating,timestamp\n1,,2.5,1260759144\n", 2, "empty user/item"),
        ("196\t242\tnan\t881250949\n", 1, "non-finite"),
        ("just some text\n", 1, "not a MovieLens"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = _write(tmp_path, "bad.data", text)
    with pytest.raises(ValueError, match=message) as info:
        list(read_movielens(path))
    assert f"{path}:{line}:" in str(info.value)


def test_detect_separator() -> None:
    assert detect_separator("1::2::3::4") == "::"
    with pytest.raises(ValueError, match="not a MovieLens"):
        detect_separator("1 2 3 4")
