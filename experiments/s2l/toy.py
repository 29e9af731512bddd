"""Toy tasks for validating S2L end to end (spec §3.2-3.3), the arms of the validation and their
statistics.

Entry points:

- `make_skill_toy` + `SkillMLP`: the spec pilot's multi-skill token task (``s2l_pilot.py``) as a
  `jaxlaw.data.TokenizedSet` and an NNX module, so that the library's own train / evaluate /
  record path runs on it unchanged. Skill g maps prompt tokens to answer tokens by its own
  permutation of the vocabulary, position by position; skills have Zipf frequencies, optional
  label noise and prompt redundancy. An example is the sequence
  ``[g, x_1, y_1, x_2, y_2, ..., x_L, y_L]`` with the loss on the y's, and `SkillMLP`'s logits at
  x_j's position are the pilot's ``MLP(skill embedding ⊕ embedding of x_j)``, so
  `jaxlaw.training.example_losses` gives exactly the pilot's per-example mean cross-entropy.
- `make_text_mixture`: the real-text variant (byte level): GSM8K answers, tinyshakespeare
  line -> next line and synthetic arithmetic, mixed 80/15/5 %, with a balanced held-out test set.
- `score_arms` / `summarize_arms`: fine-tune the target on every arm's subset (one
  `jaxlaw.training.train` call per arm) and score it; summarise arms over seeds (paired
  differences).
- `example_accuracy`, `prompt_embeddings`: per-example token accuracy and mean input embedding
  (the features of the embedding k-means baseline).
"""

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from flax import nnx
from jaxtyping import Float, Int

from jaxlaw._types import Array, Bool, Key
from jaxlaw.data import TokenizedSet, take, tokenize_examples, train_tokenizer
from jaxlaw.data_selection.s2l import Trajectories
from jaxlaw.training import Batch, TrainConfig, train

# ---------------------------------------------------------------------------------------------
# The multi-skill token toy (spec §3.2, s2l_pilot.py).


@dataclass(frozen=True)
class SkillToyConfig:
    """The multi-skill token task of the spec's pilot.

    Attributes:
        n_skills: G skills (8 in the pilot).
        n_pool: N pool examples (20,000).
        length: L prompt tokens, each mapped to one answer token.
        vocab: V tokens (>= n_skills: the skill id is written as token g).
        zipf: skill g has frequency proportional to (g + 1) ** -zipf (1.5: 52 % ... 2.3 %).
        noises: per-skill probability that an answer token of a *pool* example is replaced by
            a uniform random token (label noise); None: no noise. Test sets are always clean.
        dup: > 0: the two most frequent skills reuse only ``dup`` distinct prompts each in the
            pool (redundancy).
        test_per_skill: the balanced test set has ``test_per_skill * n_skills`` examples whose
            skills are drawn uniformly (as the pilot; 300).
        test_iid: examples in the i.i.d. test set, drawn with the pool's skill frequencies (4000).
    """

    n_skills: int = 8
    n_pool: int = 20_000
    length: int = 8
    vocab: int = 32
    zipf: float = 1.5
    noises: tuple[float, ...] | None = None
    dup: int = 0
    test_per_skill: int = 300
    test_iid: int = 4000

    def __post_init__(self):
        if self.n_skills < 1 or self.n_pool < 1 or self.length < 1:
            raise ValueError("n_skills, n_pool and length must be >= 1")
        if self.vocab < self.n_skills:
            raise ValueError(f"vocab {self.vocab} must be >= n_skills {self.n_skills}")
        if self.noises is not None and len(self.noises) != self.n_skills:
            raise ValueError(f"noises has {len(self.noises)} entries for {self.n_skills} skills")

    @property
    def frequencies(self) -> np.ndarray:
        f = 1.0 / (np.arange(self.n_skills) + 1.0) ** self.zipf
        return f / f.sum()


class SkillToy(NamedTuple):
    """A drawn instance of the task.

    Attributes:
        pool: the selection pool (N rows); ``source_id`` is the skill (hidden from selectors
            except the stratified arms).
        test: clean test set balanced over skills.
        test_iid: clean test set with the pool's skill frequencies.
        world: each skill's permutation of the vocabulary, ``[sources, vocab]``.
    """

    pool: TokenizedSet
    test: TokenizedSet
    test_iid: TokenizedSet
    world: Int[np.ndarray, "sources vocab"]


def skill_tokens(
    skill: Int[np.ndarray, " examples"],
    x: Int[np.ndarray, "examples length"],
    y: Int[np.ndarray, "examples length"],
    n_skills: int,
) -> TokenizedSet:
    """Encode (skill, prompt, answer) triples as ``[g, x_1, y_1, ..., x_L, y_L]`` rows, with the
    loss mask on the answer positions (2, 4, ..., 2L) and the skill as the source."""
    n, length = x.shape
    tokens = np.empty((n, 2 * length + 1), np.int32)
    tokens[:, 0] = skill
    tokens[:, 1::2] = x
    tokens[:, 2::2] = y
    loss = np.zeros(tokens.shape, bool)
    loss[:, 2::2] = True
    return TokenizedSet(
        tokens=tokens,
        attention_mask=np.ones(tokens.shape, bool),
        loss_mask=loss,
        example_id=np.arange(n, dtype=np.int32),
        source_id=np.asarray(skill, np.int32),
        sources=tuple(f"skill{g}" for g in range(n_skills)),
    )


def _sample(config: SkillToyConfig, world, n: int, probs, key: Key, *, noisy: bool):
    g, length, v = config.n_skills, config.length, config.vocab
    k_skill, k_x, k_dup, k_pick, k_flip, k_tok = jr.split(key, 6)
    skill = np.asarray(jr.choice(k_skill, g, (n,), p=jnp.asarray(probs)))
    x = np.array(jr.randint(k_x, (n, length), 0, v))  # writable copy
    if noisy and config.dup > 0:
        # Redundancy: the two most frequent skills draw their prompts from small banks.
        for s in (0, 1):
            bank = np.asarray(jr.randint(jr.fold_in(k_dup, s), (config.dup, length), 0, v))
            pick = np.asarray(jr.randint(jr.fold_in(k_pick, s), (n,), 0, config.dup))
            m = skill == s
            x[m] = bank[pick[m]]
    y = world[skill[:, None], x]
    if noisy and config.noises is not None:
        p = np.asarray(config.noises, np.float64)[skill][:, None]
        flip = np.asarray(jr.uniform(k_flip, (n, length))) < p
        y = np.where(flip, np.asarray(jr.randint(k_tok, (n, length), 0, v)), y)
    return skill.astype(np.int32), x.astype(np.int32), y.astype(np.int32)


def make_skill_toy(config: SkillToyConfig, *, key: Key) -> SkillToy:
    """Draw a world (one vocabulary permutation per skill), the pool and two clean test sets.

    Args:
        config: the task.
        key: one key for everything; same key, same task.

    Returns:
        `SkillToy`.
    """
    k_world, k_pool, k_test, k_iid = jr.split(key, 4)
    world = np.asarray(
        jax.vmap(lambda k: jr.permutation(k, config.vocab))(jr.split(k_world, config.n_skills))
    )
    g = config.n_skills
    pool = _sample(config, world, config.n_pool, config.frequencies, k_pool, noisy=True)
    test = _sample(config, world, config.test_per_skill * g, np.full(g, 1 / g), k_test, noisy=False)
    iid = _sample(config, world, config.test_iid, config.frequencies, k_iid, noisy=False)
    return SkillToy(
        pool=skill_tokens(*pool, g),
        test=skill_tokens(*test, g),
        test_iid=skill_tokens(*iid, g),
        world=world,
    )


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _skill_mlp_init(key, n_skills: int, vocab: int, embed: int, hidden: int) -> dict:
    """The pilot's initial weights, in one compiled call per shape (not one per array)."""
    k = jr.split(key, 4)
    f32 = jnp.float32
    return dict(
        skill_embed=jr.normal(k[0], (n_skills, embed), f32) * 0.3,
        token_embed=jr.normal(k[1], (vocab, embed), f32) * 0.3,
        w1=jr.normal(k[2], (2 * embed, hidden), f32) * math.sqrt(2.0 / (2 * embed)),
        b1=jnp.zeros(hidden, f32),
        w2=jr.normal(k[3], (hidden, vocab), f32) * math.sqrt(1.0 / hidden),
        b2=jnp.zeros(vocab, f32),
    )


class SkillMLP(nnx.Module):
    """The pilot's tiny LM: ``logits(x_j) = relu([E_skill[g], E_tok[x_j]] @ W1 + b1) @ W2 + b2``.

    Reads rows laid out by `skill_tokens`: token 0 is the skill g, odd positions are prompt
    tokens x_j, even positions their answers. The logits at x_j's position (which score the
    answer y_j that follows it) are the MLP above; every other position gets zero logits (no
    target is ever scored there). Initialisation as the pilot: embeddings N(0, 0.3²),
    ``W1 ~ N(0, 2 / (2 embed))``, ``W2 ~ N(0, 1 / hidden)``, zero biases; float32.

    Args:
        n_skills: rows of the skill embedding.
        vocab: token vocabulary (input and output).
        embed: width of each embedding (the MLP input is 2 * embed).
        hidden: hidden units.
        rngs: ``nnx.Rngs`` for the initial weights.
    """

    def __init__(self, n_skills: int, vocab: int, embed: int, hidden: int, *, rngs: nnx.Rngs):
        w = _skill_mlp_init(rngs.params(), n_skills, vocab, embed, hidden)
        self.skill_embed = nnx.Param(w["skill_embed"])
        self.token_embed = nnx.Param(w["token_embed"])
        self.w1 = nnx.Param(w["w1"])
        self.b1 = nnx.Param(w["b1"])
        self.w2 = nnx.Param(w["w2"])
        self.b2 = nnx.Param(w["b2"])

    def inputs(self, tokens: Int[Array, "examples seq"]) -> Float[Array, "examples length feat"]:
        """The MLP input ``[E_skill[g], E_tok[x_j]]`` at each prompt position."""
        s = self.skill_embed[...][tokens[:, 0]]
        x = self.token_embed[...][tokens[:, 1::2]]
        return jnp.concatenate([jnp.broadcast_to(s[:, None], x.shape), x], axis=-1)

    def __call__(
        self, tokens: Int[Array, "examples seq"], attention_mask: Bool[Array, "examples seq"]
    ) -> Float[Array, "examples seq vocab"]:
        del attention_mask  # every row is full length; positions never attend to each other
        h = jax.nn.relu(self.inputs(tokens) @ self.w1[...] + self.b1[...][None, None])
        out = h @ self.w2[...] + self.b2[...][None, None]  # (examples, length, vocab)
        # Interleave with zero logits: [0, out_1, 0, out_2, ..., out_L, 0] (a stack and a
        # reshape; a scatter into zeros trained ~30 % slower on CPU).
        n, seq = tokens.shape
        zero = jnp.zeros_like(out)
        inter = jnp.stack([out, zero], axis=2).reshape(n, seq - 1, out.shape[-1])
        return jnp.concatenate([zero[:, :1], inter], axis=1)

    def embed_inputs(self, tokens: Int[Array, "examples seq"]) -> Float[Array, "examples feat"]:
        """Mean MLP input over the prompt: ``[E_skill[g], mean_j E_tok[x_j]]``."""
        return jnp.mean(self.inputs(tokens), axis=1)


# ---------------------------------------------------------------------------------------------
# The real-text mixture (spec §3.3 C).

MIXTURE_SOURCES = ("gsm8k", "shakespeare", "arithmetic")


@dataclass(frozen=True)
class TextMixConfig:
    """The byte-level real-text pool of spec §3.3 C.

    Attributes:
        n_pool: pool examples.
        fractions: shares of gsm8k / shakespeare / arithmetic in the pool (80/15/5 %).
        test_per_source: held-out examples per source.
        prompt_bytes: a prompt keeps its last this many UTF-8 bytes (whole characters only).
        response_bytes: a response keeps its first this many UTF-8 bytes (whole characters).
        seq_len: padded token length (bos + prompt + response + eos fit in it at one byte each).
    """

    n_pool: int = 3000
    fractions: tuple[float, float, float] = (0.80, 0.15, 0.05)
    test_per_source: int = 100
    prompt_bytes: int = 24
    response_bytes: int = 38
    seq_len: int = 64

    def __post_init__(self):
        if len(self.fractions) != 3 or abs(sum(self.fractions) - 1) > 1e-9:
            raise ValueError(f"fractions must be 3 shares summing to 1, got {self.fractions}")
        if self.seq_len < self.prompt_bytes + self.response_bytes + 2:
            raise ValueError("seq_len must hold bos + prompt + response + eos")


class TextMixture(NamedTuple):
    """Pool and balanced held-out test set of the text mixture, and the byte tokenizer."""

    pool: TokenizedSet
    test: TokenizedSet
    tokenizer: Any


def _gsm8k_pairs(path: Path) -> list[tuple[str, str]]:
    import json

    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out.append((r["question"], r["answer"]))
    return out


def _line_pairs(lines: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for a, b in zip(lines[:-1], lines[1:]) if a.strip() and b.strip()]


def _arithmetic(n: int, key: Key) -> list[tuple[str, str]]:
    a, b, op = (np.asarray(v) for v in jr.randint(key, (3, n), 0, 1000))
    out = []
    for i in range(n):
        sym = "+-*"[op[i] % 3]
        x, y = int(a[i]) % (100 if sym == "*" else 1000), int(b[i]) % (100 if sym == "*" else 1000)
        val = x + y if sym == "+" else x - y if sym == "-" else x * y
        out.append((f"{x}{sym}{y}=", str(val)))
    return out


def make_text_mixture(config: TextMixConfig, *, root: str | Path, key: Key) -> TextMixture:
    """The 80/15/5 % byte-level mixture of GSM8K answers, Shakespeare lines and arithmetic.

    Sources (prompt -> response): gsm8k, the question's end -> the start of its worked answer
    (train.jsonl for the pool, test.jsonl for the test set); shakespeare, a line -> the next
    line (first 90 % of the play text for the pool, the last 10 % for the test set);
    arithmetic, ``"a+b="`` -> the result (three-digit sums and differences, two-digit
    products; disjoint draws for pool and test). Pool rows are drawn without replacement,
    in random order.

    Args:
        config: sizes.
        root: the data folder holding ``text/gsm8k`` and ``text/tinyshakespeare``.
        key: draws the rows and the arithmetic problems.

    Returns:
        `TextMixture`; ``source_id`` indexes `MIXTURE_SOURCES`.

    Raises:
        FileNotFoundError: the reference text files are missing.
    """
    root = Path(root)
    gsm_train, gsm_test = root / "text/gsm8k/train.jsonl", root / "text/gsm8k/test.jsonl"
    shakes = root / "text/tinyshakespeare/input.txt"
    for f in (gsm_train, gsm_test, shakes):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: not found (the text mixture needs the shared data)")
    lines = shakes.read_text().splitlines()
    cut = int(0.9 * len(lines))
    counts = [int(round(f * config.n_pool)) for f in config.fractions]
    counts[0] = config.n_pool - sum(counts[1:])
    t = config.test_per_source
    k_pick, k_arith, k_order = jr.split(key, 3)
    arith = _arithmetic(counts[2] + t, k_arith)
    banks = {
        "gsm8k": (_gsm8k_pairs(gsm_train), _gsm8k_pairs(gsm_test)),
        "shakespeare": (_line_pairs(lines[:cut]), _line_pairs(lines[cut:])),
        "arithmetic": (arith[: counts[2]], arith[counts[2] :]),
    }
    sets = {"pool": ([], [], []), "test": ([], [], [])}
    longest = max(len(b) for pair in banks.values() for b in pair)
    # One uniform draw of a fixed length per (source, split), ranked on the host: a uniform
    # sample without replacement, and one compilation whatever the bank sizes.
    draws = np.asarray(
        jax.vmap(lambda i: jr.uniform(jr.fold_in(k_pick, i), (longest,)))(jnp.arange(6))
    )
    for s, name in enumerate(MIXTURE_SOURCES):
        for split, n, bank in (("pool", counts[s], banks[name][0]), ("test", t, banks[name][1])):
            if n > len(bank):
                raise ValueError(f"{name}: {n} {split} examples asked, {len(bank)} available")
            pick = np.argsort(draws[2 * s + (split == "test"), : len(bank)], kind="stable")[:n]
            prompts, responses, sources = sets[split]
            for i in pick:
                p, r = bank[int(i)]
                # Cut bytes, not characters: one token per byte, so every row fits seq_len.
                prompts.append(p.encode()[-config.prompt_bytes :].decode(errors="ignore"))
                responses.append(r.encode()[: config.response_bytes].decode(errors="ignore"))
                sources.append(name)
    tok = train_tokenizer(["byte"], vocab_size=257)  # bytes + <|endoftext|>: no merges
    out = {}
    for split, (prompts, responses, sources) in sets.items():
        ts = tokenize_examples(tok, prompts, responses, seq_len=config.seq_len, sources=sources)
        # Source ids in MIXTURE_SOURCES order (tokenize_examples sorts the names).
        lookup = np.array([MIXTURE_SOURCES.index(s) for s in ts.sources], np.int32)
        out[split] = ts._replace(source_id=lookup[ts.source_id], sources=MIXTURE_SOURCES)
    order = np.asarray(jr.permutation(k_order, config.n_pool))
    pool = out["pool"]
    pool = TokenizedSet(
        pool.tokens[order],
        pool.attention_mask[order],
        pool.loss_mask[order],
        np.arange(config.n_pool, dtype=np.int32),
        pool.source_id[order],
        pool.sources,
    )
    return TextMixture(pool, out["test"], tok)


# ---------------------------------------------------------------------------------------------
# Metrics and features.


@functools.lru_cache(maxsize=32)
def _accuracy_step(graphdef):
    def step(state, batch: Batch):
        model = nnx.merge(graphdef, state)
        model.eval()
        logits = model(batch.tokens, batch.attention_mask)[:, :-1]
        hit = (jnp.argmax(logits, axis=-1) == batch.tokens[:, 1:]) & batch.loss_mask[:, 1:]
        count = jnp.sum(batch.loss_mask[:, 1:], axis=-1)
        return jnp.sum(hit, axis=-1) / jnp.maximum(count, 1)

    return jax.jit(step)


def example_accuracy(
    model: nnx.Module, data: TokenizedSet, *, batch_size: int = 1024
) -> Float[np.ndarray, " examples"]:
    """Per-example fraction of target tokens whose argmax prediction is right (0 if none).

    Args:
        model: any module called as ``model(tokens, attention_mask) -> logits``.
        data: the set; batches are padded to ``batch_size`` (one compilation).

    Returns:
        numpy ``[examples]`` accuracies in the order of ``data``.
    """
    n = data.n_examples
    if n == 0:
        raise ValueError("cannot score an empty dataset")
    graphdef, state = nnx.split(model)
    step = _accuracy_step(graphdef)
    out = []
    for lo in range(0, n, batch_size):
        idx = np.minimum(np.arange(lo, lo + batch_size), n - 1)
        b = Batch(data.tokens[idx], data.attention_mask[idx], data.loss_mask[idx])
        out.append(np.asarray(step(state, b))[: min(batch_size, n - lo)])
    return np.concatenate(out)


def prompt_embeddings(
    model: nnx.Module, data: TokenizedSet, *, batch_size: int = 1024
) -> Float[np.ndarray, "examples feat"]:
    """Mean input embedding of each example's prompt (the embedding k-means baseline's features).

    `SkillMLP`: its `SkillMLP.embed_inputs`. Other models (a `jaxlaw.models.Decoder`): the
    mean of ``model.embed(tokens)`` over the prompt positions (real tokens that are not
    targets).
    """
    n = data.n_examples
    if n == 0:
        raise ValueError("cannot embed an empty dataset")

    def feats(tokens, attention, loss):
        if isinstance(model, SkillMLP):
            return model.embed_inputs(tokens)
        e = model.embed(tokens)
        w = (attention & ~loss).astype(e.dtype)[..., None]
        return jnp.sum(e * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)

    fn = jax.jit(feats)
    out = []
    for lo in range(0, n, batch_size):
        idx = np.minimum(np.arange(lo, lo + batch_size), n - 1)
        f = fn(data.tokens[idx], data.attention_mask[idx], data.loss_mask[idx])
        out.append(np.asarray(f, np.float32)[: min(batch_size, n - lo)])
    return np.concatenate(out)


def source_means(
    values: Float[np.ndarray, " examples"], source_id: Int[np.ndarray, " examples"], n_sources: int
) -> Float[np.ndarray, " sources"]:
    """Mean of ``values`` within each source (NaN for a source without rows)."""
    sums = np.bincount(source_id, weights=values, minlength=n_sources)
    counts = np.bincount(source_id, minlength=n_sources)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


# ---------------------------------------------------------------------------------------------
# The arms of the validation, and paired statistics over seeds.

ARMS = ("random", "s2l", "s2l_final", "embed_kmeans", "stratified", "s2l_stratified")


class ArmSelection(NamedTuple):
    """One arm's subset: ``indices`` (rows of the pool, sorted), the cluster ``labels`` of every
    pool row and the k-means ``objective`` (sum of squared distances; None for arms that do not
    cluster)."""

    indices: Int[np.ndarray, " selected"]
    labels: Int[np.ndarray, " rows"] | None = None
    objective: float | None = None


def select_arms(
    arms: Sequence[str],
    trajectories: Trajectories,
    budget: int,
    *,
    key: Key,
    k: int = 100,
    embeddings: Float[np.ndarray, "rows feat"] | None = None,
    transform: str = "raw",
    init: str = "random",
    max_points_per_centroid: int | None = 256,
    per_source_kmeans: bool = False,
) -> dict[str, ArmSelection]:
    """The subsets of S2L and its baselines, all of size ``budget``, from one proxy run.

    Arms: ``random`` (uniform); ``s2l`` (k-means on the trajectory features, balanced
    sampling); ``s2l_final`` (the same on the last checkpoint's loss alone); ``embed_kmeans``
    (the same on ``embeddings``, e.g. `prompt_embeddings` of the trained proxy);
    ``stratified`` (water filling over the pool's sources, uniform inside: in the skill toy the
    oracle); ``s2l_stratified`` (the reference's source stratification, spec §1.5: the budget
    is water-filled over sources first, then over the clusters inside each source). Only the
    last two see the sources.

    Args:
        arms: names from `ARMS`.
        trajectories: the pool's trajectories (rows = pool rows, in order).
        budget: rows per arm.
        key: one key; each arm folds in its position in `ARMS`, so an arm's subset does not
            depend on which other arms are asked for.
        k: clusters.
        embeddings: ``[rows, feat]`` features of ``embed_kmeans``.
        transform: trajectory feature transform of ``s2l``/``s2l_stratified`` (see
            `Trajectories.features`).
        init: k-means init of every clustering arm, ``"random"`` (reference) or
            ``"kmeans++"``.
        max_points_per_centroid: k-means training subsample (None: all rows).
        per_source_kmeans: ``s2l_stratified`` runs k-means with ``k`` clusters separately inside
            each source, as the reference; default False: one k-means over the pool, whose
            clusters are split by source (a k-means compilation per distinct source size is
            too slow for many seeds on CPU).

    Returns:
        ``{arm: ArmSelection}``.

    Raises:
        ValueError: unknown arm, or ``embed_kmeans`` without embeddings.
    """
    from jaxlaw.data_selection.s2l._baselines import select_random, select_stratified
    from jaxlaw.data_selection.s2l._kmeans import KMeansResult
    from jaxlaw.data_selection.s2l._select import s2l_select

    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; choose from {', '.join(ARMS)}")
    if "embed_kmeans" in arms and embeddings is None:
        raise ValueError("the embed_kmeans arm needs embeddings")
    n = trajectories.n_rows
    feats = trajectories.features(transform)
    raw = trajectories.features("raw")
    strata = np.asarray(trajectories.source_id)
    opts = dict(k=k, init=init, max_points_per_centroid=max_points_per_centroid)
    out = {}
    for arm in arms:
        kk = jr.fold_in(key, ARMS.index(arm))
        labels = objective = None
        if arm == "random":
            idx = select_random(n, budget, key=kk)
        elif arm == "stratified":
            idx = select_stratified(strata, budget, key=kk)
        else:
            x, extra = {
                "s2l": (feats, {}),
                "s2l_final": (raw[:, -1:], {}),
                "embed_kmeans": (embeddings, {}),
                "s2l_stratified": (
                    feats,
                    dict(strata=strata, per_stratum_kmeans=per_source_kmeans),
                ),
            }[arm]
            sel = s2l_select(x, budget, key=kk, **opts, **extra)
            idx = sel.indices
            labels = np.asarray(sel.labels)
            parts = (sel.kmeans,) if isinstance(sel.kmeans, KMeansResult) else sel.kmeans
            objective = float(sum(float(r.objective) for r in parts if r is not None))
            if arm == "s2l_stratified" and per_source_kmeans:  # ids local to each source
                labels = strata.astype(np.int64) * (k + 1) + labels
        out[arm] = ArmSelection(np.asarray(idx), labels, objective)
    return out


def cluster_purity(labels: Int[np.ndarray, " rows"], classes: Int[np.ndarray, " rows"]) -> float:
    """Fraction of rows whose class is their cluster's majority class (1: every cluster pure)."""
    labels, classes = np.asarray(labels), np.asarray(classes)
    _, lab = np.unique(labels, return_inverse=True)
    _, cls = np.unique(classes, return_inverse=True)
    table = np.zeros((lab.max() + 1, cls.max() + 1), np.int64)
    np.add.at(table, (lab, cls), 1)
    return float(table.max(axis=1).sum() / labels.shape[0])


def _t_quantile(q: float, df: int) -> float:
    """Student-t quantile by bisection on the CDF (regularised incomplete beta)."""
    from jax.scipy.special import betainc

    def cdf(t):
        tail = 0.5 * float(betainc(df / 2.0, 0.5, df / (df + t * t)))
        return 1.0 - tail if t > 0 else tail

    lo, hi = -1e3, 1e3
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) < q else (lo, mid)
    return 0.5 * (lo + hi)


class PairedDiff(NamedTuple):
    """Mean of paired differences over seeds and its t-interval (``lo``, ``hi``)."""

    mean: float
    lo: float
    hi: float
    n: int


def paired_interval(diffs: Float[np.ndarray, " seeds"], level: float = 0.95) -> PairedDiff:
    """Mean and two-sided Student-t confidence interval of paired differences (one per seed).

    ``half = t_{(1+level)/2, n-1} * sd / sqrt(n)`` (sd with ddof 1; 2.262 * sd / sqrt(10) for
    10 seeds at 95 %). With one seed the interval is (-inf, inf).
    """
    d = np.asarray(diffs, np.float64)
    n = d.size
    if n == 0:
        raise ValueError("no differences to summarise")
    m = float(d.mean())
    if n == 1:
        return PairedDiff(m, -math.inf, math.inf, 1)
    half = _t_quantile(0.5 + level / 2, n - 1) * float(d.std(ddof=1)) / math.sqrt(n)
    return PairedDiff(m, m - half, m + half, n)


def score_arms(
    model: nnx.Module,
    pool: TokenizedSet,
    selections: dict[str, ArmSelection],
    config: TrainConfig,
    score,
    *,
    cache: dict | None = None,
    tag: Any = None,
) -> dict[str, dict]:
    """Fine-tune ``model`` on every arm's subset (same steps for all, `jaxlaw.training.train`)
    and score it.

    Args:
        model: the target's initial state (every arm starts from it; not modified).
        pool: the pool the selections index.
        selections: ``{arm: ArmSelection}`` from `select_arms`.
        config: the target's optimisation.
        score: ``score(trained_model) -> dict`` of metrics.
        cache: a dict that keeps scores across calls, keyed by ``(tag, subset rows)``: an arm
            whose subset was already trained (e.g. ``random`` in two settings of the same task
            and seed) is not trained again. ``tag`` must name everything else the score depends
            on (task, target, seed).
        tag: see ``cache``.

    Returns:
        ``{arm: metrics}``: the score's metrics plus ``allocation`` (selected rows per source),
        ``purity`` (of the arm's clusters w.r.t. the sources; None without clusters) and
        ``objective`` (k-means; None without clusters).
    """
    cache = {} if cache is None else cache
    keys = {a: (tag, np.asarray(s.indices).tobytes()) for a, s in selections.items()}
    for a in selections:
        if keys[a] not in cache:
            trained = nnx.clone(model)
            subset = take(pool, selections[a].indices)
            train(trained, subset, config, trainable=nnx.Param, progress=False)
            cache[keys[a]] = score(trained)
    out = {}
    for a, sel in selections.items():
        alloc = np.bincount(pool.source_id[sel.indices], minlength=len(pool.sources))
        purity = None if sel.labels is None else cluster_purity(sel.labels, pool.source_id)
        out[a] = dict(
            cache[keys[a]], allocation=alloc.tolist(), purity=purity, objective=sel.objective
        )
    return out


def summarize_arms(seeds: Sequence[dict[str, dict]], metric: str) -> dict[str, dict]:
    """Per arm over seeds: mean of ``metric``, paired difference to ``random`` (same seed) with
    its 95 % t-interval, and the means of purity, objective, allocation and per-source scores.

    Args:
        seeds: one `score_arms` result per seed (each with a ``random`` arm).
        metric: the key of the score to summarise.

    Returns:
        ``{arm: dict(n_seeds, mean, diff_vs_random, ci_low, ci_high, purity,
        kmeans_objective, allocation, per_source)}``.
    """
    if not seeds or "random" not in seeds[0]:
        raise ValueError("need at least one seed with a 'random' arm")

    def mean(arm, key):
        vals = [r[arm].get(key) for r in seeds]
        return None if vals[0] is None else np.mean(vals, axis=0).tolist()

    base = np.array([r["random"][metric] for r in seeds])
    out = {}
    for arm in seeds[0]:
        v = np.array([r[arm][metric] for r in seeds])
        d = paired_interval(v - base)
        out[arm] = dict(
            n_seeds=len(seeds),
            mean=float(v.mean()),
            diff_vs_random=d.mean,
            ci_low=d.lo,
            ci_high=d.hi,
            purity=mean(arm, "purity"),
            kmeans_objective=mean(arm, "objective"),
            allocation=mean(arm, "allocation"),
            per_source=mean(arm, "per_source"),
        )
    return out
