"""Labelled GLUE rows for the nlu runs: real SST-2 and MRPC files, GLUE's own layouts, lists of dicts,
datasets-like objects, label errors, and the shared data folder's files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from eva_bench.nlu.data import UnsupportedSourceError, labelled_rows, shared_glue_path
from eva_bench.paths import DATA_ENV
from eva_core.errors import EvaError, InvalidConfigError, MissingDataError
from eva_nlu.errors import DataFormatError

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


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- real files ------------------------------------------------------------------------------------


def test_reads_real_sst2() -> None:
    dev = labelled_rows(glue_file("sst2", "dev"), "sst2")
    assert len(dev) == 872
    assert dev[0] == {"sentence": SST2_DEV_FIRST, "label": 1}
    assert {row["label"] for row in dev} == {0, 1} and all(type(row["label"]) is int for row in dev)
    assert len(labelled_rows(glue_file("sst2", "train"), "sst2", limit=10)) == 10


def test_reads_real_headerless_mrpc() -> None:
    path = glue_file("mrpc", "dev")
    dev = labelled_rows(path, "mrpc")
    assert len(dev) == 1500
    assert dev[0] == {"sentence1": MRPC_DEV_FIRST[0], "sentence2": MRPC_DEV_FIRST[1], "label": 1}
    assert dev[1]["label"] == 0 and all(type(row["label"]) is int for row in dev)
    raw = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line]
    assert [row["label"] for row in dev] == [int(fields[0]) for fields in raw]
    assert len(labelled_rows(glue_file("mrpc", "train"), "mrpc")) == 2576


def test_reads_glue_layouts(tmp_path: Path) -> None:
    msr = write(
        tmp_path / "msr.tsv", 'Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t7\t8\tHe said "yes".\tHe agreed.\n'
    )
    assert labelled_rows(msr, "mrpc") == [{"sentence1": 'He said "yes".', "sentence2": "He agreed.", "label": 1}]
    cola = write(tmp_path / "cola.tsv", "gj04\t1\t\tThe sailors rode the breeze.\ngj04\t0\t*\tThe more we study.\n")
    assert labelled_rows(cola, "cola") == [
        {"sentence": "The sailors rode the breeze.", "label": 1},
        {"sentence": "The more we study.", "label": 0},
    ]


def test_reads_csv_and_jsonl_files(tmp_path: Path) -> None:
    csv = write(tmp_path / "rows.csv", 'sentence,label\n"fine, really",1\n"a ""quoted"" word",0\n')
    assert labelled_rows(csv, "sst2") == [
        {"sentence": "fine, really", "label": 1},
        {"sentence": 'a "quoted" word', "label": 0},
    ]
    jsonl = write(tmp_path / "rows.jsonl", '{"question": "Why?", "sentence": "Because.", "label": 1}\n\n')
    assert labelled_rows(jsonl, "qnli") == [{"question": "Why?", "sentence": "Because.", "label": 1}]
    scores = write(tmp_path / "sts.tsv", "sentence1\tsentence2\tscore\na\tb\t3.8\n")
    assert labelled_rows(scores, "stsb") == [{"sentence1": "a", "sentence2": "b", "label": 3.8}]


# --- other sources -------------------------------------------------------------------------------


def test_reads_a_list_of_dicts() -> None:
    rows = [{"sentence": "good", "labels": 1, "idx": 0}, {"sentence": "bad", "labels": "negative", "idx": 1}]
    assert labelled_rows(rows, "sst2") == [{"sentence": "good", "label": 1}, {"sentence": "bad", "label": 0}]
    nli = [{"sentence1": "A cat sat.", "sentence2": "An animal sat.", "gold_label": "entailment"}]
    assert labelled_rows(nli, "mnli") == [{"premise": "A cat sat.", "hypothesis": "An animal sat.", "label": 0}]
    assert labelled_rows([{"sentence": "x", "label": "1.0"}, {"sentence": "y", "label": torch.tensor(0)}], "sst2") == [
        {"sentence": "x", "label": 1},
        {"sentence": "y", "label": 0},
    ]
    scores = labelled_rows([{"sentence1": "a", "sentence2": "b", "score": "3.8"}], "stsb")
    assert scores == [{"sentence1": "a", "sentence2": "b", "label": 3.8}] and type(scores[0]["label"]) is float
    assert labelled_rows([{"sentence": "a", "label": 0}] * 5, "sst2", limit=2) == [{"sentence": "a", "label": 0}] * 2


class FakeDataset:
    """What ``labelled_rows`` needs of a ``datasets.Dataset``: ``column_names`` and iteration over row dicts."""

    column_names = ("question1", "question2", "label", "idx")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        yield {"question1": "How old?", "question2": "What age?", "label": 1, "idx": 0}
        yield {"question1": "Where?", "question2": "When?", "label": 0, "idx": 1}


def test_reads_a_datasets_like_object() -> None:
    rows = labelled_rows(FakeDataset(), "qqp")
    assert rows[1] == {"question1": "Where?", "question2": "When?", "label": 0}


def test_reads_a_real_datasets_dataset() -> None:
    datasets = pytest.importorskip("datasets")
    dataset = datasets.Dataset.from_dict({"sentence": ["good", "bad"], "label": [1, 0], "idx": [0, 1]})
    assert labelled_rows(dataset, "sst2") == [{"sentence": "good", "label": 1}, {"sentence": "bad", "label": 0}]


# --- errors ----------------------------------------------------------------------------------------


def test_missing_label_column_says_how_to_read_unlabelled(tmp_path: Path) -> None:
    path = write(tmp_path / "test.tsv", "index\tsentence\n0\tplain\n")
    with pytest.raises(DataFormatError, match=r"eva_nlu\.read_rows"):
        labelled_rows(path, "sst2")


@pytest.mark.parametrize(
    ("label", "needle"), [("maybe", "label='maybe'"), ("2", "use 0..1"), ("-1", "unlabelled test row")]
)
def test_bad_label_names_the_value_and_the_row(tmp_path: Path, label: str, needle: str) -> None:
    path = write(tmp_path / "bad.tsv", f"sentence\tlabel\nfine\t1\nodd\t{label}\n")
    with pytest.raises(DataFormatError) as caught:
        labelled_rows(path, "sst2")
    assert needle in str(caught.value) and f"row 1 of file {path}" in str(caught.value)
    assert isinstance(caught.value, EvaError) and isinstance(caught.value, ValueError)


def test_bad_sources() -> None:
    with pytest.raises(UnsupportedSourceError, match="int"):
        labelled_rows(3, "sst2")  # type: ignore[arg-type]
    with pytest.raises(UnsupportedSourceError, match="row 0 of the list is a str"):
        labelled_rows(["not a dict"], "sst2")  # type: ignore[list-item]

    class FakeDatasetDict:
        column_names: ClassVar = {"train": ["sentence", "label"], "validation": ["sentence", "label"]}

    with pytest.raises(UnsupportedSourceError, match=r"dataset\['validation'\]"):
        labelled_rows(FakeDatasetDict(), "sst2")  # type: ignore[arg-type]
    with pytest.raises(InvalidConfigError, match="limit=-1"):
        labelled_rows([], "sst2", limit=-1)


def test_shared_glue_path_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(MissingDataError, match=DATA_ENV) as caught:
        shared_glue_path("sst2", "dev")
    assert str(tmp_path / "glue" / "SST-2" / "dev.tsv") in str(caught.value)
    (tmp_path / "glue" / "STS-B").mkdir(parents=True)
    write(tmp_path / "glue" / "STS-B" / "dev.tsv", "")
    assert shared_glue_path("stsb", "validation") == tmp_path / "glue" / "STS-B" / "dev.tsv"
    monkeypatch.delenv(DATA_ENV)
    assert shared_glue_path("stsb", "dev", data_dir=tmp_path) == tmp_path / "glue" / "STS-B" / "dev.tsv"
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert os.environ[DATA_ENV] == str(tmp_path)
