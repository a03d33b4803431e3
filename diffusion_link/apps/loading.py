"""One way every app loads a captioner: `load_captioning_pipeline` (the CLI's caption, search and evaluate, the web
page and its Space).

The apps only caption, so the LoRA adapters are merged into the language model's weights as it loads
(`from_pretrained(..., merge_lora=True)`): the same captions, without the adapters' extra matrix products at every
decoding step, and without building peft's layers. A model loaded in Python keeps its adapters (it may still be
trained or saved with them); `pipeline("audio-captioning", model=..., model_kwargs={"merge_lora": True})` or
`pipe.model.merge_and_unload()` gives the same speed there.

transformers' `pipeline()` tries each model class it knows and, when all fail, raises one `ValueError` whose text
holds every loader's traceback. A user who passed a damaged folder needs the loader's own message instead (the file
and the key at fault, as `pretrained_loading` words it), so on that error the model is loaded once more directly and
its own error raised; the CLI shows it as one line.
"""

from __future__ import annotations

import os


def load_captioning_pipeline(model: str | os.PathLike | None = None, trust_remote_code: bool = False,
                             merge_lora: bool = True):
    """`pipeline("audio-captioning", model=model)`, `model` a captioner folder or Hub id; None: the bundled starter
    (once its bases are set up, else `StarterNotSetUp` naming the command that sets them up). A model that fails to
    load raises the loader's own error (`ValueError` / `OSError` naming the file), not `pipeline()`'s traceback dump.
    `merge_lora`: merge the LoRA adapters for captioning (see above)."""
    from transformers import AutoModel, pipeline

    from diffusion_link import pipeline_audio_captioning  # noqa: F401  (registers the task)
    from diffusion_link.configuration_diffusion_link_captioner import PIPELINE_TASK
    from diffusion_link.starter import require_captioner

    name = require_captioner(os.fspath(model) if model is not None else None)
    model_kwargs = {"merge_lora": True} if merge_lora else {}
    try:
        return pipeline(PIPELINE_TASK, model=name, trust_remote_code=trust_remote_code, model_kwargs=model_kwargs)
    except ValueError as err:
        if not str(err).startswith("Could not load model"):
            raise
        # raises the loader's own error
        AutoModel.from_pretrained(name, trust_remote_code=trust_remote_code, **model_kwargs)
        raise
