"""What every language recipe whose artifact is a chat model shares: its prompts, and how its model is
rebuilt from weights (so a merge of language runs is scored by the same evaluators)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from poise.errors import UserError
from poise.language.data import LangData, LangDataCfg, load_lang_data
from poise.language.models import ChatLM, lm_from_artifact
from poise.recipes import Recipe


def rebuild_lm(cfg: Any, tensors: dict[str, torch.Tensor], device: torch.device,
               meta: dict[str, Any] | None = None) -> tuple[ChatLM, LangData]:
    """A language run's chat model with other weights (a merge), and the prompts its evaluators read."""
    if meta is None or "hf_config" not in meta:
        raise UserError("a language model's weights need their architecture and tokenizer (artifact metadata)",
                        where="merge")
    lm = lm_from_artifact(tensors, meta)
    return lm.to(device), load_lang_data(cfg.data)


class ChatRecipe(Recipe):
    """Fields of every recipe that trains a chat model: the prompts it is trained and judged on."""

    data: LangDataCfg = Field(default_factory=LangDataCfg)

    rebuilder: ClassVar[Any] = staticmethod(rebuild_lm)

    def preflight(self) -> None:
        """The files the evaluations name (standard prompt sets, local judge folders), before the run exists."""
        super().preflight()
        from poise.language.evaluators import preflight_evaluations

        preflight_evaluations(self.eval)
