import pytest
import torch

from diffusion_link.metrics import caption_class_accuracy, class_accuracy, class_prototypes


def test_prototypes_are_unit_class_means():
    embeds = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, -2.0]])
    protos = class_prototypes(embeds, torch.tensor([0, 0, 1, 1]))
    torch.testing.assert_close(protos, torch.tensor([[2**-0.5, 2**-0.5], [2**-0.5, -(2**-0.5)]]))
    with pytest.raises(ValueError, match=r"Classes \[1\]"):
        class_prototypes(embeds[:2], torch.tensor([0, 2]), num_classes=2)


def test_class_accuracy_counts_nearest_prototype():
    protos = torch.eye(3)
    embeds = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.2, 0.8], [0.1, 0.0, 0.0]])
    assert class_accuracy(embeds, [0, 2, 1], protos) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="3 embeddings for 2 labels"):
        class_accuracy(embeds, [0, 1], protos)


def test_an_empty_caption_is_wrong_and_never_embedded():
    protos = torch.eye(2)
    vocabulary = {"dog": torch.tensor([1.0, 0.0]), "rain": torch.tensor([0.0, 1.0])}
    seen = []

    def embed(texts):
        seen.extend(texts)
        return torch.stack([vocabulary[t] for t in texts])

    # "" and "  " would need a filler word to be embedded; the rule counts them wrong instead.
    assert caption_class_accuracy(["dog", "", "rain", "  "], [0, 0, 1, 1], protos, embed) == pytest.approx(0.5)
    assert seen == ["dog", "rain"]
    assert caption_class_accuracy(["", ""], [0, 1], protos, embed) == 0.0
