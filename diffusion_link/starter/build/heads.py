"""Stage "heads": the audio head into MiniLM's own space ("locked text"), InfoNCE with a learned temperature on the
training clips, plus cross-fitted heads whose out-of-fold embeddings give the bridge realistic audio (folds by
recording, stratified by label: `diffusion_link.starter.world.source_folds`)."""

from __future__ import annotations

import json
import logging

import torch
import torch.nn.functional as F

from diffusion_link.metrics import class_accuracy
from diffusion_link.starter.build.arguments import StarterArguments
from diffusion_link.starter.build.augmentation import augmented_tower_embeddings
from diffusion_link.starter.build.stages import stage
from diffusion_link.starter.world import CaptionTable, StarterWorld, source_folds


logger = logging.getLogger("build_starter")

NUM_FOLDS = 5


def train_head(args: StarterArguments, encoder, audio: torch.Tensor, labels: torch.Tensor, text: torch.Tensor,
               captions: CaptionTable, seed: int, augmented: dict | None = None) -> dict[str, torch.Tensor]:
    """Train the audio head (and temperature) with InfoNCE: each step one clip per class, with one of its captions.

    `audio` (N, D_audio) tower embeddings of the clips it may see, `labels` (N,), `text` the caption table's
    (len(captions), D) embeddings. With `augmented` (tower embeddings of augmented clips,
    `augmented_tower_embeddings`, already restricted to the clips this head may see), each class's slot takes an
    augmented version instead with probability `head_augmentation_probability`; a two-sound mixture is paired with
    its own compositional caption. Returns the head's state dict."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    encoder._init_weights(encoder.audio_projection)
    torch.nn.init.constant_(encoder.logit_scale, encoder.config.logit_scale_init_value)
    params = [p for p in encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.head_learning_rate, weight_decay=args.head_weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.head_steps)
    if augmented is not None and len(augmented["label"]):
        draw = augmented_batches(args, audio, labels, text, captions, augmented, generator)
    else:
        draw = clip_batches(audio, labels, text, captions, generator)
    encoder.train()
    for _ in range(args.head_steps):
        inputs, targets, scale = draw()
        # Gain and small-noise augmentation of the tower embedding keeps the head from memorising 250 clips.
        noisy = inputs * (1 + 0.1 * torch.randn(len(inputs), 1, generator=generator))
        noisy = noisy + 0.05 * scale * torch.randn(noisy.shape, generator=generator)
        loss = encoder(audio_tower_embeds=noisy, text_tower_embeds=targets).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    encoder.eval()
    return {k: v.clone() for k, v in encoder.head_state_dict().items()}


def clip_batches(audio, labels, text, captions: CaptionTable, generator):
    """A step's batch: one training clip per class and one of its class's captions (noise scaled by the batch)."""
    by_class = {int(c): (labels == c).nonzero().flatten() for c in labels.unique()}

    def draw():
        rows = torch.stack([idx[torch.randint(len(idx), (1,), generator=generator)] for idx in by_class.values()]).flatten()
        caps = torch.tensor([captions.random_caption_row(int(labels[r]), generator) for r in rows])
        return audio[rows], text[caps], audio[rows].std()

    return draw


def augmented_batches(args, audio, labels, text, captions: CaptionTable, augmented, generator):
    """A step's batch where each class's slot takes an augmented version with probability
    `head_augmentation_probability` (a mixture with its own caption), else an original clip (noise scaled by all)."""
    classes = [int(c) for c in labels.unique()]
    by_class = {c: (labels == c).nonzero().flatten() for c in classes}
    augmented_by_class = {c: (augmented["label"] == c).nonzero().flatten() for c in classes}

    def pick(rows: torch.Tensor) -> int:
        return int(rows[torch.randint(len(rows), (1,), generator=generator)])

    def draw():
        inputs, targets = [], []
        for c in classes:
            caption = text[pick(torch.tensor(captions.class_caption_rows(c)))]
            rows = augmented_by_class[c]
            if len(rows) and float(torch.rand(1, generator=generator)) < args.head_augmentation_probability:
                r = pick(rows)
                inputs.append(augmented["audio"][r])
                targets.append(augmented["text"][r] if augmented["partner"][r] >= 0 else caption)
            else:
                inputs.append(audio[pick(by_class[c])])
                targets.append(caption)
        return torch.stack(inputs), torch.stack(targets), audio.std()

    return draw


def restrict(augmented: dict | None, keep: torch.Tensor) -> dict | None:
    """The augmented rows whose source clip is in the (ntrain,) boolean mask `keep`."""
    if augmented is None:
        return None
    rows = keep[augmented["clip"]]
    return {k: v[rows] for k, v in augmented.items()}


@torch.no_grad()
def project_audio(encoder, audio: torch.Tensor) -> torch.Tensor:
    """(N, D_audio) tower embeddings -> (N, D) unit embeddings through the encoder's audio head."""
    return F.normalize(encoder.audio_projection(audio), dim=-1)


@stage("heads")
def heads(args: StarterArguments, world: StarterWorld, encoder, split: dict, towers: dict) -> dict:
    """The out-of-fold embeddings `oof` (N_train, D) of the training clips, their `folds` (N_train,), the final
    head's `test` (N_test, D) embeddings, the `labels` (N_train + N_test,), the class `prototypes` (L, D), each
    clip's `sources` (N_train + N_test,) and class-accuracy `candidates` (N_train + N_test, L: its source's labels)
    and a `report`; the encoder keeps the final head."""
    ntrain = len(split["train"])
    audio = towers["audio"]
    labels = world.labels_of(split["train"] + split["test"])
    text, captions = towers["esc_text"], world.captions
    train_audio, train_labels = audio[:ntrain], labels[:ntrain]
    # Out-of-fold embeddings of the training clips: 5 folds by recording, stratified by label.
    folds = torch.tensor(source_folds(split["train"], NUM_FOLDS, args.seed))
    augmented = augmented_tower_embeddings(args, world, encoder, split, folds.tolist())
    oof = torch.zeros(ntrain, encoder.config.projection_dim)
    for fold in range(NUM_FOLDS):
        held = folds == fold
        train_head(args, encoder, train_audio[~held], train_labels[~held], text, captions, args.seed + fold,
                   restrict(augmented, ~held))
        oof[held] = project_audio(encoder, train_audio[held])
    state = train_head(args, encoder, train_audio, train_labels, text, captions, args.seed, augmented)
    encoder.load_state_dict(state, strict=False)
    test = project_audio(encoder, audio[ntrain:])
    prototypes = captions.prototypes(text)
    # Each clip is named among its own source's labels (ESC-50's 50 classes, a Debian collection's concepts).
    sources = world.source_index(split["train"] + split["test"])
    candidates = world.candidates(sources)
    test_rows = candidates[ntrain:][:, captions.row_labels]  # a test clip's own captions
    sims = (test @ text.T).masked_fill(~test_rows, float("-inf"))
    r1 = float((captions.row_labels[sims.argmax(1)] == labels[ntrain:]).float().mean())
    report = {
        "test_audio_to_caption_r1": r1,
        "test_class_accuracy_raw": class_accuracy(test, labels[ntrain:], prototypes, candidates[ntrain:]),
        "oof_class_accuracy_raw": class_accuracy(oof, train_labels, prototypes, candidates[:ntrain]),
        "train_class_accuracy_raw": class_accuracy(project_audio(encoder, train_audio), train_labels, prototypes,
                                                   candidates[:ntrain]),
        "temperature": float(1 / encoder.logit_scale.exp()),
    }
    logger.info("  heads: %s", json.dumps(report))
    return {"oof": oof, "folds": folds, "test": test, "labels": labels, "prototypes": prototypes,
            "sources": sources, "candidates": candidates, "report": report}
