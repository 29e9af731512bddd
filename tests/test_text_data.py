"""jaxlaw.data text pipeline: tokenizers, record files, masks, bucketing, packing, corpora.

Everything is offline: tokenizers are trained here on a slice of the standard library.
"""

import json
import os
import re
import warnings

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxlaw.data import (
    ENDOFTEXT,
    TextTokenizer,
    TokenizedSet,
    TruncationWarning,
    format_examples,
    load_records,
    load_task,
    load_tokenizer,
    pack_texts,
    save_tokenizer,
    stdlib_corpus,
    take,
    tokenize_examples,
    train_tokenizer,
)

PROMPTS = [">>> sorted('bca')\n", ">>> 2 + 3\n", "Q: name a colour\nA: ", ""]
RESPONSES = ["['a', 'b', 'c']", "5", "a rather longer answer: blue, green", "ok"]


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return train_tokenizer(stdlib_corpus(max_chars=300_000), vocab_size=512)


@pytest.fixture(scope="module")
def byte_tok() -> TextTokenizer:
    # vocab_size 257 leaves no room for merges: one token per byte, so lengths are exact.
    return train_tokenizer(["abc"], vocab_size=257)


def _rows(ts: TokenizedSet, mask: np.ndarray) -> list[list[int]]:
    return [row[m].tolist() for row, m in zip(ts.tokens, mask)]


# --- masks ---------------------------------------------------------------------------------


def test_loss_on_response_and_eos_only(tok):
    ts = tokenize_examples(tok, PROMPTS, RESPONSES)
    eos, bos = tok.eos_id, tok.bos_id
    assert ts.tokens.dtype == np.int32 and ts.loss_mask.dtype == bool
    assert _rows(ts, ts.loss_mask) == [tok.encode(r) + [eos] for r in RESPONSES]
    context = ts.attention_mask & ~ts.loss_mask
    assert _rows(ts, context) == [[bos] + tok.encode(p) for p in PROMPTS]
    # Real tokens form a prefix; the rest is pad, and no target sits on pad or position 0.
    n_real = ts.attention_mask.sum(1)
    np.testing.assert_array_equal(ts.attention_mask, np.arange(ts.seq_len) < n_real[:, None])
    assert (ts.tokens[~ts.attention_mask] == tok.pad_id).all()
    assert not (ts.loss_mask & ~ts.attention_mask).any()
    assert not ts.loss_mask[:, 0].any()
    np.testing.assert_array_equal(ts.example_id, np.arange(len(PROMPTS)))
    assert ts.n_examples == 4 and ts.n_response_tokens == sum(
        len(r) for r in _rows(ts, ts.loss_mask)
    )


def test_no_bos(tok):
    ts = tokenize_examples(tok, PROMPTS, RESPONSES, add_bos=False)
    targets = [tok.encode(r) + [tok.eos_id] for r in RESPONSES]
    # The empty prompt's first response token becomes the context: position 0 is never a target.
    targets[3] = targets[3][1:]
    assert _rows(ts, ts.loss_mask) == targets
    assert ts.tokens[0, 0] == tok.encode(PROMPTS[0])[0]
    assert not ts.loss_mask[:, 0].any()
    no_bos = TextTokenizer(tok.tokenizer, eos_id=tok.eos_id, pad_id=tok.pad_id, bos_id=None)
    with pytest.raises(ValueError, match="no bos token"):
        tokenize_examples(no_bos, PROMPTS, RESPONSES, add_bos=True)
    np.testing.assert_array_equal(tokenize_examples(no_bos, PROMPTS, RESPONSES).tokens, ts.tokens)


def test_sources_and_take(tok):
    ts = tokenize_examples(tok, PROMPTS, RESPONSES, sources=["b", "a", "b", "c"])
    assert ts.sources == ("a", "b", "c")
    np.testing.assert_array_equal(ts.source_id, [1, 0, 1, 2])
    sub = take(ts, np.array([3, 1]))
    np.testing.assert_array_equal(sub.example_id, [3, 1])
    np.testing.assert_array_equal(sub.tokens, ts.tokens[[3, 1]])
    assert sub.sources == ts.sources and take(ts, 2).n_examples == 1
    assert tokenize_examples(tok, PROMPTS, RESPONSES).sources == ("all",)
    with pytest.raises(ValueError, match="sources has 1 entries for 4 examples"):
        tokenize_examples(tok, PROMPTS, RESPONSES, sources=["a"])


# --- bucketing and truncation -------------------------------------------------------------


def test_bucket_is_smallest_that_fits(byte_tok):
    # bos + 10 + 20 + eos = 32 tokens: exactly the first bucket; one more spills to 64.
    ts = tokenize_examples(byte_tok, ["p" * 10], ["r" * 20])
    assert ts.seq_len == 32 and ts.attention_mask.all()
    assert tokenize_examples(byte_tok, ["p" * 11, "x"], ["r" * 20, "y"]).seq_len == 64
    assert tokenize_examples(byte_tok, ["p"], ["r"], buckets=(8, 4)).seq_len == 4
    assert tokenize_examples(byte_tok, ["p"], ["r"], seq_len=50).seq_len == 50


def test_truncation_keeps_response_and_prompt_end(byte_tok):
    eos, bos = byte_tok.eos_id, byte_tok.bos_id
    prompt, response = "abcdefghij" * 5, "XYZ"  # 1 + 50 + 3 + 1 = 55 tokens
    with pytest.warns(TruncationWarning, match=r"1 of 2 examples .* seq_len=16 .* 0 of them"):
        ts = tokenize_examples(byte_tok, [prompt, "q"], [response, "a"], seq_len=16)
    row = ts.tokens[0].tolist()
    kept_prompt = byte_tok.encode(prompt)[-(16 - 1 - 4) :]
    assert row == [bos] + kept_prompt + byte_tok.encode(response) + [eos]
    assert ts.loss_mask[0].sum() == 4 and ts.attention_mask[0].all()

    # A response longer than the row: one context token (bos), then the response's start.
    with pytest.warns(TruncationWarning, match="1 of them also lost response tokens"):
        ts = tokenize_examples(byte_tok, [prompt], ["R" * 40], seq_len=16)
    assert ts.tokens[0].tolist() == [bos] + byte_tok.encode("R" * 15)
    assert ts.loss_mask[0].sum() == 15

    # With seq_len=None and nothing fitting the largest bucket, truncate to it.
    with pytest.warns(TruncationWarning):
        assert tokenize_examples(byte_tok, [prompt], [response], buckets=(8,)).seq_len == 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokenize_examples(byte_tok, [prompt], [response])  # fits a bucket: no warning


@settings(max_examples=60, deadline=None, database=None)
@given(
    prompt=st.text(alphabet="ab \n", max_size=40),
    response=st.text(alphabet="xy z", max_size=40),
    seq_len=st.integers(2, 48),
    add_bos=st.booleans(),
)
def test_target_count_property(byte_tok, prompt, response, seq_len, add_bos):
    if not (add_bos or prompt):
        prompt = "a"  # the documented exception (no context token) is covered in test_no_bos
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        ts = tokenize_examples(byte_tok, [prompt], [response], seq_len=seq_len, add_bos=add_bos)
    targets = byte_tok.encode(response) + [byte_tok.eos_id]
    n_t = min(len(targets), seq_len - 1)
    assert ts.loss_mask.sum() == n_t
    assert _rows(ts, ts.loss_mask)[0] == targets[:n_t]
    # The context is a suffix of [bos] + prompt, after keeping bos at position 0.
    context = _rows(ts, ts.attention_mask & ~ts.loss_mask)[0]
    full = ([byte_tok.bos_id] if add_bos else []) + byte_tok.encode(prompt)
    assert len(context) == min(len(full), seq_len - n_t) >= 1
    if add_bos:
        assert context[0] == byte_tok.bos_id
    assert context[add_bos:] == full[len(full) - len(context) + add_bos :]


# --- packing --------------------------------------------------------------------------------


@pytest.mark.parametrize("seq_len", [2, 7, 64])
def test_pack_covers_every_token_once_in_order(tok, seq_len):
    docs = ["def f(x):\n    return x\n", "", "import os\nprint(os.sep)\n", "x = 1"]
    ts = pack_texts(tok, docs, seq_len=seq_len)
    stream = [t for d in docs for t in tok.encode(d) + [tok.eos_id]]
    assert ts.tokens[ts.attention_mask].tolist() == stream
    assert ts.n_examples == -(-len(stream) // seq_len)
    np.testing.assert_array_equal(
        ts.attention_mask.ravel(), np.arange(ts.tokens.size) < len(stream)
    )
    np.testing.assert_array_equal(ts.loss_mask[:, 1:], ts.attention_mask[:, 1:])
    assert not ts.loss_mask[:, 0].any()
    assert (ts.tokens[~ts.attention_mask] == tok.pad_id).all()
    np.testing.assert_array_equal(ts.example_id, np.arange(ts.n_examples))


# --- corpora ---------------------------------------------------------------------------------


def test_stdlib_corpus(tmp_path):
    docs = stdlib_corpus(max_chars=100_000)
    assert docs and all(docs) and sum(map(len, docs)) == 100_000
    assert docs == stdlib_corpus(max_chars=100_000)
    capped = stdlib_corpus(max_chars=100_000, max_file_chars=1000)
    assert max(map(len, capped)) <= 1000 and len(capped) > len(docs)

    for rel in ["b.py", "a.py", "test/t.py", "pkg/test_z.py", "pkg/c.py", "site-packages/s.py"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"# {rel}\n")
    (tmp_path / "notes.txt").write_text("not python")
    assert stdlib_corpus(root=tmp_path) == ["# a.py\n", "# b.py\n", "# pkg/c.py\n"]
    assert stdlib_corpus(root=tmp_path, max_chars=10) == ["# a.py\n", "# b"]
    with pytest.raises(ValueError, match="no Python source files"):
        stdlib_corpus(root=tmp_path / "pkg" / "missing")


# --- files ----------------------------------------------------------------------------------


def test_load_records_formats(tmp_path):
    rows = [{"prompt": "1+1=", "response": "2"}, {"prompt": "a", "response": "b"}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.json").write_text(json.dumps(rows))
    (tmp_path / "t.csv").write_text('prompt,response,n\n1+1=,2,04\n"a, b",NA,\n')
    (tmp_path / "t.txt").write_text("first line\n\n  \nsecond line\n")
    assert load_records(tmp_path / "t.jsonl") == rows
    assert load_records(tmp_path / "t.json", fields=["response"]) == [
        {"response": "2"},
        {"response": "b"},
    ]
    # CSV cells stay strings: no "04" -> 4, no "NA" -> missing.
    assert load_records(tmp_path / "t.csv") == [
        {"prompt": "1+1=", "response": "2", "n": "04"},
        {"prompt": "a, b", "response": "NA", "n": ""},
    ]
    assert load_records(tmp_path / "t.txt") == [{"text": "first line"}, {"text": "second line"}]
    assert load_records(tmp_path / "t.txt", text_by="file") == [
        {"text": "first line\n\n  \nsecond line\n"}
    ]
    assert not any(p.name.startswith(("cache", "json", "csv")) for p in tmp_path.iterdir())

    task = load_task(tmp_path / "t.csv", source_field="n")
    assert task.prompts == ["1+1=", "a, b"] and task.sources == ["04", ""]
    assert load_task(tmp_path / "t.jsonl").sources is None


def test_load_errors(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "blank.txt").write_text("\n \n")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"\n')
    (tmp_path / "gap.jsonl").write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c"}\n')
    (tmp_path / "t.parquet").write_text("x")
    with pytest.raises(ValueError, match=r"missing\.jsonl: file not found"):
        load_records(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match=r"empty\.jsonl: empty file"):
        load_records(tmp_path / "empty.jsonl")
    with pytest.raises(ValueError, match=r"blank\.txt: empty file"):
        load_records(tmp_path / "blank.txt")
    with pytest.raises(ValueError, match=r"bad\.jsonl: cannot read as json"):
        load_records(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match=r"t\.parquet: unsupported file type '\.parquet'"):
        load_records(tmp_path / "t.parquet")
    with pytest.raises(
        ValueError, match=r"gap\.jsonl: no field 'answer' \(fields: prompt, response\)"
    ):
        load_task(tmp_path / "gap.jsonl", response_field="answer")
    with pytest.raises(ValueError, match=r"gap\.jsonl: record 1 has no value for field 'response'"):
        load_task(tmp_path / "gap.jsonl")


def _datasets_records(path, text_by="line"):
    """What the former `load_records` returned: ``datasets.load_dataset``, as it called it."""
    import csv
    import tempfile

    datasets = pytest.importorskip("datasets")
    builder = {".jsonl": "json", ".json": "json", ".csv": "csv", ".txt": "text"}[path.suffix]
    kwargs = {}
    if builder == "csv":
        with path.open(newline="", encoding="utf-8") as f:
            header = next(csv.reader(f))
        features = datasets.Features({h: datasets.Value("string") for h in header})
        kwargs = dict(keep_default_na=False, features=features)
    elif builder == "text":
        kwargs = dict(sample_by="line" if text_by == "line" else "document")
    with tempfile.TemporaryDirectory() as cache:
        ds = datasets.load_dataset(
            builder, data_files=str(path), split="train", keep_in_memory=True, cache_dir=cache,
            **kwargs,
        )  # fmt: skip
        records = ds.to_list()
    if builder == "text" and text_by == "line":
        records = [r for r in records if r["text"].strip()]
    return records


def test_load_records_equals_the_datasets_reader(tmp_path):
    """Guards the stdlib rewrite of `load_records`: on files with unicode, quotes, embedded
    newlines, blank lines, keys missing from some rows and short CSV rows, the records equal
    those of ``datasets.load_dataset`` (the former implementation), exactly."""
    rows = [
        {"prompt": "Q: caf\u00e9 \u4e2d?\n", "response": 'say "hi"', "n": 1, "tags": ["a"]},
        {"prompt": "", "response": "line\nbreak", "n": 2, "tags": []},
        {"response": "no prompt here", "n": 3, "tags": ["b", "c"]},
    ]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (tmp_path / "t.json").write_text(json.dumps(rows, indent=2))
    (tmp_path / "t.csv").write_text(
        'prompt,response,n\n"two\nlines","a, ""quoted"" b",04\n\nx,NA\n\u00e9,,\n'
    )
    (tmp_path / "t.txt").write_bytes("one\r\ntwo \u00e9\n\n   \nthree".encode())
    for name in ("t.jsonl", "t.json", "t.csv", "t.txt"):
        assert load_records(tmp_path / name) == _datasets_records(tmp_path / name), name
    for text_by in ("line", "file"):
        got = load_records(tmp_path / "t.txt", text_by=text_by)
        assert got == _datasets_records(tmp_path / "t.txt", text_by), text_by
    # A short CSV row's missing cell reads as "", like an empty one (pandas under datasets).
    assert load_records(tmp_path / "t.csv")[1] == {"prompt": "x", "response": "NA", "n": ""}


def test_load_records_does_not_import_datasets(tmp_path):
    """Guards the fix of review.md's hazard: reading a local file went through HF ``datasets``
    (a 1-2 s import, a temporary Arrow cache); now the stdlib reads it."""
    import subprocess
    import sys

    (tmp_path / "t.jsonl").write_text('{"prompt": "a", "response": "b"}\n')
    code = (
        "import sys; from jaxlaw.data import load_task; "
        f"t = load_task({str(tmp_path / 't.jsonl')!r}); "
        "assert t.prompts == ['a'], t; assert 'datasets' not in sys.modules, 'datasets imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_load_records_rejects_malformed_files(tmp_path):
    """One-line ValueErrors naming the file for what the stdlib readers reject."""
    (tmp_path / "list.jsonl").write_text('{"a": 1}\n[1, 2]\n')
    (tmp_path / "obj.json").write_text('{"a": 1, "b": [2]}')
    (tmp_path / "long.csv").write_text("a,b\n1,2,3\n")
    (tmp_path / "dup.csv").write_text("a,a\n1,2\n")
    (tmp_path / "latin.txt").write_bytes("caf\u00e9".encode("latin-1"))
    (tmp_path / "lines.json").write_text('{"a": 1}\n{"a": 2}\n')
    cases = {
        "list.jsonl": r"list\.jsonl: record 1 is a list, not a JSON object",
        "obj.json": r"obj\.json: a \.json file must hold a list of objects",
        "long.csv": r"long\.csv: line 2 has 3 cells, the header 2",
        "dup.csv": r"dup\.csv: duplicate column name\(s\) 'a'",
        "latin.txt": r"latin\.txt: not UTF-8 text",
    }
    for name, msg in cases.items():
        with pytest.raises(ValueError, match=msg):
            load_records(tmp_path / name)
    assert load_records(tmp_path / "lines.json") == [{"a": 1}, {"a": 2}]  # JSON lines in .json


def test_format_examples():
    recs = [{"q": "2+2", "a": 4}, {"q": "x", "a": "y"}]
    ex = format_examples(recs, prompt="Q: {q}\nA: ", response="{a}")
    assert ex.prompts == ["Q: 2+2\nA: ", "Q: x\nA: "] and ex.responses == ["4", "y"]
    with pytest.raises(
        ValueError, match=re.escape("record 0: response template '{answer}' needs field 'answer'")
    ):
        format_examples(recs, prompt="{q}", response="{answer}")
    with pytest.raises(ValueError, match="must name fields"):
        format_examples(recs, prompt="{}", response="{a}")
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        tokenize_examples(train_tokenizer(["a"], vocab_size=257), ["a", "b"], ["c"])


# --- tokenizers -----------------------------------------------------------------------------


def test_tokenizer_round_trip_and_transformers(tok, tmp_path):
    text = "def f(x):\n    return sorted(x)  # <- why not?\n\t\u00e9\u4e2d"
    assert tok.decode(tok.encode(text)) == text
    assert tok.eos_id == tok.bos_id == tok.pad_id == tok.tokenizer.token_to_id(ENDOFTEXT) == 0
    assert tok.vocab_size == 512

    save_tokenizer(tok, tmp_path / "tok")
    for path in (tmp_path / "tok", tmp_path / "tok" / "tokenizer.json"):
        back = load_tokenizer(path)
        assert back.encode(text) == tok.encode(text)
        assert (back.eos_id, back.bos_id, back.pad_id, back.vocab_size) == (0, 0, 0, 512)

    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert hf(text)["input_ids"] == tok.encode(text)
    assert hf(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
    assert (hf.eos_token_id, hf.pad_token_id, hf.bos_token_id) == (0, 0, 0)
    assert hf.decode(tok.encode(text)) == text


def test_train_tokenizer_is_deterministic():
    texts = stdlib_corpus(max_chars=200_000)
    a, b = (train_tokenizer(texts, vocab_size=400).tokenizer.to_str() for _ in range(2))
    assert a == b
    with pytest.raises(ValueError, match="vocab_size=100 is below 257"):
        train_tokenizer(texts, vocab_size=100)


def test_load_tokenizer_errors(tmp_path, byte_tok):
    with pytest.raises(ValueError, match=r"nowhere: not found \(expected tokenizer\.json"):
        load_tokenizer(tmp_path / "nowhere")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ValueError, match=r"empty_dir/tokenizer\.json: tokenizer file not found"):
        load_tokenizer(tmp_path / "empty_dir")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"junk\.json: not a tokenizers JSON file"):
        load_tokenizer(tmp_path / "junk.json")

    save_tokenizer(byte_tok, tmp_path / "t")
    with pytest.raises(
        ValueError, match=r"t/tokenizer\.json: eos_token '<eos>' is not in the vocabulary"
    ):
        load_tokenizer(tmp_path / "t", eos_token="<eos>")
    (tmp_path / "t" / "tokenizer_config.json").unlink()
    # Without a config, the GPT-2 convention applies: <|endoftext|> is eos, bos and pad.
    plain = load_tokenizer(tmp_path / "t")
    assert (plain.eos_id, plain.bos_id, plain.pad_id) == (0, 0, 0)
    custom = load_tokenizer(tmp_path / "t", eos_token="a", pad_token="b")
    assert (custom.eos_id, custom.pad_id) == (plain.encode("a")[0], plain.encode("b")[0])

    from tokenizers import Tokenizer, models, pre_tokenizers

    bare = Tokenizer(models.BPE())
    bare.pre_tokenizer = pre_tokenizers.ByteLevel()
    bare.save(str(tmp_path / "bare.json"))
    with pytest.raises(ValueError, match=r"bare\.json: no eos token found"):
        load_tokenizer(tmp_path / "bare.json")
