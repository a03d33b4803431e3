"""`diffusion-link` command line.

    diffusion-link gap EMBEDS.safetensors [--bridge DIR] [--strength 0.1] [--steps 5] [--plot gap.png] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys


def _gap(args: argparse.Namespace) -> int:
    from .embedding_data import load_embeddings
    from .metrics import format_gap_table, modality_gap, plot_modality_gap

    tensors, _ = load_embeddings(args.embeddings)
    if "audio_embeds" not in tensors:
        print(f"error: {args.embeddings} has no paired `audio_embeds`/`text_embeds`.", file=sys.stderr)
        return 2
    audio, text = tensors["audio_embeds"], tensors["text_embeds"]
    results = {"raw": modality_gap(audio, text)}
    bridged = None
    if args.bridge:
        from .modeling_diffusion_link import DiffusionLinkBridge

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffusion-link", description="Diffusion-Link: audio-text modality gap tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    gap = commands.add_parser("gap", help="Modality-gap figures of paired embeddings, raw and bridged.")
    gap.add_argument("embeddings", help="safetensors file with paired `audio_embeds` and `text_embeds`.")
    gap.add_argument("--bridge", help="A saved DiffusionLinkBridge folder; adds the bridged figures.")
    gap.add_argument("--strength", type=float, default=None, help="link() strength (default: the bridge's).")
    gap.add_argument("--steps", type=int, default=None, help="link() DDIM steps (default: the bridge's).")
    gap.add_argument("--plot", help="Write a PNG of the gap here.")
    gap.add_argument("--json", help="Write the figures as JSON here.")
    gap.set_defaults(func=_gap)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
