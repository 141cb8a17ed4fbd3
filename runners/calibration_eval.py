"""Calibration of next-token predictions on held-out text: expected calibration error (ECE) of
the top-1 token's confidence, with the reliability bins, on the validation split."""

from __future__ import annotations

import torch
from pydantic import Field

from runners.base import Runner, RunnerParams, StepContext, StepResult


class CalibrationParams(RunnerParams):
    seq_len: int = Field(256, ge=8, le=32768)
    blocks: int = Field(8, ge=1, le=10_000, description="validation blocks scored")
    bins: int = Field(10, ge=2, le=100)


def expected_calibration_error(conf: torch.Tensor, correct: torch.Tensor, bins: int) -> tuple[float, list]:
    """ECE = sum over equal-width confidence bins of |accuracy - mean confidence| x bin share."""
    edges = torch.linspace(0, 1, bins + 1)
    ece, table = 0.0, []
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            acc, c = float(correct[mask].float().mean()), float(conf[mask].mean())
            ece += abs(acc - c) * float(mask.float().mean())
            table.append((float(lo), float(hi), int(mask.sum()), acc, c))
    return ece, table


class CalibrationEval(Runner):
    id = "calibration-eval"
    Params = CalibrationParams
    summary = "expected calibration error of next-token confidence on the validation split"

    def run(self, ctx: StepContext, params: CalibrationParams) -> StepResult:
        model = ctx.model
        model.eval()
        ids = ctx.corpus.blocks("validation", params.seq_len, params.blocks)
        confs, hits = [], []
        with torch.no_grad():
            for row in ids.split(4):
                probs = torch.softmax(model(input_ids=row).logits[:, :-1].float(), -1)
                conf, pred = probs.max(-1)
                confs.append(conf.flatten())
                hits.append((pred == row[:, 1:]).flatten())
        conf, correct = torch.cat(confs), torch.cat(hits)
        ece, table = expected_calibration_error(conf, correct, params.bins)
        metrics = {"ece": ece, "top1_accuracy": float(correct.float().mean()),
                   "mean_confidence": float(conf.mean()), "tokens": float(len(conf))}
        notes = [f"ECE {ece:.4f} over {len(conf)} validation tokens: top-1 accuracy {metrics['top1_accuracy']:.3f} "
                 f"at mean confidence {metrics['mean_confidence']:.3f} ("
                 + ("over" if metrics["mean_confidence"] > metrics["top1_accuracy"] else "under") + "confident)"]
        return StepResult(model=ctx.model, metrics=metrics, notes=notes)
