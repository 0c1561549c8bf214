"""Parsing architectures from the command line."""

import pytest

from nasengine.arch import format_arch, parse_arch
from nasengine.errors import NasEngineError

CHOICES = (4,) * 5
NAMED = {"all-zero": (0, 0, 0, 0, 0)}


def test_comma_list_digits_and_names():
    assert parse_arch("1,2,3,0,1", CHOICES) == (1, 2, 3, 0, 1)
    assert parse_arch("12301", CHOICES) == (1, 2, 3, 0, 1)
    assert parse_arch("1 2 3 0 1", CHOICES) == (1, 2, 3, 0, 1)
    assert parse_arch("all-zero", CHOICES, NAMED) == (0, 0, 0, 0, 0)
    assert format_arch((1, 2, 3)) == "1,2,3"


@pytest.mark.parametrize(
    "text, message",
    [
        ("1,2,3", "has 3 positions but the space has 5"),
        ("1,2,3,4,1", "choice 4 at position 3 is out of range: that position has choices 0..3"),
        ("fancy-net", "unknown architecture 'fancy-net'.*all-zero"),
    ],
)
def test_bad_input_is_one_clear_line(text, message):
    with pytest.raises(NasEngineError, match=message) as info:
        parse_arch(text, CHOICES, NAMED)
    assert "\n" not in str(info.value)
