"""SMS part counting: picks GSM-7 or UCS-2 for a text and splits it into parts (segmentation.md)."""

from __future__ import annotations

import enum

import msgspec


class Encoding(enum.StrEnum):
    """The alphabet a message is sent in; the value is the name the API reports."""

    GSM7 = "GSM-7"
    UCS2 = "UCS-2"


# GSM 03.38 basic table in position order 0x00-0x7F, one string per row of 16. Non-ASCII characters
# are escaped so look-alikes (Greek capitals, accented letters) are unambiguous in review.
_BASIC_BY_POSITION = (
    "@\u00a3$\u00a5\u00e8\u00e9\u00f9\u00ec\u00f2\u00c7\n\u00d8\u00f8\r\u00c5\u00e5"
    "\u0394_\u03a6\u0393\u039b\u03a9\u03a0\u03a8\u03a3\u0398\u039e\x1b\u00c6\u00e6\u00df\u00c9"
    " !\"#\u00a4%&'()*+,-./"
    "0123456789:;<=>?"
    "\u00a1ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZ\u00c4\u00d6\u00d1\u00dc\u00a7"
    "\u00bfabcdefghijklmno"
    "pqrstuvwxyz\u00e4\u00f6\u00f1\u00fc\u00e0"
)

# ESC (0x1B) only introduces the extension table; a message containing it is not GSM-7.
GSM_BASIC: frozenset[str] = frozenset(_BASIC_BY_POSITION) - {"\x1b"}

# Sent as ESC + code, so each costs two septets.
GSM_EXTENSION: frozenset[str] = frozenset("\f^{}\\[~]|\u20ac")

_SEPTETS: dict[str, int] = {ch: 1 for ch in GSM_BASIC} | {ch: 2 for ch in GSM_EXTENSION}

# Units per part: (single message, each part of a concatenated message). A concatenated part
# loses 6 octets to the user data header.
_CAPACITY: dict[Encoding, tuple[int, int]] = {
    Encoding.GSM7: (160, 153),
    Encoding.UCS2: (70, 67),
}


class SegmentInfo(msgspec.Struct, frozen=True):
    """How a text is encoded and how many units land in each part."""

    encoding: Encoding
    units: int
    part_units: tuple[int, ...]

    @property
    def parts(self) -> int:
        """Number of SMS parts the text is sent as."""
        return len(self.part_units)


def analyse(text: str) -> SegmentInfo:
    """Choose the encoding for `text` and split it into parts."""
    encoding, costs = _unit_costs(text)
    units = sum(costs)
    single_capacity, part_capacity = _CAPACITY[encoding]
    if units <= single_capacity:
        return SegmentInfo(encoding, units, (units,))
    return SegmentInfo(encoding, units, _fill_parts(costs, part_capacity))


def count_parts(text: str) -> int:
    """Number of SMS parts `text` is sent as."""
    if len(text) <= _CAPACITY[Encoding.GSM7][0] and GSM_BASIC.issuperset(text):
        return 1  # the usual short text, at a fifteenth of the cost of `analyse` (hot path)
    return analyse(text).parts


def _unit_costs(text: str) -> tuple[Encoding, list[int]]:
    """The encoding and the cost of each indivisible unit (character) of `text`."""
    if set(text).issubset(_SEPTETS):
        return Encoding.GSM7, [_SEPTETS[ch] for ch in text]
    # An astral character becomes a UTF-16 surrogate pair: two code units.
    return Encoding.UCS2, [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def _fill_parts(costs: list[int], capacity: int) -> tuple[int, ...]:
    """Fill parts greedily; a unit that does not fit whole starts the next part."""
    part_units = [0]
    for cost in costs:
        # Escape pairs and surrogate pairs must not straddle two parts.
        if part_units[-1] + cost > capacity:
            part_units.append(0)
        part_units[-1] += cost
    return tuple(part_units)
