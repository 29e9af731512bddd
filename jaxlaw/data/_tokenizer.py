"""Tokenizers for the text pipeline: a local ``tokenizer.json``, or a byte-level BPE trained here.

Entry points: `load_tokenizer` (any Hugging Face ``tokenizer.json``, offline), `train_tokenizer`
(byte-level BPE on given texts, deterministic) and `save_tokenizer` (writes a directory that both
`load_tokenizer` and ``transformers.AutoTokenizer.from_pretrained`` read). All of them speak
`TextTokenizer`, the thin wrapper the rest of `jaxlaw.data` encodes with: ids without any
special tokens, plus the ``eos_id`` / ``bos_id`` / ``pad_id`` that the formatting code places.
"""

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

ENDOFTEXT = "<|endoftext|>"
# Spellings of special tokens used when no tokenizer_config.json names them, most common first.
# "<|endoftext|>" closes the bos list: GPT-2-style vocabularies use it for both roles.
_EOS_NAMES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "<|im_end|>", "[SEP]")
_BOS_NAMES = ("<s>", "<bos>", "<|begin_of_text|>", "<|startoftext|>", "[CLS]", "<|endoftext|>")
_PAD_NAMES = ("<pad>", "[PAD]", "<|padding|>", "<|pad|>")


@dataclass(frozen=True, eq=False)
class TextTokenizer:
    """A `tokenizers.Tokenizer` plus the special-token ids that training needs.

    `encode` never adds special tokens: `tokenize_examples` and `pack_texts` place bos/eos
    themselves, so the same code serves every vocabulary.

    Attributes:
        tokenizer: the underlying ``tokenizers.Tokenizer``.
        eos_id: id that closes a response (a loss target) and separates packed documents.
        pad_id: id written into padding; always masked out, so it may equal ``eos_id``.
        bos_id: id put at position 0 of every fine-tuning example, or None if the vocabulary
            has no beginning-of-sequence token.
    """

    tokenizer: Tokenizer
    eos_id: int
    pad_id: int
    bos_id: int | None = None

    @cached_property
    def vocab_size(self) -> int:
        """Rows an embedding table needs: the largest id plus one (added tokens included)."""
        return max(self.tokenizer.get_vocab(with_added_tokens=True).values()) + 1

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without special tokens."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (encoded in parallel by ``tokenizers``), no special tokens."""
        encs = self.tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
        return [e.ids for e in encs]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; special tokens are kept so that nothing is silently dropped."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)


def _token_name(value: Any) -> str | None:
    """A special token as written in tokenizer_config.json: a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _config_tokens(directory: Path) -> dict[str, str]:
    """Special-token names from tokenizer_config.json / special_tokens_map.json, if present."""
    found: dict[str, str] = {}
    # tokenizer_config.json is read last so that it wins, as in transformers.
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        f = directory / name
        if not f.is_file():
            continue
        try:
            cfg = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{f}: not valid JSON ({e})") from None
        for role in ("eos_token", "bos_token", "pad_token"):
            if (tok := _token_name(cfg.get(role))) is not None:
                found[role] = tok
    return found


def load_tokenizer(
    path: str | Path,
    *,
    eos_token: str | None = None,
    bos_token: str | None = None,
    pad_token: str | None = None,
) -> TextTokenizer:
    """Load a Hugging Face fast tokenizer from a local ``tokenizer.json`` (no network).

    Special tokens are resolved in this order: the keyword arguments; ``tokenizer_config.json``
    (then ``special_tokens_map.json``) beside the file; well-known spellings in the vocabulary
    (``<|endoftext|>``, ``</s>``, ``<s>``, ``<pad>``, ...). A missing pad token falls back to eos
    (padding is always masked), a missing bos token leaves ``bos_id = None``.

    Args:
        path: a directory holding ``tokenizer.json`` (e.g. a downloaded model or the output of
            `save_tokenizer`), or the ``tokenizer.json`` file itself.
        eos_token: eos token string, overriding the lookup.
        bos_token: bos token string, overriding the lookup.
        pad_token: pad token string, overriding the lookup.

    Returns:
        The wrapped tokenizer.

    Raises:
        ValueError: the file is missing or unreadable, or a special token is not in its
            vocabulary, or no eos token can be found; the message names the path.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: not found (expected tokenizer.json or a directory holding it)")
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"{file}: tokenizer file not found")
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
        raise ValueError(f"{file}: not a tokenizers JSON file ({str(e).splitlines()[0]})") from None
    # Some published tokenizer.json files enable truncation or padding; lengths are decided by
    # tokenize_examples / pack_texts, so an encode must return every token.
    tok.no_truncation()
    tok.no_padding()

    cfg = _config_tokens(file.parent)
    vocab = tok.get_vocab(with_added_tokens=True)

    def resolve(role: str, given: str | None, names: Sequence[str]) -> int | None:
        name = given or cfg.get(role)
        if name is not None:
            if name not in vocab:
                raise ValueError(f"{file}: {role} {name!r} is not in the vocabulary")
            return vocab[name]
        return next((vocab[n] for n in names if n in vocab), None)

    eos_id = resolve("eos_token", eos_token, _EOS_NAMES)
    if eos_id is None:
        raise ValueError(f"{file}: no eos token found; pass eos_token=...")
    pad_id = resolve("pad_token", pad_token, _PAD_NAMES)
    bos_id = resolve("bos_token", bos_token, _BOS_NAMES)
    return TextTokenizer(
        tok, eos_id=eos_id, pad_id=eos_id if pad_id is None else pad_id, bos_id=bos_id
    )


def train_tokenizer(
    texts: Iterable[str], *, vocab_size: int, min_frequency: int = 2
) -> TextTokenizer:
    """Train a byte-level BPE tokenizer (GPT-2 style) on ``texts``.

    The vocabulary is ``<|endoftext|>`` (id 0), the 256 byte symbols, then merges, so every
    string encodes without unknown tokens. ``<|endoftext|>`` serves as eos, bos and pad at once,
    as in GPT-2: padding is masked, and the eos that closes a response is told apart from
    padding by the loss mask, not the id. Training is deterministic: the same texts give the
    same ``tokenizer.json`` byte for byte, whatever the thread count (``tokenizers`` breaks ties
    between equally frequent pairs by pair id, not hash order; tests/test_text_data.py checks it).

    Args:
        texts: training documents (e.g. `stdlib_corpus()`).
        vocab_size: final vocabulary size including the special token and the 256 bytes; at
            least 257. A small corpus may stop short of it.
        min_frequency: a pair must occur this many times to be merged.

    Returns:
        The trained tokenizer; write it with `save_tokenizer`.

    Raises:
        ValueError: ``vocab_size`` is below 257.
    """
    if vocab_size < 257:
        raise ValueError(f"vocab_size={vocab_size} is below 257 (256 bytes + {ENDOFTEXT})")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[ENDOFTEXT],
        # Seed all 256 byte symbols, so that text unseen in training still encodes.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    end = tok.token_to_id(ENDOFTEXT)
    return TextTokenizer(tok, eos_id=end, pad_id=end, bos_id=end)


def save_tokenizer(tokenizer: TextTokenizer, directory: str | Path) -> Path:
    """Write ``tokenizer.json`` and a minimal ``tokenizer_config.json`` into ``directory``.

    The config names the special tokens and ``PreTrainedTokenizerFast``, so that
    ``transformers.AutoTokenizer.from_pretrained(directory)`` loads it offline and encodes the
    same ids (with ``add_special_tokens=False``, or by default: no post-processor is set).

    Args:
        tokenizer: the tokenizer to save.
        directory: output directory, created if needed; existing files are overwritten.

    Returns:
        The path of the written ``tokenizer.json``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    file = directory / "tokenizer.json"
    tokenizer.tokenizer.save(str(file))
    tok = tokenizer.tokenizer.id_to_token
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": tok(tokenizer.eos_id),
        "pad_token": tok(tokenizer.pad_id),
        # Decoding must give back the exact text (code is whitespace-sensitive).
        "clean_up_tokenization_spaces": False,
    }
    if tokenizer.bos_id is not None:
        config["bos_token"] = tok(tokenizer.bos_id)
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return file
