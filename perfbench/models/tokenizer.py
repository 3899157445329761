"""Tiny tokenizers trained from text perfbench ships, so synthetic models tokenize real text offline.

Random-weight models have no tokenizer of their own, and fetching one from a hub would make runs
depend on the network. Instead a small byte-level BPE tokenizer is trained (in well under a second)
from `perfbench/data/` and cached by content hash. `spm_pieces` learns the SentencePiece-style
pieces that `perfbench.models.gguf_tiny` puts into a GGUF vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

#: Bump when the output of `build_tokenizer` changes for the same inputs (invalidates caches).
FORMAT_VERSION = 1
#: Special tokens and their ids (llama's order, so <unk>/<s>/</s> ids match the GGUF vocabulary).
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")
MODEL_MAX_LENGTH = 1 << 20  # the model's context decides; this only silences length warnings
SPM_SPACE = "\u2581"  # '▁', SentencePiece's visible space


@lru_cache(maxsize=1)
def training_text() -> str:
    """The shipped corpus plus every shipped prompt, in a fixed order (determinism)."""
    from perfbench.prompts import data_path, load_prompts

    corpus = data_path("corpus.txt").read_text(encoding="utf-8")
    return corpus + "\n" + "\n".join(p.text for p in load_prompts())


def _lines() -> list[str]:
    return [line for line in training_text().splitlines() if line.strip()]


def build_tokenizer(vocab_size: int, out_dir: str | os.PathLike) -> Path:
    """Train a byte-level BPE tokenizer with ids < `vocab_size` and save it for AutoTokenizer.

    Byte-level: every string round-trips. The vocabulary reaches `vocab_size` when the corpus has
    enough merges (the tiny presets' 2048 does); for larger vocabularies it stops short, which is
    harmless because only ids below `vocab_size` are ever produced.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ValueError(f"vocab_size {vocab_size} is too small for a byte-level tokenizer "
                         f"(needs at least {len(SPECIAL_TOKENS) + 256})")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_lines(), trainer=trainer)
    # Prepend <s> like llama tokenizers do, so prompt lengths match what a llama model would see.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(), indent=2) + "\n")
    return out


def _tokenizer_config() -> dict:
    """What AutoTokenizer needs to load tokenizer.json with the right special tokens."""
    return {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
            "unk_token": "<unk>", "pad_token": "<pad>", "model_max_length": MODEL_MAX_LENGTH,
            "add_bos_token": True, "clean_up_tokenization_spaces": False}


def cache_key(*parts: object) -> str:
    """A short content hash of the inputs that decide an artefact's bytes."""
    h = hashlib.sha256()
    for part in parts:
        h.update(repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def ensure_tokenizer(vocab_size: int, cache_dir: str | os.PathLike) -> Path:
    """The cached tokenizer folder for `vocab_size`, built on first use (safe across processes)."""
    import tokenizers

    key = cache_key("tokenizer", FORMAT_VERSION, vocab_size, tokenizers.__version__,
                    hashlib.sha256(training_text().encode()).hexdigest())
    final = Path(cache_dir) / "tokenizers" / f"bpe-{vocab_size}-{key}"
    return atomic_build_dir(final, lambda tmp: build_tokenizer(vocab_size, tmp))


def atomic_build_dir(final: Path, build: Callable[[Path], object]) -> Path:
    """Build a folder in a temp dir beside `final` and rename it into place; first writer wins.

    Readers never see a half-written folder, and concurrent builders do not clobber each other.
    """
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build(tmp)
        try:
            os.replace(tmp, final)
        except OSError:  # another process renamed its copy first
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def atomic_build_file(final: Path, build: Callable[[Path], object]) -> Path:
    """Like `atomic_build_dir` for one file: write a temp file beside `final`, then os.replace."""
    if final.is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        build(tmp)
        os.replace(tmp, final)  # atomic; a concurrent writer's identical file is simply replaced
    finally:
        tmp.unlink(missing_ok=True)
    return final


def spm_pieces(n: int) -> list[tuple[str, float]]:
    """Up to `n` SentencePiece-style pieces ('▁'-prefixed words and subwords) with scores.

    Learned by BPE over the shipped text, so every multi-character piece is the concatenation of two
    earlier pieces: llama.cpp's SPM tokenizer, which merges the best-scoring adjacent pair present in
    the vocabulary, can reach each of them. Score is minus the merge rank (earlier merges win).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    if n <= 0:
        return []
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPM_SPACE, prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=n, show_progress=False)
    # Re-joined with single spaces: newlines and tabs never end up inside a piece.
    words = [w for line in _lines() for w in line.split()]
    tok.train_from_iterator([" ".join(words)], trainer=trainer)
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])  # alphabet first, then merges
    return [(piece, -float(i)) for i, (piece, _) in enumerate(vocab[:n])]
