"""Train one stage of the cascade: ``python -m cascade_model.training --stage roi|organs ...``.

Both stages share ``plans.json`` in the output folder: the first run computes the intensity
normalisation from the training set and writes the plans; later runs reuse them (so the two
networks see identical inputs).  A checkpoint (network, optimiser, step, sampler state) is saved
every ``--checkpoint-every`` steps under ``<out>/checkpoints/``; ``--resume`` continues from it.
The final state dict is written where the plans say (``roi.pt`` / ``organs.pt``).
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from cascade_model.data import PatchSampler, find_cases, intensity_plan, prepare_case
from cascade_model.losses import partial_dice_ce_loss
from cascade_model.network import UNet3D
from cascade_model.plans import NUM_CLASSES, Plans, StagePlan

__all__ = ["train_stage", "default_plans", "main"]


def default_plans(records: list, *, seed: int) -> Plans:
    """The smoke-test baseline's plans: 5 mm ROI grid, 3 x 3 x 4 mm organ grid, small U-Nets."""
    return Plans(
        intensity=intensity_plan(records, seed=seed),
        roi=StagePlan(spacing_mm=(5.0, 5.0, 5.0), patch_size=(64, 64, 64), features=(4, 8, 16, 32),
                      num_classes=2, weights="roi.pt"),
        organs=StagePlan(spacing_mm=(3.0, 3.0, 4.0), patch_size=(48, 48, 48), features=(8, 16, 32, 64),
                         num_classes=NUM_CLASSES, weights="organs.pt"),
    )


def train_stage(
    *,
    stage: str,
    datasets: list[Path],
    annotations: list[Path],
    out: Path,
    steps: int,
    batch_size: int = 2,
    learning_rate: float = 3e-3,
    seed: int = 0,
    checkpoint_every: int = 50,
    resume: bool = False,
    dataset_weights: list[float] | None = None,
    patch_size: tuple[int, int, int] | None = None,
    stop_after: int | None = None,
    init: Path | None = None,
    progress: bool = True,
) -> list[float]:
    """Train ``stage`` (``"roi"`` or ``"organs"``) for ``steps`` steps in total.

    Parameters
    ----------
    patch_size
        Overrides the plans' patch size (and is saved into them); must fit the U-Net divisor.
    stop_after
        Stop after this step with a checkpoint (the learning-rate schedule still follows
        ``steps``), to resume later, possibly with a larger ``steps``.
    init
        A state dict (``organs.pt`` / ``roi.pt``) to start from instead of random weights: a
        fine-tuning run with a fresh optimiser and schedule. Ignored when a checkpoint is resumed.

    Returns
    -------
    list of float
        The loss of each step run by this call.

    Raises
    ------
    ValueError
        For an unknown stage.
    """
    if stage not in ("roi", "organs"):
        raise ValueError(f"stage must be 'roi' or 'organs', got {stage!r}")
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    records = find_cases(datasets, annotations)
    plans_path = out / "plans.json"
    plans = Plans.load(plans_path) if plans_path.is_file() else default_plans(records, seed=seed)
    if patch_size is not None:
        plans = replace(plans, **{stage: replace(getattr(plans, stage), patch_size=tuple(patch_size))})
    plans.save(plans_path)
    plan: StagePlan = getattr(plans, stage)
    cases = [prepare_case(r, plans.intensity, plan.spacing_mm, plans.roi_margin_mm, binary=stage == "roi")
             for r in records]
    sampler = PatchSampler(cases, plan.patch_size, seed=seed, dataset_weights=dataset_weights,
                           foreground_fraction=0.0 if stage == "roi" else 0.5)
    net = UNet3D(1, plan.num_classes, plan.features)
    if init is not None:
        net.load_state_dict(torch.load(init, map_location="cpu", weights_only=True))
    optimiser = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=1e-5)
    checkpoint = out / "checkpoints" / f"{stage}.ckpt"
    start = 0
    if resume and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        net.load_state_dict(state["network"])
        optimiser.load_state_dict(state["optimiser"])
        sampler.rng = pickle.loads(state["sampler_rng"])
        torch.set_rng_state(state["torch_rng"])
        start = int(state["step"])
    losses = []
    net.train()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(f"{stage}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"))
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(stage, total=steps, completed=start, loss=float("nan"))
        for step in range(start, min(steps, stop_after or steps)):
            # nnU-Net's polynomial decay: large steps early, fine ones at the end
            for group in optimiser.param_groups:
                group["lr"] = learning_rate * (1 - step / steps) ** 0.9
            images, labels, annotated = sampler.sample(batch_size)
            loss = partial_dice_ce_loss(net(images), labels, annotated)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
            optimiser.step()
            losses.append(loss.item())
            bar.update(task, advance=1, loss=float(np.mean(losses[-20:])))
            if (step + 1) % checkpoint_every == 0 or step + 1 in (steps, stop_after):
                checkpoint.parent.mkdir(exist_ok=True)
                torch.save({"network": net.state_dict(), "optimiser": optimiser.state_dict(),
                            "sampler_rng": pickle.dumps(sampler.rng), "torch_rng": torch.get_rng_state(),
                            "step": step + 1}, checkpoint)
                with (out / "checkpoints" / f"{stage}.log.jsonl").open("a") as log:
                    log.write(json.dumps({"step": step + 1, "loss_mean_last_50": float(np.mean(losses[-50:])),
                                          "time": time.time()}) + "\n")
    torch.save(net.state_dict(), out / plan.weights)
    return losses


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; ``--help`` lists the options."""
    parser = argparse.ArgumentParser(
        prog="python -m cascade_model.training", description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--stage", choices=("roi", "organs"), required=True)
    parser.add_argument("--dataset", type=Path, action="append", required=True,
                        help="nnU-Net-style folder (imagesTr/labelsTr or images/labels); repeatable")
    parser.add_argument("--dataset-weights", type=float, nargs="+", default=None,
                        help="relative sampling weight of each --dataset (default: equal)")
    parser.add_argument("--annotations", type=Path, action="append", default=[],
                        help="JSON {case_id: [annotated classes]}; repeatable")
    parser.add_argument("--out", type=Path, required=True, help="weights folder (plans.json, *.pt)")
    parser.add_argument("--steps", type=int, required=True, help="total optimiser steps")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--patch-size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"))
    parser.add_argument("--lr", type=float, default=3e-3, help="initial learning rate (AdamW)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--stop-after", type=int, default=None,
                        help="stop after this step (checkpointed); the schedule still follows --steps")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoints/<stage>.ckpt")
    parser.add_argument("--init", type=Path, default=None,
                        help="start from these weights (a state dict) with a fresh optimiser: fine-tuning")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train_stage(stage=args.stage, datasets=args.dataset, annotations=args.annotations, out=args.out,
                steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
                checkpoint_every=args.checkpoint_every, resume=args.resume,
                dataset_weights=args.dataset_weights, stop_after=args.stop_after, init=args.init,
                patch_size=tuple(args.patch_size) if args.patch_size else None)


if __name__ == "__main__":
    main()
