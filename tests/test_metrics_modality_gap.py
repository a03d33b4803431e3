import pytest
import torch
import torch.nn.functional as F

from diffusion_link.metrics import modality_gap, plot_modality_gap


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_identical_modalities_have_no_gap():
    text = unit(60, 16)
    gap = modality_gap(text.clone(), text)
    assert gap["paired_cosine"] == pytest.approx(1.0)
    assert gap["centroid_distance"] == pytest.approx(0.0, abs=1e-9)
    assert gap["retrieval_r1"] == 1.0 and gap["retrieval_r5"] == 1.0
    assert gap["modality_separability"] <= 0.55  # a probe cannot tell identical sets apart
    assert gap["num_pairs"] == 60


def test_a_constant_offset_is_a_gap():
    text = unit(80, 16, seed=1)
    offset = torch.zeros(16)
    offset[3] = 1.0
    audio = F.normalize(text + offset + 0.1 * unit(80, 16, seed=2), dim=-1)
    gap = modality_gap(audio, text)
    assert 0.4 < gap["centroid_distance"] < 1.2
    assert gap["modality_separability"] > 0.95
    assert gap["paired_cosine"] < 0.9
    assert gap["retrieval_r1"] > 0.7  # chance is 1/80: the offset is shared, so pairs are still found


def test_retrieval_counts_duplicate_texts_as_hits():
    classes = unit(5, 16, seed=3)
    text = classes.repeat_interleave(4, dim=0)  # 20 rows, 5 distinct captions
    audio = F.normalize(text + 0.05 * unit(20, 16, seed=4), dim=-1)
    assert modality_gap(audio, text)["retrieval_r1"] == 1.0


def test_retrieval_of_shuffled_pairs_is_at_chance():
    text, audio = unit(200, 32, seed=5), unit(200, 32, seed=6)
    gap = modality_gap(audio, text)
    assert gap["retrieval_r1"] < 0.05 and gap["retrieval_r5"] < 0.1


@pytest.mark.parametrize(
    "audio, text, message",
    [
        (torch.randn(20, 8), torch.randn(20, 7), "same shape"),
        (torch.randn(20), torch.randn(20), r"\(batch, D\)"),
        (torch.randn(4, 8), torch.randn(4, 8), "at least 10 pairs"),
        (torch.full((20, 8), float("nan")), torch.randn(20, 8), "NaN"),
    ],
)
def test_bad_input_raises(audio, text, message):
    with pytest.raises(ValueError, match=message):
        modality_gap(audio, text)


def test_plot_writes_a_png(tmp_path):
    text = unit(30, 16, seed=1)
    audio = F.normalize(text + 0.5, dim=-1)
    path = plot_modality_gap(audio, text, tmp_path / "gap.png", bridged_embeds=text * 0.9)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="one D"):
        plot_modality_gap(audio, unit(30, 8), tmp_path / "bad.png")
