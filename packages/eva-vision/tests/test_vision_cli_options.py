"""``--option`` values and keys of eva-vision's ``eva-lora fit`` hooks: every value is a valid setting or an
``InvalidConfigError`` naming the option (never a raw ``ValueError``), and a misspelt key is reported."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from vision_models import fashion_mnist_dir

from eva_core import LoadedModel
from eva_core.cli.domains import DomainOptions
from eva_core.errors import InvalidConfigError
from eva_vision import cli

TEXTS = st.one_of(
    st.text(max_size=8),
    st.integers(-(10**30), 10**30).map(str),
    st.lists(st.integers(-3, 12), max_size=4).map(lambda xs: ",".join(map(str, xs))),
    st.sampled_from(["²", "٣", "5,5", "5,,6", "0"]),
)


@settings(max_examples=200, derandomize=True, database=None)
@given(value=TEXTS)
def test_size_is_a_bounded_positive_integer_or_an_error_naming_it(value: str) -> None:
    try:
        number = DomainOptions.integer({"size": value}, "size", None, maximum=cli._MAX_SIZE, example=64)
    except InvalidConfigError as error:
        assert f"--option size={value!r}" in str(error)
    else:
        assert number is not None and 1 <= number <= 4096


@settings(max_examples=200, derandomize=True, database=None)
@given(value=TEXTS)
def test_classes_are_distinct_labels_or_an_error_naming_them(value: str) -> None:
    try:
        classes = cli._classes({"classes": value})
    except InvalidConfigError as error:
        assert f"--option classes={value!r}" in str(error)
    else:
        assert classes and min(classes) >= 0 and len(set(classes)) == len(classes)


def test_a_misspelt_key_is_never_read() -> None:
    options = DomainOptions({"clases": "5,6"})
    loaded = LoadedModel(nn.Identity(), processor=cli.ImageInput(32, 3, (0.5,), (0.5,)))
    data = str(fashion_mnist_dir() / "t10k-images-idx3-ubyte.gz")
    assert len(list(cli.eva_cli_batches(data, loaded, 4, 8, options))) == 2  # type: ignore[arg-type]
    with pytest.raises(InvalidConfigError, match=r"--option clases='5,6'.*reads here: classes, split"):
        options.check_read("vision")
