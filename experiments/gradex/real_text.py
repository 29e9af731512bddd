"""Real-text variant of the GradEx experiment: which sources help GSM8K? (reported, no pass bars)

Run: ``python experiments/gradex/run.py --variant real_text --out DIR`` (reads
``$JAXLAW_DATA/text/gsm8k/*.jsonl`` and ``text/tinyshakespeare/input.txt``).

Sources (K = 16, 20 examples each), byte-level tokens (a 257-symbol byte vocabulary, no merges):

- ``gsm8k_00..05``: GSM8K train problems; prompt = the question's last 48 characters, response
  = the last 48 characters of the final reasoning line and ``#### N`` (clean, helpful);
- ``gsm8k_bad_00..03``: the same layout, the final number N replaced by another random number
  of the same length ("corrupted final numbers");
- ``shakespeare_00..02``: a line of tinyshakespeare -> the next line;
- ``stdlib_00..02``: a line of Python's standard library source -> the next line.

Target: GSM8K test (V and T, 128 problems each, disjoint). Stage A pre-trains the byte model on
packed GSM8K train solutions (rows not used by any source), Shakespeare and stdlib text. The
``noisy`` label (used for AUROC) marks every source that is not clean GSM8K. Host-side data
preparation with a seeded ``np.random.default_rng``.
"""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from jaxlaw.data import TokenizedSet, pack_texts, stdlib_corpus, tokenize_examples, train_tokenizer
from jaxlaw.training import TrainConfig

from .addition import AdditionTask

PER_SOURCE = 20
KINDS = (("gsm8k", 6), ("gsm8k_bad", 4), ("shakespeare", 3), ("stdlib", 3))
SEQ_LEN = 128
TAIL = 48


def _root(data: str | None) -> Path:
    root = Path(data or os.environ.get("JAXLAW_DATA", Path(__file__).parents[3] / "shared/data"))
    if not (root / "text" / "gsm8k" / "train.jsonl").is_file():
        raise FileNotFoundError(f"{root}/text/gsm8k/train.jsonl not found (set JAXLAW_DATA)")
    return root / "text"


def _gsm(rec: dict, rng: np.random.Generator | None = None) -> tuple[str, str]:
    """Prompt and response of one GSM8K record; ``rng`` corrupts the final number."""
    reasoning, final = rec["answer"].rsplit("####", 1)
    final = final.strip()
    if rng is not None:
        while True:  # another number of the same length (no leading zero)
            new = str(
                rng.integers(10 ** (len(final) - 1) if len(final) > 1 else 0, 10 ** len(final))
            )
            if new != final or not final.isdigit():
                break
        final = new if final.lstrip("-").isdigit() else final[::-1]
    last = reasoning.strip().split("\n")[-1]
    return f"Q: ...{rec['question'][-TAIL:]}\nA: ", f"...{last[-TAIL:]}\n#### {final}"


def _lines(text: str) -> list[str]:
    return [ln.strip()[:TAIL] for ln in text.split("\n") if len(ln.strip()) >= 8]


def build(cfg, *, smoke: bool = False):
    """``(config, task)``: the experiment config adapted to this data, and the splits."""
    rng = np.random.default_rng(cfg.gradex.seed)
    text = _root(cfg.data)
    train = [json.loads(x) for x in (text / "gsm8k" / "train.jsonl").read_text().splitlines()]
    test = [json.loads(x) for x in (text / "gsm8k" / "test.jsonl").read_text().splitlines()]
    shakes = _lines((text / "tinyshakespeare" / "input.txt").read_text())
    code = _lines("\n".join(stdlib_corpus(max_chars=400_000)))
    tr, te = rng.permutation(len(train)), rng.permutation(len(test))
    n_gsm = (KINDS[0][1] + KINDS[1][1]) * PER_SOURCE

    prompts, responses, names = [], [], []
    pos_s = rng.integers(0, len(shakes) - 1, 3 * PER_SOURCE)
    pos_c = rng.integers(0, len(code) - 1, 3 * PER_SOURCE)
    i_gsm = i_s = i_c = 0
    for kind, count in KINDS:
        for k in range(count):
            for _ in range(PER_SOURCE):
                if kind.startswith("gsm8k"):
                    p, r = _gsm(train[tr[i_gsm]], rng if kind == "gsm8k_bad" else None)
                    i_gsm += 1
                elif kind == "shakespeare":
                    j = pos_s[i_s]
                    p, r, i_s = shakes[j] + "\n", shakes[j + 1], i_s + 1
                else:
                    j = pos_c[i_c]
                    p, r, i_c = code[j] + "\n", code[j + 1], i_c + 1
                prompts.append(p)
                responses.append(r)
                names.append(f"{kind}_{k:02d}")
    # Byte vocabulary: 256 bytes + <|endoftext|> (eos = pad = bos), no merges.
    tok = train_tokenizer(["0"], vocab_size=257)
    src = tokenize_examples(tok, prompts, responses, seq_len=SEQ_LEN, sources=names)
    # TokenizedSet.sources are sorted names: recover the label from each name.
    noisy = np.array(
        [not (s.startswith("gsm8k_") and not s.startswith("gsm8k_bad")) for s in src.sources]
    )

    def target(idx) -> TokenizedSet:
        pr = [_gsm(test[i]) for i in idx]
        return tokenize_examples(tok, [p for p, _ in pr], [r for _, r in pr], seq_len=SEQ_LEN)

    n_eval = 64 if smoke else 128
    pre_texts = [
        f"Q: {train[i]['question']}\nA: {train[i]['answer']}"
        for i in tr[n_gsm : n_gsm + (600 if smoke else 2000)]
    ]
    pre_texts += ["\n".join(shakes[j : j + 20]) for j in rng.integers(0, len(shakes) - 20, 150)]
    pre_texts += ["\n".join(code[j : j + 20]) for j in rng.integers(0, len(code) - 20, 150)]
    pretrain = pack_texts(
        tok, [pre_texts[i] for i in rng.permutation(len(pre_texts))], seq_len=SEQ_LEN
    )
    task = AdditionTask(
        pretrain=pretrain,
        train=src,
        noisy=noisy,
        valid=target(te[:n_eval]),
        test=target(te[n_eval : 2 * n_eval]),
    )
    g = cfg.gradex
    model = g.model.replace(vocab_size=tok.vocab_size, max_positions=SEQ_LEN)
    n_sources = sum(c for _, c in KINDS)
    g = dataclasses.replace(
        g,
        model=model,
        n_sources=n_sources,
        n_noisy=int(noisy.sum()),
        per_source=PER_SOURCE,
        seq_len=SEQ_LEN,
        pretrain=TrainConfig(
            steps=60 if smoke else 200,
            batch_size=32,
            lr=3e-3,
            warmup_steps=20,
            weight_decay=1e-4,
            log_every=20,
        ),
        meta=TrainConfig(steps=30 if smoke else 100, batch_size=32, lr=1e-3, warmup_steps=10),
        # Rows are 3x longer than the addition task's: half the batch keeps a run in minutes.
        finetune=TrainConfig(steps=40, batch_size=16, lr=1e-3, warmup_steps=0),
        n_ensemble=100,
        lams=(10.0, 100.0),
        taylor_directions=4,
        subset_size=n_sources // 2,
        ensemble_size=n_sources // 2,
        top_k=6,
        base_variant=False,
        eval_batch=64,
        subset_chunk=4,
    )
    if smoke:
        g = dataclasses.replace(g, n_subsets=8, n_calibration=2, n_ensemble=32, lams=(10.0,))
    return dataclasses.replace(cfg, gradex=g), task
