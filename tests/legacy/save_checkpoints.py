#!/usr/bin/env python
"""Save a bridge and captioners with whatever `diffusion_link` is importable, plus what they compute.

    python tests/legacy/save_checkpoints.py OUT_DIR

`tests/test_legacy_checkpoints.py` runs this script against an older tree of the package (`git archive` of
`LEGACY_COMMIT`, first on `PYTHONPATH`) and checks that the current code loads every folder it wrote and computes
the same results. Only the stable public API is used here, so the script runs on old and new trees alike. It writes:

- `bridge/`: a tiny `DiffusionLinkBridge` with non-trivial (and distinct EMA) weights;
- `captioner/`: a complete tiny CLAP/LLaMA captioner pipeline folder (embedded bases);
- `referenced/captioner` with `referenced/clap`, `referenced/llama`, `referenced/bridge`: a captioner that stores only its trained parts and
  refers to the two base folders;
- `expected.json`: `link()` of fixed embeddings, caption token ids of fixed audio embeddings, and the pipeline's
  caption of a fixed waveform.
"""

import json
import os
import sys

import numpy as np
import torch


def main(out: str) -> None:
    from diffusion_link import DiffusionLinkBridge, DiffusionLinkConfig, DiffusionLinkForAudioCaptioning
    from diffusion_link.testing import tiny_captioner

    import diffusion_link

    print("diffusion_link from", os.path.dirname(os.path.abspath(diffusion_link.__file__)))
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    bridge = DiffusionLinkBridge(DiffusionLinkConfig(embedding_dim=12, hidden_size=37, num_blocks=2,
                                                     timestep_embedding_dim=16)).eval()
    with torch.no_grad():
        for p in bridge.denoiser.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for p in bridge.ema_denoiser.parameters():
            p.copy_(p + 0.05 * torch.randn_like(p))
        bridge.fit_normalization(torch.randn(64, 12))
    bridge.save_pretrained(os.path.join(out, "bridge"))
    bridge_inputs = torch.randn(5, 12, generator=torch.Generator().manual_seed(1))

    pipe = tiny_captioner(seed=0)
    pipe.save_pretrained(os.path.join(out, "captioner"))
    dim = pipe.model.config.embedding_dim
    audio_embeds = torch.nn.functional.normalize(torch.randn(3, dim, generator=torch.Generator().manual_seed(2)), dim=-1)
    ids = pipe.model.generate(audio_embeds=audio_embeds, max_new_tokens=8)
    wave = (0.3 * np.sin(np.linspace(0, 2000, 48000))).astype(np.float32)
    caption = pipe({"array": wave, "sampling_rate": 48000}, max_new_tokens=8)["generated_text"]

    ref = os.path.join(out, "referenced")
    bases = tiny_captioner(seed=1, lora_r=0).model  # an LM without LoRA layers, as a pretrained base is
    bases.audio_tower.save_pretrained(os.path.join(ref, "clap"))
    bases.language_model.save_pretrained(os.path.join(ref, "llama"))
    bases.bridge.save_pretrained(os.path.join(ref, "bridge"))
    referenced = DiffusionLinkForAudioCaptioning.from_pretrained_parts(
        os.path.join(ref, "clap"), os.path.join(ref, "llama"), os.path.join(ref, "bridge"),
        prefix_length=3, prompt="", lora_r=2, lora_alpha=4,
    ).eval()
    referenced.save_pretrained(os.path.join(ref, "captioner"))
    referenced_ids = referenced.generate(audio_embeds=audio_embeds, max_new_tokens=6)
    expected = {
        "bridge_inputs": bridge_inputs.tolist(),
        "bridge_link": bridge.link(bridge_inputs).tolist(),
        "audio_embeds": audio_embeds.tolist(),
        "caption_ids": ids.tolist(),
        "waveform_caption": caption,
        "referenced_ids": referenced_ids.tolist(),
    }
    with open(os.path.join(out, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f)


if __name__ == "__main__":
    main(sys.argv[1])
