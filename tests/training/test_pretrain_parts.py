"""The pretraining run's parts without processes: its config, schedule, data order and masks."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch

from mofo.training.config import ConfigError, apply_overrides, parse_value
from mofo.training.masking import TokenGrid, box_cells, clip_boxes
from mofo.training.models import VideoMAE, config
from mofo.training.pretrain import (
    EpochSampler,
    MaskingSection,
    learning_rate,
    load_config,
    make_masks,
    param_groups,
    pretrain_ds_config,
)

CONFIGS = Path(__file__).parents[2] / "training" / "configs"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("pretrain_*.toml")))
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.data.source and cfg.model_config().name == cfg.model.name


def test_base_config_is_the_papers_recipe():
    cfg = load_config(CONFIGS / "pretrain_vit_base_ssv2.toml")
    assert cfg.model_config().grid.tokens == 1568
    assert (cfg.masking.kind, cfg.masking.ratio, cfg.masking.inside_ratio) == ("mofo", 0.9, 0.75)
    assert cfg.optim.betas == (0.9, 0.95) and cfg.optim.weight_decay == 0.05
    assert cfg.optim.base_lr == 1.5e-4 and cfg.run.precision == "auto"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_overrides_and_types(tmp_path):
    path = _write(tmp_path, '[data]\nsource = "x.json"\nboxes = "none"\n[masking]\nkind = "tube"\n')
    cfg = load_config(
        path,
        [
            "optim.epochs=3",
            "optim.betas=[0.8, 0.9]",
            "run.out=elsewhere",
            "deepspeed.zero_optimization.stage=2",
        ],
    )
    assert cfg.optim.epochs == 3 and cfg.optim.betas == (0.8, 0.9) and cfg.run.out == "elsewhere"
    assert pretrain_ds_config(cfg, "fp32")["zero_optimization"] == {"stage": 2}
    assert load_config(path, ["model.norm_targets=false"]).model_config().norm_targets is False
    assert parse_value("1e-4") == 1e-4 and parse_value("abc") == "abc" and parse_value("true")
    assert apply_overrides({"a": {"b": 1}}, ["a.c=2"]) == {"a": {"b": 1, "c": 2}}


TUBE = '[data]\nsource = "x"\n[masking]\nkind = "tube"\n'


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ('[data]\nsource = "x"\nbox = "none"\n', [], "unknown key 'box'"),
        (
            '[data]\nsource = "x"\n[masking]\nkind = "tube"\n[optim]\nepochs = "ten"\n',
            [],
            "optim].epochs: 'ten' is not int",
        ),
        ('[data]\nsource = "x"\n[masking]\nkind = "bad"\n', [], "is not one of 'mofo', 'tube'"),
        ('[data]\nsource = "x"\n', [], "MOFO masking needs motion boxes"),
        (TUBE + '[model]\nname = "vit_h"\n', [], "unknown model 'vit_h'"),
        ("[data]\nsource = \n", [], "is not valid TOML"),
        (TUBE + "[trainer]\n", [], "unknown section [trainer]"),
        (TUBE, ["epochs=3"], "expected section.key=value"),
        (TUBE, ["masking.ratio=1.0"], "ratio must be"),
    ],
)
def test_bad_configs_say_what_is_wrong(tmp_path, text, overrides, message):
    with pytest.raises(ConfigError, match=None) as raised:
        load_config(_write(tmp_path, text), overrides)
    assert message in str(raised.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.toml")


def test_learning_rate_warms_up_then_falls_to_the_minimum():
    lrs = [learning_rate(s, 1e-3, 1e-5, warmup=10, total=100) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in itertools.pairwise(lrs[:10]))  # warmup rises
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))  # cosine falls
    assert lrs[55] == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert learning_rate(100, 1e-3, 1e-5, 10, 100) == pytest.approx(1e-5)


def test_epoch_order_splits_ranks_and_resumes_where_it_stopped():
    ranks = [EpochSampler(size=23, world=2, rank=r, per_rank=8, seed=3) for r in range(2)]
    for s in ranks:
        s.start(epoch=0)
    first = [list(s) for s in ranks]
    assert all(len(f) == 8 for f in first) and not set(first[0]) & set(first[1])
    ranks[0].start(epoch=1)
    assert list(ranks[0]) != first[0]  # a new order each epoch
    ranks[0].start(epoch=0, skip=5)
    assert list(ranks[0]) == first[0][5:] and len(ranks[0]) == 3


def test_masks_are_new_each_step_and_the_same_when_repeated():
    grid = TokenGrid(4, 32, 32, 8, 2)
    boxes = torch.tensor([[4.0, 4.0, 20.0, 20.0]]).expand(4, 4, 4).clone()
    batch = {
        "video": torch.zeros(4, 3, 4, 32, 32),
        "boxes": boxes,
        "valid": torch.ones(4, 4, dtype=torch.bool),
    }
    masking = MaskingSection(ratio=0.75, inside_ratio=0.75)
    assert masking.remainder == "anywhere"
    (a, counts), (b, _), (again, _) = (make_masks(batch, grid, masking, s) for s in (1, 2, 1))
    assert torch.equal(a, again) and not torch.equal(a, b)
    assert (a.sum(1) == 2 * 12).all()  # int(0.75 * 16) per slot, 2 slots
    inside = box_cells(boxes, batch["valid"], grid)  # 5 cells at least half covered per slot
    assert (inside.sum(-1) == 5).all()
    assert (a.view(4, 2, 16) & inside).sum(-1).ge(4).all()  # ceil(0.75 * 5) always hidden
    assert len({tuple(m.tolist()) for m in a}) == 4  # every sample its own mask
    # The counts the step log turns into hidden shares: 4 samples x 2 slots x 5 inside cells.
    assert counts["tokens_inside"] == 40 and counts["tokens_outside"] == 4 * 2 * 11
    assert counts["hidden_inside"] == float((a.view(4, 2, 16) & inside).sum())
    assert counts["hidden_inside"] + counts["hidden_outside"] == 4 * 24
    outside = MaskingSection(ratio=0.75, inside_ratio=0.75, remainder="outside")
    _, exact = make_masks(batch, grid, outside, 1)
    assert exact["hidden_inside"] == 4 * 2 * 4  # the quota exactly: ceil(0.75 * 5) per slot
    tube, tube_counts = make_masks(batch, grid, MaskingSection(kind="tube", ratio=0.75), 1)
    assert (tube.sum(1) == 24).all() and tube_counts["tokens_inside"] == 40


def test_clip_boxes_unite_the_valid_frames():
    boxes = torch.tensor([[[0, 0, 4, 4], [10, 2, 12, 20], [50, 50, 60, 60.0]]])
    union, valid = clip_boxes(boxes, torch.tensor([[True, True, False]]))
    assert union.tolist() == [[0, 0, 12, 20]] and valid.tolist() == [True]
    union, valid = clip_boxes(boxes, torch.zeros(1, 3, dtype=torch.bool))
    assert union.tolist() == [[0, 0, 0, 0]] and valid.tolist() == [False]


def test_no_weight_decay_on_biases_norms_and_the_mask_token():
    model = VideoMAE(config("vit_tiny_patch8_tubelet2_32px"))
    decay, plain = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in plain["params"]} >= {
        "mask_token",
        "encoder.norm.weight",
        "head.bias",
    }
    assert all(p.ndim > 1 for p in decay["params"]) and decay["weight_decay"] == 0.05
