"""The study's plots, as PNG files: accuracy against probability loyalty, after-attack accuracy per
method, speed-up against label loyalty.

Each function takes the output of :func:`loyalkit.study.report.summarize` (and the teacher as a
one-seed summary entry) and returns a :class:`Plot` whose points are read back from the drawn
artists, so a caller can check what the picture shows. Percentages are plotted x100. Error bars
show the sample std over seeds where a method ran with several. Figures are drawn with
``matplotlib.figure.Figure`` (Agg canvas, files only), never with pyplot: no display is needed and
no global matplotlib state (backend, open figures) is touched.

Example:
    >>> import tempfile
    >>> summary = [{"method": "kd", "title": "KD", "seeds": 1, "failed": 0,
    ...             "accuracy": {"mean": 0.8, "std": 0.0},
    ...             "probability_loyalty": {"mean": 0.9, "std": 0.0}}]
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     plot = plot_accuracy_vs_loyalty(summary, None, Path(folder) / "a.png")
    >>> [(p.label, round(p.x, 3), round(p.y, 3)) for p in plot.points]
    [('KD', 90.0, 80.0)]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "PLOT_FILES",
    "Plot",
    "PlotPoint",
    "plot_accuracy_vs_loyalty",
    "plot_after_attack_accuracy",
    "plot_speedup_vs_loyalty",
    "write_plots",
]

#: The file names ``write_plots`` uses, in its order.
PLOT_FILES: tuple[str, ...] = (
    "accuracy_vs_probability_loyalty.png",
    "after_attack_accuracy.png",
    "speedup_vs_label_loyalty.png",
)
_FIGSIZE = (6.4, 4.8)
_DPI = 100


@dataclass(frozen=True)
class PlotPoint:
    """One plotted point (or bar): its label, position and error bar half-widths (0: none)."""

    label: str
    x: float
    y: float
    xerr: float = 0.0
    yerr: float = 0.0


@dataclass(frozen=True)
class Plot:
    """A written PNG and the points it shows, read back from the figure before saving."""

    path: Path
    title: str
    points: tuple[PlotPoint, ...]


def write_plots(
    summary: Sequence[Mapping[str, Any]], teacher: Mapping[str, Any] | None, output_dir: Path
) -> list[Plot]:
    """Draw the three plots into ``output_dir`` (file names ``PLOT_FILES``)."""
    output_dir = Path(output_dir)
    return [
        plot_accuracy_vs_loyalty(summary, teacher, output_dir / PLOT_FILES[0]),
        plot_after_attack_accuracy(summary, teacher, output_dir / PLOT_FILES[1]),
        plot_speedup_vs_loyalty(summary, teacher, output_dir / PLOT_FILES[2]),
    ]


def plot_accuracy_vs_loyalty(
    summary: Sequence[Mapping[str, Any]], teacher: Mapping[str, Any] | None, path: Path
) -> Plot:
    """Accuracy (y) against probability loyalty (x), one marker per method with std error bars."""
    title = "Accuracy against probability loyalty"
    return _scatter(
        summary,
        teacher,
        path,
        title,
        ("probability_loyalty", "Probability loyalty (%)", 100.0),
        ("accuracy", "Accuracy (%)", 100.0),
    )


def plot_speedup_vs_loyalty(
    summary: Sequence[Mapping[str, Any]], teacher: Mapping[str, Any] | None, path: Path
) -> Plot:
    """CPU speed-up over the teacher (y) against label loyalty (x), one marker per method; a
    method with a seed timed under load (``speedup_under_load`` in its summary entry) is labelled
    ``(timed under load)``."""
    title = "Speed-up against label loyalty"
    return _scatter(
        summary,
        teacher,
        path,
        title,
        ("label_loyalty", "Label loyalty (%)", 100.0),
        ("speedup", "CPU speed-up over the teacher (x)", 1.0),
        flag=("speedup_under_load", " (timed under load)"),
    )


def plot_after_attack_accuracy(
    summary: Sequence[Mapping[str, Any]], teacher: Mapping[str, Any] | None, path: Path
) -> Plot:
    """A bar per method: accuracy after the attack, with std error bars; x is the bar's index."""
    title = "After-attack accuracy"
    entries = [(label, stat) for label, stat in _series(summary, teacher, "after_attack_accuracy")]
    fig, ax = _figure()
    points: list[PlotPoint] = []
    if entries:
        heights = [100.0 * stat["mean"] for _, stat in entries]
        errors = [100.0 * stat["std"] for _, stat in entries]
        bars = ax.bar(
            range(len(entries)),
            heights,
            yerr=errors,
            capsize=4,
            color=[f"C{i % 10}" for i in range(len(entries))],
        )
        ax.set_xticks(range(len(entries)), [label for label, _ in entries], rotation=30)
        ax.bar_label(bars, fmt="%.1f", label_type="center")
        segments = bars.errorbar.lines[2][0].get_segments()
        for (label, _), rect, segment in zip(entries, bars.patches, segments, strict=True):
            x, y = rect.get_x() + rect.get_width() / 2, rect.get_height()
            points.append(PlotPoint(label, float(x), float(y), 0.0, _half_length(segment)))
    else:
        _no_data(ax, "no attack results in this study")
    ax.set_xlabel("Method")
    ax.set_ylabel("After-attack accuracy (%)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    return Plot(Path(path), title, tuple(points))


def _scatter(
    summary: Sequence[Mapping[str, Any]],
    teacher: Mapping[str, Any] | None,
    path: Path,
    title: str,
    x_axis: tuple[str, str, float],
    y_axis: tuple[str, str, float],
    flag: tuple[str, str] | None = None,
) -> Plot:
    """``flag`` is ``(summary key, label suffix)``: methods whose entry has a true value there get
    the suffix in the legend."""
    (x_key, x_label, x_scale), (y_key, y_label, y_scale) = x_axis, y_axis
    xs = dict(_series(summary, teacher, x_key))
    ys = dict(_series(summary, teacher, y_key))
    flagged = {
        str(entry.get("title") or entry["method"])
        for entry in summary
        if flag is not None and entry.get(flag[0])
    }
    fig, ax = _figure()
    points = []
    for index, name in enumerate(label for label in xs if label in ys):
        x, y = xs[name], ys[name]
        label = name + flag[1] if flag is not None and name in flagged else name
        container = ax.errorbar(
            x_scale * x["mean"],
            y_scale * y["mean"],
            xerr=x_scale * x["std"] or None,
            yerr=y_scale * y["std"] or None,
            fmt="*" if name == "Teacher" else "o",
            markersize=12 if name == "Teacher" else 7,
            capsize=3,
            color=f"C{index % 10}",
            label=label,
        )
        line, _caps, bar_lines = container.lines
        xerr = yerr = 0.0
        for collection in bar_lines:
            (start, end), *_ = collection.get_segments()
            if start[0] != end[0]:
                xerr = _half_length((start, end))
            else:
                yerr = _half_length((start, end))
        x_drawn, y_drawn = float(line.get_xdata()[0]), float(line.get_ydata()[0])
        points.append(PlotPoint(label, x_drawn, y_drawn, xerr, yerr))
    if points:
        ax.legend(fontsize="small")
    else:
        _no_data(ax, f"no {x_key} / {y_key} results in this study")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return Plot(Path(path), title, tuple(points))


def _series(
    summary: Sequence[Mapping[str, Any]], teacher: Mapping[str, Any] | None, key: str
) -> list[tuple[str, Mapping[str, float]]]:
    """``(label, {"mean", "std"})`` for the teacher and every method that has ``key``."""
    series = []
    if teacher and isinstance(teacher.get(key), Mapping):
        series.append(("Teacher", teacher[key]))
    for entry in summary:
        if entry.get("seeds", 1) > 0 and isinstance(entry.get(key), Mapping):
            series.append((str(entry.get("title") or entry["method"]), entry[key]))
    return series


def _half_length(segment: Any) -> float:
    """Half the length of an error bar drawn from ``segment[0]`` to ``segment[1]``."""
    (x0, y0), (x1, y1) = segment
    return float(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5 / 2)


def _no_data(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)


def _figure() -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    # A bare Figure renders with the Agg canvas on savefig, without pyplot's global state.
    fig = Figure(figsize=_FIGSIZE, dpi=_DPI)
    return fig, fig.subplots()
