"""Config: the concept's transfer_config loads as written; every mistake names its place and fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tlkit.config import Config, dump_config, load_config, parse_yaml, validate
from tlkit.errors import UserError

# The DESIGN.md block, verbatim (comments included).
DESIGN_CONFIG = textwrap.dedent(
    """\
    transfer_config:
      source_model: minilm-l6              # registry name, timm:NAME, hf:PATH_OR_ID, torchvision:NAME
      pretrained_weights: packaged         # packaged | none | a local file or folder | a named tag (e.g. IMAGENET1K_V2)
      freeze_strategy: gradual             # all_frozen | top_n_unfrozen | gradual | none  (+ lora, lp_ft, auto)
      unfreeze_schedule:
        - {epoch: 1, unfreeze: last_block}
        - {epoch: 2, unfreeze: last_two_blocks}
        - {epoch: 3, unfreeze: all}
      head_lr: 1e-3
      backbone_lr: 1e-4
      lr_decay_per_layer: 0.5              # eta_l = backbone_lr * decay^(L - l), l = 1 lowest group, L top group
      warmup_steps: 50
      scheduler: cosine
      weight_decay: 0.01
      dropout: 0.1
      epochs: 4                            # with early stopping
      batch_size: 32
      mixed_precision: true
      early_stopping_patience: 3
    data:
      source: rotten_tomatoes              # a packaged data set, or a folder / CSV / JSONL / Parquet path
      limit: 2000
      val_fraction: 0.1
      test_fraction: 0.1
      seed: 0
    """
)

# The concept document's own (invalid) schedule form.
CONCEPT_SCHEDULE = DESIGN_CONFIG.replace(
    "    - {epoch: 3, unfreeze: all}", '    - epoch: 3, unfreeze: "last_block"'
)


@pytest.fixture
def write(tmp_path: Path):
    def _write(text: str, name: str = "config.yaml") -> Path:
        p = tmp_path / name
        p.write_text(text, encoding="utf-8")
        return p

    return _write


def _error(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(UserError) as info:
        load_config(path, overrides or [])
    return str(info.value)


# --------------------------------------------------------------------------------------------------
# The concept's block
# --------------------------------------------------------------------------------------------------


def test_design_block_loads_as_written(write):
    cfg = load_config(write(DESIGN_CONFIG))
    tc = cfg.transfer_config
    assert tc.source_model == "minilm-l6"
    assert tc.freeze_strategy == "gradual"
    assert [(s.epoch, s.unfreeze) for s in tc.unfreeze_schedule] == [
        (1, "last_block"), (2, "last_two_blocks"), (3, "all")
    ]
    # YAML 1.1 reads 1e-3 as a string; tlkit reads it as the number it is.
    assert isinstance(tc.head_lr, float) and tc.head_lr == pytest.approx(1e-3)
    assert isinstance(tc.backbone_lr, float) and tc.backbone_lr == pytest.approx(1e-4)
    assert tc.lr_decay_per_layer == 0.5
    assert tc.epochs == 4 and tc.batch_size == 32 and tc.mixed_precision is True
    assert tc.early_stopping_patience == 3 and tc.warmup_steps == 50
    assert cfg.data.source == "rotten_tomatoes" and cfg.data.limit == 2000


def test_example_quickstart_loads():
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "examples" / "quickstart.yaml")
    assert cfg.transfer_config.source_model == "minilm-l6"
    assert cfg.transfer_config.head_lr == pytest.approx(1e-3)


def test_exponent_forms_are_floats():
    raw = parse_yaml("a: 1e-3\nb: 3E-4\nc: -2e5\nd: 1.5e-3\ne: 10\nf: '1e-3'\n")
    assert raw["a"] == pytest.approx(1e-3) and isinstance(raw["a"], float)
    assert raw["b"] == pytest.approx(3e-4) and isinstance(raw["b"], float)
    assert raw["c"] == pytest.approx(-2e5)
    assert raw["d"] == pytest.approx(1.5e-3)
    assert raw["e"] == 10 and isinstance(raw["e"], int)
    assert raw["f"] == "1e-3"  # quoted stays a string


def test_resolved_config_round_trips(write):
    cfg = load_config(write(DESIGN_CONFIG))
    again = validate(parse_yaml(dump_config(cfg)))
    assert again == cfg


# --------------------------------------------------------------------------------------------------
# Unknown keys: dotted path and the closest valid key
# --------------------------------------------------------------------------------------------------


def test_unknown_top_level_key(write):
    msg = _error(write(DESIGN_CONFIG.replace("data:", "dta:")))
    assert "dta" in msg and "'data'" in msg


def test_unknown_key_in_transfer_config(write):
    msg = _error(write(DESIGN_CONFIG.replace("  head_lr: 1e-3", "  hed_lr: 1e-3")))
    assert "transfer_config.hed_lr" in msg
    assert "did you mean 'head_lr'" in msg


def test_unknown_nested_key(write):
    text = DESIGN_CONFIG.replace("  head_lr: 1e-3", "  head_lr: 1e-3\n  head:\n    typ: mlp")
    msg = _error(write(text))
    assert "transfer_config.head.typ" in msg
    assert "did you mean 'type'" in msg


def test_unknown_key_in_data(write):
    msg = _error(write(DESIGN_CONFIG.replace("  limit: 2000", "  limt: 2000")))
    assert "data.limt" in msg
    assert "did you mean 'limit'" in msg


def test_unknown_key_in_schedule_entry(write):
    text = DESIGN_CONFIG.replace("{epoch: 1, unfreeze: last_block}",
                                 "{epoch: 1, unfrezee: last_block}")
    msg = _error(write(text))
    assert "transfer_config.unfreeze_schedule[0].unfrezee" in msg
    assert "'unfreeze'" in msg


def test_missing_required_key_is_named(write):
    msg = _error(write(DESIGN_CONFIG.replace("  source: rotten_tomatoes", "  seed2: 0")))
    assert "data.source" in msg


# --------------------------------------------------------------------------------------------------
# YAML problems
# --------------------------------------------------------------------------------------------------


def test_concept_schedule_form_gives_line_column_and_fix(write):
    msg = _error(write(CONCEPT_SCHEDULE))
    line = CONCEPT_SCHEDULE.splitlines().index('    - epoch: 3, unfreeze: "last_block"') + 1
    assert f"line {line}" in msg
    assert "column 7" in msg  # where `epoch` starts on that line
    assert "{epoch: 3, unfreeze: last_block}" in msg


def test_concept_schedule_form_on_every_entry(write):
    text = DESIGN_CONFIG.replace(
        "    - {epoch: 1, unfreeze: last_block}", "    - epoch: 1, unfreeze: last_block"
    ).replace("    - {epoch: 2, unfreeze: last_two_blocks}",
              "    - epoch: 2, unfreeze: last_two_blocks")
    msg = _error(write(text))
    line = text.splitlines().index("    - epoch: 1, unfreeze: last_block") + 1
    assert f"line {line}" in msg
    assert "{epoch: 1, unfreeze: last_block}" in msg


def test_other_yaml_errors_name_the_line(write):
    text = DESIGN_CONFIG.replace("  epochs: 4", "  epochs: [4")
    msg = _error(write(text))
    assert "line" in msg and "column" in msg


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object/apply:os.system ['echo pwned']",
        "!!python/object:collections.OrderedDict {}",
        "!!python/name:os.system",
    ],
)
def test_python_tags_are_refused(write, tag, capfd):
    text = DESIGN_CONFIG.replace("  scheduler: cosine", f"  scheduler: {tag}")
    msg = _error(write(text))
    line = text.splitlines().index(f"  scheduler: {tag}") + 1
    assert f"line {line}" in msg
    assert "pwned" not in capfd.readouterr().out


def test_missing_file_and_non_mapping(write, tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match="mapping"):
        load_config(write("- a\n- b\n"))


# --------------------------------------------------------------------------------------------------
# --set overrides
# --------------------------------------------------------------------------------------------------


def test_set_overrides_every_kind_of_value(write):
    cfg = load_config(
        write(DESIGN_CONFIG),
        [
            "transfer_config.head_lr=3e-4",  # float, exponent form
            "transfer_config.dropout=0.25",  # float
            "transfer_config.epochs=6",  # int
            "transfer_config.mixed_precision=false",  # bool
            "transfer_config.head.type=mlp",  # nested, section absent from the file
            "transfer_config.head.hidden_size=64",
            (
                "transfer_config.unfreeze_schedule=[{epoch: 1, unfreeze: last_3_blocks}, "
                "{epoch: 5, unfreeze: all}]"
            ),  # list
            "data.source=fashion_mnist",  # string
            "data.limit=100",
        ],
    )
    tc = cfg.transfer_config
    assert tc.head_lr == pytest.approx(3e-4) and isinstance(tc.head_lr, float)
    assert tc.dropout == pytest.approx(0.25)
    assert tc.epochs == 6
    assert tc.mixed_precision is False
    assert tc.head.type == "mlp" and tc.head.hidden_size == 64
    assert [(s.epoch, s.unfreeze) for s in tc.unfreeze_schedule] == [
        (1, "last_3_blocks"), (5, "all")
    ]
    assert cfg.data.source == "fashion_mnist" and cfg.data.limit == 100


def test_set_can_change_strategy_and_clear_schedule(write):
    cfg = load_config(
        write(DESIGN_CONFIG),
        ["transfer_config.freeze_strategy=top_n_unfrozen", "transfer_config.top_n=3",
         "transfer_config.unfreeze_schedule=[]"],
    )
    assert cfg.transfer_config.freeze_strategy == "top_n_unfrozen"
    assert cfg.transfer_config.top_n == 3


@pytest.mark.parametrize(
    "override, expected",
    [
        ("transfer_config.hed_lr=1e-3", "did you mean 'head_lr'"),
        ("transfer_config.head.typ=mlp", "did you mean 'type'"),
        ("data.limt=5", "did you mean 'limit'"),
    ],
)
def test_unknown_set_key_is_refused(write, override, expected):
    msg = _error(write(DESIGN_CONFIG), [override])
    assert override.split("=")[0] in msg
    assert expected in msg


def test_set_without_equals_is_refused(write):
    msg = _error(write(DESIGN_CONFIG), ["transfer_config.head_lr"])
    assert "KEY=VALUE" in msg


def test_set_into_a_value_is_refused(write):
    msg = _error(write(DESIGN_CONFIG), ["transfer_config.head_lr.x=1"])
    assert "transfer_config.head_lr" in msg


# --------------------------------------------------------------------------------------------------
# Values out of range, schedules that cannot run
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, where",
    [
        ("transfer_config.head_lr=0", "transfer_config.head_lr"),
        ("transfer_config.backbone_lr=-1e-4", "transfer_config.backbone_lr"),
        ("transfer_config.batch_size=0", "transfer_config.batch_size"),
        ("transfer_config.epochs=0", "transfer_config.epochs"),
        ("transfer_config.lr_decay_per_layer=0", "transfer_config.lr_decay_per_layer"),
        ("transfer_config.dropout=1.0", "transfer_config.dropout"),
        ("transfer_config.head_lr=fast", "transfer_config.head_lr"),
        ("transfer_config.freeze_strategy=frozen", "all_frozen"),
        ("data.limit=0", "data.limit"),
        ("data.val_fraction=0.85", "val_fraction"),
    ],
)
def test_out_of_range_values_are_refused(write, override, where):
    msg = _error(write(DESIGN_CONFIG), [override])
    assert where in msg


def test_gradual_needs_a_schedule(write):
    msg = _error(write(DESIGN_CONFIG), ["transfer_config.unfreeze_schedule=[]"])
    assert "unfreeze_schedule" in msg and "gradual" in msg


def test_schedule_past_the_last_epoch_is_refused(write):
    msg = _error(write(DESIGN_CONFIG), ["transfer_config.epochs=3"])
    assert "epoch 3" in msg and "epochs" in msg


def test_schedule_epochs_must_increase(write):
    msg = _error(
        write(DESIGN_CONFIG),
        [("transfer_config.unfreeze_schedule=[{epoch: 2, unfreeze: all}, "
          "{epoch: 1, unfreeze: last_block}]")],
    )
    assert "increase" in msg


def test_unknown_selector_is_refused_in_the_config(write):
    msg = _error(
        write(DESIGN_CONFIG),
        ["transfer_config.unfreeze_schedule=[{epoch: 1, unfreeze: top_block}]"],
    )
    assert "transfer_config.unfreeze_schedule[0].unfreeze" in msg
    assert "last_block" in msg


def test_schedule_with_another_strategy_is_refused(write):
    msg = _error(write(DESIGN_CONFIG), ["transfer_config.freeze_strategy=none"])
    assert "unfreeze_schedule" in msg


def test_every_error_is_reported_at_once(write):
    msg = _error(write(DESIGN_CONFIG), ["transfer_config.batch_size=0", "data.limt=1"])
    assert "transfer_config.batch_size" in msg and "data.limt" in msg


def test_config_is_typed():
    cfg = validate({"transfer_config": {"source_model": "minilm-l6", "freeze_strategy": "none"},
                    "data": {"source": "rotten_tomatoes"}})
    assert isinstance(cfg, Config)
    assert cfg.transfer_config.freeze_strategy == "none"
