"""accelerate launch with 2 CPU processes (gloo) follows the loss curve of one process on the
whole batch, and the runner hands back the trained model."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

STEPS, BATCH, SEQ, LR = 3, 4, 32, 1e-3


def one_process_reference(model_dir, tiny_corpus):
    from runners.launch import global_batch
    from runners.models import load_checkpoint
    torch.manual_seed(0)
    model, _ = load_checkpoint(model_dir)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    model.train()
    losses = []
    for step in range(STEPS):
        ids = global_batch(tiny_corpus.train, step, 0, BATCH, SEQ)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
    return losses, model


def test_two_processes_match_one(tiny_trained, tiny_corpus, make_ctx):
    from runners.models import load_checkpoint
    from runners.registry import get_runner
    ref_losses, ref_model = one_process_reference(tiny_trained, tiny_corpus)
    model, tok = load_checkpoint(tiny_trained)
    runner = get_runner("accelerate-train")
    ctx = make_ctx(model, tok)
    res = runner.run(ctx, runner.Params(processes=2, steps=STEPS, lr=LR, batch_size=BATCH, seq_len=SEQ))
    import json
    run = json.loads((ctx.workdir / "launch-out" / "losses.json").read_text())
    assert run["processes"] == 2
    assert run["losses"] == pytest.approx(ref_losses, rel=1e-4)
    base, _ = load_checkpoint(tiny_trained)
    assert not torch.equal(res.model.model.embed_tokens.weight, base.model.embed_tokens.weight)
    for (name, a), b in zip(res.model.state_dict().items(), ref_model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name
