"""Tokenizers for the text pipeline: a local ``tokenizer.json`` or ``.gguf``, or a BPE trained here.

Entry points: `load_tokenizer` (any Hugging Face ``tokenizer.json``, offline, or the vocabulary
and merges stored in a llama.cpp ``.gguf`` file), `train_tokenizer`
(byte-level BPE on given texts, deterministic) and `save_tokenizer` (writes a directory that both
`load_tokenizer` and ``transformers.AutoTokenizer.from_pretrained`` read). All of them speak
`TextTokenizer`, the thin wrapper the rest of `jaxlaw.data` encodes with: ids without any
special tokens, plus the ``eos_id`` / ``bos_id`` / ``pad_id`` that the formatting code places,
and the model's chat template (`TextTokenizer.apply_chat_template`, rendered with jinja2 as
transformers renders it).
"""

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

ENDOFTEXT = "<|endoftext|>"
# Spellings of special tokens used when no tokenizer_config.json names them, most common first.
# "<|endoftext|>" closes the bos list: GPT-2-style vocabularies use it for both roles.
_EOS_NAMES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "<|im_end|>", "[SEP]")
_BOS_NAMES = ("<s>", "<bos>", "<|begin_of_text|>", "<|startoftext|>", "[CLS]", "<|endoftext|>")
_PAD_NAMES = ("<pad>", "[PAD]", "<|padding|>", "<|pad|>")

# Split patterns of llama.cpp's ``tokenizer.ggml.pre`` types (the regexes of the HF tokenizers
# those vocabularies were trained with). None: GPT-2's own pattern, built into ByteLevel.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
GGUF_PRE_TOKENIZERS: dict[str, str | None] = {
    "default": None,
    "gpt2": None,
    "smollm": None,
    "llama-bpe": _LLAMA3_SPLIT,
    "llama3": _LLAMA3_SPLIT,
    "llama-v3": _LLAMA3_SPLIT,
    "smaug-bpe": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT,
    "deepseek-r1-qwen": _QWEN2_SPLIT,
}
_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp's token types


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
    chat_template: str | None = None

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

    def apply_chat_template(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True
    ) -> str:
        """Render a conversation as the prompt text the model was tuned on.

        Rendered with jinja2 the way transformers' ``apply_chat_template(..., tokenize=False)``
        does: a sandboxed environment with ``trim_blocks`` / ``lstrip_blocks``, the
        ``raise_exception`` helper, and ``bos_token`` / ``eos_token`` as variables.

        Args:
            messages: ``[{"role": "user", "content": "..."}, ...]``.
            add_generation_prompt: end with the header that opens the assistant's turn.

        Returns:
            The prompt text; encode it with `encode` (the template writes its special tokens).

        Raises:
            ValueError: the tokenizer has no chat template, or the template rejects the
                messages (its own ``raise_exception`` message).
        """
        if self.chat_template is None:
            raise ValueError("this tokenizer has no chat template")
        import jinja2

        try:
            return _compile_template(self.chat_template).render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token="" if self.bos_id is None else self.tokenizer.id_to_token(self.bos_id),
                eos_token=self.tokenizer.id_to_token(self.eos_id),
            )
        except jinja2.TemplateError as e:
            raise ValueError(f"chat template: {e}") from None


def _compile_template(source: str):
    """A jinja2 template compiled as transformers compiles chat templates."""
    from datetime import datetime

    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # jinja's own tojson escapes HTML characters, which a prompt must keep.
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


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


def _config_template(directory: Path) -> str | None:
    """The chat template of an HF folder: ``chat_template.jinja``, else tokenizer_config.json."""
    if (directory / "chat_template.jinja").is_file():
        return (directory / "chat_template.jinja").read_text(encoding="utf-8")
    f = directory / "tokenizer_config.json"
    if not f.is_file():
        return None
    template = json.loads(f.read_text(encoding="utf-8")).get("chat_template")
    if isinstance(template, list):  # named templates, as transformers 4 saved several
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map, the spelling of byte-level BPE vocabularies."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    out, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in out:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def _gguf_tokenizer(path: Path) -> tuple[Tokenizer, dict[str, Any]]:
    """A byte-level BPE `Tokenizer` from a GGUF file's metadata, plus that metadata."""
    from gguf import GGUFReader, GGUFValueType

    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file (no GGUF magic bytes at the start)")
    try:
        reader = GGUFReader(path, "r")
    except Exception as e:  # the reader fails with whatever numpy raises on short buffers
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path}: truncated or corrupt GGUF file ({first})") from None
    meta = {
        k: f.contents()
        for k, f in reader.fields.items()
        if not k.startswith("GGUF.")
        and (k.startswith("tokenizer.") or f.types[0] != GGUFValueType.ARRAY)
    }
    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(
            f"{path}: GGUF tokenizer model {kind!r} is not supported (supported: 'gpt2', "
            "byte-level BPE)"
        )
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in GGUF_PRE_TOKENIZERS:
        raise ValueError(
            f"{path}: GGUF pre-tokenizer {pre!r} is not supported; supported: "
            + ", ".join(GGUF_PRE_TOKENIZERS)
        )
    tokens: list[str] = meta.get("tokenizer.ggml.tokens") or []
    arch = meta.get("general.architecture")
    embed = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    for what, n in (
        (f"{arch}.vocab_size", meta.get(f"{arch}.vocab_size")),
        ("token_embd.weight rows", None if embed is None else int(embed.shape[1])),
    ):
        if n is not None and n != len(tokens):
            raise ValueError(
                f"{path}: the tokenizer has {len(tokens)} tokens but the model's vocabulary "
                f"({what}) is {n}"
            )
    spelling = _bytes_to_unicode()
    alphabet = set(spelling.values())

    def spelled(token: str) -> str:
        # A token written in plain text (llama.cpp does so for some added tokens) is respelled
        # in the byte alphabet, as transformers' GGUF converter does.
        if set(token) <= alphabet:
            return token
        return "".join(spelling[b] for b in token.encode("utf-8"))

    vocab = {spelled(t): i for i, t in enumerate(tokens)}
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges") or []]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    split = GGUF_PRE_TOKENIZERS[pre]
    if split is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tok.decoder = decoders.ByteLevel()
    # Control tokens (<|im_start|>, ...) must stay whole in text, so they become added special
    # tokens; a "control" token outside the byte alphabet is a llama.cpp mislabel, skipped as
    # transformers skips it. User-defined tokens are added as plain added tokens.
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    tok.add_special_tokens(
        [
            AddedToken(t, normalized=False, special=True)
            for t, k in zip(tokens, types)
            if k == _CONTROL and set(t) <= alphabet
        ]
    )
    tok.add_tokens(
        [
            AddedToken(t, normalized=False, special=False)
            for t, k in zip(tokens, types)
            if k == _USER_DEFINED and t in vocab
        ]
    )
    return tok, meta


def load_tokenizer(
    path: str | Path,
    *,
    eos_token: str | None = None,
    bos_token: str | None = None,
    pad_token: str | None = None,
) -> TextTokenizer:
    """Load a Hugging Face fast tokenizer from a local ``tokenizer.json`` or ``.gguf`` (no network).

    Special tokens are resolved in this order: the keyword arguments; for a GGUF file its
    ``tokenizer.ggml.{eos,bos,padding}_token_id``; ``tokenizer_config.json`` (then
    ``special_tokens_map.json``) beside a ``tokenizer.json``; well-known spellings in the
    vocabulary (``<|endoftext|>``, ``</s>``, ``<s>``, ``<pad>``, ...). A missing pad token falls
    back to eos (padding is always masked), a missing bos token leaves ``bos_id = None``.

    The chat template comes from ``chat_template.jinja`` or ``tokenizer_config.json`` beside a
    ``tokenizer.json``, or from a GGUF's ``tokenizer.chat_template``.

    A GGUF file (recognised by its magic bytes) holds llama.cpp's vocabulary, merges and token
    types rather than a ``tokenizer.json``; for byte-level BPE (``tokenizer.ggml.model`` =
    ``gpt2``) the same tokenizer is rebuilt as transformers' GGUF converter builds it: the
    pre-tokenizer's split pattern from ``tokenizer.ggml.pre`` (GPT-2's own for ``smollm``,
    see `GGUF_PRE_TOKENIZERS`), control tokens as special added tokens.

    Args:
        path: a directory holding ``tokenizer.json`` (e.g. a downloaded model or the output of
            `save_tokenizer`), the ``tokenizer.json`` file itself, or a ``.gguf`` file.
        eos_token: eos token string, overriding the lookup.
        bos_token: bos token string, overriding the lookup.
        pad_token: pad token string, overriding the lookup.

    Returns:
        The wrapped tokenizer.

    Raises:
        ValueError: the file is missing or unreadable, or a special token is not in its
            vocabulary, or no eos token can be found; for GGUF also a truncated file, an
            unsupported tokenizer model or pre-tokenizer, or a token count that differs from
            the model's vocabulary size. The message names the path.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: not found (expected tokenizer.json or a directory holding it)")
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"{file}: tokenizer file not found")
    ids: dict[str, int] = {}
    with open(file, "rb") as f:
        gguf = f.read(4) == b"GGUF" or file.suffix == ".gguf"  # a bad .gguf says so
    if gguf:
        tok, meta = _gguf_tokenizer(file)
        cfg: dict[str, str] = {}
        n = tok.get_vocab_size(with_added_tokens=True)
        for role, key in (("eos", "eos"), ("bos", "bos"), ("pad", "padding")):
            i = meta.get(f"tokenizer.ggml.{key}_token_id")
            if i is not None and 0 <= int(i) < n:
                ids[f"{role}_token"] = int(i)
        template = meta.get("tokenizer.chat_template")
    else:
        try:
            tok = Tokenizer.from_file(str(file))
        except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
            first = str(e).splitlines()[0]
            raise ValueError(f"{file}: not a tokenizers JSON file ({first})") from None
        cfg = _config_tokens(file.parent)
        template = _config_template(file.parent)
    # Some published tokenizer.json files enable truncation or padding; lengths are decided by
    # tokenize_examples / pack_texts, so an encode must return every token.
    tok.no_truncation()
    tok.no_padding()
    vocab = tok.get_vocab(with_added_tokens=True)

    def resolve(role: str, given: str | None, names: Sequence[str]) -> int | None:
        name = given or cfg.get(role)
        if name is not None:
            if name not in vocab:
                raise ValueError(f"{file}: {role} {name!r} is not in the vocabulary")
            return vocab[name]
        if role in ids:
            return ids[role]
        return next((vocab[n] for n in names if n in vocab), None)

    eos_id = resolve("eos_token", eos_token, _EOS_NAMES)
    if eos_id is None:
        raise ValueError(f"{file}: no eos token found; pass eos_token=...")
    pad_id = resolve("pad_token", pad_token, _PAD_NAMES)
    bos_id = resolve("bos_token", bos_token, _BOS_NAMES)
    return TextTokenizer(
        tok,
        eos_id=eos_id,
        pad_id=eos_id if pad_id is None else pad_id,
        bos_id=bos_id,
        chat_template=template,
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

    The config names the special tokens, the chat template (if any) and
    ``PreTrainedTokenizerFast``, so that ``transformers.AutoTokenizer.from_pretrained(directory)``
    loads it offline and encodes the same ids (with ``add_special_tokens=False``, or by default:
    no post-processor is set). A stale ``chat_template.jinja`` (which would win on loading) is
    removed.

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
    if tokenizer.chat_template is not None:
        config["chat_template"] = tokenizer.chat_template
    (directory / "chat_template.jinja").unlink(missing_ok=True)
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return file
