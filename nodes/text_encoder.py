"""ComfyUI's CLIP as plugin_core's instruction encoder: the same numbers the command line
reads from transformers' CLIPTextModel (the pooled output, no projection, and the last
layer's token states up to EOS), whatever CLIPSetLastLayer did to the CLIP in the graph."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..plugin_core.selector import CLIP_TEXT_ENCODER, RememberingEncoder, clip_words


class ComfyClipTextEncoder(RememberingEncoder):
    def __init__(self, clip):
        super().__init__()
        self.clip = clip.clone()
        self.clip.clip_layer(None)  # the reference reads the last layer, not a clip-skip layer
        tokenizer = self.clip.tokenizer
        self._tokenizer = getattr(tokenizer, getattr(tokenizer, "clip", ""), None)  # SD1Tokenizer -> its SDTokenizer

    @property
    def width(self) -> int:
        return self.features([" "]).pooled.shape[-1]

    def _tokens(self, text: str) -> dict:
        try:  # the reference tokenizes the raw text: no "(word:1.2)" weight syntax
            tokens = self.clip.tokenize(text, disable_weights=True)
        except TypeError:  # hosts without that switch
            tokens = self.clip.tokenize(text)
        return {name: chunks[0] for name, chunks in tokens.items()}  # the first 77 tokens, as the reference

    def _encode(self, texts: Sequence[str], batch: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
        rows = []
        end = getattr(self._tokenizer, "end_token", None)
        for start in range(0, len(texts), batch):
            chunks = [self._tokens(text) for text in texts[start : start + batch]]
            # Several 77-token chunks in one call are encoded as one batch and their states put
            # side by side (ComfyUI's long-prompt path): one pass for the whole batch of texts.
            cond, pooled = self.clip.encode_from_tokens({name: [c[name] for c in chunks] for name in chunks[0]}, return_pooled=True)
            if pooled is None:
                raise ValueError("this CLIP gives no pooled output; the Plugin-Selector reads SD 1.x's CLIP-L text encoder")
            states = cond.float().cpu()[0].reshape(len(chunks), -1, cond.shape[-1])
            for chunk, state in zip(chunks, states):
                ids = [token[0] for token in next(iter(chunk.values()))]
                length = ids.index(end) + 1 if end in ids else len(ids)
                # The pooled output is the last layer's state at EOS (after the final LN), which
                # is where the token states end; ComfyUI returns it for the first chunk only.
                rows.append((state[length - 1].clone(), state[:length].clone()))
        return rows

    def vocabulary(self) -> set[str]:
        return clip_words(self._tokenizer.tokenizer.get_vocab() if self._tokenizer is not None else {})

    def describe(self) -> dict:
        return {**CLIP_TEXT_ENCODER, "width": self.width}
