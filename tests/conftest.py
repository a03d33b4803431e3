"""Fixtures and helpers the test files share.

Markers: `slow` (long or real-weight checks; `make test-slow`) and `integration` (a test that starts subprocesses,
loads the real starter model, drives the browser or runs distributed). `make test` (CI) runs everything but `slow`;
`make test-unit` also leaves out `integration`, the fast in-process suite.

`training/` and `benchmarks/` import as namespace packages because pytest puts the repository root (the folder above
the `tests` package) first on `sys.path`.
"""

import csv
import os
import sys

import pytest
import torch


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long or real-weight checks; run with `make test-slow`.")
    config.addinivalue_line(
        "markers", "integration: starts subprocesses, loads the real starter, drives the browser or runs distributed; "
        "in `make test`, left out by `make test-unit`.")


# Captions of the tiny training runs (train_captioner.py, its accelerate launch): eight distinct sound scenes.
CAPTIONS = [
    "a dog barks while cars pass by", "rain falls steadily on a tin roof", "a man speaks and a crowd laughs",
    "birds chirp in the early morning", "an engine idles and then revs loudly", "water runs from a tap into a sink",
    "a baby cries and a woman talks softly", "wind blows through the trees",
]

# The paper's architectures (laion/clap-htsat-unfused, Llama-2-7b-hf) as config files: test_paper_scale.py and the
# FSDP wrap check of test_accelerate_configs.py build the paper captioner from them on `meta`.
ARCHITECTURES = os.path.join(REPO_ROOT, "training", "configs", "architectures")
CLAP_CONFIG = os.path.join(ARCHITECTURES, "clap_htsat_unfused_config.json")
LLAMA_CONFIG = os.path.join(ARCHITECTURES, "llama2_7b_config.json")


def paper_captioner_config(audio_config, text_config):
    """The captioner config the paper recipe (`paper_captioner_llama2_zero_shot.json`) builds from its parts: the
    benchmark's own reading of the recipe, so the plan it prints is of the model checked here."""
    from benchmarks.bench_paper_scale import captioner_config

    return captioner_config(audio_config, text_config, tiny=False)


def write_csv(path, header, rows):
    """A CSV file of `header` and `rows` (lists of cells); returns its path."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


@pytest.fixture
def tiny_bridge_config():
    from diffusion_link import DiffusionLinkConfig

    # Odd sizes make shape bugs surface.
    return DiffusionLinkConfig(embedding_dim=12, hidden_size=37, num_blocks=2, timestep_embedding_dim=16)


@pytest.fixture
def tiny_bridge(tiny_bridge_config):
    from diffusion_link import DiffusionLinkBridge

    torch.manual_seed(0)
    bridge = DiffusionLinkBridge(tiny_bridge_config).eval()
    # Non-trivial weights everywhere (the residual branches start at zero) and distinct EMA weights.
    with torch.no_grad():
        for p in bridge.denoiser.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for p in bridge.ema_denoiser.parameters():
            p.copy_(p + 0.05 * torch.randn_like(p))
    return bridge


class RunsCode:
    """A pickle payload that creates a marker file when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def run_python(code: str, cwd: str | None = None, timeout: int = 300) -> str:
    """Run `code` in a fresh Python process with this interpreter; return stdout, raise with stderr on failure."""
    import subprocess

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


@pytest.fixture(scope="session")
def tiny_parts(tmp_path_factory):
    """Saved tiny random parts of a captioner: CLAP (+ feature extractor and tokenizer), LLaMA (+ tokenizer), bridge."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from diffusion_link import DiffusionLinkBridge, DiffusionLinkConfig
    from diffusion_link.testing import tiny_clap, tiny_llama_tokenizer

    root = tmp_path_factory.mktemp("tiny-parts")
    clap, processor = tiny_clap(seed=0)
    clap.save_pretrained(root / "clap")
    processor.save_pretrained(root / "clap")
    tokenizer = tiny_llama_tokenizer()
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    ))
    lm.save_pretrained(root / "llama")
    tokenizer.save_pretrained(root / "llama")
    bridge = DiffusionLinkBridge(DiffusionLinkConfig(embedding_dim=clap.config.projection_dim, hidden_size=48, num_blocks=2))
    bridge.save_pretrained(root / "bridge")
    return {"clap": str(root / "clap"), "llama": str(root / "llama"), "bridge": str(root / "bridge"), "root": root}


@pytest.fixture(scope="session")
def tiny_pipeline():
    from diffusion_link.testing import tiny_captioner

    return tiny_captioner(seed=0)


def write_wav(path, seconds=2.0, rate=44100, channels=1, seed=0, amplitude=0.1, dtype="float32"):
    """A noise clip on disk (`soundfile`)."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    shape = (int(seconds * rate), channels) if channels > 1 else (int(seconds * rate),)
    samples = (amplitude * rng.standard_normal(shape)).astype(np.float32)
    float_wav = dtype != "int16" and str(path).endswith(".wav")
    sf.write(path, samples, rate, subtype="FLOAT" if float_wav else "PCM_16")
    return str(path)


@pytest.fixture(scope="session")
def saved_tiny_captioner(tmp_path_factory):
    """A tiny captioner saved as a pipeline folder."""
    from diffusion_link.testing import tiny_captioner

    folder = tmp_path_factory.mktemp("saved-tiny-captioner")
    tiny_captioner(seed=0).save_pretrained(folder)
    return folder


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A running stand-in Hub; the environment of `run_python` children points at it. Stopped at teardown."""
    from .hub_server import HubServer

    server = HubServer(("127.0.0.1", 0)).start()
    for key, value in {
        "HF_ENDPOINT": server.endpoint, "HF_TOKEN": "hf_test_token", "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_ETAG_TIMEOUT": "30", "HF_HUB_DOWNLOAD_TIMEOUT": "30",
    }.items():
        monkeypatch.setenv(key, value)
    set_hf_home(monkeypatch, tmp_path / "hf-home-push")
    try:
        yield server
    finally:
        server.stop()


def set_hf_home(monkeypatch, folder):
    """A fresh, empty cache: downloads in the next child process really go over HTTP."""
    monkeypatch.setenv("HF_HOME", str(folder))
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "HF_MODULES_CACHE", "TRANSFORMERS_CACHE"):
        monkeypatch.delenv(key, raising=False)
