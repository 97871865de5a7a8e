"""``loyalkit compare lm`` and ``loyalkit compare lm-eval``: loyalty of compressed generative LMs.

``lm`` runs a teacher and a student causal LM in lockstep over a text corpus and reports token-level
loyalty (:mod:`loyalkit.metrics.lm_compare`); ``lm-eval`` compares two lm-evaluation-harness runs
written with ``--log_samples`` (:mod:`loyalkit.metrics.lm_eval_samples`). Both print a markdown
table and write the full report as JSON with ``--output``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from loyalkit.json_lines import json_lines

#: ``loyalkit.compression.causal_lm_loading.QUANTIZATIONS``, spelled out: that module imports torch, and building
#: the parser must not (a test keeps the two equal).
QUANTIZATIONS: tuple[str, ...] = ("int8", "int4-weight-only")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``compare`` with its ``lm`` and ``lm-eval`` actions."""
    parser = subparsers.add_parser(
        "compare",
        help="loyalty of a compressed generative LM to its original (token level or lm-eval runs)",
        description="Compare a compressed causal LM (student) with its original (teacher): "
        "`lm` over a text corpus token by token, `lm-eval` from two lm-evaluation-harness runs.",
    )
    actions = parser.add_subparsers(dest="compare_command", metavar="ACTION", required=True)
    _add_lm(actions)
    _add_lm_eval(actions)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``loyalkit compare lm`` or ``loyalkit compare lm-eval``."""
    if args.compare_command == "lm":
        return _run_lm(args)
    return _run_lm_eval(args)


def _add_lm(actions: Any) -> argparse.ArgumentParser:
    parser = actions.add_parser(
        "lm",
        help="token-level loyalty of a student causal LM to its teacher over a text corpus",
        description="Run teacher and student in lockstep over windows of the tokenized corpus and "
        "report: label loyalty (same top-1 token), probability loyalty (1 - Jensen-Shannon "
        "distance, natural log), KL(teacher || student) mean, standard error and percentiles, "
        "delta-p on the reference token (mean, RMS), the perplexity ratio and the token count. "
        "Models: a local folder, a .gguf file or a Hugging Face Hub id.",
    )
    parser.add_argument("--teacher", metavar="MODEL", help="the original model")
    student = parser.add_argument_group("student (one of --student, or compressions of --teacher)")
    student.add_argument("--student", metavar="MODEL", help="the compressed model")
    student.add_argument(
        "--student-quantize",
        choices=QUANTIZATIONS,
        help="student = the teacher quantized with torchao (int8 dynamic or int4 weight-only)",
    )
    student.add_argument(
        "--student-prune",
        type=float,
        metavar="SHARE",
        help="student = the teacher with this share (e.g. 0.5) of its decoder blocks' Linear "
        "weights zeroed by magnitude; combines with --student-quantize (pruned first)",
    )
    parser.add_argument(
        "--data", metavar="FILE", help="the corpus: a text file, or .jsonl with one document a line"
    )
    parser.add_argument(
        "--text-field", default="text", metavar="KEY", help="JSONL key of the text (default: text)"
    )
    parser.add_argument("--window", type=int, default=512, help="tokens per window (default 512)")
    parser.add_argument(
        "--stride",
        type=int,
        help="tokens between window starts (default: window / 2; each scored token then has at "
        "least half a window of context)",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    parser.add_argument(
        "--max-tokens", type=int, help="score only the first N tokens of the corpus"
    )
    parser.add_argument("--output", metavar="FILE", help="write the report as JSON here")
    cache = parser.add_argument_group("teacher cache (top-k log-probabilities, safetensors)")
    cache.add_argument(
        "--save-teacher-cache",
        metavar="FILE",
        help="run only the teacher over --data and store its top-k log-probabilities in FILE",
    )
    cache.add_argument(
        "--teacher-cache",
        metavar="FILE",
        help="compare the student with a stored teacher cache instead of running the teacher "
        "(label loyalty, delta-p, perplexity ratio exact; KL a lower bound and probability "
        "loyalty an upper bound, from the top-k + tail coarse-graining)",
    )
    cache.add_argument(
        "--top-k", type=int, default=64, help="log-probabilities kept per token (default 64)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _add_lm_eval(actions: Any) -> argparse.ArgumentParser:
    parser = actions.add_parser(
        "lm-eval",
        help="multiple-choice loyalty from two lm-evaluation-harness runs with --log_samples",
        description="Match the teacher's and the student's samples_<task>_*.jsonl files on "
        "doc_id and report per task: label loyalty over the chosen answer, probability loyalty "
        "over the softmax of the choice log-likelihoods (and of the length-normalised ones where "
        "the task reports acc_norm), flips against the gold answer and the disagreeing docs. "
        "Generative tasks get exact-match flips only.",
    )
    parser.add_argument("teacher_dir", metavar="TEACHER_DIR", help="the teacher's --output_path")
    parser.add_argument("student_dir", metavar="STUDENT_DIR", help="the student's --output_path")
    parser.add_argument("--output", metavar="FILE", help="write the report as JSON here")
    return parser


def read_corpus(path: str | Path, text_field: str = "text") -> str:
    """The text of a plain text file, or of a JSONL file's documents joined by blank lines."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--data {str(path)!r} does not exist")
    if path.suffix.lower() != ".jsonl":
        return path.read_text(encoding="utf-8")
    texts = []
    for number, record in json_lines(path.read_text(encoding="utf-8"), f"--data {str(path)!r}"):
        if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
            raise ValueError(
                f"--data {str(path)!r} line {number} has no string field {text_field!r} "
                "(choose it with --text-field)"
            )
        texts.append(record[text_field])
    if not texts:
        raise ValueError(f"--data {str(path)!r} holds no document")
    return "\n\n".join(texts)


def _check_lm_args(args: argparse.Namespace) -> None:
    compressed = args.student_quantize is not None or args.student_prune is not None
    if args.student and compressed:
        raise ValueError("give --student or --student-quantize/--student-prune, not both")
    if args.save_teacher_cache:
        if args.student or compressed or args.teacher_cache:
            raise ValueError(
                "--save-teacher-cache only runs the teacher: build the cache first, then compare "
                "each student with --teacher-cache FILE"
            )
        if not (args.teacher and args.data):
            raise ValueError("--save-teacher-cache needs --teacher and --data")
        return
    if not (args.student or compressed):
        raise ValueError("no student: give --student MODEL, --student-quantize or --student-prune")
    if compressed and not args.teacher:
        raise ValueError("--student-quantize/--student-prune compress --teacher: give --teacher")
    if args.teacher_cache:
        if args.data:
            raise ValueError("--teacher-cache holds its own tokens: leave out --data")
    elif not (args.teacher and args.data):
        raise ValueError("give --teacher and --data (or --teacher-cache FILE)")


def _token_ids(tokenizer: Any, text: str, max_tokens: int | None) -> list[int]:
    if max_tokens is not None:
        # Four characters per token is generous for English BPE; cutting the text first keeps a
        # --max-tokens run from tokenizing a whole large corpus.
        text = text[: max(4 * max_tokens, 1024) * 4]
    ids = tokenizer(text, verbose=False)["input_ids"]
    return list(ids[:max_tokens] if max_tokens is not None else ids)


def _check_same_tokenizer(teacher_tokenizer: Any, student_tokenizer: Any) -> None:
    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        raise ValueError(
            "the teacher's and the student's tokenizers differ: token-level loyalty needs one "
            "vocabulary"
        )


def _run_lm(args: argparse.Namespace) -> int:
    from loyalkit.compression.causal_lm_loading import (
        StudentCompression,
        load_causal_lm,
        load_tokenizer,
        student_from_teacher,
    )
    from loyalkit.metrics.lm_compare import (
        TeacherCache,
        WindowConfig,
        build_teacher_cache,
        compare_causal_lms,
        compare_with_teacher_cache,
    )

    _check_lm_args(args)
    progress = not args.quiet
    cache = TeacherCache.load(args.teacher_cache) if args.teacher_cache else None
    config = WindowConfig(
        window=cache.window if cache else args.window,
        stride=cache.stride if cache else args.stride,
        batch_size=args.batch_size,
        max_tokens=args.max_tokens,
    )
    if args.top_k < 1:
        raise ValueError(f"--top-k must be a positive integer, got {args.top_k}")
    # The corpus is read before any model is loaded: a wrong path fails at once.
    text = read_corpus(args.data, args.text_field) if args.data else None
    teacher = load_causal_lm(args.teacher) if args.teacher else None
    token_ids: list[int] | None = None
    if text is not None:
        tokenizer = load_tokenizer(args.teacher)
        token_ids = _token_ids(tokenizer, text, args.max_tokens)
    if args.save_teacher_cache:
        assert teacher is not None
        built = build_teacher_cache(teacher, token_ids, config, top_k=args.top_k, progress=progress)
        built.save(args.save_teacher_cache)
        print(
            f"Saved the teacher's top-{built.top_k} log-probabilities for "
            f"{len(built.target_logprobs):,} tokens to {args.save_teacher_cache}"
        )
        return 0
    if args.student:
        student = load_causal_lm(args.student)
        student_name = args.student
        if args.data:
            _check_same_tokenizer(tokenizer, load_tokenizer(args.student))
    else:
        assert teacher is not None
        compression = StudentCompression(quantize=args.student_quantize, prune=args.student_prune)
        student, student_name = student_from_teacher(teacher, compression)
    if cache is not None:
        result = compare_with_teacher_cache(
            cache, student, batch_size=config.batch_size, progress=progress
        )
        result["teacher_cache"] = {"path": args.teacher_cache, "top_k": cache.top_k}
    else:
        assert teacher is not None
        result = compare_causal_lms(teacher, student, token_ids, config, progress=progress)
    result["teacher"] = args.teacher
    result["student"] = student_name
    result["settings"] = {"window": config.window, "stride": config.stride, "data": args.data}
    print(token_report_table(result))
    _write_json(result, args.output)
    return 0


def token_report_table(result: dict[str, Any]) -> str:
    """The token-level report as a markdown table."""
    kl = result["kl_divergence"]
    percentiles = kl["percentiles"]
    rows = [
        (
            "label loyalty (same top-1 token)",
            f"{result['label_loyalty']:.4f} ± {result['label_loyalty_stderr']:.4f}",
        ),
        ("probability loyalty (1 - JS distance)", f"{result['probability_loyalty']:.4f}"),
        ("KL(teacher ‖ student) mean, nats", f"{kl['mean']:.6f} ± {kl['stderr']:.6f}"),
        *[(f"KL {name}", f"{percentiles[name]:.6f}") for name in percentiles],
        ("Δp mean (student - teacher, reference token)", f"{result['delta_p']['mean']:+.6f}"),
        ("Δp RMS", f"{result['delta_p']['rms']:.6f}"),
        (
            "perplexity teacher / student",
            f"{result['ppl_teacher']:.4f} / {result['ppl_student']:.4f}",
        ),
        ("perplexity ratio (student / teacher)", f"{result['ppl_ratio']:.6f}"),
        ("tokens scored", f"{result['num_tokens']:,}"),
    ]
    if "teacher_cache" in result:
        rows.append(
            (
                "teacher cache",
                f"top-{result['teacher_cache']['top_k']}: KL lower bound, loyalty upper bound",
            )
        )
    width = max(len(name) for name, _ in rows)
    lines = [f"| {'measure':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {name:<{width}} | {value} |" for name, value in rows]
    return "\n".join(lines)


def _write_json(result: dict[str, Any], output: str | None) -> None:
    if output:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"Wrote {path}")


def _run_lm_eval(args: argparse.Namespace) -> int:
    from loyalkit.metrics.lm_eval_samples import compare_lm_eval_runs, lm_eval_report_table

    result = compare_lm_eval_runs(args.teacher_dir, args.student_dir)
    print(lm_eval_report_table(result))
    _write_json(result, args.output)
    return 0
