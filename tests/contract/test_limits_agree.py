"""One source of limits: docs/events.md, streamapp.codec and the stores'
constraints say the same thing."""
import re
from importlib import resources
from pathlib import Path

import pytest

from streamapp import codec

PAGE = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text()


def _migrations() -> str:
    folder = resources.files("streamapp.stores") / "migrations"
    return "\n".join(p.read_text() for p in sorted(folder.iterdir(), key=lambda p: p.name)
                     if p.name.endswith(".sql"))


SQL = _migrations()


@pytest.mark.parametrize("row", codec.limit_rows())
def test_the_limits_table_of_the_page_is_the_codecs(row):
    assert row in PAGE.splitlines(), f"docs/events.md lacks (or has another) row:\n{row}"


def _field_rows(name: str):
    return [line for line in PAGE.splitlines() if line.startswith(f"| `{name}` | ")]


@pytest.mark.parametrize("name", sorted(codec.RANGES))
def test_every_range_on_the_page_is_the_codecs(name):
    """The per-type tables repeat ranges in prose ("1–1,000,000"): same values."""
    low, high = codec.RANGES[name]
    rows = _field_rows(name)
    if name in ("width", "height"):
        rows = [line for line in PAGE.splitlines() if line.startswith("| `artwork` |")]
    assert rows, name
    for line in rows:
        plain = line.replace(",", "").replace("\u2013", "..")
        ranges = re.findall(r"(-?\d+)\.\.(-?\d+)", plain)
        assert ranges and all((int(a), int(b)) == (low, high) for a, b in ranges), line


@pytest.mark.parametrize("name,limit", sorted(codec.MAX_LENGTHS.items()))
def test_every_length_on_the_page_is_the_codecs(name, limit):
    for line in _field_rows(name):
        if "characters" in line:
            assert f"at most {limit:,} characters" in line or f"at most {limit} characters" \
                in line, line


def test_no_store_constraint_is_tighter_than_the_codec():
    """Each CHECK / fixed-width type in the migrations admits every value the
    codec admits: what the contract calls valid is never ``store_refused``."""
    checked = 0
    for column, limit in re.findall(r"length\((\w+)\)\s*<=\s*(\d+)", SQL):
        allowed = codec.MAX_LENGTHS.get(column, codec.MAX_STRING)
        assert allowed <= int(limit), (column, allowed, limit)
        checked += 1
    for column, low, high in re.findall(r"CHECK \((\w+) BETWEEN (-?\d+) AND (-?\d+)\)", SQL):
        c_low, c_high = codec.RANGES[column]
        assert int(low) <= c_low and c_high <= int(high), column
        checked += 1
    from streamapp.audit import _FIELD_NAMES  # every field name of every event
    for column, op, bound in re.findall(r"CHECK \((\w+) (>=|>) (-?\d+)\)", SQL):
        if column not in _FIELD_NAMES:
            continue  # an aggregate (votes, score_sum), not an event's field
        c_low = codec.RANGES[column][0]
        assert c_low >= int(bound) + (op == ">"), column
        checked += 1
    for column, width in re.findall(r"^\s*(\w+)\s+char\((\d+)\)", SQL, re.M):
        pattern = re.compile(codec.PATTERNS[column])
        # a fixed-width pattern of exactly that many characters
        assert re.fullmatch(rf"\[[^\]]+\]\{{{width}\}}", pattern.pattern), column
        checked += 1
    for column, pattern in re.findall(r"CHECK \((\w+) ~ '([^']+)'\)", SQL):
        assert pattern.strip("^$") == codec.PATTERNS.get(column, codec.PATTERNS.get(
            {"key": "key"}.get(column, column))), column
        checked += 1
    for column, prefix in re.findall(r"CHECK \((\w+) LIKE '([^'%]+)%'\)", SQL):
        assert codec.PATTERNS[column].startswith(prefix.replace("\\", "")), column
        checked += 1
    assert checked >= 10  # the parser still finds the constraints


@pytest.mark.parametrize("id_column", ["user_id"])
def test_id_columns_hold_any_contract_id(id_column):
    lengths = re.findall(rf"{id_column}\s+text PRIMARY KEY CHECK \(length\({id_column}\) "
                         rf"BETWEEN (\d+) AND (\d+)\)", SQL)
    assert lengths == [("1", "64")]
    assert codec.ID_PATTERN.endswith("{0,63}")  # 1 + 63 characters
