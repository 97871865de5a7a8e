"""The Gradio page of a loyalty metric's Hub Space, shared by the three ``app.py`` files.

evaluate's own ``evaluate.utils.launch_gradio_widget`` uses components that Gradio removed, so each
Space's ``app.py`` describes its form with a :class:`MetricForm` and calls :func:`launch_metric_app`.
The page shows the metric's description, a form (JSON text boxes for the student's and the teacher's
outputs plus the metric's options), the result as JSON and the metric card (the Space's README).
Each input's ``elem_id`` is its option name (``#predictions``, ``#base``...), the result is ``#result``.

Example:
    >>> parse_json_list("[[0.2, 0.8], [0.9, 0.1]]", "predictions")
    [[0.2, 0.8], [0.9, 0.1]]
    >>> to_json_safe({"per_class": {0: 1.0}, "ci": (0.5, 1.0), "kl": float("inf")})
    {'per_class': {'0': 1.0}, 'ci': [0.5, 1.0], 'kl': 'inf'}
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import evaluate
import gradio as gr
from huggingface_hub import RepoCard

from loyalkit.metrics.inputs import INPUT_TYPES

Option = Literal["labels", "input_type", "base", "num_classes", "confidence_level", "disagreements"]


@dataclass(frozen=True)
class MetricForm:
    """What a metric's page asks for: its options (in order) and the example it opens with."""

    options: Sequence[Option]
    predictions: str
    references: str
    labels: str = ""
    input_type: str = "logits"


def parse_json_list(text: str, name: str) -> list[Any]:
    """The JSON list typed into the ``name`` box; a readable ``ValueError`` otherwise."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"`{name}` is not valid JSON: {error.msg} at character {error.pos}"
        ) from None
    if not isinstance(value, list):
        raise ValueError(
            f"`{name}` must be a JSON list, e.g. [0, 1, 1] or [[2.0, 0.5], [0.1, 1.0]]"
        )
    return value


def parse_optional_number(text: str, name: str) -> float | None:
    """The number typed into the ``name`` box, or None when it is left empty."""
    if not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"`{name}` must be a number or left empty, got {text!r}") from None


def to_json_safe(value: Any) -> Any:
    """``value`` with string keys, lists for tuples and non-finite floats spelt out ('inf', 'nan')."""
    if isinstance(value, dict):
        return {str(key): to_json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _optional_count(text: str) -> int | None:
    value = parse_optional_number(text, "num_classes")
    if value is not None and not value.is_integer():
        raise ValueError(f"`num_classes` must be a whole number or left empty, got {text!r}")
    return None if value is None else int(value)


def _option_input(option: Option, form: MetricForm) -> gr.Component:
    # Optional numbers are text boxes: a gr.Number cannot be left empty (it sends 0).
    if option == "labels":
        return gr.Textbox(
            value=form.labels,
            lines=2,
            label="labels (gold labels, optional: adds flips and both accuracies)",
            placeholder="[0, 1, 1] or leave empty",
            elem_id=option,
        )
    if option == "input_type":
        return gr.Dropdown(list(INPUT_TYPES), value=form.input_type, label=option, elem_id=option)
    placeholders = {
        "base": "empty = natural log (range [0.167, 1]); 2 gives [0, 1]",
        "num_classes": "optional, e.g. 3",
        "confidence_level": "optional bootstrap interval, e.g. 0.95",
    }
    if option in placeholders:
        return gr.Textbox(label=option, placeholder=placeholders[option], elem_id=option)
    return gr.Checkbox(label="list the examples where the labels differ", elem_id=option)


# The ``compute`` keyword of each option and how to read its input; None leaves the keyword out.
_OPTION_ARGUMENTS: dict[Option, tuple[str, Callable[[Any], Any]]] = {
    "labels": ("labels", lambda text: parse_json_list(text, "labels") if text.strip() else None),
    "input_type": ("input_type", lambda choice: choice),
    "base": ("base", lambda text: parse_optional_number(text, "base")),
    "num_classes": ("num_classes", _optional_count),
    "confidence_level": (
        "confidence_level",
        lambda text: parse_optional_number(text, "confidence_level"),
    ),
    "disagreements": ("return_disagreements", lambda checked: True if checked else None),
}


def compute_from_form(
    metric: evaluate.EvaluationModule,
    options: Sequence[Option],
    predictions: str,
    references: str,
    *option_values: Any,
) -> Any:
    """Run ``metric`` on the typed form; bad input becomes a ``gr.Error`` the person can read."""
    try:
        kwargs: dict[str, Any] = {}
        for option, value in zip(options, option_values, strict=True):
            keyword, read = _OPTION_ARGUMENTS[option]
            argument = read(value)
            if argument is not None:
                kwargs[keyword] = argument
        result = metric.compute(
            predictions=parse_json_list(predictions, "predictions"),
            references=parse_json_list(references, "references"),
            **kwargs,
        )
    except (ValueError, TypeError) as error:
        raise gr.Error(str(error)) from None
    return to_json_safe(result)


def build_metric_app(metric_script: Path, form: MetricForm) -> gr.Blocks:
    """The page for the ``evaluate`` module ``metric_script``, beside its README card.

    The script is loaded by its file path: a Space is cloned into a folder named ``app``, where
    ``evaluate.load`` of the folder would look for ``app/app.py``.
    """
    metric = evaluate.load(str(metric_script))
    card = RepoCard.load(metric_script.parent / "README.md")
    title = card.data.get("title") or metric.name
    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"# {title}\n\n{metric.description.strip()}")
        with gr.Row():
            with gr.Column():
                predictions = gr.Textbox(
                    value=form.predictions,
                    lines=4,
                    label="predictions (the student's outputs, JSON)",
                    elem_id="predictions",
                )
                references = gr.Textbox(
                    value=form.references,
                    lines=4,
                    label="references (the teacher's outputs, JSON)",
                    elem_id="references",
                )
                options = [_option_input(option, form) for option in form.options]
                submit = gr.Button("Submit", variant="primary", elem_id="submit")
            with gr.Column():
                result = gr.JSON(label="Result", open=True, max_height=800, elem_id="result")
        gr.Markdown(card.text)

        def compute(predictions: str, references: str, *option_values: Any) -> Any:
            return compute_from_form(metric, form.options, predictions, references, *option_values)

        # One module instance serves every visitor: its compute state is not safe to share.
        submit.click(
            compute,
            inputs=[predictions, references, *options],
            outputs=result,
            api_name="compute",
            concurrency_limit=1,
        )
    return demo


def launch_metric_app(metric_script: Path, form: MetricForm) -> None:
    """Serve the page; Gradio reads ``GRADIO_SERVER_NAME`` and ``GRADIO_SERVER_PORT`` itself."""
    build_metric_app(metric_script, form).launch()
