"""Hub Space of the loyalty metric: ``python app.py`` serves the page (see app_widget)."""

from pathlib import Path

from loyalkit.metrics.app_widget import MetricForm, launch_metric_app

FORM = MetricForm(
    options=("labels", "input_type", "base", "confidence_level", "disagreements"),
    predictions="[[2.0, 0.5], [0.2, 1.0], [1.5, 1.4], [0.1, 0.3]]",
    references="[[3.0, 0.1], [0.1, 2.0], [0.1, 0.9], [0.4, 0.2]]",
    labels="[0, 1, 1, 1]",
)

if __name__ == "__main__":
    launch_metric_app(Path(__file__).with_name("loyalty.py"), FORM)
