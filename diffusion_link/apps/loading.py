"""One way every app loads a captioner: `load_captioning_pipeline` (the CLI's caption, search and evaluate, the web
page and its Space).

transformers' `pipeline()` tries each model class it knows and, when all fail, raises one `ValueError` whose text
holds every loader's traceback. A user who passed a damaged folder needs the loader's own message instead (the file
and the key at fault, as `pretrained_loading` words it), so on that error the model is loaded once more directly and
its own error raised; the CLI shows it as one line.
"""

from __future__ import annotations

import os


def load_captioning_pipeline(model: str | os.PathLike | None = None, trust_remote_code: bool = False):
    """`pipeline("audio-captioning", model=model)`, `model` a captioner folder or Hub id; None: the bundled starter
    (once its bases are set up, else `StarterNotSetUp` naming the command that sets them up). A model that fails to
    load raises the loader's own error (`ValueError` / `OSError` naming the file), not `pipeline()`'s traceback dump."""
    from transformers import AutoModel, pipeline

    from diffusion_link import pipeline_audio_captioning  # noqa: F401  (registers the task)
    from diffusion_link.configuration_diffusion_link_captioner import PIPELINE_TASK
    from diffusion_link.starter import require_captioner

    name = require_captioner(os.fspath(model) if model is not None else None)
    try:
        return pipeline(PIPELINE_TASK, model=name, trust_remote_code=trust_remote_code)
    except ValueError as err:
        if not str(err).startswith("Could not load model"):
            raise
        AutoModel.from_pretrained(name, trust_remote_code=trust_remote_code)  # raises the loader's own error
        raise
