"""Issue 11, finding 5: the study's data and settings are checked before anything trains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from study_helpers import LABEL_NAMES, tiny_study, write_split

from loyalkit.study.config import StudyConfig
from loyalkit.study.runner import run_study
from loyalkit.study.task_data import TaskConfig, load_task


def files(tmp_path: Path, train_edit: dict[int, str], dev_edit: dict[int, str]) -> TaskConfig:
    """Train and validation TSVs with some lines (counted from 1 = first data row) replaced."""
    paths = []
    for name, n, seed, edits in (("train", 20, 0, train_edit), ("dev", 10, 1, dev_edit)):
        path = write_split(tmp_path / f"{name}.tsv", n, seed)
        lines = path.read_text(encoding="utf-8").splitlines()
        for row, line in edits.items():
            lines[row + 1] = line
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(path)
    return TaskConfig(train_file=paths[0], validation_file=paths[1])


@pytest.mark.parametrize(
    ("train_edit", "dev_edit", "message"),
    [
        ({3: "a fine film\tpositive "}, {}, r"train.*'positive ' has leading/trailing whitespace "
         r"\(rows 3\)"),
        ({}, {2: "a fine film\tPositive", 5: "dull\tPositive"}, r"\['Positive', 'positive'\] "
         r"differ only in case.*rows 2, 5: 'Positive'"),
        ({4: "a fine film\t"}, {}, r"`label_column` 'label' of .*train.* is empty in 1 row\(s\): 4"),
        ({}, {1: "so so\tneutral"}, r"never occur in .*train.*: 'neutral' \(validation rows 1\)"),
        ({6: "   \tpositive"}, {}, r"`text_columns`: column 'sentence' of .*train.* is empty in "
         r"row\(s\) \[6\] \(empty or only spaces"),
    ],
)  # fmt: skip
def test_label_set_and_texts_checked_with_rows_named(
    tmp_path: Path, train_edit: dict[int, str], dev_edit: dict[int, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        load_task(files(tmp_path, train_edit, dev_edit))


def test_a_class_missing_from_train_is_an_error(tmp_path: Path) -> None:
    config = files(tmp_path, {}, {})
    names = (*LABEL_NAMES, "neutral")
    with pytest.raises(
        ValueError, match=r"never occur in .*train.*'neutral' \(validation rows none\).*label_names"
    ):
        load_task(
            TaskConfig(
                train_file=config.train_file,
                validation_file=config.validation_file,
                label_names=names,
            )
        )


@pytest.mark.parametrize("key", ["seeds", "teacher.seed", "attack.seed"])
def test_seeds_checked_against_numpys_range(key: str) -> None:
    np.random.seed(2**32 - 1)  # the largest seed NumPy takes
    with pytest.raises(ValueError):
        np.random.seed(2**32)
    for seed, ok in ((2**32 - 1, True), (2**32, False)):
        section, _, name = key.partition(".")
        data = {"seeds": [seed]} if not name else {section: {name: seed}}
        if ok:
            StudyConfig.from_dict(data)
        else:
            with pytest.raises(ValueError, match=rf"{key}.*2\*\*32 - 1.*{seed}"):
                StudyConfig.from_dict(data)


def test_max_length_checked_against_the_model(tmp_path: Path) -> None:
    data = tiny_study(tmp_path, seeds=[0])
    data["teacher"]["max_length"] = 65  # the tiny teacher has 64 positions
    with pytest.raises(ValueError, match="teacher.max_length: 65 .*max_position_embeddings = 64"):
        run_study(StudyConfig.from_dict(data), progress=False)
    assert not (tmp_path / "study" / "methods").exists()


def test_teacher_quality_by_hand() -> None:
    from loyalkit.study.teacher import check_teacher_quality

    balanced = [0, 1] * 50  # majority rate 50%
    with pytest.raises(
        ValueError, match=r"51.5% is not 2 points above the majority-class rate 50.0%"
    ):
        check_teacher_quality(0.515, balanced, 0.02)
    check_teacher_quality(0.515, balanced, None)  # the override
    check_teacher_quality(0.52, balanced, 0.02)
    with pytest.raises(ValueError, match="53.0% is not 5 points"):
        check_teacher_quality(0.53, balanced, 0.05)  # the 53%, with a stricter margin
    skewed = [1] * 80 + [0] * 20  # majority rate 80%, class 1
    with pytest.raises(ValueError, match=r"rate 80.0% \(always answering class 1\)"):
        check_teacher_quality(0.81, skewed, 0.02)


def test_a_teacher_no_better_than_the_majority_stops_the_study(tmp_path: Path) -> None:
    data = tiny_study(tmp_path, seeds=[0])
    data["methods"] = {"int8-ptq": {}}
    dev = tmp_path / "dev.tsv"
    lines = dev.read_text(encoding="utf-8").splitlines()
    flipped = [lines[0]] + [
        f"{t}\t{LABEL_NAMES[1 - LABEL_NAMES.index(label)]}"
        for t, label in (line.rsplit("\t", 1) for line in lines[1:])
    ]
    dev.write_text("\n".join(flipped) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="teacher: validation accuracy .* majority-class rate"):
        run_study(StudyConfig.from_dict(data), progress=False)
    assert not (tmp_path / "study" / "methods").exists()
    data["teacher"]["min_margin_over_majority"] = None
    results = run_study(StudyConfig.from_dict(data), progress=False)
    assert results["runs"][0]["status"] == "done"
