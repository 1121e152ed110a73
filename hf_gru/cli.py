"""`hf-gru`: train, distill, evaluate, predict, export, serve, push and demo. Argument parsing and printing only; the
work is in the library."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger("hf_gru")

DEMO_EXAMPLES = (
    "这本书写得非常好，强烈推荐！",
    "质量太差了，用了两天就坏了，不推荐购买。",
    "物流很快，包装也很精美，很满意。",
    "客服态度恶劣，再也不会来这家店买东西了。",
)


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("hf_gru").setLevel(logging.INFO)


def _train(argv: list[str]) -> int:
    from .arguments import parse_training_arguments
    from .training import run_training

    model_args, data_args, training_args = parse_training_arguments(argv)
    outcome = run_training(model_args, data_args, training_args)
    if outcome.is_main_process:
        _print_result(outcome.output_dir, outcome.metrics)
    return 0


def _distill(argv: list[str]) -> int:
    from .distillation import parse_distillation_arguments, run_distillation

    outcome = run_distillation(*parse_distillation_arguments(argv))
    if outcome.is_main_process:
        _print_result(outcome.output_dir, outcome.metrics)
    return 0


def _print_result(output_dir: Path, metrics: dict[str, float]) -> None:
    headline = {k: round(v, 4) for k, v in metrics.items() if k.endswith(("_accuracy", "_f1_macro", "_mse"))}
    print(f"model, tokenizer, results, plots and model card saved to {output_dir}")
    print(json.dumps(headline))


def _evaluate(args: argparse.Namespace) -> int:
    from .backends import load_backend
    from .hub import local_model
    from .predict import evaluate_model

    model_dir = local_model(args.model)
    classifier = load_backend(
        model_dir, backend=args.backend, precision=args.precision, threads=args.threads, device=args.device
    )
    metrics = evaluate_model(
        args.model,
        args.dataset,
        split=args.split,
        text_column=args.text_column,
        label_column=args.label_column,
        batch_size=args.batch_size,
        classifier=classifier,
    )
    print(json.dumps(metrics))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .backends import load_backend
    from .hub import local_model
    from .predict import predict_file, write_predictions_atomically

    if args.engine == "ray":
        return _predict_ray(args)
    for option, value in (("--workers", args.workers), ("--ray-address", args.ray_address),
                          ("--output-format", args.output_format)):  # fmt: skip
        if value is not None:
            raise ValueError(f"{option} is an option of --engine ray; add --engine ray, or drop {option}")

    def write(handle) -> int:  # after the output was checked: nothing is downloaded or loaded for a bad --output
        model_dir = local_model(args.model)
        classifier = load_backend(
            model_dir, backend=args.backend, precision=args.precision, threads=args.threads, device=args.device
        )
        return predict_file(
            args.model,
            args.input,
            handle,
            batch_size=args.batch_size,
            text_column=args.text_column,
            classifier=classifier,
        )

    if args.output is None:
        count = write(sys.stdout)
    else:
        count = write_predictions_atomically(args.output, args.input, overwrite=args.overwrite, write=write)
    logger.info("wrote %d predictions to %s", count, args.output or "stdout")
    return 0


def _predict_ray(args: argparse.Namespace) -> int:
    from .integrations.ray_job import label_corpus

    if args.output is None:
        raise ValueError("--engine ray writes one output shard per input shard: pass --output DIR")
    if args.device not in (None, "cpu"):
        raise ValueError("--engine ray runs its workers on CPUs; drop --device")
    summary = label_corpus(
        args.model, args.input, args.output, workers=args.workers, ray_address=args.ray_address,
        text_column=args.text_column, output_format=args.output_format or "parquet", batch_size=args.batch_size,
        backend=args.backend, precision=args.precision, threads=args.threads, overwrite=args.overwrite,
    )  # fmt: skip
    print(summary.describe())
    if summary.failed:
        for shard, error in summary.failed:
            print(f"hf-gru: error: {shard}: {error}", file=sys.stderr)
        print("hf-gru: rerun the same command once these shards are fixed: finished shards are skipped",
              file=sys.stderr)  # fmt: skip
        return 2
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export_model

    result = export_model(args.model, args.output, quantize=args.quantize, opset=args.opset, overwrite=args.overwrite)
    print(f"ONNX export written to {result.output_dir}: {', '.join(result.files)}")
    print(f"parity with PyTorch on {result.parity_texts} texts (right and left padding): max abs logit difference "
          f"{result.max_abs_diff:.2e}")  # fmt: skip
    if result.int8_max_abs_diff is not None:
        print(f"int8: max abs logit difference {result.int8_max_abs_diff:.3g}, same label on "
              f"{100 * result.int8_agreement:.1f}% of them")  # fmt: skip
    return 0


def _positive_int(value: str) -> int:
    """argparse type: batch sizes and thread counts below 1 are usage errors (exit 2, naming the option)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (1 or more), got {number}")
    return number


def _add_backend_options(parser: argparse.ArgumentParser, batch_size: int) -> None:
    parser.add_argument("--batch-size", dest="batch_size", type=_positive_int, default=batch_size)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument(
        "--backend",
        choices=("torch", "onnx"),
        default=None,
        help="default: onnx when MODEL/onnx was exported (hf-gru export) from MODEL's current weights and config "
        "and onnxruntime is installed; the backend used is logged",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "int8"),
        default="fp32",
        help="int8: onnx model_int8.onnx (hf-gru export --quantize int8) or torch dynamic quantization",
    )
    parser.add_argument("--threads", type=_positive_int, default=None, help="intra-op CPU threads (both backends)")


def _serve(args: argparse.Namespace) -> int:
    """Load the model and bind the port first (each failure one line, before anything listens), then serve."""
    from .backends import load_backend
    from .hub import local_model, snapshot_revision
    from .serving import ServingLimits, bind, create_app, serve  # fastapi: the serve extra

    limits = ServingLimits(**{name: getattr(args, name) for name in ServingLimits.__dataclass_fields__})
    model_dir = local_model(args.model)
    classifier = load_backend(model_dir, backend=args.backend, precision=args.precision, threads=args.threads)
    app = create_app(classifier, limits=limits, model_id=args.model, precision=args.precision,
                     model_sha=snapshot_revision(model_dir))  # fmt: skip
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    print(f"serving {args.model} ({classifier.name} {args.precision}) on http://{host}:{port} "
          f"(POST /predict, docs at /docs); SIGTERM or Ctrl-C drains and stops", flush=True)  # fmt: skip
    serve(app, sock, log_level="info" if logging.getLogger().isEnabledFor(logging.INFO) else "warning")
    return 0


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    from .batching import ServingLimits  # the defaults live there, once (a light module: no torch, no fastapi)

    defaults = ServingLimits()
    parser.add_argument("--model", required=True, help="a trained model directory or a Hub model id")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: 8080; 0 picks a free one)")
    parser.add_argument(
        "--backend",
        choices=("torch", "onnx"),
        default=None,
        help="default: onnx when MODEL/onnx/model.onnx is up to date and onnxruntime is installed",
    )
    parser.add_argument("--precision", choices=("fp32", "int8"), default="fp32")
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="onnx: worker threads, one per core (default: the cores, at most 8); torch: intra-op",
    )
    for name, help_text in (
        ("max_batch_texts", "texts run together; 1 turns batching across requests off"),
        ("max_batch_tokens", "padded tokens (texts x longest) per model call"),
        ("max_concurrent_requests", "requests queued or running at once; more are answered 429 with Retry-After"),
        ("max_input_chars", "longer texts are refused (413) unless the request says truncate: true"),
        ("max_client_batch_size", "texts per request"),
        ("max_connections", "open connections; more are refused at once (503)"),
        ("max_header_bytes", "bytes of a request's line and headers (400 beyond)"),
        ("max_header_count", "headers per request (431 beyond)"),
    ):
        option = "--" + name.replace("_", "-")
        parser.add_argument(option, dest=name, type=_positive_int, default=getattr(defaults, name),
                            help=f"{help_text} (default: {getattr(defaults, name)})")  # fmt: skip
    for name, help_text in (
        ("max_wait_ms", "milliseconds a batch with room waits for requests being read"),
        ("header_timeout", "seconds from a request's first byte to its last header (408)"),
        ("body_timeout", "seconds from a request's headers to its body's last byte (408)"),
        ("keep_alive_timeout", "seconds a connection may idle before a request (then closed)"),
        ("graceful_timeout", "seconds SIGTERM waits for requests in flight"),
    ):
        option = "--" + name.replace("_", "-")
        parser.add_argument(option, dest=name, type=float, default=getattr(defaults, name),
                            help=f"{help_text} (default: {getattr(defaults, name):g})")  # fmt: skip
    parser.add_argument(
        "--auto-truncate",
        dest="auto_truncate",
        action="store_true",
        help='a request that does not say "truncate" is truncated to what the model reads (TEI\'s; default: '
        "such a text is refused, 413)",
    )


def _push(args: argparse.Namespace) -> int:
    from .hub import push_model

    url = push_model(
        args.model,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        token=args.token,
    )
    print(url)
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Train on the embedded Chinese review corpus, report held-out accuracy, classify a few sentences."""
    from transformers import pipeline  # the GRU classes are registered: this module lives in hf_gru

    from .arguments import parse_training_arguments
    from .run_directory import read_results
    from .training import run_training

    argv = [
        "--dataset", "demo",
        "--output_dir", args.output_dir,
        "--preset", "small",
        "--max_length", "128",
        "--num_train_epochs", str(args.epochs),
        "--seed", str(args.seed),
        "--init_embeddings", args.init_embeddings,
        "--overwrite_output_dir",
        "--report_to", "none",
    ]  # fmt: skip
    outcome = run_training(*parse_training_arguments(argv))
    accuracy = outcome.metrics.get("test_accuracy")
    start = read_results(outcome.output_dir)["init_embeddings"]
    print(f"\nstart: {start}")
    print(f"held-out test accuracy: {accuracy:.4f} ({len(outcome.data.tokenized['test'])} texts)")
    classifier = pipeline("text-classification", model=str(outcome.output_dir))
    for text, result in zip(DEMO_EXAMPLES, classifier(list(DEMO_EXAMPLES))):
        print(f"  {result['label']:>8s}  {result['score']:.3f}  {text}")
    print(f"\nmodel card: {outcome.output_dir / 'README.md'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-gru", description=__doc__)
    parser.add_argument("--verbose", "-v", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser(
        "train",
        add_help=False,
        help="train a classifier: hf-gru train --dataset REF --output-dir DIR [--epochs N] [--seed N] ...",
        description="All options of scripts/train.py; see `hf-gru train --help`.",
    )

    commands.add_parser(
        "distill",
        add_help=False,
        help="distil a transformers classifier into a GRU: hf-gru distill --dataset REF --output-dir DIR "
        "(--teacher MODEL | --teacher-base MODEL) [--augment-copies N] [--unlabeled REF] ...",
        description="All options of scripts/distill.py; see `hf-gru distill --help`.",
    )

    evaluate = commands.add_parser("evaluate", help="metrics of a saved model on a dataset split (JSON, last line)")
    evaluate.add_argument("--model", required=True, help="a trained model directory or a Hub model id")
    evaluate.add_argument("--dataset", required=True, help="dataset reference, as for train")
    evaluate.add_argument("--split", default="test", help="split to evaluate (default: test)")
    evaluate.add_argument("--text-column", dest="text_column")
    evaluate.add_argument("--label-column", dest="label_column")
    _add_backend_options(evaluate, batch_size=256)

    predict = commands.add_parser(
        "predict", help="label every text of a file, as JSON Lines {line, text, label, score}"
    )
    predict.add_argument(
        "--model", required=True, help="a trained model directory (or its ONNX export folder) or a Hub model id"
    )
    predict.add_argument(
        "--input",
        required=True,
        help=".csv/.tsv/.jsonl/.json/.parquet (optionally .gz) read by extension like training data; any other file "
        "is plain text, one text a line. With --engine ray: a GLOB, a DIR or a Hub dataset id (one shard a file)",
    )
    predict.add_argument("--text-column", dest="text_column", help="column holding the text (structured files)")
    predict.add_argument(
        "--output", default=None, help="JSON Lines file to write (default: stdout); with --engine ray: a DIR"
    )
    predict.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --output file (atomically); with --engine ray: label finished shards again",
    )
    _add_backend_options(predict, batch_size=64)
    predict.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local (default): this process; ray: the shards of --input on a Ray actor pool, one output shard each, "
        "resumable (pip install 'hf-gru[ray]')",
    )
    predict.add_argument("--workers", type=_positive_int, default=None, help="Ray actors, one CPU each (default: "
                         "the cluster's CPUs)")  # fmt: skip
    predict.add_argument("--ray-address", dest="ray_address", default=None,
                         help="a running Ray cluster ('auto' finds it; default: start a local Ray)")  # fmt: skip
    predict.add_argument("--output-format", dest="output_format", choices=("parquet", "jsonl"), default=None,
                         help="the output shards' format with --engine ray (default: parquet)")  # fmt: skip

    export = commands.add_parser("export", help="write an ONNX graph (+ int8) for ONNX Runtime and optimum")
    export.add_argument("--model", required=True, help="a trained model directory")
    export.add_argument("--output", default=None, help="folder to write (default: MODEL/onnx)")
    export.add_argument("--quantize", choices=("int8",), default=None, help="also write model_int8.onnx")
    export.add_argument("--opset", type=int, default=None, help="ONNX opset, 12 to 20 (default: 17)")
    export.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the export's files in a non-empty --output (MODEL/onnx is always replaced; nothing else is)",
    )

    push = commands.add_parser("push", help="upload a trained model to the Hub in one commit")
    push.add_argument("--model", required=True, help="a trained model directory")
    push.add_argument("--repo-id", dest="repo_id", required=True, help="NAMESPACE/NAME")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--revision", default=None, help="branch to push to (created when missing)")
    push.add_argument("--commit-message", dest="commit_message", default=None)
    push.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the saved login)")

    serve_parser = commands.add_parser(
        "serve", help="serve a model over HTTP (text-embeddings-inference's /predict, with dynamic batching)"
    )
    _add_serve_options(serve_parser)

    demo = commands.add_parser("demo", help="train on the embedded Chinese review corpus and classify examples")
    demo.add_argument("--output-dir", dest="output_dir", default="outputs/demo")
    demo.add_argument("--epochs", type=int, default=4)
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument(
        "--init-embeddings", dest="init_embeddings", default="auto", help="auto (multilingual-e5-small here) or none"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    verbose = bool(argv) and argv[0] in ("-v", "--verbose")
    if verbose:
        argv = argv[1:]
    _setup_logging(verbose)
    try:
        if argv and argv[0] == "train":
            return _train(argv[1:])
        if argv and argv[0] == "distill":
            return _distill(argv[1:])
        args = parser.parse_args(argv)
        handlers = {"evaluate": _evaluate, "predict": _predict, "export": _export, "push": _push, "demo": _demo,
                    "serve": _serve}  # fmt: skip
        return handlers[args.command](args)
    except (ValueError, OSError, ImportError) as error:  # bad input: what and how to fix it, no traceback
        if verbose:
            logger.exception("traceback")
        print(f"hf-gru: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
