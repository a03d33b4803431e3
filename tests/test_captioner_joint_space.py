"""The captioner owns its joint space: its tower's text tokenizer (one rule, loaded once, saved with the model),
`embed_text`, `score_captions` and `caption_embeds` (what the starter build's caption functions computed)."""

import copy

import pytest
import torch
import torch.nn.functional as F

from diffusion_link.configuration_diffusion_link_captioner import DEFAULT_MAX_NEW_TOKENS
from diffusion_link.embedding_extraction import embed_text, pooled_embeddings
from diffusion_link.modeling_diffusion_link_captioner import AUDIO_TEXT_TOKENIZER_FOLDER
from diffusion_link.reranking import candidate_generate_kwargs


@pytest.fixture(scope="module")
def pipe():
    from diffusion_link.testing import tiny_captioner

    return tiny_captioner(seed=3, prompt="Describe the audio you hear.")


def embeds(n, dim, seed=0):
    return F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


# ---------------------------------------------------------------------------------------------- copies of the old code
def old_caption_embeddings(captioner, tokenizer, embeds, max_new_tokens, batch=16):
    """training/build_starter.py's `caption_embeddings` at 25a65b0."""
    prompt = torch.tensor([tokenizer(captioner.config.prompt, add_special_tokens=False).input_ids])
    captions = []
    for start in range(0, len(embeds), batch):
        ids = captioner.generate(text_embeds=embeds[start : start + batch], input_ids=prompt, max_new_tokens=max_new_tokens)
        captions += [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    return captions


@torch.no_grad()
def old_audio_text_similarities(audio_tower, text_tokenizer, audio_embeds, texts):
    """reranking.audio_text_similarities at 25a65b0."""
    flat = [t for clip in texts for t in clip]
    device = next(audio_tower.parameters()).device
    positions = getattr(getattr(audio_tower.config, "text_config", None), "max_position_embeddings", None)
    max_length = min(text_tokenizer.model_max_length, positions - 2) if positions else None
    tokens = text_tokenizer([t if t.strip() else "." for t in flat], padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
    tokens = {k: v.to(device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
    text = F.normalize(pooled_embeddings(audio_tower.get_text_features(**tokens)).float(), dim=-1).cpu()
    audio = F.normalize(audio_embeds.float().cpu(), dim=-1)
    out, row = [], 0
    for b, clip in enumerate(texts):
        out.append([0.0 if not t.strip() else float(audio[b] @ text[row + k]) for k, t in enumerate(clip)])
        row += len(clip)
    return out


def old_candidate_captions(captioner, tokenizer, text_tokenizer, embeds, audio, k, max_new_tokens, batch=8):
    """training/build_starter.py's `candidate_captions` (with `reranking.scored_candidates`) at 25a65b0."""
    prompt = torch.tensor([tokenizer(captioner.config.prompt, add_special_tokens=False).input_ids])
    found = []
    for b in range(0, len(embeds), batch):
        generated = captioner.generate(text_embeds=embeds[b : b + batch], input_ids=prompt,
                                       **candidate_generate_kwargs(k, {"max_new_tokens": max_new_tokens}))
        texts = [t.strip() for t in tokenizer.batch_decode(generated.sequences, skip_special_tokens=True)]
        groups = [texts[i * k : (i + 1) * k] for i in range(len(audio[b : b + batch]))]
        similarity = old_audio_text_similarities(captioner.audio_tower, text_tokenizer, audio[b : b + batch], groups)
        scores = generated.sequences_scores.float().cpu().tolist()
        found += [[{"text": t, "lm_logprob": scores[i * k + j], "audio_text_similarity": sim}
                   for j, (t, sim) in enumerate(zip(groups[i], similarity[i]))] for i in range(len(groups))]
    return found


# ---------------------------------------------------------------------------------------------- caption_embeds
def test_caption_embeds_greedy_equals_the_build_function(pipe):
    model, tokenizer = pipe.model, pipe.tokenizer
    x = embeds(11, model.config.embedding_dim)
    assert model.caption_embeds(x, tokenizer, batch_size=16) == old_caption_embeddings(model, tokenizer, x, 30)
    assert model.caption_embeds(x, tokenizer, max_new_tokens=5, batch_size=4) == old_caption_embeddings(
        model, tokenizer, x, 5, batch=4)


def test_caption_embeds_candidates_equal_the_build_function(pipe):
    model, tokenizer = pipe.model, pipe.tokenizer
    x, audio = embeds(10, model.config.embedding_dim, 1), embeds(10, model.config.embedding_dim, 2)
    got = model.caption_embeds(x, tokenizer, num_candidates=3, audio_embeds=audio)
    assert got == old_candidate_captions(model, tokenizer, pipe.audio_text_tokenizer, x, audio, 3, 30)
    assert len(got) == 10 and all(len(c) == 3 for c in got)
    assert set(got[0][0]) == {"text", "lm_logprob", "audio_text_similarity"}


def test_caption_embeds_checks_its_inputs(pipe):
    model, tokenizer = pipe.model, pipe.tokenizer
    x = embeds(2, model.config.embedding_dim)
    with pytest.raises(ValueError, match="audio_embeds"):
        model.caption_embeds(x, tokenizer, num_candidates=2)
    with pytest.raises(ValueError, match="num_candidates"):
        model.caption_embeds(x, tokenizer, num_candidates=0)
    with pytest.raises(ValueError, match="audio_embeds"):
        model.caption_embeds(x, tokenizer, num_candidates=2, audio_embeds=x[:1])
    with pytest.raises(ValueError, match="embeds"):
        model.caption_embeds(x[:, :3], tokenizer)


def test_the_caption_length_lives_in_the_generation_config(pipe):
    from diffusion_link import pipeline_audio_captioning

    assert pipeline_audio_captioning.DEFAULT_MAX_NEW_TOKENS == DEFAULT_MAX_NEW_TOKENS == 30
    assert pipe.model.language_model.generation_config.max_new_tokens == DEFAULT_MAX_NEW_TOKENS
    x = embeds(3, pipe.model.config.embedding_dim)
    ids = pipe.model.generate(text_embeds=x)
    assert ids.shape[1] <= DEFAULT_MAX_NEW_TOKENS


# ---------------------------------------------------------------------------------------------- the text side
def test_score_captions_equals_the_old_similarities_and_empty_scores_zero(pipe):
    model = pipe.model
    audio = embeds(3, model.config.embedding_dim, 5)
    texts = [["a dog barks", "", "rain falls on a roof"], ["wind"], ["birds chirp loudly", "an engine"]]
    got = model.score_captions(audio, texts)
    assert got == old_audio_text_similarities(model.audio_tower, pipe.audio_text_tokenizer, audio, texts)
    assert got[0][1] == 0.0 and [len(c) for c in got] == [3, 1, 2]
    with pytest.raises(ValueError, match="clips"):
        model.score_captions(audio, texts[:2])


def test_embed_text_is_the_towers_normalised_text_side(pipe):
    model = pipe.model
    texts = ["a dog barks", "rain falls on a roof", "wind"]
    got = model.embed_text(texts, batch_size=2)
    assert got.shape == (3, model.config.embedding_dim)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(got, embed_text(model.audio_tower, pipe.audio_text_tokenizer, texts), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="empty"):
        model.embed_text(["a dog", " "])


def test_the_tokenizer_is_saved_with_the_model_and_found_by_one_rule(pipe, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from diffusion_link import DiffusionLinkForAudioCaptioning

    pipe.model.save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / AUDIO_TEXT_TOKENIZER_FOLDER / "tokenizer_config.json").is_file()
    loads = []
    real = AutoTokenizer.from_pretrained

    def counted(*args, **kwargs):
        loads.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", counted)
    loaded = DiffusionLinkForAudioCaptioning.from_pretrained(tmp_path / "model")
    assert loads == []  # lazily, on first use
    audio = embeds(1, loaded.config.embedding_dim)
    first = loaded.score_captions(audio, [["a dog barks"]])
    loaded.score_captions(audio, [["rain"]])
    loaded.embed_text(["wind"])
    assert len(loads) == 1 and loads[0][1]["subfolder"] == AUDIO_TEXT_TOKENIZER_FOLDER  # once, from the subfolder
    assert first == pipe.model.score_captions(audio, [["a dog barks"]])

    # Without the subfolder: config.audio_text_tokenizer_name_or_path, else config.audio_tower_name_or_path.
    loads.clear()
    config = copy.deepcopy(pipe.model.config)
    config.lora_r = 0  # the LM given already has its adapters
    bare = DiffusionLinkForAudioCaptioning(config, audio_tower=pipe.model.audio_tower,
                                           language_model=pipe.model.language_model)
    with pytest.raises(ValueError, match="audio_text_tokenizer"):
        bare.audio_text_tokenizer
    assert loads == []  # nothing to try, so nothing tried
    pipe.audio_text_tokenizer.save_pretrained(tmp_path / "tok")
    bare.config.audio_tower_name_or_path = str(tmp_path / "tower-has-no-tokenizer")
    bare.config.audio_text_tokenizer_name_or_path = str(tmp_path / "tok")
    assert bare.audio_text_tokenizer("a dog").input_ids
    assert len(loads) == 1 and loads[0][0][0] == str(tmp_path / "tok")


def test_a_tokenizer_saved_as_tokenizer_json_alone_is_found_and_embeds_the_same(pipe, tmp_path):
    import json
    import os

    from diffusion_link import DiffusionLinkForAudioCaptioning

    pipe.save_pretrained(tmp_path / "model")
    folder = tmp_path / "model" / AUDIO_TEXT_TOKENIZER_FOLDER
    os.remove(folder / "tokenizer_config.json")
    saved = json.loads((folder / "tokenizer.json").read_text())
    (folder / "tokenizer.json").write_text(json.dumps({**saved, "padding": None}))  # as a tokenizer never padded
    loaded = DiffusionLinkForAudioCaptioning.from_pretrained(tmp_path / "model")
    assert loaded.audio_text_tokenizer.pad_token is None  # what tokenizer_config.json held is gone
    texts = ["a dog barks", "rain falls on a tin roof for a long while", "wind"]  # of different lengths
    torch.testing.assert_close(loaded.embed_text(texts), pipe.model.embed_text(texts), atol=1e-6, rtol=0)


def test_the_pipeline_argument_sets_the_models_tokenizer(pipe):
    from diffusion_link import AudioCaptionPipeline

    tok = pipe.audio_text_tokenizer
    other = AudioCaptionPipeline(model=pipe.model, tokenizer=pipe.tokenizer, feature_extractor=pipe.feature_extractor,
                                 audio_text_tokenizer=tok)
    assert other.model.audio_text_tokenizer is tok is other.audio_text_tokenizer
