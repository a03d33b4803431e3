"""The starter head's waveform augmentation (`diffusion_link/starter/build/augmentation.py`)."""

import numpy as np

from diffusion_link.starter.build.augmentation import augment, augmented_examples, coloured_noise, mixture_caption


def test_coloured_noise_has_unit_rms_and_its_colour():
    rng = np.random.default_rng(0)
    power = {}
    for colour in ("white", "pink", "brown"):
        x = coloured_noise(2**15, colour, rng)
        assert abs(np.sqrt(np.mean(x**2)) - 1) < 1e-6
        spectrum = np.abs(np.fft.rfft(x)) ** 2
        power[colour] = spectrum[:len(spectrum) // 8].sum() / spectrum.sum()  # share of power in the lowest eighth
    assert 0.08 < power["white"] < 0.17 and power["white"] < power["pink"] < power["brown"]


def test_an_augmented_clip_keeps_length_type_and_headroom_and_is_seeded():
    wave = (0.5 * np.sin(np.linspace(0, 2000, 44100))).astype(np.float32)
    partner = np.random.default_rng(1).uniform(-0.9, 0.9, 44100).astype(np.float32)
    for seed in range(20):
        out = augment(wave, np.random.default_rng(seed), partner if seed % 2 else None)
        assert out.shape == wave.shape and out.dtype == np.float32 and np.abs(out).max() <= 0.99 + 1e-6
        assert not np.allclose(out, wave)
    again = augment(wave, np.random.default_rng(3), partner)
    assert np.array_equal(again, augment(wave, np.random.default_rng(3), partner))


def test_mixtures_take_a_partner_of_another_class_from_the_same_fold():
    rng = np.random.default_rng(0)
    waves = [rng.uniform(-0.5, 0.5, 8000).astype(np.float32) for _ in range(12)]
    labels = [i % 4 for i in range(12)]
    folds = [i % 3 for i in range(12)]
    examples = augmented_examples(waves, labels, folds, copies=3, seed=0, mixture_probability=0.5)
    assert len(examples) == 36 and [e["clip"] for e in examples[:12]] == list(range(12))
    mixtures = [e for e in examples if e["partner"] >= 0]
    assert mixtures  # about half of them
    for e in mixtures:
        assert folds[e["partner"]] == folds[e["clip"]] and labels[e["partner"]] != labels[e["clip"]]
    assert mixture_caption("A dog barks.", "Rain falls on a roof") == "A dog barks while rain falls on a roof"
