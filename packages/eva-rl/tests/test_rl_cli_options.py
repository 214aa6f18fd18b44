"""``--option`` values of eva-rl's ``eva-lora fit`` hooks: every value is a valid setting or an
``InvalidConfigError`` naming the option (never a raw ``ValueError``, never an infinite scale)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from eva_core.cli.domains import DomainOptions
from eva_core.errors import InvalidConfigError
from eva_rl import cli

TEXTS = st.one_of(
    st.text(max_size=6),
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["²", "٣", "inf", "-inf", "nan", "1e400"]),
)


@settings(max_examples=200, derandomize=True, database=None)
@given(value=TEXTS, minimum=st.sampled_from([0, 1]))
def test_integer_options_are_in_range_or_an_error_naming_them(value: str, minimum: int) -> None:
    try:
        number = DomainOptions.integer({"context": value}, "context", 20, minimum=minimum, maximum=cli._MAX_INT)
    except InvalidConfigError as error:
        assert f"--option context={value!r}" in str(error)
    else:
        assert minimum <= number < 2**63 and number == int(value)


@settings(max_examples=200, derandomize=True, database=None)
@given(value=TEXTS)
def test_return_scale_is_a_finite_positive_number_or_an_error_naming_it(value: str) -> None:
    try:
        number = cli._float_option({"return_scale": value}, "return_scale", 100.0)
    except InvalidConfigError as error:
        assert f"--option return_scale={value!r}" in str(error)
    else:
        assert number > 0 and math.isfinite(number)
