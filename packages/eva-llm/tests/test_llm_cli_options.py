"""``--option`` values of eva-llm's ``eva-lora fit`` hooks: every value is a valid setting or an
``InvalidConfigError`` naming the option (never a raw ``ValueError``), checked before the data is read."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from eva_core import LoadedModel
from eva_core.cli.domains import DomainOptions
from eva_core.errors import InvalidConfigError
from eva_llm import cli

VALUES = st.one_of(st.text(max_size=6), st.integers(-(10**30), 10**30).map(str), st.sampled_from(["²", "٣", "1", "2"]))


@settings(max_examples=200, derandomize=True, database=None)
@given(value=VALUES)
def test_max_length_is_an_integer_from_two_or_an_error_naming_it(value: str) -> None:
    try:
        number = DomainOptions.integer({"max_length": value}, "max_length", 512, minimum=2)
    except InvalidConfigError as error:
        assert f"--option max_length={value!r}" in str(error)
    else:
        assert number >= 2 and number == int(value)


@pytest.mark.parametrize(("key", "value"), [("max_length", "²"), ("max_length", "1"), ("template", "chatt")])
def test_bad_options_fail_before_the_file_is_read(tmp_path: Path, key: str, value: str) -> None:
    missing = tmp_path / "absent.jsonl"  # reading it would raise MissingDataError
    loaded = LoadedModel(model=nn.Identity(), processor=object())
    with pytest.raises(InvalidConfigError, match=f"--option {key}={value!r}"):
        cli.batches(str(missing), loaded, 4, None, {key: value})
