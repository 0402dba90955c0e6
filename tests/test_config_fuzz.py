"""Property: whatever a config file holds, the loader accepts it or refuses it with a UserError
(exit 2 and one message); it never fails with another exception (a traceback).

Random configs are built three ways: guided by the real schema (real and misspelt keys, values of
the right and wrong types, in and out of range), as free random nesting, and as random YAML text
(mutated dumps, YAML punctuation, tags, anchors). Each goes through ``load_config`` on a written
file, with random ``--set`` overrides on some.

`make test` runs 100 examples (derandomized, so the suite is stable); for a real search run
``HYPOTHESIS_PROFILE=thorough .venv/bin/pytest -q tests/test_config_fuzz.py`` (1,000 examples,
a fresh random seed each time) or set ``TLKIT_FUZZ_EXAMPLES=N``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from tlkit.config import Config, load_config, validate
from tlkit.config.validation import _model_in
from tlkit.errors import UserError

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much])
settings.register_profile("tlkit-config-fuzz", max_examples=100, derandomize=True, **_COMMON)
settings.register_profile("thorough", max_examples=1000, **_COMMON)
_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "tlkit-config-fuzz")
FUZZ = settings(settings.get_profile(_PROFILE if _PROFILE in ("thorough", "tlkit-config-fuzz")
                                     else "tlkit-config-fuzz"))
if os.environ.get("TLKIT_FUZZ_EXAMPLES"):
    FUZZ = settings(FUZZ, max_examples=int(os.environ["TLKIT_FUZZ_EXAMPLES"]))


# --------------------------------------------------------------------------------------------------
# The schema's own names, and misspellings of them
# --------------------------------------------------------------------------------------------------


def _all_keys(model: type[BaseModel], seen: set[str]) -> set[str]:
    keys: set[str] = set()
    if model.__name__ in seen:
        return keys
    seen.add(model.__name__)
    for name, field in model.model_fields.items():
        keys.add(name)
        sub = _model_in(field.annotation)
        if sub is not None:
            keys |= _all_keys(sub, seen)
    return keys


REAL_KEYS = sorted(_all_keys(Config, set()))
# Values that pass some validator: a fuzzer that only sends noise never gets past the first one.
REAL_WORDS = [
    "minilm-l6", "mobilenetv2", "efficientnet-lite0", "timm:test_efficientnet", "hf:x/y",
    "torchvision:resnet18", "timm:", "hf:", "packaged", "none", "auto", "all_frozen",
    "top_n_unfrozen", "gradual", "lora", "lp_ft", "cosine", "linear", "constant", "mlp", "mean",
    "cls", "pooler", "digits", "rotten_tomatoes", "fashion_mnist", "single_label", "multi_label",
    "regression", "skip", "error", "flip", "crop_flip", "warn", "refuse", "off", "dann", "mmd",
    "coral", "adabn", "cpu", "cuda", "last_block", "last_two_blocks", "last_3_blocks", "all",
    "last_0_blocks", "last_99999999999999999999_blocks", "(", "a{99999999999}", "[", "", " ",
    "|", "1e-3", "3e-4", "1e309", ".nan", "-.inf", "true", "null", "~", "0x10", "0o7", "1_000",
    "2020-01-01", "12:30:00", "é", "\x00", "\u202e", "key: value",
]


@st.composite
def misspelt(draw: st.DrawFn) -> str:
    key = draw(st.sampled_from(REAL_KEYS))
    how = draw(st.sampled_from(["drop", "swap", "upper", "suffix", "dash", "space", "dot"]))
    i = draw(st.integers(0, max(0, len(key) - 2)))
    if how == "drop":
        return key[:i] + key[i + 1:]
    if how == "swap" and len(key) > 1:
        return key[:i] + key[i + 1] + key[i] + key[i + 2:]
    if how == "upper":
        return key.upper()
    if how == "dash":
        return key.replace("_", "-")
    if how == "space":
        return f" {key}"
    if how == "dot":
        return key.replace("_", ".")
    return key + draw(st.sampled_from(["s", "_", "2", "x"]))


KEYS = st.one_of(
    st.sampled_from(REAL_KEYS), misspelt(), st.text(max_size=12),
    st.integers(-3, 3), st.none(), st.booleans(), st.floats(allow_nan=False, width=16),
)
NUMBERS = st.one_of(
    st.integers(-3, 3), st.integers(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(), st.sampled_from([0, 1, 2, 10, 64, 1e-9, 1e-3, 0.5, 0.99, 1.0, 1e6, 2**31,
                                  2**32, 2**63, float("inf"), float("-inf"), float("nan")]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.sampled_from(REAL_WORDS),
                    st.text(max_size=20), st.binary(max_size=8))


def values(depth: int = 3) -> st.SearchStrategy[Any]:
    """Any YAML-ish value: scalars, lists and mappings nested up to ``depth``."""
    return st.recursive(
        SCALARS,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(KEYS, inner, max_size=5),
        ),
        max_leaves=12 if depth > 1 else 3,
    )


@st.composite
def section(draw: st.DrawFn, model: type[BaseModel], depth: int = 0) -> dict[Any, Any]:
    """A mapping for ``model``: a random subset of its fields, each with a plausible value or a
    wrong one, plus now and then a misspelt or foreign key."""
    out: dict[Any, Any] = {}
    fields = list(model.model_fields.items())
    chosen = draw(st.lists(st.sampled_from(fields), max_size=len(fields), unique_by=lambda f: f[0]))
    for name, field in chosen:
        sub = _model_in(field.annotation)
        if sub is not None and depth < 3 and draw(st.booleans()):
            if "list" in str(field.annotation):
                out[name] = draw(st.lists(section(sub, depth + 1), max_size=3))
            else:
                out[name] = draw(section(sub, depth + 1))
        else:
            out[name] = draw(st.one_of(SCALARS, values(2)))
    for _ in range(draw(st.integers(0, 2))):
        out[draw(st.one_of(misspelt(), st.text(max_size=8)))] = draw(SCALARS)
    return out


@st.composite
def schema_configs(draw: st.DrawFn) -> Any:
    raw = draw(section(Config))
    # the two required sections are usually there, so the search gets past "missing key"
    if draw(st.integers(0, 4)) and "transfer_config" not in raw:
        raw["transfer_config"] = {"source_model": draw(st.sampled_from(REAL_WORDS[:6]))}
    if draw(st.integers(0, 4)) and "data" not in raw:
        raw["data"] = {"source": draw(st.sampled_from(["digits", "x.csv", "imgs/", ""]))}
    return raw


# Valid configs of each strategy; the mutations below change a few of their values, so the search
# reaches the cross-field checks (schedules against epochs, lp_epochs, lora, adaptation).
BASES: list[dict[str, Any]] = [
    {"transfer_config": {"source_model": "minilm-l6", "freeze_strategy": "gradual", "epochs": 4,
                         "unfreeze_schedule": [{"epoch": 1, "unfreeze": "last_block"},
                                               {"epoch": 3, "unfreeze": "all"}]},
     "data": {"source": "rotten_tomatoes", "limit": 2000}},
    {"transfer_config": {"source_model": "timm:test_efficientnet", "pretrained_weights": "none",
                         "freeze_strategy": "lora", "lora": {"r": 4, "target_modules": None},
                         "head": {"type": "mlp", "hidden_size": 32}},
     "data": {"source": "digits", "image_size": 32, "augment": "flip"},
     "diagnostics": {"check_preprocessing": "refuse", "reference": {"source": "digits"}}},
    {"transfer_config": {"source_model": "mobilenetv2", "freeze_strategy": "lp_ft", "epochs": 6,
                         "lp_epochs": 2, "l2sp_lambda": 0.01,
                         "layer_groups": [{"name": "low", "pattern": "blocks\\.[0-3]"}]},
     "data": {"source": "x.csv", "task": "multi_label", "label_separator": ";"},
     "adaptation": {"method": "coral", "target": {"source": "y/"}, "pretrain": {"lr": 1e-4}}},
]


def _paths(x: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(x, dict):
        for k, v in x.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            out += _paths(v, prefix + (i,))
    return out


PLAUSIBLE = st.one_of(st.sampled_from(REAL_WORDS[:50]), st.integers(0, 12), st.booleans(),
                      st.none(), st.sampled_from([1e-5, 1e-4, 1e-3, 0.05, 0.1, 0.3, 0.5, 0.9]))


@st.composite
def mutated_valid(draw: st.DrawFn) -> dict[str, Any]:
    import copy

    raw = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(0, 3))):
        if not _paths(raw):
            break
        path = draw(st.sampled_from(_paths(raw)))
        node = raw
        for p in path[:-1]:
            node = node[p]
        how = draw(st.sampled_from(["value", "value", "delete", "misspell", "add"]))
        if how == "value":
            node[path[-1]] = draw(st.one_of(PLAUSIBLE, PLAUSIBLE, SCALARS, values(2)))
        elif how == "delete" and isinstance(node, dict):
            del node[path[-1]]
        elif how == "misspell" and isinstance(node, dict):
            node[draw(misspelt())] = node.pop(path[-1])
        elif how == "add" and isinstance(node, dict):
            node[draw(st.sampled_from(REAL_KEYS))] = draw(SCALARS)
    return raw


CONFIGS = st.one_of(mutated_valid(), mutated_valid(), mutated_valid(), schema_configs(),
                    values(), st.dictionaries(KEYS, values(), max_size=6))

YAML_BITS = [
    ":", ": ", "-", "- ", "[", "]", "{", "}", ",", "#", "&a ", "*a", "!", "!!", "|", ">", "'", '"',
    "%", "@", "`", "?", "\n", "\n  ", "\t", "  ", "\\", "---", "...", "<<: *a", "\ufeff", "\x00",
    "!!python/object/apply:os.system ['touch /tmp/tlkit-fuzz-pwned']", "!!python/name:os.system",
    "!!binary aGVsbG8=", "!!set {a, b}", "!!omap [a: 1]", "!!float x", "!!int 1.5", "!!str",
    "!!timestamp 2001-12-14", "!!null", "!foo", "&x [*x]", "transfer_config", "data",
    "source_model", "epochs", "1e-3", ".inf", "0b101", "~",
]


@st.composite
def yaml_texts(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["dump", "mutated", "bits", "text"]))
    if kind in ("dump", "mutated"):
        try:
            text = yaml.safe_dump(draw(CONFIGS), allow_unicode=draw(st.booleans()),
                                  default_flow_style=draw(st.sampled_from([None, True, False])))
        except (yaml.YAMLError, ValueError, RecursionError):
            text = ""
        if kind == "mutated" and text:
            for _ in range(draw(st.integers(1, 4))):
                i = draw(st.integers(0, len(text)))
                j = draw(st.integers(i, min(len(text), i + 5)))
                text = text[:i] + draw(st.sampled_from(YAML_BITS + [""])) + text[j:]
        return text
    if kind == "bits":
        return "".join(draw(st.lists(st.sampled_from(YAML_BITS + REAL_WORDS), max_size=30)))
    return draw(st.text(max_size=200))


OVERRIDES = st.just([]) | st.lists(
    st.one_of(
        st.builds(lambda k, v: f"{k}={v}",
                  st.lists(st.one_of(st.sampled_from(REAL_KEYS), misspelt()), min_size=1,
                           max_size=3).map(".".join),
                  st.one_of(st.sampled_from(REAL_WORDS + YAML_BITS), st.text(max_size=20))),
        st.text(max_size=20),
    ),
    max_size=3,
)

_DIR = Path(tempfile.mkdtemp(prefix="tlkit-config-fuzz-"))
atexit.register(shutil.rmtree, _DIR, True)  # hypothesis reruns share it; gone at the end


def _load(text: str, overrides: list[str]) -> None:
    path = _DIR / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        cfg = load_config(path, overrides)
    except UserError as e:
        assert str(e).strip(), "a UserError must say what is wrong"
        event("refused")
        return
    assert isinstance(cfg, Config)
    event("accepted")


@pytest.mark.slow
@FUZZ
@given(raw=CONFIGS, overrides=OVERRIDES)
def test_random_configs_are_accepted_or_refused_with_a_user_error(
        raw: Any, overrides: list[str]) -> None:
    try:
        text = yaml.safe_dump(raw, allow_unicode=True)
    except (yaml.YAMLError, ValueError, RecursionError):
        return  # not representable in YAML (the YAML-text test covers odd files)
    _load(text, overrides)
    # and straight through validate (Python callers and --set build the dict themselves)
    try:
        validate(raw)
    except UserError:
        pass


@pytest.mark.slow
@FUZZ
@given(text=yaml_texts(), overrides=OVERRIDES)
def test_random_yaml_text_is_accepted_or_refused_with_a_user_error(
        text: str, overrides: list[str]) -> None:
    _load(text, overrides)
    assert not Path("/tmp/tlkit-fuzz-pwned").exists(), "a YAML tag ran code"
