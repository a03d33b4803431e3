"""The starter build's stages, one concept a module; `training/build_starter.py` runs them in order.

- `arguments`: the build's recipe (`training/configs/starter.json`) and its flags.
- `stages`: the `stage` decorator (a logged, timed stage).
- `towers`: frozen aiSFX / MiniLM embeddings of the world (`diffusion_link.starter.world`), cached.
- `augmentation`: waveform augmentation of the training clips and its tower embeddings, cached.
- `heads`: the audio heads (InfoNCE), out-of-fold by recording.
- `bridges`: the starter's bridge and the fold bridges, their data files and the cross-fitted depth.
- `decoder`: the zero-shot decoder (`training/train_captioner.py`, run as a recipe).
- `decoding`: captioning embeddings (greedy or scored candidates) and the pick of the default decoding.
- `evaluate`: the test clips' class accuracy with and without the bridge and with the text oracle.
- `assemble`: the committed folders (trained parts only) and their model card.
"""
