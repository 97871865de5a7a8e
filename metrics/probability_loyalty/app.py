"""Hub Space of the probability loyalty metric: ``python app.py`` serves the page (see app_widget)."""

from pathlib import Path

from loyalkit.metrics.app_widget import MetricForm, launch_metric_app

FORM = MetricForm(
    options=("input_type", "base"),
    predictions="[[0.9, 0.1], [0.5, 0.5]]",
    references="[[0.6, 0.4], [0.5, 0.5]]",
    input_type="probabilities",
)

if __name__ == "__main__":
    launch_metric_app(Path(__file__).with_name("probability_loyalty.py"), FORM)
