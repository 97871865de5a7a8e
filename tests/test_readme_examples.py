"""Issue 11, finding 9: every Python block of README.md runs as printed, on its own.

Each ```python block runs in a fresh interpreter in an empty folder (so it can only use names it
defines). When a ```text block follows it, that is what it must print last: exactly, or, where the block
is preceded by ``<!-- readme-test: tolerance=X -->``, with every number within X of the README's
(values that depend on training and thread count) and all other text equal. The attack examples run
as users run them: in this environment, through the isolated worker of ``loyalkit attack setup``
(``$LOYALKIT_ATTACK_ENV`` or its default), after the README's ``loyalkit attack prepare-data`` in a
private home. Only a block preceded by ``<!-- readme-test: attack -->`` is marked ``attack`` (it then
runs in the compat environment that imports TextAttack in-process); blocks that fine-tune a model are
marked ``real_model``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from loyalkit.robustness.attack_env import ENV_VARIABLE, default_location

README = Path(__file__).resolve().parents[1] / "README.md"
NEIGHBOURS = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "word_substitution"
    / "counterfitted_neighbors.json"
)
_FENCE = re.compile(r"^```(\w*)\s*$")
_MARK = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


@dataclass(frozen=True)
class Example:
    line: int  # 1-based line of the opening fence
    heading: str
    code: str
    expected: str | None
    options: dict[str, str]

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")
        return slug


def _blocks(lines: list[str]) -> list[tuple[int, str, str, int]]:
    """(first line, language, body, line after the closing fence) of every fenced block."""
    blocks, index = [], 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        blocks.append((index, match.group(1), "\n".join(lines[index + 1 : end]), end + 1))
        index = end + 1
    return blocks


def readme_examples(text: str) -> list[Example]:
    """The README's Python blocks with their expected output and options."""
    lines = text.splitlines()
    blocks = _blocks(lines)
    examples = []
    for number, (start, language, body, after) in enumerate(blocks):
        if language != "python":
            continue
        heading = next(
            (lines[i].lstrip("# ") for i in range(start, -1, -1) if lines[i].startswith("#")), ""
        )
        options: dict[str, str] = {}
        previous = next((lines[i] for i in range(start - 1, -1, -1) if lines[i].strip()), "")
        mark = _MARK.search(previous)
        if mark:
            for item in mark.group(1).split():
                key, _, value = item.partition("=")
                options[key] = value
        expected = None
        following = blocks[number + 1] if number + 1 < len(blocks) else None
        if following and following[1] == "text":
            between = lines[after : following[0]]
            if not any(line.strip() for line in between):
                expected = following[2]
        examples.append(Example(start + 1, heading, body, expected, options))
    return examples


def same_output(printed: str, expected: str, tolerance: float | None) -> bool:
    """The last lines printed equal ``expected`` (the Trainer's own log lines may come before);
    with ``tolerance`` numbers may differ by up to it."""
    expected = expected.strip()
    printed = "\n".join(printed.strip().splitlines()[-len(expected.splitlines()) :])
    if tolerance is None:
        return printed == expected
    if _NUMBER.sub("#", printed) != _NUMBER.sub("#", expected):
        return False
    pairs = zip(_NUMBER.findall(printed), _NUMBER.findall(expected), strict=True)
    return all(abs(float(a) - float(b)) <= tolerance for a, b in pairs)


def test_the_extractor_on_a_made_up_readme() -> None:
    text = (
        "# A\n\n```python\nprint(1)\n```\n\n```text\n1\n```\n\n## B\n"
        "<!-- readme-test: tolerance=0.1 real_model -->\n```python\nprint(0.25)\n```\n"
        "more words\n```text\nnot its output\n```\n"
    )
    first, second = readme_examples(text)
    assert (first.line, first.heading, first.code, first.expected) == (3, "A", "print(1)", "1")
    assert (second.heading, second.expected) == ("B", None)
    assert second.options == {"tolerance": "0.1", "real_model": ""}
    assert same_output("{'a': 0.3}", "{'a': 0.25}", 0.1)
    assert not same_output("{'a': 0.4}", "{'a': 0.25}", 0.1)
    assert not same_output("{'b': 0.25}", "{'a': 0.25}", 0.1)
    assert not same_output("0.3", "0.25", None)


EXAMPLES = readme_examples(README.read_text(encoding="utf-8"))


def _marks(example: Example) -> list[pytest.MarkDecorator]:
    marks = []
    # Explicit only: mentioning loyalkit.robustness or AttackCallback is not enough, since those
    # examples run here through the isolated worker, as users run them.
    if "attack" in example.options:
        marks.append(pytest.mark.attack)
    if "real_model" in example.options:
        marks.append(pytest.mark.real_model)
    return marks


def test_attack_mark_is_explicit_only() -> None:
    text = (
        "# A\n```python\nfrom loyalkit.robustness import attack_model\n```\n"
        "# B\n<!-- readme-test: attack -->\n```python\nprint(1)\n```\n"
    )
    first, second = readme_examples(text)
    assert [m.name for m in _marks(first)] == []
    assert [m.name for m in _marks(second)] == ["attack"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The README's setup steps in private folders: a Hugging Face home with the metric modules
    installed (`loyalkit metrics install`, HF_EVALUATE_OFFLINE=1) and a user home where
    `loyalkit attack prepare-data` wrote the attack data: WordNet from Debian's packages (make
    system-deps), and the counter-fitted neighbour sets from a local copy of the upstream file
    (`--neighbours`, the offline stand-in for the README's `--online`, which downloads the same
    file). The isolated attack environment is the one already built."""
    hf_home = tmp_path_factory.mktemp("hf-home")
    user_home = tmp_path_factory.mktemp("user-home")
    env = {
        **os.environ,
        "HF_HOME": str(hf_home),
        "HF_EVALUATE_OFFLINE": "1",
        "HOME": str(user_home),
        ENV_VARIABLE: str(default_location()),  # resolved before HOME changes
    }
    env.pop("XDG_CACHE_HOME", None)
    loyalkit = [sys.executable, "-m", "loyalkit"]
    for command in (
        ["metrics", "install"],
        ["attack", "prepare-data", "--neighbours", str(NEIGHBOURS)],
    ):
        subprocess.run(loyalkit + command, env=env, check=True, capture_output=True, timeout=300)
    return env


@pytest.mark.parametrize("example", [pytest.param(e, id=e.id, marks=_marks(e)) for e in EXAMPLES])
def test_readme_python_block_runs_as_printed(
    example: Example, home: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **home,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    code = "import torch\ntorch.set_num_threads(1)\n" + example.code
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"README line {example.line}:\n{result.stderr[-3000:]}"
    if example.expected is not None:
        tolerance = example.options.get("tolerance")
        assert same_output(
            result.stdout, example.expected, float(tolerance) if tolerance else None
        ), f"README line {example.line} printed:\n{result.stdout}"
