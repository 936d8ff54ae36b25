"""Segment counting against the published vectors (spec/vectors/segments.json) and spec examples."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from gateway.segments import GSM_BASIC, GSM_EXTENSION, Encoding, SegmentInfo, analyse, count_parts

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "spec" / "vectors" / "segments.json"


class Piece(msgspec.Struct, forbid_unknown_fields=True):
    """One recipe step: literal text, a repeated string, or a slice of a repeating cycle."""

    text: str | None = None
    repeat: str | None = None
    times: int = 0
    cycle: str | None = None
    start: int = 0
    length: int = 0

    def build(self) -> str:
        if self.text is not None:
            return self.text
        if self.repeat is not None:
            return self.repeat * self.times
        assert self.cycle is not None, f"empty piece {self!r}"
        # Enough whole cycles to cover the slice end.
        cycles = (self.start + self.length) // len(self.cycle) + 1
        return (self.cycle * cycles)[self.start : self.start + self.length]


class Case(msgspec.Struct):
    id: str
    input: list[Piece]
    encoding: str
    segments: int
    units: int
    part_units: tuple[int, ...] | None = None

    def text(self) -> str:
        return "".join(piece.build() for piece in self.input)


class Vectors(msgspec.Struct):
    cases: list[Case]


CASES = msgspec.json.decode(VECTORS.read_bytes(), type=Vectors).cases


def test_vector_file_has_every_case() -> None:
    assert len(CASES) == 66
    assert len({case.id for case in CASES}) == 66


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in CASES])
def test_vector(case: Case) -> None:
    info = analyse(case.text())
    assert info.encoding == case.encoding
    assert info.parts == case.segments
    assert count_parts(case.text()) == case.segments
    assert info.units == case.units
    if case.part_units is not None:
        assert info.part_units == case.part_units
    assert sum(info.part_units) == case.units


def test_cycle_piece_starts_at_offset() -> None:
    assert Piece(cycle="1234567890", start=1, length=12).build() == "234567890123"


def test_escape_character_forces_ucs2() -> None:
    assert analyse("abc\x1b") == SegmentInfo(Encoding.UCS2, 4, (4,))


def test_escape_pair_never_straddles_parts() -> None:
    info = analyse("a" * 152 + "\u20ac" + "b" * 152)
    assert info == SegmentInfo(Encoding.GSM7, 306, (152, 153, 1))
    assert info.parts == 3


def test_surrogate_pair_never_straddles_parts() -> None:
    info = analyse("a" * 66 + "\U0001f600" + "b" * 66)
    assert info == SegmentInfo(Encoding.UCS2, 134, (66, 67, 1))


def test_empty_text_is_one_part() -> None:
    assert analyse("") == SegmentInfo(Encoding.GSM7, 0, (0,))
    assert count_parts("") == 1


@pytest.mark.parametrize(
    "text",
    [
        "a" * 160,  # the last length its shortcut takes
        "a" * 161,
        "a" * 159 + "\u20ac",  # an escape pair: 161 septets
        "a" * 80 + "\u0391",  # a Greek look-alike of A: UCS-2
        "a" * 100 + "\x1b",
        "\u00e9" * 160,  # basic-table accents are one septet each
        "\U0001f600" * 36,
    ],
)
def test_count_parts_agrees_with_analyse(text: str) -> None:
    assert count_parts(text) == analyse(text).parts


def test_tables_match_the_spec() -> None:
    assert len(GSM_BASIC) == 127
    assert len(GSM_EXTENSION) == 10
    assert not GSM_BASIC & GSM_EXTENSION
    assert "\x1b" not in GSM_BASIC | GSM_EXTENSION


def test_encoding_values_are_api_names() -> None:
    assert Encoding.GSM7.value == "GSM-7"
    assert Encoding.UCS2.value == "UCS-2"
    assert msgspec.json.encode(analyse("hi")) == b'{"encoding":"GSM-7","units":2,"part_units":[2]}'


@pytest.mark.parametrize(
    "char",
    [
        "\u00e7",  # lower-case c cedilla; only the capital is GSM
        "\u00e1",
        "\u00c0",
        "`",
        "\u00a2",
        "\u2019",
        "\u201c",
        "\u2013",
        "\u2026",
        "\u00a0",
        "\t",
        "\u0391",  # Greek capital alpha, looks like A
        "\u2206",  # increment sign, looks like the GSM Delta U+0394
        "\u2126",  # ohm sign, looks like the GSM Omega U+03A9
        "\u1e9e",
    ],
)
def test_look_alikes_are_not_gsm(char: str) -> None:
    assert analyse("abc" + char) == SegmentInfo(Encoding.UCS2, 4, (4,))


def test_gsm_character_costs_one_unit_in_ucs2() -> None:
    assert analyse("\u00e7]\u20ac") == SegmentInfo(Encoding.UCS2, 3, (3,))
