"""SD's CLIP tokenizer with no download: transformers' CLIPTokenizer from a tokenizer folder, which
holds either the usual vocab.json + merges.txt or OpenAI's BPE file `bpe_simple_vocab_16e6.txt.gz`
(what the shipped SD 1.5 configs carry, see configs/README.md), whose vocab.json / merges.txt are
built here: CLIP's vocabulary is the 256 byte symbols, the same with "</w>", the merges' joined
pairs, then <|startoftext|> and <|endoftext|> (49,408 tokens)."""

from __future__ import annotations

import functools
import gzip
import json
import shutil
import tempfile
from pathlib import Path

from ..errors import PluginFileError

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
MERGES = 49152 - 256 - 2  # CLIP keeps the first 48,894 merges of the file
SPECIAL = ("<|startoftext|>", "<|endoftext|>")


def byte_symbols() -> list[str]:
    """The printable stand-ins of the 256 byte values (GPT-2 / CLIP byte-level BPE), in CLIP's order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


@functools.lru_cache(maxsize=2)
def bpe_vocab_and_merges(bpe_gz: Path) -> tuple[dict[str, int], tuple[str, ...]]:
    """vocab.json's mapping and merges.txt's lines (without the "#version" header) from the BPE file."""
    try:
        lines = gzip.decompress(Path(bpe_gz).read_bytes()).decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise PluginFileError(f"{bpe_gz}: not CLIP's gzipped BPE file: {error}") from None
    merges = tuple(lines[1 : MERGES + 1])  # the first line is the file's header
    if len(merges) != MERGES or any(len(line.split()) != 2 for line in merges):
        raise PluginFileError(f"{bpe_gz}: not CLIP's BPE file ({len(merges)} merges, {MERGES} expected)")
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(line.split()) for line in merges] + list(SPECIAL)
    return {token: index for index, token in enumerate(tokens)}, merges


def write_tokenizer_files(bpe_gz: Path, folder: Path) -> Path:
    """vocab.json and merges.txt, as transformers' CLIP tokenizer folders hold them, into `folder`."""
    vocab, merges = bpe_vocab_and_merges(Path(bpe_gz))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return folder


def load_clip_tokenizer(folder: Path | str):
    """transformers' CLIPTokenizer from a tokenizer folder: vocab.json + merges.txt, or the BPE file
    (the files built into a temporary folder, read, and removed)."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    if not (folder / BPE_FILE).is_file():
        raise PluginFileError(f"{folder}: not a CLIP tokenizer folder (no vocab.json + merges.txt, nor {BPE_FILE})")
    with tempfile.TemporaryDirectory(prefix="diffplugin-tokenizer-") as temp:
        write_tokenizer_files(folder / BPE_FILE, Path(temp))
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            if (folder / name).is_file():
                shutil.copy(folder / name, Path(temp) / name)
        return CLIPTokenizer.from_pretrained(temp, local_files_only=True)


def tokenizer_problem(folder: Path) -> str | None:
    """Why `folder` is not a tokenizer folder load_clip_tokenizer reads, or None."""
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return None
    if (folder / BPE_FILE).is_file():
        return None
    return f"{folder}: no vocab.json + merges.txt (a CLIP tokenizer)"
