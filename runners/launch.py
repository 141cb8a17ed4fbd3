"""Training steps under `accelerate launch`: data-parallel over N processes (gloo on CPU, NCCL on GPUs).

Every process draws the same global batch from a generator seeded by (seed, step) and trains on its
own rows of it; DDP averages the gradients, so N processes follow the loss curve of one process on
the whole batch (tests/runners/test_launch.py checks 2 CPU processes against 1). The runner saves
the step's model, launches the workers and loads what rank 0 saved:

    accelerate launch --cpu --num_processes 2 -m runners.launch --model IN --out OUT --steps 20

For several GPUs, FSDP or DeepSpeed: pass an accelerate config (docs/library-runners.md).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from pydantic import Field

from runners.base import Runner, RunnerParams, StepContext, StepFailed, StepResult


def global_batch(stream, step: int, seed: int, batch_size: int, seq_len: int):
    import torch
    gen = torch.Generator().manual_seed(seed * 100_003 + step)
    starts = torch.randint(0, len(stream) - seq_len, (batch_size,), generator=gen)
    return torch.stack([stream[s: s + seq_len] for s in starts.tolist()])


def train_worker(model_dir: str, out_dir: str, steps: int, lr: float, batch_size: int, seq_len: int,
                 seed: int, data: str | None = None) -> list[float]:
    """One process's share of data-parallel causal-LM training; rank 0 saves model and losses."""
    import torch
    from accelerate import Accelerator

    from runners.checkpoint import save_checkpoint
    from runners.data import load_corpus
    from runners.models import load_checkpoint
    acc = Accelerator(cpu=not torch.cuda.is_available())
    torch.manual_seed(seed)
    model, tok = load_checkpoint(model_dir)
    corpus = load_corpus(tok, data, seed=seed)
    if batch_size % acc.num_processes:
        raise SystemExit(f"batch_size {batch_size} does not split over {acc.num_processes} processes")
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model, opt = acc.prepare(model, opt)
    model.train()
    losses = []
    for step in range(steps):
        ids = global_batch(corpus.train, step, seed, batch_size, seq_len)
        mine = ids[acc.process_index::acc.num_processes].to(acc.device)
        loss = model(input_ids=mine, labels=mine).loss
        acc.backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(acc.reduce(loss.detach(), reduction="mean")))
    acc.wait_for_everyone()
    if acc.is_main_process:
        out = Path(out_dir)
        save_checkpoint(acc.unwrap_model(model).eval(), tok, out / "model")
        (out / "losses.json").write_text(json.dumps({"losses": losses, "processes": acc.num_processes}))
    acc.end_training()
    return losses


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(model_dir: Path, out_dir: Path, processes: int, steps: int, lr: float, batch_size: int,
           seq_len: int, seed: int, data: str | None = None, timeout: float = 3600) -> dict:
    """Run train_worker in `processes` processes through `accelerate launch`; return losses.json."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port())]
    if processes > 1:  # torchrun-style workers; without CUDA the workers' Accelerator(cpu=True) picks gloo
        cmd.append("--multi_gpu")
    else:
        cmd.append("--cpu")
    cmd += ["-m", "runners.launch", "--model", str(model_dir), "--out", str(out_dir), "--steps", str(steps),
            "--lr", str(lr), "--batch-size", str(batch_size), "--seq-len", str(seq_len), "--seed", str(seed)]
    if data:
        cmd += ["--data", data]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent.parent),
                                                                     os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    result = Path(out_dir) / "losses.json"
    if proc.returncode != 0 or not result.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise StepFailed(f"accelerate launch with {processes} processes failed: {' | '.join(tail)}")
    return json.loads(result.read_text())


class LaunchParams(RunnerParams):
    processes: int = Field(2, ge=1, le=1024, description="data-parallel processes")
    steps: int = Field(20, ge=1, le=1_000_000)
    lr: float = Field(5e-5, gt=0, le=1.0)
    batch_size: int = Field(4, ge=1, le=4096, description="global batch, split over the processes")
    seq_len: int = Field(128, ge=8, le=32768)


class AccelerateTrain(Runner):
    id = "accelerate-train"
    Params = LaunchParams
    summary = "causal-LM training of every weight, data-parallel under accelerate launch"

    def run(self, ctx: StepContext, params: LaunchParams) -> StepResult:
        from runners.checkpoint import save_checkpoint
        from runners.models import load_checkpoint, model_stats
        model = ctx.model.merge_and_unload() if hasattr(ctx.model, "peft_config") else ctx.model
        src = save_checkpoint(model, ctx.tokenizer, ctx.workdir / "launch-in")
        out = ctx.workdir / "launch-out"
        data = getattr(ctx.corpus, "source", None)
        data = data if data and Path(str(data)).is_file() else None
        res = launch(src, out, params.processes, params.steps, params.lr, params.batch_size,
                     params.seq_len, ctx.seed, data)
        trained, _ = load_checkpoint(out / "model")
        losses = res["losses"]
        tail = losses[-max(1, len(losses) // 4):]
        metrics = {"first_loss": losses[0], "train_loss": sum(tail) / len(tail), "processes": float(res["processes"])}
        stats = model_stats(trained)
        metrics.update({k: stats[k] for k in ("params", "size_mb", "sparsity", "bits_per_weight")})
        return StepResult(model=trained, metrics=metrics,
                          notes=[f"{params.steps} steps data-parallel over {res['processes']} processes (accelerate)"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="runners.launch", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=None)
    a = ap.parse_args(argv)
    train_worker(a.model, a.out, a.steps, a.lr, a.batch_size, a.seq_len, a.seed, a.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
