"""The experiment's bookkeeping: seed summaries, the headline lines and the Markdown table (the run itself needs the
starter's data and about an hour; its results are committed in training/results/)."""

import math

import pytest

from training import experiment


def row(**values):
    base = {key: 0.5 for key, _ in experiment.COLUMNS}
    base.update(values)
    return base


def test_summarize_gives_mean_and_population_std_over_seeds():
    out = experiment.summarize([row(cider_d=0.1, examples=["a"]), row(cider_d=0.3, examples=["b"])])
    assert out["cider_d"]["mean"] == pytest.approx(0.2)
    assert out["cider_d"]["std"] == pytest.approx(0.1)
    assert out["cider_d"]["n"] == 2
    assert "examples" not in out  # only numbers are summarised


def summary_of(values: dict[str, dict]) -> dict:
    return {name: experiment.summarize([row(**v)]) for name, v in values.items()}


def test_headline_gain_ratio_and_peer_comparison():
    summary = summary_of({
        "identity": {"cider_d": 0.20, "class_accuracy": 0.40},
        "mean-shift": {"cider_d": 0.25, "class_accuracy": 0.45},
        "caption-memory": {"cider_d": 0.35, "class_accuracy": 0.50},
        "diffusion-link": {"cider_d": 0.30, "class_accuracy": 0.60},
        "text oracle": {"cider_d": 0.60, "class_accuracy": 0.80},
    })
    h = experiment.headline(summary)
    assert h["cider_d_gain_over_identity"] == pytest.approx(0.5)
    assert h["class_accuracy_ratio_to_oracle"] == pytest.approx(0.75)
    assert h["cider_d_beats_every_peer"] is False and h["cider_d_best_peer"] == "caption-memory"
    assert h["class_accuracy_beats_every_peer"] is True


def test_markdown_has_every_row_column_and_headline():
    summary = summary_of({name: {} for name in ("identity", "mean-shift", "diffusion-link", "text oracle")})
    summary["diffusion-link"] = experiment.summarize([row(cider_d=0.3), row(cider_d=0.5)])
    result = {
        "command": "python training/experiment.py", "wall_seconds": 600, "environment": {"cpu_count": 2},
        "seeds": [0, 1], "summary": summary, "ablation_summary": {"EMA off": summary["identity"]},
        "headline": experiment.headline(summary), "depths": {"diffusion-link": [0.025, 0.05]},
        "noise_injection_std": 0.06,
    }
    text = experiment.markdown(result)
    for name in (*summary, "EMA off", "CIDEr-D", "METEOR", "R@1", "+52.5 %"):
        assert name in text
    assert "0.400 ± 0.100" in text  # the two diffusion-link seeds
    header = next(line for line in text.splitlines() if line.startswith("| method"))
    assert header.count("|") == len(experiment.COLUMNS) + 2
    assert not math.isnan(result["headline"]["cider_d_gain_over_identity"])
    # The decoding axis: the same methods with the captioner's default decoding, as a second methods table.
    result["decoding"] = {"num_candidates": 2, "rerank": "lm", "rerank_weight": 1.0}
    result["decoding_summary"] = {"diffusion-link": experiment.summarize([row(cider_d=0.7)])}
    text = experiment.markdown(result)
    titles = [line for line in text.splitlines() if line.startswith("### ")]
    assert titles[1].startswith("### Methods with the captioner's default decoding (2 beams, picked by lm")
    assert "| diffusion-link | 0.500 | 0.700 |" in text


def test_cell_marks_a_missing_metric():
    assert experiment.cell(None) == "n/a"
    assert experiment.cell({"mean": 0.25, "std": 0.0, "n": 1}) == "0.250"


def test_a_reused_noise_injection_row_must_come_from_the_same_heads(tmp_path):
    import json
    import types

    import torch

    from diffusion_link.starter.build.arguments import STARTER_RECIPE, parse_args
    from diffusion_link.starter.world import CaptionTable

    labels = torch.arange(4)
    world = types.SimpleNamespace(
        test_audio=torch.randn(3, 8), args=types.SimpleNamespace(reuse_noise_injection_from=str(tmp_path / "e.json")),
        head={"oof": torch.zeros(4, 8), "labels": labels}, towers={"esc_text": torch.zeros(20, 8)},
        captions=CaptionTable([{f"class{c}": [f"caption {k}" for k in range(5)] for c in range(4)}]),
        starter_args=parse_args([STARTER_RECIPE]))
    rows = [row(class_accuracy=0.4)]
    earlier = {"heads_fingerprint": experiment.heads_fingerprint(world), "noise_injection_std": experiment.noise_std(world),
               "per_seed": {"rows": {"noise-injection": rows}}}
    (tmp_path / "e.json").write_text(json.dumps(earlier))
    assert experiment.reused_noise_injection(world)[0] == rows
    world.test_audio = world.test_audio + 1e-3  # other heads: other test embeddings
    with pytest.raises(ValueError, match="other audio heads"):
        experiment.reused_noise_injection(world)
    (tmp_path / "e.json").write_text(json.dumps({k: v for k, v in earlier.items() if k != "heads_fingerprint"}))
    with pytest.raises(ValueError, match="other audio heads"):  # an older file cannot show it used these heads
        experiment.reused_noise_injection(world)
