"""The study's task: a classification dataset from the Hub, local files or the bundled example.

Like ``run_glue``: a Hub dataset id (``dataset``, ``dataset_config``) when online, or local
``train_file`` / ``validation_file`` (TSV, CSV, JSON or JSON lines) with one text column (single
sentences) or two (sentence pairs). Labels come out as int ids ``0..C-1`` in a ``ClassLabel``
column whose names are ``label_names``: string labels are mapped by the order of ``label_names``,
int labels are checked against it, a ``ClassLabel`` feature keeps its names. With neither a
dataset nor files, the bundled sentiment example is the task.

TSV files are read without quote processing (``csv.QUOTE_NONE``, as GLUE's files are written), so
a quote inside a sentence stays part of it; CSV files use standard CSV quoting.

Example (the bundled sentiment example; SST-2-like files work the same way through
``train_file``/``validation_file``):
    >>> task = load_task(TaskConfig(max_train_examples=100))
    >>> task.train.num_rows, task.validation.num_rows, task.label_names
    (100, 160, ('negative', 'positive'))
    >>> task.train.features[task.label_column].names
    ['negative', 'positive']
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datasets import Dataset

__all__ = ["LOCAL_FILE_SUFFIXES", "TaskConfig", "TaskData", "load_task"]

#: File suffixes ``train_file`` / ``validation_file`` may have, and the ``datasets`` builder used.
LOCAL_FILE_SUFFIXES: dict[str, str] = {
    ".tsv": "csv",
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "json",
}
_EXAMPLE_NAME = "sentiment-example"
_SHOWN = 5  # how many offending values an error message shows


@dataclass(frozen=True)
class TaskConfig:
    """Where the task's data comes from and how its columns are read.

    Args:
        dataset: a Hub dataset id (online), e.g. ``"glue"``, or a local dataset folder.
        dataset_config: the dataset's configuration, e.g. ``"sst2"``.
        train_file, validation_file: local TSV/CSV/JSON/JSONL files (both, or neither).
        train_split, validation_split: split names of ``dataset``.
        text_columns: one column (single sentences) or two (sentence pairs).
        label_column: the column holding the labels.
        label_names: the classes in id order; default: the ``ClassLabel`` names, else the sorted
            distinct labels of both splits.
        has_header: whether a TSV/CSV file's first line names its columns.
        columns: the column names of a file without header (``has_header=False``).
        max_train_examples, max_validation_examples: keep a seeded random sample of this size.
        cache_dir: where ``datasets`` caches what it reads (default: its own cache).
    """

    dataset: str | None = None
    dataset_config: str | None = None
    train_file: Path | None = None
    validation_file: Path | None = None
    train_split: str = "train"
    validation_split: str = "validation"
    text_columns: tuple[str, ...] = ("sentence",)
    label_column: str = "label"
    label_names: tuple[str, ...] | None = None
    has_header: bool = True
    columns: tuple[str, ...] | None = None
    max_train_examples: int | None = None
    max_validation_examples: int | None = None
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        for name in ("train_file", "validation_file", "cache_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                if not isinstance(value, str):
                    raise TypeError(f"`{name}` must be a path, got {type(value).__name__}")
                object.__setattr__(self, name, Path(value))
        for name in ("text_columns", "label_names", "columns"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        _check_config(self)


@dataclass
class TaskData:
    """The loaded task: ``train`` and ``validation`` with int label ids ``0..C-1``.

    ``name`` says where it came from (``glue/sst2``, a file name, or ``sentiment-example``).
    """

    train: Dataset
    validation: Dataset
    text_columns: tuple[str, ...]
    label_column: str
    label_names: tuple[str, ...]
    name: str = field(default="")

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def is_pair(self) -> bool:
        """Whether the task classifies sentence pairs (two text columns)."""
        return len(self.text_columns) == 2


def load_task(config: TaskConfig | None = None, seed: int = 0) -> TaskData:
    """Load, check and label-encode the task described by ``config``.

    ``seed`` draws the ``max_*_examples`` samples (same seed, same rows).
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the argument for
    an unknown column, labels outside ``label_names``, an empty split and the like.
    """
    config = TaskConfig() if config is None else config
    if not isinstance(config, TaskConfig):
        raise TypeError(f"`config` must be a TaskConfig, got {type(config).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"`seed` must be an int, got {seed!r}")
    if config.train_file is not None:
        assert config.validation_file is not None  # checked by TaskConfig
        train = _read_file(config, config.train_file, "train_file")
        validation = _read_file(config, config.validation_file, "validation_file")
        name = config.validation_file.stem
    elif config.dataset is not None:
        train, validation = _read_dataset(config)
        name = config.dataset + (f"/{config.dataset_config}" if config.dataset_config else "")
    else:
        from loyalkit.example_data import load_sentiment_example

        example = load_sentiment_example()
        train, validation, name = example["train"], example["test"], _EXAMPLE_NAME
    where = _split_origins(config)
    for split, data in (("train", train), ("validation", validation)):
        _check_columns(data, config, where[split])
    label_names = _label_names(config, train, validation, where)
    train = _encode(train, config, label_names, where["train"])
    validation = _encode(validation, config, label_names, where["validation"])
    _check_every_class_in_train(
        train, validation, config.label_column, label_names, config.label_names is not None, where
    )
    train = _sample(train, config.max_train_examples, seed)
    validation = _sample(validation, config.max_validation_examples, seed)
    return TaskData(
        train=train,
        validation=validation,
        text_columns=config.text_columns,
        label_column=config.label_column,
        label_names=label_names,
        name=name,
    )


# ---------------------------------------------------------------- configuration checks


def _check_config(config: TaskConfig) -> None:
    texts = config.text_columns
    if not isinstance(texts, tuple) or not all(isinstance(c, str) and c for c in texts):
        raise TypeError(f"`text_columns` must be a tuple of column names, got {texts!r}")
    if len(texts) not in (1, 2):
        raise ValueError(
            f"`text_columns` must name 1 column (single sentences) or 2 (sentence pairs), "
            f"got {len(texts)}: {texts!r}"
        )
    if len(set(texts)) != len(texts):
        raise ValueError(f"`text_columns` names a column twice: {texts!r}")
    if not isinstance(config.label_column, str) or not config.label_column:
        raise TypeError(f"`label_column` must be a column name, got {config.label_column!r}")
    if config.label_column in texts:
        raise ValueError(f"`label_column` {config.label_column!r} is also in `text_columns`")
    if config.label_names is not None:
        names = config.label_names
        if not all(isinstance(n, str) and n for n in names):
            raise TypeError(f"`label_names` must be non-empty strings, got {names!r}")
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"`label_names` must be at least 2 distinct names, got {names!r}")
    for name in ("max_train_examples", "max_validation_examples"):
        value = getattr(config, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"`{name}` must be an int or None, got {value!r}")
        if value is not None and value < 1:
            raise ValueError(f"`{name}` must be at least 1, got {value}")
    files = {"train_file": config.train_file, "validation_file": config.validation_file}
    given = [name for name, path in files.items() if path is not None]
    if given and config.dataset is not None:
        raise ValueError(f"pass either `dataset` or `{given[0]}`, not both")
    if len(given) == 1:
        missing = "validation_file" if given == ["train_file"] else "train_file"
        raise ValueError(f"`{given[0]}` needs `{missing}` as well (local files come in pairs)")
    if config.dataset_config is not None and config.dataset is None:
        raise ValueError("`dataset_config` needs `dataset`")
    for name, path in files.items():
        if path is not None and path.suffix.lower() not in LOCAL_FILE_SUFFIXES:
            raise ValueError(
                f"`{name}` must end in one of {', '.join(LOCAL_FILE_SUFFIXES)}, got {str(path)!r}"
            )
    if config.has_header and config.columns is not None:
        raise ValueError(
            "`columns` names the columns of a file without header: set has_header=False"
        )
    if not config.has_header:
        if config.columns is None or not all(isinstance(c, str) and c for c in config.columns):
            raise ValueError(
                "`columns` must name every column of a file without header (has_header=False), "
                f"got {config.columns!r}"
            )
        if len(set(config.columns)) != len(config.columns):
            raise ValueError(f"`columns` names a column twice: {config.columns!r}")
        if not given:
            raise ValueError("`has_header=False` applies to `train_file`/`validation_file` only")
        if any(path.suffix.lower() in (".json", ".jsonl") for path in files.values() if path):
            raise ValueError("`has_header=False` applies to TSV/CSV files, not JSON")


# ---------------------------------------------------------------- reading


def _read_file(config: TaskConfig, path: Path, argument: str) -> Dataset:
    from datasets import load_dataset

    if not path.is_file():
        raise FileNotFoundError(f"`{argument}` {str(path)!r} does not exist or is not a file")
    suffix = path.suffix.lower()
    _check_file_start(path, suffix, config, argument)
    options: dict[str, Any] = {}
    if suffix in (".tsv", ".csv"):
        # Text stays text: no "NA"/"null" -> missing value, and in TSV no quote processing.
        options["na_filter"] = False
        if suffix == ".tsv":
            options.update(delimiter="\t", quoting=csv.QUOTE_NONE)
        if not config.has_header:
            assert config.columns is not None
            options.update(header=None, column_names=list(config.columns))
    cache = str(config.cache_dir) if config.cache_dir is not None else None
    try:
        data = load_dataset(
            LOCAL_FILE_SUFFIXES[suffix],
            data_files={"data": str(path)},
            split="data",
            cache_dir=cache,
            **options,
        )
    except Exception as err:  # pandas/pyarrow parse errors: say which file and argument
        raise ValueError(f"`{argument}` {str(path)!r} could not be read: {err}") from err
    return data


def _check_file_start(path: Path, suffix: str, config: TaskConfig, argument: str) -> None:
    """Refuse a file with no rows, or a headerless one whose width differs from ``columns``."""
    with open(path, encoding="utf-8", newline="") as handle:
        if suffix in (".json", ".jsonl"):
            start = handle.read(64).strip()
            empty = start in ("", "[]") or start.replace(" ", "").startswith("[]")
            if empty:
                raise ValueError(f"`{argument}` {str(path)!r} has no rows")
            return
        if suffix == ".tsv":
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            reader = csv.reader(handle)
        first_rows = [row for row, _ in zip(filter(None, reader), range(2), strict=False)]
    if len(first_rows) < (1 if not config.has_header else 2):
        raise ValueError(f"`{argument}` {str(path)!r} has no rows")
    if not config.has_header:
        assert config.columns is not None
        width = len(first_rows[0])
        if width != len(config.columns):
            raise ValueError(
                f"`columns` names {len(config.columns)} columns {config.columns!r} but the first "
                f"line of `{argument}` {str(path)!r} has {width} fields"
            )


def _read_dataset(config: TaskConfig) -> tuple[Dataset, Dataset]:
    from datasets import DatasetDict, load_dataset, load_from_disk

    assert config.dataset is not None
    local = Path(config.dataset)
    cache = str(config.cache_dir) if config.cache_dir is not None else None
    if (local / "dataset_dict.json").is_file():  # a DatasetDict.save_to_disk folder
        if config.dataset_config is not None:
            raise ValueError("`dataset_config` does not apply to a save_to_disk folder")
        splits = load_from_disk(str(local))
    else:
        try:
            splits = load_dataset(config.dataset, config.dataset_config, cache_dir=cache)
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"`dataset` {config.dataset!r} was not found (a Hub id needs the network; a "
                f"local dataset folder must exist): {err}"
            ) from err
        except ValueError as err:
            raise ValueError(f"`dataset` {config.dataset!r} could not be loaded: {err}") from err
    if not isinstance(splits, DatasetDict):
        raise ValueError(f"`dataset` {config.dataset!r} did not load as a dataset with splits")
    chosen = []
    for argument, split in (
        ("train_split", config.train_split),
        ("validation_split", config.validation_split),
    ):
        if split not in splits:
            raise ValueError(
                f"`{argument}` {split!r} is not a split of `dataset` {config.dataset!r}; "
                f"available: {', '.join(splits)}"
            )
        chosen.append(splits[split])
    return chosen[0], chosen[1]


def _split_origins(config: TaskConfig) -> dict[str, str]:
    """How error messages name each split's source."""
    if config.train_file is not None:
        return {
            "train": f"`train_file` {str(config.train_file)!r}",
            "validation": f"`validation_file` {str(config.validation_file)!r}",
        }
    if config.dataset is not None:
        return {
            "train": f"`train_split` {config.train_split!r} of {config.dataset!r}",
            "validation": f"`validation_split` {config.validation_split!r} of {config.dataset!r}",
        }
    return {"train": f"{_EXAMPLE_NAME} train", "validation": f"{_EXAMPLE_NAME} test"}


# ---------------------------------------------------------------- checks and label encoding


def _check_columns(data: Dataset, config: TaskConfig, where: str) -> None:
    available = list(data.column_names)
    for argument, columns in (
        ("text_columns", config.text_columns),
        ("label_column", (config.label_column,)),
    ):
        missing = [c for c in columns if c not in available]
        if missing:
            raise ValueError(
                f"`{argument}`: column(s) {', '.join(map(repr, missing))} not in {where}; "
                f"available columns: {', '.join(available)}"
            )
    if data.num_rows == 0:
        raise ValueError(f"{where} has no rows")


def _label_kind(data: Dataset, column: str) -> str:
    from datasets import ClassLabel, Value

    feature = data.features[column]
    if isinstance(feature, ClassLabel):
        return "classlabel"
    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        return "string"
    if isinstance(feature, Value) and (
        feature.dtype.startswith("int") or feature.dtype.startswith("uint")
    ):
        return "int"
    return f"unsupported ({feature})"


def _label_names(
    config: TaskConfig, train: Dataset, validation: Dataset, where: dict[str, str]
) -> tuple[str, ...]:
    column = config.label_column
    for split, data in (("train", train), ("validation", validation)):
        _check_label_cells(data, column, where[split])
    kinds = {
        split: _label_kind(data, column)
        for split, data in (("train", train), ("validation", validation))
    }
    for split, kind in kinds.items():
        if kind.startswith("unsupported"):
            raise ValueError(
                f"`label_column` {column!r} of {where[split]} must hold class labels (strings, "
                f"ints or a ClassLabel), got {kind.removeprefix('unsupported ')}"
            )
    if "string" in kinds.values():
        _check_label_strings(train, validation, column, where)
    if config.label_names is not None:
        return config.label_names
    names = _derived_label_names(column, kinds, train, validation)
    if len(names) < 2:
        raise ValueError(
            f"`label_column` {column!r} holds a single class {names!r} in {where['train']} and "
            f"{where['validation']}; pass `label_names` to name every class"
        )
    return names


def _rows(rows: list[int]) -> str:
    return ", ".join(map(str, rows[:_SHOWN])) + (" ..." if len(rows) > _SHOWN else "")


def _check_label_cells(data: Dataset, column: str, where: str) -> None:
    """Empty label cells (read as None, NaN or blank text) are named by row."""
    empty = [
        row
        for row, value in enumerate(data[column])
        if value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
    ]
    if empty:
        raise ValueError(
            f"`label_column` {column!r} of {where} is empty in {len(empty)} row(s): "
            f"{_rows(empty)} (rows counted from 0, after the header)"
        )


def _check_label_strings(
    train: Dataset,
    validation: Dataset,
    column: str,
    where: dict[str, str],
) -> None:
    """String labels as a set: stray whitespace and names differing only in case are errors
    naming the rows (each would silently make a class of its own)."""
    rows: dict[tuple[str, str], list[int]] = {}
    for split, data in (("train", train), ("validation", validation)):
        for row, value in enumerate(data[column]):
            if isinstance(value, str):
                rows.setdefault((split, value), []).append(row)
    problems = []
    for (split, value), found in rows.items():
        if value != value.strip():
            problems.append(
                f"{where[split]}: label {value!r} has leading/trailing whitespace "
                f"(rows {_rows(found)})"
            )
    by_case: dict[str, set[str]] = {}
    for _, value in rows:
        by_case.setdefault(value.strip().casefold(), set()).add(value.strip())
    for spellings in by_case.values():
        if len(spellings) > 1:
            names = sorted(spellings)
            shown = "; ".join(
                f"{where[split]} rows {_rows(found)}: {value!r}"
                for (split, value), found in rows.items()
                if value.strip() in names
            )
            problems.append(f"labels {names} differ only in case ({shown})")
    if problems:
        raise ValueError(
            f"`label_column` {column!r}: the labels are not a clean set of classes:\n  "
            + "\n  ".join(problems)
        )


def _check_every_class_in_train(
    train: Dataset,
    validation: Dataset,
    column: str,
    names: tuple[str, ...],
    explicit: bool,
    where: dict[str, str],
) -> None:
    """Every class the validation split uses (and every class ``label_names`` lists) must occur
    in train: the model could never learn it otherwise. Gaps in derived int ids are not classes."""
    present = set(train.unique(column))
    ids = validation[column]
    missing = [i for i in range(len(names)) if i not in present and (explicit or i in ids)]
    if not missing:
        return
    shown = "; ".join(
        f"{names[i]!r} (validation rows {_rows([r for r, v in enumerate(ids) if v == i]) or 'none'})"
        for i in missing
    )
    raise ValueError(
        f"`label_column` {column!r}: class(es) never occur in {where['train']}: {shown}. The model "
        "could never learn them: add training examples"
        + (", or remove them from `label_names`" if explicit else "")
    )


def _derived_label_names(
    column: str, kinds: dict[str, str], train: Dataset, validation: Dataset
) -> tuple[str, ...]:
    """The ClassLabel names, the sorted distinct string labels, or ``"0".."max"`` for ints."""
    if kinds["train"] == "classlabel":
        return tuple(train.features[column].names)
    values = set(train.unique(column)) | set(validation.unique(column))
    if kinds["train"] == "string" or kinds["validation"] == "string":
        if kinds["train"] != kinds["validation"]:
            raise ValueError(
                f"`label_column` {column!r} holds strings in one split and numbers in the other; "
                "pass `label_names`"
            )
        return tuple(sorted(values))
    ints = sorted(int(v) for v in values)
    if ints[0] < 0:
        raise ValueError(
            f"`label_column` {column!r} holds negative labels "
            f"{[i for i in ints if i < 0][:_SHOWN]} (an unlabelled test split?); "
            "class ids must be 0, 1, ..."
        )
    return tuple(str(i) for i in range(ints[-1] + 1))


def _encode(data: Dataset, config: TaskConfig, names: tuple[str, ...], where: str) -> Dataset:
    """Keep the text and label columns; labels as ids into ``names`` in a ClassLabel column."""
    from datasets import ClassLabel, Value

    column = config.label_column
    kind = _label_kind(data, column)
    values = list(data[column])
    if kind == "classlabel":
        own = data.features[column].names
        values = [own[v] if 0 <= v < len(own) else v for v in values]
        kind = "string"
    if kind == "string":
        index = {name: i for i, name in enumerate(names)}
        bad = [(row, v) for row, v in enumerate(values) if v not in index]
        ids = [index.get(v, -1) for v in values]
    else:
        bad = [(row, v) for row, v in enumerate(values) if not 0 <= v < len(names)]
        ids = values
    if bad:
        shown = ", ".join(f"row {row}: {v!r}" for row, v in bad[:_SHOWN])
        expected = f"ids 0..{len(names) - 1}" if kind == "int" else f"one of {', '.join(names)}"
        raise ValueError(
            f"{len(bad)} label(s) in {where} are not in `label_names` ({expected}): {shown}"
            + (" ..." if len(bad) > _SHOWN else "")
        )
    kept = data.select_columns([*config.text_columns, column])
    for text in config.text_columns:
        feature = kept.features[text]
        if not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
            kept = kept.cast_column(text, Value("string"))
        missing = [row for row, v in enumerate(kept[text]) if v is None or not v.strip()]
        if missing:
            raise ValueError(
                f"`text_columns`: column {text!r} of {where} is empty in row(s) "
                f"{missing[:_SHOWN]}"
                + (" ..." if len(missing) > _SHOWN else "")
                + " (empty or only spaces; rows counted from 0, after the header)"
            )
    kept = kept.remove_columns(column)
    return kept.add_column(column, ids, feature=ClassLabel(names=list(names)))


def _sample(data: Dataset, limit: int | None, seed: int) -> Dataset:
    if limit is None or limit >= data.num_rows:
        return data
    return data.shuffle(seed=seed).select(range(limit)).flatten_indices()
