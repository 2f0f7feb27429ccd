"""``mofo evaluate --config FILE``: a finetuned classifier scored on the evaluation split.

The config is the finetuning run's, with an ``[evaluate]`` table: the evaluation split
(``source``; never seen by training or model selection), the weights (``run.out/best.pt``
unless named: a ``.pt`` of finetuning, an export folder, or a VideoMAE finetuned checkpoint), the
views and the saliency maps. Every clip of the split is scored once, over
``clips × crops`` views (Something-Something V2: 2 × 3), the views' softmax averaged; a clip that
cannot be decoded is left out and named, the rest are scored.

``evaluate.out`` (``run.out/eval`` unless named) receives:

- ``results.json``: per task, top-1 and top-5 over the views and for the single first view,
  per-class accuracy and the confusion matrix; Epic-Kitchens' action (verb and noun) besides;
  the clips scored, failed and without boxes; the weights and their held-out figures.
- ``predictions.jsonl``: each clip's classes and its five best of each task, with probabilities.
- ``confusion_<task>.png``: the confusion matrix, rows normalised.
- ``saliency/<clip>_<task>.png``: Grad-CAM maps of chosen clips with their motion boxes
  (``training/saliency.py``), and ``saliency.json`` saying what each shows.

Runs in one process (a GPU when there is one), or in ``--nproc`` processes that score a share
each; rank 0 writes the results, and the headline figures to TensorBoard (``eval/...`` at the
weights' finetuning step, in the run's ``run.tensorboard`` folder).
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from mofo.training.classifier import VideoClassifier
from mofo.training.config import ConfigError
from mofo.training.data import open_labelled, sampling_of
from mofo.training.export import SavedModel
from mofo.training.finetune_config import FinetuneConfig
from mofo.training.finetune_config import load_config as load_finetune_config
from mofo.training.metrics import average_views, confusion_matrix, per_class_accuracy, summary
from mofo.training.models import MAEConfig, config
from mofo.training.pretrained import WeightsError, read_any, videomae_classifier
from mofo.training.runs import (
    Board,
    board_dir,
    data_loader,
    init_processes,
    process_main,
    resolve_precision,
)

TOP = 5  # predictions kept per clip and task


def load_config(path: Path | None, overrides: list[str] = ()) -> FinetuneConfig:
    cfg = load_finetune_config(path, overrides)
    e, where = cfg.evaluate, str(path) if path else "config"
    checks = [
        (bool(e.source), "[evaluate] source is required (the evaluation split)"),
        (e.clips >= 1 and e.crops >= 1, "[evaluate] clips and crops must be >= 1"),
        (e.batch_size >= 1, "[evaluate] batch_size must be >= 1"),
        (e.saliency >= 0 and e.saliency_layer >= 1, "[evaluate] saliency >= 0, layer >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{where}: {message}")
    return cfg


def weights_path(cfg: FinetuneConfig) -> Path:
    return Path(cfg.evaluate.weights or Path(cfg.run.out) / "best.pt")


def out_path(cfg: FinetuneConfig) -> Path:
    return Path(cfg.evaluate.out or Path(cfg.run.out) / "eval")


def check_inputs(cfg: FinetuneConfig) -> None:
    """What must exist before any process starts: the evaluation split and the weights."""
    if not Path(cfg.evaluate.source).exists():
        raise ConfigError(f"[evaluate] source {cfg.evaluate.source}: no such file or folder")
    if not weights_path(cfg).exists():
        raise ConfigError(
            f"[evaluate] weights {weights_path(cfg)}: no such file or folder (finetune first, "
            "or name one)"
        )


def load_classifier(
    path: Path, encoder: MAEConfig | None = None, classes: dict[str, int] | None = None
) -> tuple[VideoClassifier, dict[str, Any]]:
    """The classifier at ``path`` and what is known of it (step, held-out figures): a
    ``best.pt`` / ``model.pt`` of finetuning, an export folder, a run's checkpoint folder, or a
    VideoMAE finetuned checkpoint, rebuilt on ``encoder`` (the config's model) for the one task
    of ``classes`` (``training/pretrained.py``)."""
    try:
        found = read_any(Path(path))
        if not isinstance(found, SavedModel):
            if encoder is None or classes is None:
                raise WeightsError(f"{path}: a VideoMAE checkpoint needs the model and classes")
            model = videomae_classifier(found, encoder, classes, str(path))
            return model, {"source": str(path), "format": "videomae"}
        if found.kind != "classifier":
            raise WeightsError(f"{path}: holds a pretraining model, not a classifier")
        return found.build(), found.about
    except WeightsError as exc:
        raise ConfigError(f"{path}: not a finetuned classifier ({exc})") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(
            f"{path}: not a finetuned classifier ({type(exc).__name__}: {exc})"
        ) from None


def class_names(source) -> dict[str, list[str]] | None:
    """Class names per task where the source has them (SSV2's labels.json)."""
    from mofo.shared.sources import ssv2_classes

    if source.kind != "ssv2":
        return None
    names = ssv2_classes(source.source) or {}
    return {"action": [n for n, _ in sorted(names.items(), key=lambda kv: kv[1])]}


@torch.no_grad()
def predict(model, loader, device, dtype, progress=None) -> dict[str, Any]:
    """Each clip's view logits (B, V, C) per task, its labels, index and box state."""
    logits: dict[str, list[torch.Tensor]] = {}
    labels: dict[str, list[torch.Tensor]] = {}
    indices, boxes_state, errors = [], [], []
    autocast = (
        torch.autocast(device.type, dtype=dtype)
        if dtype != torch.float32
        else contextlib.nullcontext()
    )
    for batch in loader:
        b, v = batch["video"].shape[:2]
        video = batch["video"].flatten(0, 1).to(device, non_blocking=True)
        with autocast:
            out = model(
                video,
                batch["boxes"].flatten(0, 1).to(device),
                batch["valid"].flatten(0, 1).to(device),
            )
        for task, value in out.items():
            logits.setdefault(task, []).append(value.float().cpu().reshape(b, v, -1))
            labels.setdefault(task, []).append(batch["labels"][task])
        indices.append(batch["index"])
        boxes_state += batch["box"]
        errors += batch["errors"]
        if progress is not None:
            progress(b)
    return {
        "logits": {t: torch.cat(x) for t, x in logits.items()},
        "labels": {t: torch.cat(x) for t, x in labels.items()},
        "index": torch.cat(indices) if indices else torch.zeros(0, dtype=torch.int64),
        "box": boxes_state,
        "errors": errors,
    }


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Every rank's predictions as one, each clip once (a corrupt clip's replacement may have
    been scored twice: once as itself, once in its place), ordered by clip."""
    parts = [p for p in parts if len(p["index"])]  # a rank may have had no clip
    tasks = parts[0]["logits"].keys()
    index = torch.cat([p["index"] for p in parts])
    first = {}
    for position, i in enumerate(index.tolist()):
        first.setdefault(i, position)
    keep = torch.tensor([first[i] for i in sorted(first)], dtype=torch.int64)
    boxes_state = [s for p in parts for s in p["box"]]
    return {
        "logits": {t: torch.cat([p["logits"][t] for p in parts])[keep] for t in tasks},
        "labels": {t: torch.cat([p["labels"][t] for p in parts])[keep] for t in tasks},
        "index": index[keep],
        "box": [boxes_state[k] for k in keep.tolist()],
        "errors": sorted({e for p in parts for e in p["errors"]}),
    }


def _class_row(c: int, names, matrix: torch.Tensor, accuracy: torch.Tensor) -> dict[str, Any]:
    row: dict[str, Any] = {"class": c}
    if names:
        row["name"] = names[c]
    row["clips"] = int(matrix[c].sum())
    row["top1"] = None if accuracy[c].isnan() else round(100.0 * float(accuracy[c]), 3)
    return row


def figures(merged: dict[str, Any], classes: dict[str, int], names) -> dict[str, Any]:
    """results.json's figures: over all views, over the first view, per class, confusion."""
    views = next(iter(merged["logits"].values())).shape[1]
    averaged = {t: average_views(x.flatten(0, 1), views) for t, x in merged["logits"].items()}
    first = {t: x[:, 0] for t, x in merged["logits"].items()}
    out: dict[str, Any] = {
        "views": summary(averaged, merged["labels"]),
        "first_view": summary(first, merged["labels"]),
        "tasks": {},
    }
    for task, count in classes.items():
        matrix = confusion_matrix(averaged[task], merged["labels"][task], count)
        accuracy = per_class_accuracy(matrix)
        task_names = (names or {}).get(task)
        out["tasks"][task] = {
            "classes": count,
            "top1": out["views"][f"{task}_top1"],
            "top5": out["views"][f"{task}_top5"],
            "per_class": [_class_row(c, task_names, matrix, accuracy) for c in range(count)],
            "confusion": matrix.tolist(),
        }
    return out


def write_outputs(out: Path, cfg: FinetuneConfig, items, merged, classes, names, saved) -> dict:
    from mofo.training.visualise import confusion_image

    out.mkdir(parents=True, exist_ok=True)
    e = cfg.evaluate
    scored = set(merged["index"].tolist())
    result = {
        "weights": str(weights_path(cfg)),
        "source": e.source,
        "views": {"clips": e.clips, "crops": e.crops},
        "clips": len(items),
        "scored": len(scored),
        "failed": merged["errors"],
        "missing_boxes": sum(s == "missing" for s in merged["box"]),
        "held_out": saved.get("held_out", {}),
        "finetuned_steps": saved.get("step"),
        **figures(merged, classes, names),
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    with (out / "predictions.jsonl").open("w") as handle:
        for row, index in enumerate(merged["index"].tolist()):
            line: dict[str, Any] = {"video": items[index].video, "labels": items[index].labels}
            for task, logits in merged["logits"].items():
                probs = logits[row].softmax(dim=-1).mean(dim=0)
                best = probs.topk(min(TOP, probs.numel()))
                line[task] = [
                    [int(c), round(float(p), 5)]
                    for p, c in zip(best.values, best.indices, strict=True)
                ]
            handle.write(json.dumps(line) + "\n")
    for task in classes:
        matrix = result["tasks"][task]["confusion"]
        task_names = (names or {}).get(task)
        confusion_image(matrix, task_names).save(out / f"confusion_{task}.png")
    return result


def draw_saliency(model, dataset, cfg: FinetuneConfig, out: Path, device) -> list[dict]:
    """Grad-CAM maps of the chosen clips (centre view) with their boxes, one image per task."""
    from mofo.training.saliency import grad_cam, saliency_image, save_saliency

    e = cfg.evaluate
    if e.saliency_clips:
        where = {item.video: i for i, item in enumerate(dataset.items)}
        unknown = [c for c in e.saliency_clips if c not in where]
        if unknown:
            raise ConfigError(f"[evaluate] saliency_clips: not in {e.source}: {unknown[:5]}")
        chosen = [where[c] for c in e.saliency_clips]
    else:
        chosen = list(range(min(e.saliency, len(dataset))))
    layer = min(e.saliency_layer, len(model.encoder.blocks))
    shown = []
    for index in chosen:
        sample = dataset[index]
        if sample["index"] != index:
            continue  # the clip could not be decoded; the results name it
        view = (sample["video"].shape[0] - 1) // 2 if dataset.views else None
        video, boxes, valid = (
            sample[k] if view is None else sample[k][view] for k in ("video", "boxes", "valid")
        )
        for task in model.cfg.classes:
            cam, predicted = grad_cam(
                model,
                video[None].to(device),
                boxes[None].to(device),
                valid[None].to(device),
                task,
                layer,
            )
            name = dataset.items[index].video.replace("/", "_")
            path = save_saliency(
                out / "saliency" / f"{name}_{task}.png",
                [saliency_image(video, cam[0].cpu(), boxes, valid)],
            )
            shown.append(
                {
                    "video": dataset.items[index].video,
                    "task": task,
                    "layer": layer,
                    "true": dataset.items[index].labels.get(task),
                    "predicted": int(predicted[0]),
                    "image": str(path),
                }
            )
    (out / "saliency.json").write_text(json.dumps(shown, indent=1))
    return shown


def evaluate(cfg: FinetuneConfig, resume: bool = True) -> dict[str, Any]:
    """Score the weights on the evaluation split and write the results (``resume`` is unused:
    an evaluation starts afresh)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from mofo.training.datasets import VideoClips, collate

    check_inputs(cfg)
    rank, world, local = init_processes()
    console = Console(stderr=True, soft_wrap=True)
    e, d = cfg.evaluate, cfg.data
    source, boxes, classes = open_labelled(replace(d, source=e.source))
    model, saved = load_classifier(weights_path(cfg), config(cfg.model.name), classes)
    if classes != model.cfg.classes:
        raise ConfigError(f"{e.source}: classes {classes} are not the model's {model.cfg.classes}")
    grid = model.cfg.encoder.grid

    def clips(sampling: str, **views: Any) -> VideoClips:
        """The evaluation split's clips as the model sees them (no augmentation)."""
        return VideoClips(
            source.items,
            source.root,
            boxes,
            frames=grid.frames,
            rate=d.rate,
            size=grid.height,
            sampling=sampling,
            train=False,
            decode_short_side=d.decode_short_side,
            max_replacements=d.max_replacements,
            **views,
        )

    dataset = clips(sampling_of(d, source.kind), views=(e.clips, e.crops))
    device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    _, dtype = resolve_precision(cfg.run.precision)
    model.to(device).eval()
    mine = list(range(rank, len(dataset), world))
    loader = data_loader(
        dataset,
        d.workers,
        batch_size=e.batch_size,
        sampler=mine,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
    )
    progress = Progress(
        TextColumn("evaluate"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        disable=rank != 0,
    )
    with progress:
        bar = progress.add_task("clips", total=len(mine))
        part = predict(model, loader, device, dtype, lambda n: progress.advance(bar, n))
    parts: list[Any] = [None] * world
    torch.distributed.all_gather_object(parts, part)
    result: dict[str, Any] = {}
    if rank == 0:
        out = out_path(cfg)
        names = class_names(source)
        result = write_outputs(out, cfg, dataset.items, merge(parts), classes, names, saved)
        if e.saliency or e.saliency_clips:
            single = clips(dataset.sampling)
            result["saliency"] = draw_saliency(model, single, cfg, out, device)
        headline = ", ".join(f"{k} {v:.1f} %" for k, v in result["views"].items())
        console.print(
            f"evaluated {result['scored']} of {result['clips']} clips "
            f"({e.clips} x {e.crops} views): {headline}; results in "
            f"{out / 'results.json'}",
            highlight=False,
        )
        if result["failed"]:
            console.print(
                f"warning: {len(result['failed'])} clips could not be decoded and "
                f"were left out: {result['failed'][:3]}",
                highlight=False,
            )
        board = Board(board_dir(Path(cfg.run.out), cfg.run.tensorboard), True)
        at = int(saved.get("step") or 0)  # the finetuning step of the weights, beside held_out/
        board.scalars(at, result["views"], prefix="eval")
        board.close()
        print(json.dumps({"results": str(out / "results.json"), **result["views"]}), flush=True)
    torch.distributed.barrier()
    return result


run = evaluate  # what `mofo evaluate` calls


def main(argv: list[str] | None = None) -> int:
    """``python -m mofo.training.evaluate --config FILE [--set k=v]...`` (per process)."""
    return process_main("python -m mofo.training.evaluate", load_config, evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())
