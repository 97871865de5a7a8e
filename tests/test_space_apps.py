"""The three metric Spaces as a person uses them: ``app.py`` served, driven in headless Chromium.

Every number read from a page is checked against scipy or scikit-learn computed here, never against
the metric's own output. Needs Debian's ``chromium`` and ``chromium-driver``: missing, the tests fail.
"""

from __future__ import annotations

import doctest
import json
import re
import shutil

import evaluate
import gradio
import numpy as np
import pytest
from browser import GradioPage, ServedApp, chromium_paths, headless_chromium
from huggingface_hub import RepoCard, metadata_load
from packaging.requirements import Requirement
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax
from scipy.stats import entropy
from sklearn.metrics import accuracy_score, recall_score

from loyalkit.metrics import METRIC_NAMES, module_path
from loyalkit.metrics.modules import SPACE_FILES

SDK_VERSION = "6.31.0"
CARD_SECTIONS = (
    "## Metric Description",
    "## How to Use",
    "### Inputs",
    "### Output Values",
    "#### Values from Popular Papers",
    "### Examples",
    "## Limitations and Bias",
    "## Citation",
    "## Further References",
)


def as_json(array: np.ndarray) -> str:
    return json.dumps(array.tolist())


def rounded_probabilities(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Rows that sum to 1 within 1e-5 after rounding, as a person would type them."""
    return np.round(softmax(np.random.default_rng(seed).normal(scale=2.0, size=shape), 1), 6)


def rounded_logits(shape: tuple[int, int], seed: int) -> np.ndarray:
    return np.round(np.random.default_rng(seed).normal(scale=2.0, size=shape), 3)


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_space_folder_is_complete_and_its_card_loads(name):
    folder = module_path(name)
    for pattern in SPACE_FILES:
        assert (folder / pattern.format(name=name)).is_file(), pattern
    meta = metadata_load(folder / "README.md")
    assert meta is not None
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["pinned"] is False
    assert meta["sdk_version"] == SDK_VERSION
    # The page is tested on the installed Gradio: it must be the Space's major version.
    assert gradio.__version__.split(".")[0] == SDK_VERSION.split(".")[0]
    assert {"evaluate", "metric"} <= set(meta["tags"])
    assert meta["title"] and meta["emoji"] and meta["colorFrom"] and meta["colorTo"]
    assert meta["description"].strip() and "\n" not in meta["description"].strip()
    card = RepoCard.load(folder / "README.md")
    assert card.data.title == meta["title"]
    for section in CARD_SECTIONS:
        assert f"\n{section}\n" in card.text, section
    lines = (folder / "requirements.txt").read_text().splitlines()
    required = {Requirement(line).name for line in lines if line.strip() and line[0] not in "#-"}
    assert {"loyalkit", "evaluate", "gradio"} <= required


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_card_examples_print_what_the_card_says(name):
    # The README's ``>>>`` examples (checked by hand and with scipy when written) must stay true.
    text = (module_path(name) / "README.md").read_text()
    source = "\n".join(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if ">>>" in b)
    globs = {name: evaluate.load(str(module_path(name)))}
    test = doctest.DocTestParser().get_doctest(source, globs, f"{name}/README.md", None, 0)
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    runner.run(test, out=report.append)
    assert runner.tries >= 3 and runner.failures == 0, "".join(report)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    try:
        chromium_paths()
    except RuntimeError as error:
        pytest.fail(str(error))
    driver = headless_chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    # Each Space runs from a copy in a folder named ``app``, as the Hub clones it; all three start
    # together so that their imports overlap, and each page waits for its own app.
    served = {}
    for name in METRIC_NAMES:
        work_dir = tmp_path_factory.mktemp(name)
        space = work_dir / "app"
        space.mkdir()
        for pattern in SPACE_FILES:
            shutil.copy(module_path(name) / pattern.format(name=name), space)
        served[name] = ServedApp(space / "app.py", work_dir)
    yield served
    for app in served.values():
        app.stop()


def open_page(browser, apps, name: str) -> GradioPage:
    try:
        url = apps[name].wait_until_serving()
    except RuntimeError as error:
        pytest.fail(f"the {name} Space does not serve: {error}")
    return GradioPage(browser, url)


def test_label_loyalty_page_matches_sklearn(browser, apps):
    student = np.array([2, 0, 1, 1, 0, 2, 1, 0])
    teacher = np.array([2, 0, 0, 1, 0, 1, 1, 2])
    page = open_page(browser, apps, "label_loyalty")
    page.type_into("predictions", as_json(student))
    page.type_into("references", as_json(teacher))
    page.type_into("num_classes", "3")
    page.submit()
    result = page.result()
    assert result == {"label_loyalty": pytest.approx(accuracy_score(teacher, student))}


def test_probability_loyalty_page_matches_scipy(browser, apps):
    page = open_page(browser, apps, "probability_loyalty")
    student, teacher = rounded_probabilities((5, 3), 1), rounded_probabilities((5, 3), 2)
    page.type_into("predictions", as_json(student))
    page.type_into("references", as_json(teacher))
    page.choose("input_type", "probabilities")
    page.type_into("base", "2")
    page.submit()
    expected = np.mean(1 - jensenshannon(teacher, student, axis=1, base=2))
    assert page.result() == {"probability_loyalty": pytest.approx(expected, rel=1e-9)}

    # Logits with the base left empty: the natural log of the authors' scipy computation.
    student, teacher = rounded_logits((4, 3), 3), rounded_logits((4, 3), 4)
    page.type_into("predictions", as_json(student))
    page.type_into("references", as_json(teacher))
    page.choose("input_type", "logits")
    page.type_into("base", "")
    page.submit()
    expected = np.mean(1 - jensenshannon(softmax(teacher, 1), softmax(student, 1), axis=1))
    assert page.result() == {"probability_loyalty": pytest.approx(expected, rel=1e-9)}


def test_loyalty_page_matches_scipy_and_sklearn(browser, apps, tmp_path):
    student, teacher = rounded_logits((8, 3), 5), rounded_logits((8, 3), 6)
    gold = np.array([0, 1, 2, 2, 1, 0, 1, 2])
    page = open_page(browser, apps, "loyalty")
    page.type_into("predictions", as_json(student))
    page.type_into("references", as_json(teacher))
    page.type_into("labels", as_json(gold))
    page.tick("disagreements")
    page.submit()
    result = page.result()
    assert browser.save_screenshot(str(tmp_path / "loyalty_space.png"))

    p_student, p_teacher = softmax(student, 1), softmax(teacher, 1)
    s_label, t_label = student.argmax(1), teacher.argmax(1)
    classes = np.unique(t_label)
    per_class = recall_score(t_label, s_label, labels=classes, average=None)
    s_right, t_right = s_label == gold, t_label == gold
    assert result == {
        "label_loyalty": pytest.approx(accuracy_score(t_label, s_label)),
        "probability_loyalty": pytest.approx(
            np.mean(1 - jensenshannon(p_teacher, p_student, axis=1)), rel=1e-9
        ),
        "kl_divergence": pytest.approx(np.mean(entropy(p_teacher, p_student, axis=1)), rel=1e-9),
        "label_loyalty_per_class": {
            str(c): pytest.approx(v) for c, v in zip(classes, per_class, strict=True)
        },
        "worst_class_label_loyalty": pytest.approx(per_class.min()),
        "flips": pytest.approx(np.mean(s_right != t_right)),
        "flips_correct_to_incorrect": pytest.approx(np.mean(t_right & ~s_right)),
        "flips_incorrect_to_correct": pytest.approx(np.mean(~t_right & s_right)),
        "student_accuracy": pytest.approx(accuracy_score(gold, s_label)),
        "teacher_accuracy": pytest.approx(accuracy_score(gold, t_label)),
        "disagreements": np.flatnonzero(s_label != t_label).tolist(),
        "num_examples": 8,
    }


@pytest.mark.parametrize(
    ("name", "box", "typed", "message"),
    [
        (
            "probability_loyalty",
            "predictions",
            "[[0.9, 0.9], [0.5, 0.5]]",
            "`predictions` (the student's outputs) has rows that do not sum to 1",
        ),
        ("loyalty", "references", "[[1.0, 0.0], [0.5", "`references` is not valid JSON"),
    ],
)
def test_bad_input_shows_a_readable_error(browser, apps, name, box, typed, message):
    page = open_page(browser, apps, name)  # opens with a valid example in every box
    page.type_into(box, typed)
    page.submit()
    assert message in page.error()
    assert apps[name].process.poll() is None  # the app still serves
