"""Tiny random models of the real classes, for tests and for trying the API in seconds (no download, no Hub)."""

from __future__ import annotations

import torch


_CORPUS = [
    "a dog barks while cars pass by",
    "rain falls steadily on a tin roof",
    "a man speaks and a crowd laughs",
    "birds chirp in the early morning",
    "an engine idles and then revs loudly",
    "water runs from a tap into a sink",
    "a baby cries and a woman talks softly",
    "footsteps on a wooden floor",
    "wind blows through the trees",
    "a bell rings several times",
]


def tiny_clap(seed: int = 0, projection_dim: int = 24):
    """A tiny random transformers `ClapModel` and its `ClapProcessor` (tokenizer trained in memory).

    The audio tower keeps `spec_size=256` with 64 mel bins (smaller spectrogram sizes reject 10 s clips) and uses
    the non-fusion `rand_trunc` feature extractor, like laion/clap-htsat-unfused.
    """
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    tokenizer = RobertaTokenizer().train_new_from_iterator(_CORPUS * 4, vocab_size=300)
    config = ClapConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=72,
        ),
        audio_config=dict(
            spec_size=256, num_mel_bins=64, patch_embeds_hidden_size=8, hidden_size=64, depths=[1, 1, 1, 1],
            num_attention_heads=[2, 2, 2, 2], window_size=8, enable_fusion=False, patch_stride=(4, 4),
        ),
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    model = ClapModel(config).eval()
    processor = ClapProcessor(feature_extractor=ClapFeatureExtractor(feature_size=64, truncation="rand_trunc"), tokenizer=tokenizer)
    return model, processor


def tiny_llama_tokenizer():
    """A byte-level BPE tokenizer for tiny LLaMA models, trained in memory (`<s>`, `</s>`, `<pad>`, `<unk>`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(_CORPUS * 4 + ["Describe the audio you hear."], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def tiny_captioner(seed: int = 0, bridge_type: str = "diffusion_link", lora_r: int = 4, prompt: str = ""):
    """A ready `AudioCaptionPipeline` around a complete tiny random captioner: tiny `ClapModel` + its feature
    extractor, tiny `DiffusionLinkBridge`, tiny `LlamaForCausalLM` with LoRA, and an in-memory tokenizer.

    `tiny_captioner().save_pretrained(folder)` writes a folder that `pipeline("audio-captioning", model=folder)`
    loads. The captions are random words; it is for tests and for trying the API in seconds. The projector starts
    with large weights (and no prompt by default) so that different audio gives different random captions, which
    keeps tests of batching and determinism meaningful.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    from diffusion_link.configuration_diffusion_link import DiffusionLinkConfig
    from diffusion_link.configuration_diffusion_link_captioner import DiffusionLinkCaptionerConfig
    from diffusion_link.modeling_diffusion_link_captioner import DiffusionLinkForAudioCaptioning
    from diffusion_link.pipeline_audio_captioning import AudioCaptionPipeline

    clap, processor = tiny_clap(seed=seed)
    tokenizer = tiny_llama_tokenizer()
    torch.manual_seed(seed)
    lm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
        )
    )
    config = DiffusionLinkCaptionerConfig(
        audio_config=clap.config,
        text_config=lm.config,
        bridge_type=bridge_type,
        bridge_config=DiffusionLinkConfig(embedding_dim=clap.config.projection_dim, hidden_size=48, num_blocks=2),
        prefix_length=3,
        prompt=prompt,
        lora_r=lora_r,
        lora_alpha=max(1, 2 * lora_r),
    )
    model = DiffusionLinkForAudioCaptioning(config, audio_tower=clap, language_model=lm).eval()
    with torch.no_grad():
        model.multi_modal_projector.linear_1.weight.mul_(60.0)
        model.multi_modal_projector.linear_2.weight.mul_(5.0)
    return AudioCaptionPipeline(model=model, tokenizer=tokenizer, feature_extractor=processor.feature_extractor,
                                audio_text_tokenizer=processor.tokenizer)
