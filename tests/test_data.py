"""jaxlaw.data: loss-table loading, validation and alignment by name."""

import hashlib
import re
import tempfile
import tomllib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxlaw.data
from jaxlaw.data import (
    DATASETS,
    LossTable,
    TableError,
    bundled_root,
    check_fit_points,
    data_root,
    load_dataset,
    load_table,
    table_from_frame,
    take_models,
)

SIZES = [0] + [200 * 2**j for j in range(14)]
FAMILIES = {
    "GPT2": 5,
    "T5": 5,
    "Cerebras": 4,
    "BART": 4,
    "OPT": 4,
    "LaMini": 3,
    "Switch Transformer": 3,
    "Phi": 2,
}
# Spec §1: fine-tuned loss range per dataset, and (best, worst) model at D = 1638400.
RANGES = {"flan": (1.5126, 4.3860), "wmt19": (0.5612, 3.3676), "gigaword": (1.0712, 3.5046)}
GOLDEN = {
    "flan": ("facebook/opt-1.3b", "cerebras/Cerebras-GPT-111M"),
    "wmt19": ("google/t5-v1_1-base", "google/mt5-base"),
    "gigaword": ("google/t5-v1_1-base", "cerebras/Cerebras-GPT-111M"),
}


# ---------------------------------------------------------------- the reference tables


@pytest.mark.parametrize("name", DATASETS)
def test_reference_table(data_root, name):
    t = load_dataset(name, data_root)
    assert t.name == name
    assert len(t.models) == len(set(t.models)) == 30
    assert t.sizes.dtype == np.int64 and t.loss.dtype == np.float64
    assert t.n_params.dtype == np.float64
    np.testing.assert_array_equal(t.sizes, SIZES)
    assert t.loss.shape == (30, 15) and np.isfinite(t.loss).all()
    assert t.n_params.sum() == 33_045_445_632  # exact: integers < 2^53
    assert len(np.unique(t.n_params)) == 29
    assert Counter(t.families) == FAMILIES
    lo, hi = RANGES[name]
    np.testing.assert_allclose([t.loss[:, 1:].min(), t.loss[:, 1:].max()], [lo, hi], atol=5e-5)
    best, worst = GOLDEN[name]
    assert t.models[t.loss[:, -1].argmin()] == best
    assert t.models[t.loss[:, -1].argmax()] == worst


def test_reference_cells_match_pandas(data_root):
    # Our own cell parser must give the same float64 as pandas' reader, bit for bit.
    for name in DATASETS:
        df = pd.read_csv(data_root / "rectified" / f"{name}.csv", index_col=0)
        t = load_dataset(name, data_root)
        np.testing.assert_array_equal(t.loss, df.iloc[:, :15].to_numpy(np.float64))
        assert t.models == tuple(df.index)


def test_alignment_by_name(data_root):
    flan, wmt, giga = (load_dataset(n, data_root) for n in DATASETS)
    assert flan.models == wmt.models
    swapped = [i for i, (a, b) in enumerate(zip(flan.models, giga.models)) if a != b]
    assert sorted(flan.models[i] for i in swapped) == [
        "google/switch-base-16",
        "google/switch-base-32",
    ]
    aligned = take_models(giga, flan.models)
    assert aligned.models == flan.models
    np.testing.assert_array_equal(aligned.n_params, flan.n_params)
    assert aligned.families == flan.families
    i = giga.models.index("google/switch-base-16")
    np.testing.assert_array_equal(
        aligned.loss[flan.models.index("google/switch-base-16")], giga.loss[i]
    )


# ---------------------------------------------------------------- bundled tables and overrides

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"  # originals, when beside the repo
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _bundled_files() -> list[str]:
    """The bundled paper tables (``measured/`` holds jaxlaw's own, checked separately)."""
    return sorted(
        p.relative_to(bundled_root()).as_posix()
        for sub in ("rectified", "obscaling")
        for p in (bundled_root() / sub).glob("*.csv")
    )


def _blob_id(data: bytes) -> str:
    """The git object id of a file's bytes (what ``git hash-object`` prints)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_bundled_tables_are_the_default(monkeypatch):
    """Guards the fix for tables living only in ../shared/data: with JAXLAW_DATA unset the
    loaders read the copy inside the installed package."""
    monkeypatch.delenv("JAXLAW_DATA", raising=False)
    assert bundled_root() == Path(jaxlaw.data.__file__).parent / "tables"
    assert data_root() == bundled_root()
    for name in DATASETS:
        t = load_dataset(name)
        assert t.loss.shape == (30, 15)
        want = load_table(bundled_root() / "rectified" / f"{name}.csv", name=name)
        np.testing.assert_array_equal(t.loss, want.loss)
    monkeypatch.setenv("JAXLAW_DATA", "")  # empty means unset (a Makefile may export it empty)
    assert data_root() == bundled_root()


def test_bundled_files_match_their_recorded_source():
    """Every bundled CSV is listed in tables/README.md with the git blob id of the file at the
    source commit; the bytes here must still hash to it (nothing was changed)."""
    readme = (bundled_root() / "README.md").read_text()
    # | `file` | `source path` | rows x cols | bytes | `blob` |
    row = r"^\| `([\w/.]+\.csv)` \| `[\w/.]+` \| (\d+) x (\d+) \| (\d+) \| `(\w{40})` \|$"
    rows = re.findall(row, readme, flags=re.M)
    assert sorted(r[0] for r in rows) == _bundled_files() and len(rows) == 8
    for rel, n_rows, n_cols, n_bytes, blob in rows:
        data = (bundled_root() / rel).read_bytes()
        assert (len(data), _blob_id(data)) == (int(n_bytes), blob), rel
        header, *body = pd.read_csv(bundled_root() / rel, header=None, dtype=str).to_numpy()
        assert (len(body), len(header)) == (int(n_rows), int(n_cols)), rel
    assert "Apache License" in (bundled_root() / "LICENSE").read_text()


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"no shared originals at {SHARED} to compare")
def test_bundled_files_equal_the_shared_originals():
    shared = sorted(
        p.relative_to(SHARED).as_posix()
        for sub in ("rectified", "obscaling")
        for p in (SHARED / sub).glob("*.csv")
    )
    assert _bundled_files() == shared
    for rel in shared:
        assert (bundled_root() / rel).read_bytes() == (SHARED / rel).read_bytes(), rel


def test_package_data_declares_every_bundled_file():
    """A non-editable install ships only what pyproject's package-data globs match."""
    globs = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]
    pkg = bundled_root().parent  # jaxlaw/data
    shipped = {p for g in globs["jaxlaw.data"] for p in pkg.glob(g)}
    assert shipped == {p for p in bundled_root().rglob("*") if p.is_file()}


def _override(tmp: Path, models: int = 2) -> Path:
    """A data folder whose flan.csv holds the first ``models`` rows of the bundled one."""
    (tmp / "rectified").mkdir(parents=True)
    lines = (bundled_root() / "rectified" / "flan.csv").read_text().splitlines(keepends=True)
    (tmp / "rectified" / "flan.csv").write_text("".join(lines[: models + 1]))
    return tmp


def test_override_wins(monkeypatch, tmp_path):
    over = _override(tmp_path / "over")
    monkeypatch.setenv("JAXLAW_DATA", str(over))
    assert data_root() == over
    assert len(load_dataset("flan").models) == 2
    # An explicit root (the CLI's --data) beats the environment.
    assert len(load_dataset("flan", bundled_root()).models) == 30
    monkeypatch.delenv("JAXLAW_DATA")
    assert len(load_dataset("flan", over).models) == 2
    assert len(load_dataset("flan").models) == 30


def test_missing_override_is_one_line_naming_the_path(monkeypatch, tmp_path):
    absent = tmp_path / "absent"
    monkeypatch.setenv("JAXLAW_DATA", str(absent))
    for call in (data_root, lambda: load_dataset("flan")):
        with pytest.raises(TableError) as e:
            call()
        assert str(e.value) == (
            f"JAXLAW_DATA={absent} is not a directory "
            "(unset it to use the tables bundled with jaxlaw)"
        )
    monkeypatch.delenv("JAXLAW_DATA")
    (tmp_path / "file").write_text("x")
    for root in (absent, tmp_path / "file"):
        with pytest.raises(TableError, match=f"^data folder {re.escape(str(root))} is not a dir"):
            load_dataset("flan", root)


def test_table_missing_from_a_root(tmp_path):
    with pytest.raises(TableError) as e:
        load_dataset("flan", tmp_path)
    assert str(e.value) == (
        f"loss table 'flan' not found at {tmp_path / 'rectified' / 'flan.csv'}; no tables there; "
        "omit --data / unset JAXLAW_DATA to use the tables bundled with jaxlaw"
    )
    with pytest.raises(TableError, match=r"'flan' not found.*; available: other$"):
        (tmp_path / "rectified").mkdir()
        (tmp_path / "rectified" / "other.csv").write_text("m,0\na,1\n")
        load_dataset("flan", tmp_path)
    with pytest.raises(
        TableError,
        match=r"'nope' not found.*available: flan, gigaword, wmt19; other tables are not bundled",
    ):
        load_dataset("nope", bundled_root())


def test_measured_table_is_bundled_and_survives_an_override(monkeypatch, tmp_path):
    """smollm2_gsm8k (experiments/gsm8k_scaling) reads like a paper table; a data folder
    without it (the papers' own, as the Makefile's JAXLAW_DATA) falls back to the bundle."""
    bundled = bundled_root() / "measured" / "smollm2_gsm8k.csv"
    shipped = Path(__file__).resolve().parents[1] / "experiments/gsm8k_scaling/results"
    assert bundled.read_bytes() == (shipped / "smollm2_gsm8k.csv").read_bytes()
    monkeypatch.setenv("JAXLAW_DATA", str(_override(tmp_path / "papers")))
    t = load_dataset("smollm2_gsm8k")
    assert t.models == ("HuggingFaceTB/SmolLM2-135M-Instruct",) and t.families == ("SmolLM2",)
    assert t.sizes[0] == 0 and len(t.sizes) >= 6 and np.isfinite(t.loss).all()
    assert 1.3e8 < t.n_params[0] < 1.4e8
    assert t.loss[0, -1] < t.loss[0, 0]  # fine-tuning helped
    (tmp_path / "mine" / "measured").mkdir(parents=True)
    (tmp_path / "mine" / "measured" / "smollm2_gsm8k.csv").write_text("model,0,16\nm,2.0,1.5\n")
    assert load_dataset("smollm2_gsm8k", tmp_path / "mine").models == ("m",)


# ---------------------------------------------------------------- format and errors


def _write(tmp: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


GOOD = """model,400,0,200,size,family
a,2.0,4.0,3.0,100,X
b,1.5,5.0,2.5,200,Y
"""


def test_load_sorts_columns_and_reads_meta(tmp_path):
    t = load_table(_write(tmp_path, GOOD), name="toy")
    assert t.name == "toy" and t.models == ("a", "b")
    np.testing.assert_array_equal(t.sizes, [0, 200, 400])
    np.testing.assert_array_equal(t.loss, [[4.0, 3.0, 2.0], [5.0, 2.5, 1.5]])
    np.testing.assert_array_equal(t.n_params, [100.0, 200.0])
    assert t.families == ("X", "Y")
    assert load_table(_write(tmp_path, GOOD)).name == "t"


def test_optional_columns_and_missing_cells(tmp_path):
    t = load_table(_write(tmp_path, "config name,200,400\na,3.0,\nNA, 2.0 ,1.0\nc,NaN,2\n"))
    assert t.n_params is None and t.families is None
    assert t.models == ("a", "NA", "c")  # a model may be called "NA"; a cell "NA" is missing
    np.testing.assert_array_equal(t.loss, [[3.0, np.nan], [2.0, 1.0], [np.nan, 2.0]])


def test_table_from_frame_variants():
    df = pd.DataFrame({"name": ["m1", "m2"], 200: [3.0, 2.0], "0": [5.0, 4.0], "size": [10, 20]})
    a = table_from_frame(df, name="x", model_column="name")
    b = table_from_frame(df.set_index("name"), name="x")
    for t in (a, b):
        assert t.models == ("m1", "m2")
        np.testing.assert_array_equal(t.sizes, [0, 200])
        np.testing.assert_array_equal(t.loss, [[5.0, 3.0], [4.0, 2.0]])
    with pytest.raises(TableError, match="default integer index"):
        table_from_frame(df.drop(columns="name"), name="x")
    with pytest.raises(TableError, match="no model column 'who'"):
        table_from_frame(df, name="x", model_column="who")


BAD = [
    # (csv text, substring(s) the one-line message must contain)
    ("model,200,400\na,3.0,oops\n", ["'oops'", "column 400", "'a'"]),
    ("model,200,400\na,3.0,2.0\na,2.0,1.0\n", ["duplicate model names", "'a'"]),
    ("model,200,400\na,3.0,-1.0\n", ["positive", "column 400", "'a'"]),
    ("model,200,400\nb,0,1.0\n", ["positive", "column 200", "'b'"]),
    ("model,200,400\nc,3.0,inf\n", ["inf", "column 400", "'c'"]),
    ("model,200,lr\na,3.0,0.1\n", ["'lr'", "neither"]),
    ("model,size,family\na,10,X\n", ["no integer subset-size columns"]),
    ("model,200,400\n", ["empty table"]),
    ("", ["empty file"]),
    ("0,200,400\n1.0,2.0,3.0\n", ["no model column"]),
    ("model,200,200\na,3.0,2.0\n", ["duplicate subset-size column 200"]),
    ("model,200,size\na,3.0,big\n", ["'size'", "'big'", "'a'"]),
    ("model,200,size\na,3.0,-5\n", ["'size'", "'-5'", "'a'"]),
    ("model,200\na,3.0,9,9\n", ["cannot parse CSV"]),
    ("model,200,400\n,3.0,2.0\n", ["row 1 has no model name"]),
]


@pytest.mark.parametrize("text,culprits", BAD)
def test_bad_tables_raise_one_clear_line(tmp_path, text, culprits):
    with pytest.raises(TableError) as err:
        load_table(_write(tmp_path, text))
    msg = str(err.value)
    assert "\n" not in msg
    for c in culprits:
        assert c in msg, (c, msg)


def test_missing_file(tmp_path):
    with pytest.raises(TableError, match="not found.*missing.csv"):
        load_table(tmp_path / "missing.csv")


def test_check_fit_points_names_models():
    t = LossTable(
        "toy",
        ("a", "b", "c"),
        np.array([0, 200, 400, 800]),
        np.array([[4, 3, 2, 1], [4, np.nan, 2, 1], [4, 3, np.nan, np.nan]], float),
        None,
        None,
    )
    mask = t.sizes > 0
    with pytest.raises(TableError) as err:
        check_fit_points(t, mask)
    assert "'b' (2)" in str(err.value) and "'c' (1)" in str(err.value)
    assert "'a'" not in str(err.value)
    np.testing.assert_array_equal(check_fit_points(t, mask, min_points=1), [3, 2, 1])


def test_take_models_errors():
    t = LossTable("toy", ("a", "b"), np.array([200]), np.ones((2, 1)), None, None)
    with pytest.raises(TableError, match="unknown models: 'z'"):
        take_models(t, ["a", "z"])
    with pytest.raises(TableError, match="twice: 'a'"):
        take_models(t, ["a", "a"])


# ---------------------------------------------------------------- property tests

names = st.text(alphabet="abcdefghij-/_.0123456789", min_size=1, max_size=8).filter(
    lambda s: not s.isdigit() and s.lower() not in ("size", "family")
)
losses = st.floats(min_value=1e-3, max_value=50.0, allow_nan=False)


@st.composite
def tables(draw):
    n_models = draw(st.integers(1, 5))
    sizes = sorted(draw(st.sets(st.integers(0, 10**6), min_size=1, max_size=6)))
    models = draw(st.lists(names, min_size=n_models, max_size=n_models, unique=True))
    loss = np.array(
        draw(
            st.lists(
                st.lists(losses, min_size=len(sizes), max_size=len(sizes)),
                min_size=n_models,
                max_size=n_models,
            )
        )
    )
    params = draw(st.lists(st.integers(1, 10**10), min_size=n_models, max_size=n_models))
    order = draw(st.permutations(range(len(sizes))))
    return models, np.array(sizes), loss, np.array(params, float), list(order)


def _csv(models, sizes, loss, params, order, cells=None):
    head = ["model"] + [str(sizes[j]) for j in order] + ["size"]
    lines = [",".join(head)]
    for i, m in enumerate(models):
        row = [repr(float(loss[i, j])) for j in order] + [str(int(params[i]))]
        if cells is not None:
            row = [cells.get((i, c), v) for c, v in enumerate(row)]
        lines.append(",".join([m] + row))
    return "\n".join(lines) + "\n"


@settings(max_examples=50, deadline=None)
@given(tables())
def test_valid_tables_round_trip(tab):
    models, sizes, loss, params, order = tab
    with tempfile.TemporaryDirectory() as d:
        t = load_table(_write(Path(d), _csv(models, sizes, loss, params, order)))
    assert t.models == tuple(models)
    np.testing.assert_array_equal(t.sizes, sizes)
    np.testing.assert_array_equal(t.loss, loss)
    np.testing.assert_array_equal(t.n_params, params)


@settings(max_examples=50, deadline=None)
@given(tables(), st.data())
def test_corrupted_cell_is_named(tab, data):
    models, sizes, loss, params, order = tab
    i = data.draw(st.integers(0, len(models) - 1))
    c = data.draw(st.integers(0, len(order)))  # the last one is the `size` column
    bad = data.draw(st.sampled_from(["abc", "-1.5", "0", "inf", "-inf", "1e400", "x1"]))
    text = _csv(models, sizes, loss, params, order, cells={(i, c): bad})
    with tempfile.TemporaryDirectory() as d, pytest.raises(TableError) as err:
        load_table(_write(Path(d), text))
    msg = str(err.value)
    assert "\n" not in msg and repr(models[i]) in msg
    assert ("'size'" if c == len(order) else f"column {sizes[order[c]]}") in msg
