import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from diffusion_link import DiffusionLinkBridge
from diffusion_link.experiments.embedding_files import load_embeddings, save_embeddings
from diffusion_link.experiments.synthetic_gap import synthetic_gap_embeddings
from training import train_bridge

from .conftest import REPO_ROOT


DIM = 12


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bridge-data")
    train = synthetic_gap_embeddings(96, embedding_dim=DIM, num_unpaired_text=32, seed=0)
    held_out = synthetic_gap_embeddings(40, embedding_dim=DIM, seed=1)
    save_embeddings(root / "train.safetensors", {k: train[k] for k in ("audio_embeds", "text_embeds", "unpaired_text_embeds")})
    save_embeddings(root / "val.safetensors", {k: held_out[k] for k in ("audio_embeds", "text_embeds")})
    save_embeddings(root / "text.safetensors", {"unpaired_text_embeds": train["unpaired_text_embeds"]})
    return root


def args_for(data_files, output_dir, **overrides):
    values = {
        "train_file": str(data_files / "train.safetensors"),
        "output_dir": str(output_dir),
        "max_steps": 12,
        "per_device_train_batch_size": 16,
        "learning_rate": 3e-3,
        "hidden_size": 24,
        "num_blocks": 2,
        "save_steps": 6,
        "logging_steps": 3,
        "seed": 7,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    values.update(overrides)
    return values


def as_argv(values):
    argv = []
    for key, value in values.items():
        argv += [f"--{key}", str(value)]
    return argv


def test_trains_from_flags_and_writes_a_loadable_folder(data_files, tmp_path):
    out = tmp_path / "run"
    argv = as_argv(args_for(data_files, out, validation_file=str(data_files / "val.safetensors")))
    model = train_bridge.main(argv)
    assert int(model.ema_num_updates) == 12  # the callback updated the EMA once per optimiser step
    state = json.loads((out / "checkpoint-12" / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert len(losses) == 4 and all(l == l for l in losses)  # logged every 3 steps, finite
    loaded = DiffusionLinkBridge.from_pretrained(out)
    assert loaded.config.embedding_dim == DIM and loaded.config.hidden_size == 24  # D read from the data
    assert not torch.equal(loaded.embed_std, torch.full((DIM,), DIM**-0.5))  # normalisation fitted on the text
    assert (out / "modeling_diffusion_link.py").exists()  # custom code for trust_remote_code
    report = json.loads((out / "gap_metrics.json").read_text())
    assert set(report) == {"raw", "bridged"} and "paired_cosine" in report["bridged"]


def test_json_config_is_the_single_argument(data_files, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(args_for(data_files, tmp_path / "run", max_steps=3, save_steps=3)))
    model_args, data_args, training_args = train_bridge.parse_args([str(config)])
    assert training_args.max_steps == 3 and model_args.hidden_size == 24
    assert training_args.report_to in ([], ["none"], "none")  # no tracker switches itself on
    train_bridge.main([str(config)])
    assert (tmp_path / "run" / "model.safetensors").exists()


def test_resume_gives_the_same_final_weights_as_an_uninterrupted_run(data_files, tmp_path):
    full = tmp_path / "full"
    train_bridge.main(as_argv(args_for(data_files, full)))
    # An "interrupted" run: only the mid-training checkpoint survives; running the same command resumes from it.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-6", resumed / "checkpoint-6")
    model = train_bridge.main(as_argv(args_for(data_files, resumed)))
    assert int(model.ema_num_updates) == 12  # the EMA came back with the checkpoint and kept counting
    a, b = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("ema_denoiser.") for k in a)
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff == 0.0, diff


def test_text_only_peer_trains_from_text_alone(data_files, tmp_path):
    argv = as_argv(
        args_for(data_files, tmp_path / "peer", train_file=str(data_files / "text.safetensors"), max_steps=3,
                 save_steps=3, bridge_type="text_only_diffusion")
    )
    model = train_bridge.main(argv)
    assert model.config.link_start == "inserted" and model.link_timesteps() == [599, 479, 359, 239, 119]


def test_diffusion_link_refuses_a_text_only_file(data_files, tmp_path):
    argv = as_argv(args_for(data_files, tmp_path / "x", train_file=str(data_files / "text.safetensors")))
    with pytest.raises(ValueError, match="text_only_diffusion"):
        train_bridge.main(argv)


def test_bad_bridge_type_is_rejected(data_files, tmp_path):
    with pytest.raises(ValueError, match="bridge_type"):
        train_bridge.parse_args(as_argv(args_for(data_files, tmp_path, bridge_type="unet")))


@pytest.mark.integration
def test_two_process_ddp_run_on_cpu(data_files, tmp_path):
    out = tmp_path / "ddp"
    values = args_for(data_files, out, max_steps=4, save_steps=4, per_device_train_batch_size=8,
                      validation_split_percentage=0)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
         os.path.join(REPO_ROOT, "training", "train_bridge.py"), *as_argv(values)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    # One gloo group, not two processes each training alone: every step reads 2 x 8 rows of the epoch.
    rows = len(train_bridge.BridgeEmbeddingDataset(load_embeddings(data_files / "train.safetensors")[0]))
    assert state["epoch"] == pytest.approx(4 * 2 * 8 / rows)
    # Two processes of 8 rows each: 4 steps consume 64 rows.
    assert state["train_batch_size"] == 8
    model = DiffusionLinkBridge.from_pretrained(out)
    assert int(model.ema_num_updates) == 4


def test_training_rows_mix_paired_and_unpaired_in_the_asked_proportion():
    tensors = {"audio_embeds": torch.randn(10, 4), "text_embeds": torch.randn(10, 4),
               "unpaired_text_embeds": torch.randn(90, 4)}
    data = train_bridge.BridgeEmbeddingDataset(tensors, paired_fraction=0.5)
    mask = torch.stack([data[i]["audio_mask"] for i in range(len(data))])
    assert len(data) == 180 and int(mask.sum()) == 90  # the 10 pairs are cycled 9 times
    paired_rows = [data[i] for i in range(len(data)) if data[i]["audio_mask"]]
    torch.testing.assert_close(paired_rows[3]["audio_embeds"], tensors["audio_embeds"][3])
    torch.testing.assert_close(paired_rows[13]["text_embeds"], tensors["text_embeds"][3])
    every_text = train_bridge.BridgeEmbeddingDataset(tensors, text_only=True)
    assert len(every_text) == 100 and set(every_text[0]) == {"text_embeds"}
    with pytest.raises(ValueError, match="paired_fraction"):
        train_bridge.DataArguments(train_file="x", paired_fraction=1.0)


def test_without_a_validation_file_pairs_are_held_out_validated_and_the_depth_picked(data_files, tmp_path):
    out = tmp_path / "validated"
    model = train_bridge.main(as_argv(args_for(data_files, out, max_steps=12, save_steps=4)))
    state = json.loads((out / "checkpoint-12" / "trainer_state.json").read_text())
    evals = [e for e in state["log_history"] if "eval_selection_score" in e]
    assert [e["step"] for e in evals] == [4, 8, 12]  # evaluated at every save
    for e in evals:
        assert e["eval_selection_score"] == pytest.approx(e["eval_paired_cosine"] + e["eval_retrieval_r1"])
    best = max(evals, key=lambda e: e["eval_selection_score"])
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{best['step']}")
    assert int(model.ema_num_updates) == best["step"]  # the best checkpoint's weights, EMA included
    sweep = json.loads((out / "depth_sweep.json").read_text())
    assert sweep["sweep"]["num_pairs"] == 5  # 5 % of the 96 pairs, never trained on
    loaded = DiffusionLinkBridge.from_pretrained(out)
    assert loaded.config.strength == sweep["pick"]["strength"] == loaded.config.depth_selection["strength"]
    assert (out / "depth_sweep.png").exists()
    assert (out / "validation_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the curve of the 3 evaluations
    assert train_bridge.checkpoint_step(state["best_model_checkpoint"]) == best["step"]
    card = (out / "README.md").read_text()
    assert "depth choice" in card and ("picked on held-out pairs" in card or "no depth kept" in card)


def test_the_validation_curve_draws_each_evaluation_and_marks_the_kept_step(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = {}
    real_plot, real_axvline = matplotlib.axes.Axes.plot, matplotlib.axes.Axes.axvline
    monkeypatch.setattr(matplotlib.axes.Axes, "plot",
                        lambda self, x, y, **kw: drawn.setdefault(kw["label"], (list(x), list(y))) and real_plot(self, x, y, **kw))
    monkeypatch.setattr(matplotlib.axes.Axes, "axvline",
                        lambda self, x, **kw: drawn.setdefault("kept", x) and real_axvline(self, x, **kw))
    monkeypatch.setattr(matplotlib.axes.Axes, "axhline",
                        lambda self, y, **kw: drawn.setdefault("raw", []).append(y) or real_axvline(self, 0, **kw))
    history = [{"loss": 1.0, "step": 2}, {"eval_paired_cosine": 0.4, "eval_retrieval_r1": 0.5, "step": 4},
               {"eval_paired_cosine": 0.6, "eval_retrieval_r1": 0.7, "step": 8}]
    path = train_bridge.write_validation_curve(history, str(tmp_path), best_step=8,
                                               identity={"paired_cosine": 0.3, "retrieval_r1": 0.65})
    assert path == str(tmp_path / "validation_curve.png") and (tmp_path / "validation_curve.png").exists()
    assert drawn["paired cosine"] == ([4, 8], [0.4, 0.6]) and drawn["R@1"] == ([4, 8], [0.5, 0.7])
    assert drawn["kept"] == 8 and drawn["raw"] == [0.3, 0.65]  # the raw audio's figures, for reference
    assert train_bridge.write_validation_curve([{"loss": 1.0, "step": 2}], str(tmp_path / "none")) is None
    assert train_bridge.checkpoint_step("out/checkpoint-1500/") == 1500 and train_bridge.checkpoint_step(None) is None


def test_validation_split_is_by_seed_and_disjoint():
    tensors = {"audio_embeds": torch.arange(40.0).repeat(3, 1).T, "text_embeds": -torch.arange(40.0).repeat(3, 1).T,
               "unpaired_text_embeds": torch.ones(7, 3)}
    train, val = train_bridge.split_validation_pairs(tensors, 10, seed=0)
    train_again, val_again = train_bridge.split_validation_pairs(tensors, 10, seed=0)
    assert torch.equal(val["audio_embeds"], val_again["audio_embeds"]) and len(val["audio_embeds"]) == 4
    held, kept = set(val["audio_embeds"][:, 0].tolist()), set(train["audio_embeds"][:, 0].tolist())
    assert not held & kept and len(held | kept) == 40
    assert torch.equal(-val["audio_embeds"], val["text_embeds"])  # rows stay paired
    # A clip with several captions goes to one side whole.
    repeated = {"audio_embeds": tensors["audio_embeds"].repeat_interleave(3, dim=0),
                "text_embeds": torch.randn(120, 3)}
    train_r, val_r = train_bridge.split_validation_pairs(repeated, 10, seed=0)
    held_r, kept_r = set(val_r["audio_embeds"][:, 0].tolist()), set(train_r["audio_embeds"][:, 0].tolist())
    assert not held_r & kept_r and len(val_r["audio_embeds"]) == 3 * len(held_r) == 12
    assert torch.equal(train["unpaired_text_embeds"], tensors["unpaired_text_embeds"])
    assert train_bridge.split_validation_pairs(tensors, 0, seed=0)[1] is None
    _, other = train_bridge.split_validation_pairs(tensors, 10, seed=1)
    assert not torch.equal(other["audio_embeds"], val["audio_embeds"])


def test_training_stops_early_when_the_held_out_score_stops_improving(data_files, tmp_path):
    out = tmp_path / "early"
    # A learning rate of 0 is refused (a run that trains nothing); 1e-30 moves no float32 weight of this size.
    values = args_for(data_files, out, max_steps=40, save_steps=2, learning_rate=1e-30, warmup_steps=0,
                      early_stopping_patience=2)
    train_bridge.main(as_argv(values))
    steps = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert steps and steps[-1] == 6  # weights frozen: no better score after step 2, patience 2 -> stop at 6


def test_without_flags_the_script_runs_its_default_recipe(tmp_path):
    model_args, data_args, training_args = train_bridge.parse_args(["--train_file", "x", "--output_dir", str(tmp_path)])
    recipe = json.loads(open(train_bridge.DEFAULT_RECIPE, encoding="utf-8").read())
    for key, value in recipe.items():
        parsed = next(getattr(a, key) for a in (model_args, data_args, training_args) if hasattr(a, key))
        assert parsed == value or str(parsed) == str(value), key
    config = model_args.build_config(64)
    assert config.hidden_size == 128 and (config.audio_adapter, config.x0_parameterization) == ("none", "direct")
    assert data_args.validation_split_percentage == 5 and data_args.pick_depth
    _, _, overridden = train_bridge.parse_args(["--train_file", "x", "--output_dir", str(tmp_path), "--max_steps", "7"])
    assert overridden.max_steps == 7
