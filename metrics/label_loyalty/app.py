"""Hub Space of the label loyalty metric: ``python app.py`` serves the page (see app_widget)."""

from pathlib import Path

from loyalkit.metrics.app_widget import MetricForm, launch_metric_app

FORM = MetricForm(
    options=("num_classes",),
    predictions="[0, 1, 2, 2]",
    references="[0, 1, 1, 2]",
)

if __name__ == "__main__":
    launch_metric_app(Path(__file__).with_name("label_loyalty.py"), FORM)
