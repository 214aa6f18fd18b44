"""Label masking, as peft's EVA has it: ``use_label_mask`` and ``label_mask_value``."""

from __future__ import annotations

import pytest
import torch

from eva_core import EvaConfig, fit
from eva_core.errors import InvalidConfigError

QUICK = {"rank": 2, "tau": 0.0, "min_steps": 2, "max_steps": 2, "progress": False}


def _rows(batches: list[dict], keep) -> int:  # type: ignore[no-untyped-def]
    return sum(int(keep(b).sum()) for b in batches[:2])


def test_labels_equal_to_the_mask_value_give_no_rows_by_default(model, batches) -> None:
    state = fit(model, batches, target_modules=["head"], **QUICK)
    assert state.config.use_label_mask and state.config.label_mask_value == -100  # peft's defaults
    expected = _rows(batches, lambda b: (b["attention_mask"] != 0) & (b["labels"] != -100))
    assert state.layers["head"].rows == expected


def test_label_masking_can_be_turned_off(model, batches) -> None:
    state = fit(model, batches, target_modules=["head"], use_label_mask=False, **QUICK)
    assert state.layers["head"].rows == _rows(batches, lambda b: b["attention_mask"] != 0)  # padding still out


def test_the_masked_label_value_can_be_changed(model, batches) -> None:
    relabelled = [{**b, "labels": b["labels"].masked_fill(b["labels"] == -100, 0)} for b in batches]
    default = fit(model, relabelled, target_modules=["head"], **QUICK)
    assert default.layers["head"].rows == _rows(relabelled, lambda b: b["attention_mask"] != 0)  # 0 is a label
    state = fit(model, relabelled, target_modules=["head"], label_mask_value=0, **QUICK)
    expected = _rows(relabelled, lambda b: (b["attention_mask"] != 0) & (b["labels"] != 0))
    assert state.layers["head"].rows == expected < default.layers["head"].rows


@pytest.mark.parametrize(
    ("changes", "shown"),
    [({"use_label_mask": 1}, "use_label_mask=1"), ({"label_mask_value": -100.0}, "label_mask_value=-100.0")],
)
def test_label_mask_fields_are_validated(changes: dict, shown: str) -> None:
    with pytest.raises(InvalidConfigError, match=f"EvaConfig.{shown} is invalid"):
        EvaConfig(**changes)


def test_a_batch_without_labels_is_unaffected(model, make_batches) -> None:
    batches = [{k: v for k, v in b.items() if k != "labels"} for b in make_batches(3)]
    on = fit(model, batches, target_modules=["head"], **QUICK).layers["head"].rows
    off = fit(model, batches, target_modules=["head"], use_label_mask=False, **QUICK).layers["head"].rows
    assert on == off == _rows(batches, lambda b: b["attention_mask"] != 0)
    assert torch.is_tensor(batches[0]["attention_mask"])
