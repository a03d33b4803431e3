"""Candidate captions scored by the captioner's joint space, reranked, and a calibrated confidence
(`diffusion_link.reranking`, `diffusion_link.metrics.calibration`, the pipeline's `num_candidates` / `rerank`)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffusion_link.embedding_extraction import embed_text
from diffusion_link.metrics.calibration import (
    ece_noise_floor,
    expected_calibration_error,
    fit_confidence_calibration,
    reliability_diagram,
)
from diffusion_link.reranking import CONFIDENCE_FEATURES, confidence, confidence_features, rank_candidates


RATE = 48000


@pytest.fixture(scope="module")
def pipe():
    from diffusion_link.testing import tiny_captioner

    return tiny_captioner(seed=0)


def wave(seed=0, seconds=1.5):
    return {"array": np.random.default_rng(seed).uniform(-0.3, 0.3, int(seconds * RATE)).astype(np.float32),
            "sampling_rate": RATE}


def candidate(text, lm, sim):
    return {"text": text, "lm_logprob": lm, "audio_text_similarity": sim}


def test_rank_candidates_orders_by_each_rule_and_keeps_each_text_once():
    cands = [candidate("a dog barks", -0.5, 0.1), candidate("rain falls", -1.0, 0.6), candidate("a dog barks", -2.0, 0.1),
             candidate("", 0.0, 0.9)]
    assert [c["text"] for c in rank_candidates(cands, "lm")] == ["a dog barks", "rain falls", ""]
    assert [c["text"] for c in rank_candidates(cands, "similarity")] == ["rain falls", "a dog barks", ""]
    # combined: -0.5 + 2 * 0.1 = -0.3 against -1.0 + 2 * 0.6 = 0.2
    assert rank_candidates(cands, "combined", weight=2.0)[0]["text"] == "rain falls"
    assert rank_candidates(cands, "combined", weight=0.5)[0]["text"] == "a dog barks"  # -0.45 against -0.7
    with pytest.raises(ValueError, match="rerank"):
        rank_candidates(cands, "best")


def test_confidence_features_and_the_logistic_model():
    ranked = [candidate("a dog barks loudly", -0.4, 0.7), candidate("a dog barks", -0.6, 0.5),
              candidate("rain falls", -1.0, 0.2)]
    assert confidence_features(ranked) == pytest.approx([0.7, -0.4, 0.2, 2 / 3])
    calibration = {"features": list(CONFIDENCE_FEATURES), "coef": [2.0, 0.0, 0.0, 0.0], "intercept": -1.0,
                   "mean": [0.5, 0.0, 0.0, 0.0], "scale": [0.1, 1.0, 1.0, 1.0]}
    assert confidence(ranked, calibration) == pytest.approx(1 / (1 + math.exp(-(-1.0 + 2.0 * 2.0))))
    assert confidence(ranked, None) is None
    assert confidence([candidate("", -0.1, 0.0)], calibration) == 0.0  # an empty caption names nothing
    with pytest.raises(ValueError, match="features"):
        confidence(ranked, {**calibration, "features": ["other"]})


def test_the_calibration_fit_recovers_a_known_probability_and_ece_measures_it(tmp_path):
    gen = torch.Generator().manual_seed(0)
    n = 4000
    sim = torch.rand(n, generator=gen)
    truth = 1 / (1 + torch.exp(-(8 * sim - 4)))  # P(right) rises with the similarity
    correct = (torch.rand(n, generator=gen) < truth).tolist()
    features = torch.stack([sim, torch.randn(n, generator=gen), torch.randn(n, generator=gen),
                            torch.rand(n, generator=gen)], 1).tolist()
    calibration = fit_confidence_calibration(features, correct)
    assert calibration["features"] == list(CONFIDENCE_FEATURES) and calibration["num_clips"] == n
    coef = calibration["coef"]
    assert coef[0] > 1.5 and max(abs(c) for c in coef[1:]) < 0.2  # only the informative feature gets weight
    probs = [confidence([candidate("x", f[1], f[0]), candidate("y", f[1], f[0] - f[2])], calibration) for f in features]
    # the refit model's probabilities match the true ones, so they are calibrated; a constant 0.9 is not
    assert np.corrcoef(probs, truth.numpy())[0, 1] > 0.97
    assert expected_calibration_error(probs, correct) < 0.03
    assert expected_calibration_error([0.9] * n, correct) > 0.3
    assert expected_calibration_error([0.25, 0.75], [False, True]) == pytest.approx(0.25)
    # Sampling noise alone: a calibrated model on 150 clips shows an ECE of several points, on 4000 about one.
    floor_150, floor_4000 = ece_noise_floor(probs[:150], draws=300), ece_noise_floor(probs, draws=20)
    assert 0.04 < floor_150 < 0.12 and floor_4000 < 0.025
    assert ece_noise_floor([1.0, 0.0], draws=10) == 0.0
    path = reliability_diagram(probs, correct, str(tmp_path / "reliability.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="both right and wrong"):
        fit_confidence_calibration(features[:20], [True] * 20)
    with pytest.raises(ValueError, match="features"):
        fit_confidence_calibration([[0.1, 0.2]] * 20, [True, False] * 10)


def test_the_pipeline_returns_scored_candidates_and_picks_by_the_rule(pipe):
    x = wave(1)
    out = pipe(x, num_candidates=4, rerank="similarity")
    cands = out["candidates"]
    assert 1 <= len(cands) <= 4 and set(cands[0]) == {"text", "lm_logprob", "audio_text_similarity"}
    assert out["generated_text"] == cands[0]["text"]
    sims = [c["audio_text_similarity"] for c in cands if c["text"]]
    assert sims == sorted(sims, reverse=True)
    # the similarity is the cosine of the clip's audio embedding with the tower's text embedding of the candidate
    audio = pipe.model.embed_audio(waveforms=[x["array"]], feature_extractor=pipe.feature_extractor)
    text = embed_text(pipe.model.audio_tower, pipe.audio_text_tokenizer, [cands[0]["text"]])
    assert cands[0]["audio_text_similarity"] == pytest.approx(float(F.normalize(audio, dim=-1)[0] @ text[0]), abs=1e-5)
    by_lm = pipe(x, num_candidates=4, rerank="lm")
    assert by_lm["generated_text"] == pipe(x, num_beams=4)["generated_text"]  # the top beam
    assert sorted(c["text"] for c in by_lm["candidates"]) == sorted(c["text"] for c in cands)
    assert "candidates" not in pipe(x) and "confidence" not in out  # greedy by default; no calibration, no confidence


def test_candidates_are_batch_invariant_and_survive_save_and_load(pipe, tmp_path):
    from transformers import pipeline

    xs = [wave(2), wave(3)]
    single = [pipe(x, num_candidates=3) for x in xs]
    same_results(pipe(xs, num_candidates=3, batch_size=2), single)  # padding moves the scores by float rounding only
    pipe.save_pretrained(tmp_path / "captioner")
    assert (tmp_path / "captioner" / "audio_text_tokenizer" / "tokenizer_config.json").exists()
    loaded = pipeline("audio-captioning", model=str(tmp_path / "captioner"))
    same_results([loaded(xs[0], num_candidates=3)], single[:1])


def same_results(got, expected):
    for a, b in zip(got, expected, strict=True):
        assert a["generated_text"] == b["generated_text"]
        assert [c["text"] for c in a["candidates"]] == [c["text"] for c in b["candidates"]]
        for key in ("lm_logprob", "audio_text_similarity"):
            assert [c[key] for c in a["candidates"]] == pytest.approx([c[key] for c in b["candidates"]], abs=1e-4)


def test_a_calibrated_model_gives_a_confidence_and_config_defaults_apply(pipe):
    calibration = {"features": list(CONFIDENCE_FEATURES), "coef": [1.0, 0.5, 0.5, 0.5], "intercept": 0.0,
                   "mean": [0.0] * 4, "scale": [1.0] * 4}
    config = pipe.model.config
    saved = (config.num_candidates, config.rerank, config.confidence_calibration)
    try:
        config.num_candidates, config.rerank, config.confidence_calibration = 3, "similarity", calibration
        out = pipe(wave(4))
        assert len(out["candidates"]) >= 1 and 0.0 <= out["confidence"] <= 1.0
        assert out["confidence"] == pytest.approx(confidence(out["candidates"], calibration))
        long = {"array": np.concatenate([wave(5)["array"], wave(6)["array"]]), "sampling_rate": RATE}
        chunks = pipe(long, chunk_length_s=1.5)["chunks"]
        assert all("candidates" in c and "confidence" in c for c in chunks)
    finally:
        config.num_candidates, config.rerank, config.confidence_calibration = saved


@pytest.mark.parametrize("kwargs, match", [({"num_candidates": 0}, "num_candidates"), ({"num_candidates": 2.5}, "num_candidates"),
                                           ({"rerank": "best"}, "rerank")])
def test_bad_candidate_arguments_are_named(pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipe(wave(0), **kwargs)


def test_bad_config_values_are_named():
    from diffusion_link import DiffusionLinkCaptionerConfig

    for kwargs, match in (({"num_candidates": 0}, "num_candidates"), ({"rerank": "x"}, "rerank"),
                          ({"rerank_weight": -1.0}, "rerank_weight"), ({"confidence_calibration": {"a": 1}}, "confidence_calibration")):
        with pytest.raises(ValueError, match=match):
            DiffusionLinkCaptionerConfig(**kwargs)
