"""The study's task loader: local TSV/CSV/JSON/JSONL, sentence pairs, Hub-style dataset folders,
label encoding, seeded sampling, and a clear error for every bad input.

Every expectation is computed here from the files with the ``csv``/``json`` modules, independently
of the loader (which reads through ``datasets``/pandas).
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from loyalkit.study.task_data import TaskConfig, TaskData, load_task

# Real data lives beside the clone, in ../shared/data (see its SOURCE.md); never copied in.
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SST2_DEV = DATA / "sst2" / "dev.tsv"
MNLI_MATCHED = DATA / "mnli_textfooler" / "mnli_matched_1000.tsv"
MNLI_MISMATCHED = DATA / "mnli_textfooler" / "mnli_mismatched_1000.tsv"
MNLI_LABELS = ("entailment", "neutral", "contradiction")


def read_tsv(path: Path) -> list[list[str]]:
    assert path.is_file(), f"{path} is missing: the real data must be in ../shared/data"
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def files(tmp_path: Path, train: Path, validation: Path, **options) -> TaskConfig:
    return TaskConfig(
        train_file=train, validation_file=validation, cache_dir=tmp_path / "cache", **options
    )


def rows_of(task_split: Dataset, columns: tuple[str, ...]) -> list[tuple]:
    return list(zip(*(task_split[c] for c in columns), strict=True))


# ---------------------------------------------------------------- real files


def test_sst2_dev_keeps_every_row_and_label(tmp_path: Path):
    header, *rows = read_tsv(SST2_DEV)
    assert header == ["sentence", "label"]
    counts = Counter(label for _, label in rows)
    assert len(rows) == 872 and counts == {"0": 428, "1": 444}  # SOURCE.md: 872 (428 / 444)

    task = load_task(files(tmp_path, SST2_DEV, SST2_DEV))
    assert isinstance(task, TaskData)
    assert task.validation.num_rows == task.train.num_rows == 872
    assert task.label_names == ("0", "1")
    assert task.validation.features["label"] == ClassLabel(names=["0", "1"])
    assert task.validation["sentence"] == [sentence for sentence, _ in rows]
    assert task.validation["label"] == [int(label) for _, label in rows]
    assert task.name == "dev"
    assert not task.is_pair and task.num_labels == 2


def test_sst2_train_every_row_survives_the_tsv_reader(tmp_path: Path):
    _, *rows = read_tsv(SST2_DEV.parent / "train.tsv")
    assert len(rows) == 67349 and Counter(label for _, label in rows) == {"0": 29780, "1": 37569}
    task = load_task(files(tmp_path, SST2_DEV.parent / "train.tsv", SST2_DEV))
    assert task.train["sentence"] == [sentence for sentence, _ in rows]
    assert task.train["label"] == [int(label) for _, label in rows]


def test_mnli_pairs_without_header_map_string_labels_in_label_names_order(tmp_path: Path):
    config = files(
        tmp_path,
        MNLI_MISMATCHED,
        MNLI_MATCHED,
        has_header=False,
        columns=("label", "premise", "hypothesis"),
        text_columns=("premise", "hypothesis"),
        label_names=MNLI_LABELS,
    )
    task = load_task(config)
    for split, path in (("train", MNLI_MISMATCHED), ("validation", MNLI_MATCHED)):
        rows = read_tsv(path)
        assert len(rows) == 1000 and all(len(row) == 3 for row in rows)
        expected = [(p, h, MNLI_LABELS.index(label)) for label, p, h in rows]
        assert rows_of(getattr(task, split), ("premise", "hypothesis", "label")) == expected
    assert task.is_pair and task.text_columns == ("premise", "hypothesis")
    assert task.validation.features["label"].names == list(MNLI_LABELS)
    assert task.validation.column_names == ["premise", "hypothesis", "label"]

    # Without label_names: the sorted distinct labels of both splits.
    task = load_task(TaskConfig(**{**config.__dict__, "label_names": None}))
    assert task.label_names == ("contradiction", "entailment", "neutral")
    first_label = read_tsv(MNLI_MATCHED)[0][0]
    assert task.validation[0]["label"] == sorted(MNLI_LABELS).index(first_label)


# ---------------------------------------------------------------- local formats


def test_tsv_keeps_quotes_and_text_that_looks_like_missing_values(tmp_path: Path):
    sentences = ['he said "wow', '"quoted" at the start', "NA", "null", "a , b"]
    text = "text\ty\n" + "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(sentences))
    path = write(tmp_path / "t.tsv", text)
    task = load_task(files(tmp_path, path, path, text_columns=("text",), label_column="y"))
    assert task.validation["text"] == sentences
    assert task.validation["y"] == [0, 1, 0, 1, 0]


def test_csv_with_standard_quoting_and_string_labels(tmp_path: Path):
    rows = [["a, quoted sentence", "pos"], ['she said "hi"', "neg"], ["plain", "pos"]]
    path = tmp_path / "data.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([["sentence", "label"], *rows])
    task = load_task(files(tmp_path, path, path, label_names=("neg", "pos")))
    assert task.validation["sentence"] == [s for s, _ in rows]
    assert task.validation["label"] == [1, 0, 1]
    assert task.label_names == ("neg", "pos")


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_json_and_json_lines(tmp_path: Path, suffix: str):
    records = [
        {"q": "is it?", "a": "yes", "gold": 2, "extra": 1},
        {"q": "no way", "a": "fine", "gold": 0, "extra": 2},
    ]
    path = tmp_path / f"pairs{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(records))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    task = load_task(files(tmp_path, path, path, text_columns=("q", "a"), label_column="gold"))
    assert rows_of(task.train, ("q", "a", "gold")) == [(r["q"], r["a"], r["gold"]) for r in records]
    assert task.label_names == ("0", "1", "2")  # ids 0..max when no names are given
    assert task.train.column_names == ["q", "a", "gold"]  # "extra" dropped


def test_numeric_text_becomes_a_string(tmp_path: Path):
    path = write(tmp_path / "n.tsv", "sentence\tlabel\n12\t0\n7\t1\n")
    task = load_task(files(tmp_path, path, path))
    assert task.train["sentence"] == ["12", "7"]


# ---------------------------------------------------------------- dataset folders (Hub-style)


def _class_label_dict() -> DatasetDict:
    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    return DatasetDict(
        {
            "train": Dataset.from_dict(
                {"text": ["bad", "good", "fine"], "label": [0, 1, 1]}, features=features
            ),
            "validation": Dataset.from_dict({"text": ["meh", "wow"], "label": [0, 1]}, features),
        }
    )


def test_dataset_folder_of_parquet_files_keeps_class_label_names(tmp_path: Path):
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    for split, data in _class_label_dict().items():
        data.to_parquet(folder / f"{split}.parquet")
    config = TaskConfig(dataset=str(folder), text_columns=("text",), cache_dir=tmp_path / "c")
    task = load_task(config)
    assert task.label_names == ("neg", "pos")
    assert task.train["label"] == [0, 1, 1] and task.validation["text"] == ["meh", "wow"]
    assert task.name == str(folder)

    # label_names in another order: ids follow label_names, by name.
    task = load_task(TaskConfig(**{**config.__dict__, "label_names": ("pos", "neg")}))
    assert task.train["label"] == [1, 0, 0]
    with pytest.raises(ValueError, match=r"not in `label_names`.*row 0: 'neg'"):
        load_task(TaskConfig(**{**config.__dict__, "label_names": ("pos", "other")}))


def test_dataset_folder_of_csv_files_with_split_names(tmp_path: Path):
    folder = tmp_path / "csv_dataset"
    folder.mkdir()
    write(folder / "train.csv", "sentence,label\nx,b\ny,a\n")
    write(folder / "test.csv", "sentence,label\nz,a\n")
    config = TaskConfig(dataset=str(folder), validation_split="test", cache_dir=tmp_path / "c")
    task = load_task(config)
    assert task.label_names == ("a", "b")
    assert task.train["label"] == [1, 0] and task.validation["label"] == [0]
    with pytest.raises(
        ValueError, match=r"`validation_split` 'validation'.*available: train, test"
    ):
        load_task(TaskConfig(dataset=str(folder), cache_dir=tmp_path / "c"))


def test_save_to_disk_folder(tmp_path: Path):
    _class_label_dict().save_to_disk(tmp_path / "saved")
    task = load_task(TaskConfig(dataset=str(tmp_path / "saved"), text_columns=("text",)))
    assert task.label_names == ("neg", "pos") and task.train.num_rows == 3


# ---------------------------------------------------------------- default and sampling


def test_default_is_the_bundled_sentiment_example():
    task = load_task()
    assert (task.train.num_rows, task.validation.num_rows) == (480, 160)
    assert task.label_names == ("negative", "positive")
    assert task.name == "sentiment-example"
    assert sum(task.validation["label"]) == 80


def test_sampling_is_seeded_and_draws_distinct_rows():
    full = load_task()
    config = TaskConfig(max_train_examples=50, max_validation_examples=20)
    first, again, other = load_task(config, 1), load_task(config, 1), load_task(config, 2)
    assert (first.train.num_rows, first.validation.num_rows) == (50, 20)
    assert first.train["sentence"] == again.train["sentence"]
    assert first.train["sentence"] != other.train["sentence"]
    pairs = set(zip(full.train["sentence"], full.train["label"], strict=True))
    drawn = list(zip(first.train["sentence"], first.train["label"], strict=True))
    assert len(set(drawn)) == 50 and set(drawn) <= pairs
    assert first.train["sentence"] != full.train["sentence"][:50]  # shuffled, not the head
    # A limit above the split size keeps the whole split, in order.
    big = load_task(TaskConfig(max_validation_examples=10_000))
    assert big.validation["sentence"] == full.validation["sentence"]


# ---------------------------------------------------------------- bad input


def test_missing_file_names_the_argument(tmp_path: Path):
    good = write(tmp_path / "ok.tsv", "sentence\tlabel\na\t0\n")
    with pytest.raises(FileNotFoundError, match=r"`validation_file` '.*nope\.tsv' does not exist"):
        load_task(files(tmp_path, good, tmp_path / "nope.tsv"))
    with pytest.raises(FileNotFoundError, match=r"`train_file`"):
        load_task(files(tmp_path, tmp_path / "gone.csv", good))


def test_unknown_columns_list_the_available_ones(tmp_path: Path):
    path = write(tmp_path / "d.tsv", "text\tgold\tid\na\t0\t1\n")
    with pytest.raises(
        ValueError, match=r"`text_columns`.*'sentence'.*available columns: text, gold, id"
    ):
        load_task(files(tmp_path, path, path))
    with pytest.raises(
        ValueError, match=r"`label_column`.*'label'.*available columns: text, gold, id"
    ):
        load_task(files(tmp_path, path, path, text_columns=("text",)))


def test_labels_outside_label_names_are_shown(tmp_path: Path):
    path = write(tmp_path / "d.tsv", "sentence\tlabel\na\tpos\nb\tneutral\nc\tneg\nd\tmixed\n")
    with pytest.raises(
        ValueError,
        match=r"2 label\(s\) in `validation_file` .* not in `label_names` \(one of neg, pos\): "
        r"row 1: 'neutral', row 3: 'mixed'",
    ):
        load_task(
            files(
                tmp_path,
                write(tmp_path / "t.tsv", "sentence\tlabel\nx\tpos\n"),
                path,
                label_names=("neg", "pos"),
            )
        )
    ints = write(tmp_path / "i.tsv", "sentence\tlabel\na\t0\nb\t3\n")
    with pytest.raises(ValueError, match=r"not in `label_names` \(ids 0\.\.1\): row 1: 3"):
        load_task(files(tmp_path, ints, ints, label_names=("neg", "pos")))


def test_negative_and_float_labels_are_refused(tmp_path: Path):
    negative = write(tmp_path / "n.tsv", "sentence\tlabel\na\t-1\nb\t0\n")
    with pytest.raises(ValueError, match=r"negative labels \[-1\].*unlabelled test split"):
        load_task(files(tmp_path, negative, negative))
    floats = write(tmp_path / "f.tsv", "sentence\tlabel\na\t0.5\nb\t1.5\n")
    with pytest.raises(ValueError, match=r"`label_column` 'label' .* must hold class labels"):
        load_task(files(tmp_path, floats, floats))


@pytest.mark.parametrize(
    ("text_columns", "message"),
    [
        ((), r"`text_columns` must name 1 column .* or 2 .*got 0"),
        (("a", "b", "c"), r"`text_columns` must name 1 column .* or 2 .*got 3"),
        (("a", "a"), r"`text_columns` names a column twice"),
        (("label",), r"`label_column` 'label' is also in `text_columns`"),
    ],
)
def test_text_columns_must_be_one_or_two(text_columns, message: str):
    with pytest.raises(ValueError, match=message):
        TaskConfig(text_columns=text_columns)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.tsv", "sentence\tlabel\n"),
        ("empty.csv", ""),
        ("empty.json", "[]"),
        ("e.jsonl", "\n"),
    ],
)
def test_empty_split_is_refused(tmp_path: Path, name: str, content: str):
    good = write(tmp_path / "ok.tsv", "sentence\tlabel\na\t0\nb\t1\n")
    empty = write(tmp_path / name, content)
    with pytest.raises(ValueError, match=rf"`validation_file` '.*{re.escape(name)}' has no rows"):
        load_task(files(tmp_path, good, empty))


def test_empty_split_of_a_dataset_folder_is_refused(tmp_path: Path):
    folder = tmp_path / "parquet"
    folder.mkdir()
    data = _class_label_dict()
    data["train"].to_parquet(folder / "train.parquet")
    data["validation"].select([]).to_parquet(folder / "validation.parquet")
    # datasets refuses to build an empty split; the error still names the argument.
    with pytest.raises(ValueError, match=r"`dataset` '.*parquet' could not be loaded: .*no data"):
        load_task(TaskConfig(dataset=str(folder), text_columns=("text",), cache_dir=tmp_path))


def test_missing_dataset_folder_names_the_argument(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"`dataset` '.*missing' was not found"):
        load_task(TaskConfig(dataset=str(tmp_path / "missing"), cache_dir=tmp_path))


def test_empty_text_in_json_is_refused(tmp_path: Path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"sentence": "a", "label": 0}\n{"sentence": null, "label": 1}\n')
    with pytest.raises(
        ValueError, match=r"`text_columns`: column 'sentence' .* empty in row\(s\) \[1\]"
    ):
        load_task(files(tmp_path, path, path))


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"train_file": "a.tsv"}, ValueError, r"`train_file` needs `validation_file`"),
        ({"validation_file": "a.tsv"}, ValueError, r"`validation_file` needs `train_file`"),
        (
            {"dataset": "glue", "train_file": "a.tsv", "validation_file": "b.tsv"},
            ValueError,
            r"either `dataset` or `train_file`",
        ),
        (
            {"train_file": "a.txt", "validation_file": "b.tsv"},
            ValueError,
            r"`train_file` must end in",
        ),
        (
            {"train_file": "a.tsv", "validation_file": "b.tsv", "has_header": False},
            ValueError,
            r"`columns` must name every column",
        ),
        ({"columns": ("a", "b")}, ValueError, r"set has_header=False"),
        ({"label_names": ("only",)}, ValueError, r"`label_names` must be at least 2 distinct"),
        ({"label_names": ("a", "a")}, ValueError, r"`label_names` must be at least 2 distinct"),
        ({"max_train_examples": 0}, ValueError, r"`max_train_examples` must be at least 1"),
        ({"max_validation_examples": 2.5}, TypeError, r"`max_validation_examples` must be an int"),
        ({"dataset_config": "sst2"}, ValueError, r"`dataset_config` needs `dataset`"),
        ({"train_file": 3, "validation_file": "b.tsv"}, TypeError, r"`train_file` must be a path"),
    ],
)
def test_bad_configuration(options: dict, error: type, message: str):
    with pytest.raises(error, match=message):
        TaskConfig(**options)


def test_has_header_false_is_for_tsv_and_csv_only(tmp_path: Path):
    with pytest.raises(ValueError, match=r"TSV/CSV files, not JSON"):
        TaskConfig(
            train_file=tmp_path / "a.json",
            validation_file=tmp_path / "b.json",
            has_header=False,
            columns=("sentence", "label"),
        )


def test_headerless_file_must_match_columns(tmp_path: Path):
    path = write(tmp_path / "bad.tsv", "a\tb\tc\nd\te\tf\n")
    config = files(tmp_path, path, path, has_header=False, columns=("sentence", "label"))
    with pytest.raises(
        ValueError, match=r"`columns` names 2 columns .* `train_file` .* has 3 fields"
    ):
        load_task(config)


def test_a_single_class_needs_label_names(tmp_path: Path):
    path = write(tmp_path / "one.tsv", "sentence\tlabel\na\tpos\nb\tpos\n")
    with pytest.raises(ValueError, match=r"single class \('pos',\).*pass `label_names`"):
        load_task(files(tmp_path, path, path))
    # A class that never occurs in train cannot be learnt: an error (issue 11), not a silent pass.
    with pytest.raises(ValueError, match=r"class\(es\) never occur in `train_file`.*'neg'"):
        load_task(files(tmp_path, path, path, label_names=("neg", "pos")))
