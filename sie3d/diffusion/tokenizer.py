"""The CLIP BPE tokenizer (OpenAI ids), built offline from the real vocabulary file.

SD-1.5's tokenizer and the Arc2Face ID encoder use OpenAI CLIP's byte-level BPE: 49,408 tokens
(256 byte symbols, the same 256 with the end-of-word marker ``</w>``, 48,894 merges, then
``<|startoftext|>`` = 49406 and ``<|endoftext|>`` = 49407). The merge list ships as
``bpe_simple_vocab_16e6.txt.gz`` (registry model ``clip-bpe-vocab``); this module derives the
vocabulary from it and builds a ``transformers.CLIPTokenizer`` (lower-cases, splits words, applies
the merges), so no hub access is needed.

Offline, ``CLIPTokenizer.from_pretrained(<hub id or empty folder>)`` silently returns a tokenizer with
two tokens that maps every word to the same id. :func:`check_clip_tokenizer` refuses such a tokenizer.
"""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path

from transformers import CLIPTokenizer

#: OpenAI CLIP vocabulary size and special ids
VOCAB_SIZE = 49408
BOS_ID = 49406
EOS_ID = 49407
#: prompt length of every CLIP text encoder used here (SD-1.5, Arc2Face)
MAX_LENGTH = 77
#: a sentence with known OpenAI CLIP ids, used to check a tokenizer
CHECK_PROMPT = "a photo of a cat"
CHECK_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]

_N_MERGES = VOCAB_SIZE - 2 * 256 - 2  # 48,894


class TokenizerError(RuntimeError):
    """A tokenizer does not have the CLIP vocabulary (typically the silent offline fallback)."""


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE, in vocabulary order.

    Printable Latin-1 bytes map to themselves; the other 68 bytes (control characters, space,
    soft hyphen, ...) map to code points 256, 257, ... in byte order, appended after the printable ones.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in set(printable)]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def read_merges(bpe_file: str | Path) -> list[tuple[str, str]]:
    """The 48,894 merges of ``bpe_simple_vocab_16e6.txt.gz`` (first line is a version header)."""
    with gzip.open(bpe_file, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:1 + _N_MERGES]]
    if len(merges) != _N_MERGES or any(len(m) != 2 for m in merges):
        raise TokenizerError(f"{bpe_file} is not the CLIP BPE merge list (expected {_N_MERGES} pairs); "
                             "fetch it again with: sie3d weights download clip-bpe-vocab --force")
    return merges


def clip_vocabulary(merges: list[tuple[str, str]]) -> dict[str, int]:
    """token -> id: byte symbols, byte symbols + ``</w>``, one token per merge, then the two specials."""
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}


def check_clip_tokenizer(tokenizer, source: str = "tokenizer") -> None:
    """Raise :class:`TokenizerError` unless ``tokenizer`` has the OpenAI CLIP vocabulary and ids."""
    size = len(tokenizer)
    if size != VOCAB_SIZE:
        raise TokenizerError(
            f"{source} has {size} tokens, not CLIP's {VOCAB_SIZE} (offline, from_pretrained() silently "
            "returns a 2-token tokenizer when the files are missing); fix: sie3d weights download "
            "clip-bpe-vocab (offline) or sie3d weights download sd15-tokenizer")
    ids = tokenizer(CHECK_PROMPT).input_ids
    if list(ids) != CHECK_IDS:
        raise TokenizerError(f"{source} encodes {CHECK_PROMPT!r} as {list(ids)}, expected {CHECK_IDS}")


def _finish(tokenizer: CLIPTokenizer, source: str) -> CLIPTokenizer:
    tokenizer.model_max_length = MAX_LENGTH
    check_clip_tokenizer(tokenizer, source)
    return tokenizer


@functools.lru_cache(maxsize=4)
def tokenizer_from_bpe(bpe_file: str) -> CLIPTokenizer:
    """A CLIP tokenizer built from the BPE merge file (cached per path; ~1.5 s to build)."""
    merges = read_merges(bpe_file)
    tokenizer = CLIPTokenizer(vocab=clip_vocabulary(merges), merges=merges)
    return _finish(tokenizer, f"tokenizer built from {bpe_file}")


def tokenizer_from_dir(directory: str | Path) -> CLIPTokenizer:
    """A CLIP tokenizer from a local folder holding ``vocab.json`` and ``merges.txt`` (SD-1.5 layout)."""
    directory = Path(directory)
    missing = [n for n in ("vocab.json", "merges.txt") if not (directory / n).is_file()]
    if missing:
        raise TokenizerError(f"{directory} has no {', '.join(missing)}; fix: sie3d weights download sd15-tokenizer")
    return _finish(CLIPTokenizer.from_pretrained(str(directory)), f"tokenizer in {directory}")


def load_clip_tokenizer(directory: str | Path | None = None) -> CLIPTokenizer:
    """The CLIP tokenizer: from ``directory`` (SD-1.5 layout) when given, else from ``clip-bpe-vocab``."""
    if directory is not None:
        return tokenizer_from_dir(directory)
    from ..weights import model_path

    return tokenizer_from_bpe(str(model_path("clip-bpe-vocab")))


def write_tokenizer_files(bpe_file: str | Path, directory: str | Path) -> Path:
    """Write the SD-1.5 ``tokenizer/`` files (vocab.json, merges.txt, two small JSON configs)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    merges = read_merges(bpe_file)
    (directory / "vocab.json").write_text(json.dumps(clip_vocabulary(merges), ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                          encoding="utf-8")
    specials = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (directory / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_LENGTH, "do_lower_case": True, **specials},
        indent=2))
    return directory
