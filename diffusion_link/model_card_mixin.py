"""`save_pretrained` writes this package's model card and `push_to_hub` uploads it, for every model of the package.

Copied next to saved models (custom code on the Hub): imports only transformers' logging at module level; the card
templates live in `diffusion_link.hub.model_cards` (shipped with the package, not copied), so a Hub copy running without
the package writes no card and pushes like transformers.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager

from transformers.utils import logging


logger = logging.get_logger(__name__)

# `save_pretrained(push_to_hub=True)` arguments that go to the upload rather than to the local save.
UPLOAD_KWARGS = ("repo_id", "commit_message", "commit_description", "private", "create_pr", "revision")


class ModelCardMixin:
    """Model cards for `PreTrainedModel`s of this package: `save_pretrained` writes README.md and `push_to_hub`
    uploads it.

    transformers' own `push_to_hub` (and `save_pretrained(push_to_hub=True)`) saves a generic README.md over the
    folder's after `save_pretrained` (`create_and_tag_model_card`), so both are replaced here: the folder is saved
    with our card, then uploaded as it is with `HfApi.upload_folder`. A README.md already in the repo is kept, as
    transformers does (replace it on purpose with `diffusion_link.hub.model_cards.model_card(...).push_to_hub(repo_id)`).

    The card comes from `diffusion_link.hub.model_cards` (templates shipped with the package). A Hub copy of this file
    running without the package installed writes no card and pushes like transformers.
    """

    def save_pretrained(self, save_directory, *args, model_card_kwargs: dict | None = None, ship_code: bool = True,
                        **kwargs):
        """transformers' `save_pretrained`, plus the model card `save_directory/README.md`, written only when the
        folder has none (a card of your own is never replaced). `model_card_kwargs` go to
        `diffusion_link.hub.model_cards.model_card` (`eval_results`, `base_model`, `datasets`, `license`, ...).
        With `push_to_hub=True` (and `repo_id`, `token`, `commit_message`, ...) the folder is then uploaded as in
        `push_to_hub`.

        `ship_code=False` saves the folder without this package's code: no `.py` files are copied next to the
        weights and the config has no `auto_map` (nor `custom_pipelines`), so the folder loads only where
        `diffusion_link` is installed (as the starter inside the package does). The model's and its config's
        registration for code copying is lifted for this save only."""
        if not ship_code:
            with _code_not_shipped(self):
                return self.save_pretrained(save_directory, *args, model_card_kwargs=model_card_kwargs, **kwargs)
        cards = _model_cards_module()
        if cards is None:
            return super().save_pretrained(save_directory, *args, **kwargs)
        push_to_hub = kwargs.pop("push_to_hub", False)
        upload_kwargs = {key: kwargs.pop(key) for key in UPLOAD_KWARGS if key in kwargs}
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if not kwargs.get("is_main_process", args[0] if args else True):
            return result
        cards.save_model_card(save_directory, self.config, **(model_card_kwargs or {}))
        if push_to_hub:
            repo_id = upload_kwargs.pop("repo_id", os.path.basename(os.path.normpath(save_directory)))
            return self._upload_with_card(save_directory, repo_id, token=kwargs.get("token"), **upload_kwargs)
        return result

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str | None = "50GB",
        tags: list[str] | None = None,
        model_card_kwargs: dict | None = None,
    ):
        """Save to a temporary folder with our model card (see `save_pretrained`; the card's code examples load
        from `repo_id`) and upload it to `repo_id`; the other arguments are transformers' `push_to_hub`'s.
        `tags` (and `model_tags`) are added to the card. A README.md already in the repo is kept."""
        if _model_cards_module() is None:
            return super().push_to_hub(
                repo_id, commit_message=commit_message, commit_description=commit_description, private=private,
                token=token, revision=revision, create_pr=create_pr, max_shard_size=max_shard_size, tags=tags,
            )
        return self.push_folder_to_hub(
            lambda folder: self.save_pretrained(folder, max_shard_size=max_shard_size), repo_id,
            model_card_kwargs=model_card_kwargs, tags=tags, token=token, private=private,
            commit_message=commit_message, commit_description=commit_description, revision=revision,
            create_pr=create_pr,
        )

    def push_folder_to_hub(self, save, repo_id: str, *, model_card_kwargs: dict | None = None, tags=None,
                           **upload_kwargs):
        """`save(folder)` into a temporary folder, put this model's card for `repo_id` in it, and upload it (the
        pipeline's `push_to_hub` uses this with its own `save_pretrained`). `upload_kwargs`: `token`, `private`,
        `commit_message`, `commit_description`, `revision`, `create_pr`."""
        card_kwargs = {"repo_id": repo_id, **(model_card_kwargs or {})}
        card_kwargs["tags"] = [*card_kwargs.get("tags", ()), *(getattr(self, "model_tags", None) or []), *(tags or [])]
        with tempfile.TemporaryDirectory() as folder:
            save(folder)
            cards = _model_cards_module()
            readme = os.path.join(folder, "README.md")
            if cards is not None and os.path.exists(readme):
                os.remove(readme)  # the card `save` wrote points at a local folder; this one loads from `repo_id`
            if cards is not None:
                cards.save_model_card(folder, self.config, **card_kwargs)
            return self._upload_with_card(folder, repo_id, **upload_kwargs)

    def _upload_with_card(self, folder, repo_id: str, *, token=None, private=None, commit_message=None,
                          commit_description=None, revision=None, create_pr=False):
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if revision is not None and not create_pr:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        ignore = None
        if api.file_exists(repo_id, "README.md", revision=revision):
            logger.info(f"{repo_id} already has a README.md; it is kept (our model card is not uploaded).")
            ignore = ["README.md"]
        return api.upload_folder(
            repo_id=repo_id, folder_path=folder, commit_message=commit_message or f"Upload {type(self).__name__}",
            commit_description=commit_description, revision=revision, create_pr=create_pr, ignore_patterns=ignore,
        )


@contextmanager
def _code_not_shipped(model):
    """Within the block, the classes of `model` and of its config are not registered for code copying (their
    `_auto_class` is None: transformers asks the class, `is_remote_code`) and the config holds no `auto_map` /
    `custom_pipelines`; all is restored afterwards. The registration is a class attribute, so a save in another
    thread during the block would not ship code either."""
    config = model.config
    hidden = {key: config.__dict__.pop(key) for key in ("auto_map", "_custom_pipelines") if key in config.__dict__}
    classes = (type(model), type(config))
    own = [(cls, cls.__dict__["_auto_class"]) for cls in classes if "_auto_class" in cls.__dict__]
    try:
        for cls in classes:
            cls._auto_class = None
        yield
    finally:
        for cls in classes:
            del cls._auto_class
        for cls, value in own:
            cls._auto_class = value
        config.__dict__.update(hidden)


def _model_cards_module():
    """`diffusion_link.hub.model_cards`, or None in a Hub copy of this file without the package (it holds the templates).

    An absolute import in a `try` block: transformers neither copies it next to the weights nor requires it."""
    try:
        from diffusion_link.hub import model_cards
    except ImportError:
        return None
    return model_cards
