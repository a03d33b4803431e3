"""Fault tolerance: a training run killed mid-way (SIGKILL) and re-run with the same command ends with exactly the
weights of an uninterrupted run; a half-written checkpoint or output line left by the kill does not break the rerun."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from diffusion_link.experiments.embedding_files import save_embeddings
from diffusion_link.experiments.synthetic_gap import synthetic_gap_embeddings

from .conftest import REPO_ROOT, write_wav


# The child slows each optimiser step down (a sleep changes no random state) so that the kill lands mid-run, and
# uses the thread count of this test process so its float sums are bit-identical to the in-process reference run.
CHILD = """
import json, sys, time, torch, transformers
from transformers.trainer_callback import CallbackHandler
torch.set_num_threads({threads})
_step_end = CallbackHandler.on_step_end
def _slow_step_end(self, *args, **kwargs):
    time.sleep({delay})
    return _step_end(self, *args, **kwargs)
CallbackHandler.on_step_end = _slow_step_end
from training import {script}
{script}.main(json.loads(sys.argv[1]))
"""


def as_argv(values: dict) -> list[str]:
    return [item for key, value in values.items() for item in (f"--{key}", str(value))]


def start_child(script: str, argv: list[str], delay: float) -> subprocess.Popen:
    code = CHILD.format(threads=torch.get_num_threads(), delay=delay, script=script)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p))
    return subprocess.Popen([sys.executable, "-c", code, json.dumps(argv)], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_after_checkpoint(proc: subprocess.Popen, output_dir, step: int, timeout: float = 120.0) -> None:
    """SIGKILL `proc` as soon as `checkpoint-<step>` is complete (its trainer_state.json is written last)."""
    marker = output_dir / f"checkpoint-{step}" / "trainer_state.json"
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"training ended (rc={proc.returncode}) before {marker} existed:\n"
                                 f"{proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{marker} did not appear within {timeout} s")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (output_dir / "model.safetensors").exists()  # it really died mid-run


def fake_half_written_checkpoint(output_dir, complete_step: int) -> None:
    """What a kill during `_save_checkpoint` leaves: a folder with a truncated model file and no trainer_state.json.

    transformers writes checkpoints in place (no temporary folder), so `get_last_checkpoint` alone would pick it.
    """
    done = sorted(int(p.name.split("-")[1]) for p in output_dir.glob("checkpoint-*"))
    half = output_dir / f"checkpoint-{max(done) + 1000}"
    half.mkdir()
    data = (output_dir / f"checkpoint-{complete_step}" / "model.safetensors").read_bytes()
    (half / "model.safetensors").write_bytes(data[: len(data) // 2])


def max_abs_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def bridge_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft-bridge-data")
    train = synthetic_gap_embeddings(96, embedding_dim=12, num_unpaired_text=32, seed=0)
    save_embeddings(root / "train.safetensors", {k: train[k] for k in ("audio_embeds", "text_embeds", "unpaired_text_embeds")})
    return root / "train.safetensors"


@pytest.mark.integration
def test_killed_bridge_run_resumes_to_the_uninterrupted_weights(bridge_data, tmp_path):
    from training import train_bridge

    def values(out):
        return {"train_file": str(bridge_data), "output_dir": str(out), "max_steps": 20, "save_steps": 5,
                "per_device_train_batch_size": 16, "learning_rate": 3e-3, "hidden_size": 24, "num_blocks": 2,
                "seed": 7, "disable_tqdm": True, "dataloader_num_workers": 0, "log_level": "warning"}

    train_bridge.main(as_argv(values(tmp_path / "full")))

    out = tmp_path / "killed"
    kill_after_checkpoint(start_child("train_bridge", as_argv(values(out)), delay=0.15), out, step=10)
    fake_half_written_checkpoint(out, complete_step=10)
    model = train_bridge.main(as_argv(values(out)))  # the same command again

    assert int(model.ema_num_updates) == 20  # the EMA came back with the checkpoint and kept counting
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(k.startswith("ema_denoiser.") for k in a) and "ema_num_updates" in a
    assert max_abs_diff(a, b) == 0.0


@pytest.fixture(scope="module")
def caption_file(tiny_parts):
    captions = ["a dog barks while cars pass by", "rain falls steadily on a tin roof", "a man speaks and a crowd laughs",
                "birds chirp in the early morning", "an engine idles and then revs loudly", "wind blows through trees"]
    embeds = F.normalize(torch.randn(len(captions), 24, generator=torch.Generator().manual_seed(0)), dim=-1)
    path = tiny_parts["root"] / "ft-captions.safetensors"
    save_embeddings(path, {"audio_embeds": embeds, "text_embeds": embeds}, {"captions": captions})
    return str(path)


@pytest.mark.integration
def test_killed_captioner_run_resumes_to_the_uninterrupted_weights(tiny_parts, caption_file, tmp_path):
    from training import train_captioner

    def values(out):
        return {"audio_tower_name_or_path": tiny_parts["clap"], "language_model_name_or_path": tiny_parts["llama"],
                "bridge_name_or_path": tiny_parts["bridge"], "train_file": caption_file, "output_dir": str(out),
                "max_steps": 15, "save_strategy": "steps", "save_steps": 5, "base_weights": "referenced",
                "per_device_train_batch_size": 4, "learning_rate": 1e-2, "lora_r": 4, "lora_alpha": 8,
                "lora_target_modules": "q_proj,v_proj", "prefix_length": 3, "prompt": "", "seed": 3,
                "disable_tqdm": True, "log_level": "warning"}

    train_captioner.main(as_argv(values(tmp_path / "full")))

    out = tmp_path / "killed"
    kill_after_checkpoint(start_child("train_captioner", as_argv(values(out)), delay=0.3), out, step=10)
    fake_half_written_checkpoint(out, complete_step=10)
    train_captioner.main(as_argv(values(out)))

    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(out / "model.safetensors")
    assert any("lora_" in k for k in a) and any(k.startswith("multi_modal_projector.") for k in a)
    assert max_abs_diff(a, b) == 0.0
    killed_at = load_file(out / "checkpoint-10" / "model.safetensors")
    assert any(not torch.equal(killed_at[k], b[k]) for k in a if "lora_" in k)  # it trained on after the resume


def test_caption_output_with_a_half_written_last_line_is_resumed(saved_tiny_captioner, tmp_path, capsys):
    from diffusion_link.apps.cli import main

    clips = tmp_path / "clips"
    clips.mkdir()
    a, b = write_wav(clips / "a.wav", seed=1), write_wav(clips / "b.wav", seed=2)
    out = tmp_path / "captions.jsonl"
    argv = ["caption", str(clips), "--model", str(saved_tiny_captioner), "--output", str(out), "--max-new-tokens", "4"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["file"] for r in rows] == [a, b]
    # A kill while writing b's row: its line is cut short, without its newline.
    full_b = json.dumps(rows[1], ensure_ascii=False)
    out.write_text(json.dumps(rows[0], ensure_ascii=False) + "\n" + full_b[: len(full_b) // 2])
    capsys.readouterr()

    assert main(argv) == 0
    assert "skipping 1 files" in capsys.readouterr().err  # a is done, b is captioned again
    lines = out.read_text().splitlines()
    parsed = []
    for number, line in enumerate(lines, 1):
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"{out} line {number} of {len(lines)} does not parse: {line!r}") from None
    assert [r["file"] for r in parsed] == [a, b] and parsed[1]["generated_text"] == rows[1]["generated_text"]


def test_csv_caption_output_with_a_half_written_last_line_is_resumed(saved_tiny_captioner, tmp_path):
    import csv

    from diffusion_link.apps.cli import main

    clips = tmp_path / "clips"
    clips.mkdir()
    a, b = write_wav(clips / "a.wav", seed=1), write_wav(clips / "b.wav", seed=2)
    out = tmp_path / "captions.csv"
    argv = ["caption", str(clips), "--model", str(saved_tiny_captioner), "--output", str(out), "--max-new-tokens", "4"]
    assert main(argv) == 0
    text = out.read_text()
    out.write_text(text[: text.rindex(b) + len(b) + 3])  # b's row cut short after its file name
    assert main(argv) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == [a, b] and all(r["generated_text"] for r in rows)
