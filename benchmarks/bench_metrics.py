"""Speed of the loyalty metrics: functional API vs evaluate's compute() vs a per-example scipy loop.

Run: ``.venv/bin/python benchmarks/bench_metrics.py`` (about two minutes on 2 cores). Prints a
Markdown table for ``benchmarks/RESULTS.md``. All of them compute probability loyalty on the same
logits; the reference is what the paper's authors point to: ``1 - jensenshannon(p_t, p_s)`` per
example. Times are the best of ``--repeats`` runs (the loop at N = 10^6 runs once).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax


def best_time(function: Callable[..., object], repeats: int, *args: object) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def reference_loop(student: np.ndarray, teacher: np.ndarray) -> float:
    student_p, teacher_p = softmax(student, axis=1), softmax(teacher, axis=1)
    return float(
        np.mean([1 - jensenshannon(t, s) for s, t in zip(student_p, teacher_p, strict=True)])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**4, 10**5, 10**6])
    parser.add_argument("--classes", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import evaluate

    from loyalkit.metrics import module_path, probability_loyalty

    module = evaluate.load(str(module_path("probability_loyalty")))
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, evaluate {evaluate.__version__}, "
        f"{os.cpu_count()} cores\n"
    )
    print(
        "| N | classes | functional | compute() | of which add_batch | compute() of lists "
        "| reference loop | loop / functional | compute / functional |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        for classes in args.classes:
            rng = np.random.default_rng(n + classes)
            student = rng.normal(scale=2.0, size=(n, classes))
            teacher = rng.normal(scale=2.0, size=(n, classes))
            expected = probability_loyalty(student, teacher)
            functional = best_time(probability_loyalty, args.repeats, student, teacher)

            adds, computes = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                module.add_batch(predictions=student, references=teacher)
                middle = time.perf_counter()
                value = module.compute()["probability_loyalty"]
                adds.append(middle - start)
                computes.append(time.perf_counter() - start)
                assert abs(value - expected) < 1e-12
            loop_repeats = 1 if n >= 10**6 else max(1, args.repeats // 2)
            loop = best_time(reference_loop, loop_repeats, student, teacher)
            assert (
                abs(
                    reference_loop(student[:1000], teacher[:1000])
                    - probability_loyalty(student[:1000], teacher[:1000])
                )
                < 1e-12
            )
            # Python lists: checked and converted by NumPy (loyalkit.metrics.functional.check_pair),
            # then the same Arrow path; evaluate's own list path took seconds here before issue 11.
            rows_s, rows_t = student.tolist(), teacher.tolist()
            start = time.perf_counter()
            module.add_batch(predictions=rows_s, references=rows_t)
            assert abs(module.compute()["probability_loyalty"] - expected) < 1e-12
            stock = time.perf_counter() - start
            compute = min(computes)
            print(
                f"| {n:,} | {classes} | {functional * 1e3:.2f} ms | {compute * 1e3:.1f} ms "
                f"| {min(adds) * 1e3:.1f} ms | {stock * 1e3:.0f} ms | {loop * 1e3:.0f} ms | {loop / functional:.0f}x "
                f"| {compute / functional:.2f}x |"
            )


if __name__ == "__main__":
    main()
