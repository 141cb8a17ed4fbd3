"""Fixtures for runner tests: a briefly trained tiny Llama-style model (shared, copied per test),
tiny GPT-2 / Qwen2 folders, and the bundled SmolLM2 converted once per session."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # tiny ops: a second thread only adds hand-offs, and stalls badly on busy shared cores

TINY = dict(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=512)


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory) -> Path:
    """A tiny model trained for a few seconds (pruning and distillation need real structure)."""
    from runners.base import StepContext
    from runners.checkpoint import save_checkpoint
    from runners.data import load_corpus
    from runners.models import tiny_model
    from runners.pretrain import CausalLMTrain
    model, tok = tiny_model(**TINY)
    corpus = load_corpus(tok)
    ctx = StepContext(model=model, tokenizer=tok, corpus=corpus, workdir=tmp_path_factory.mktemp("w"))
    runner = CausalLMTrain()
    runner.run(ctx, runner.Params(steps=40, lr=3e-3, batch_size=8, seq_len=64))
    return save_checkpoint(model, tok, tmp_path_factory.mktemp("tiny") / "ckpt")


@pytest.fixture(scope="session")
def tiny_corpus(tiny_trained):
    from runners.data import load_corpus
    from runners.models import load_checkpoint
    return load_corpus(load_checkpoint(tiny_trained)[1])


@pytest.fixture
def tiny(tiny_trained):
    """A fresh copy of the trained tiny model: (model, tokenizer)."""
    from runners.models import load_checkpoint
    return load_checkpoint(tiny_trained)


@pytest.fixture
def make_ctx(tmp_path, tiny_corpus):
    from runners.base import StepContext

    def make(model, tok, corpus=None, teacher=None):
        return StepContext(model=model, tokenizer=tok, corpus=corpus or tiny_corpus, workdir=tmp_path,
                           load_teacher=(lambda: teacher) if teacher else None)
    return make


@pytest.fixture(scope="session")
def hf_folders(tmp_path_factory) -> dict[str, Path]:
    """Tiny GPT-2 (Conv1D) and Qwen2 (q/k/v bias) models saved as plain Hugging Face folders."""
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    from runners.data import bpe_tokenizer
    tok = bpe_tokenizer(512)
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    models = {
        "gpt2": GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=64, n_layer=2,
                                           n_head=4, bos_token_id=1, eos_token_id=0)),
        "qwen2": Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                              max_position_embeddings=256, tie_word_embeddings=False)),
    }
    out = {}
    for name, model in models.items():
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
        out[name] = root / name
    return out


# ---- the bundled SmolLM2-135M ------------------------------------------------------------------

@pytest.fixture(scope="session")
def smol_folder() -> Path:
    from runners.models import bundled_folder
    return bundled_folder("smollm2-135m")


@pytest.fixture(scope="session")
def smol_corpus(smol_folder):
    from runners.data import load_corpus
    from runners.models import load_checkpoint
    return load_corpus(load_checkpoint(smol_folder)[1])


@pytest.fixture
def smol(smol_folder):
    from runners.models import load_checkpoint
    return load_checkpoint(smol_folder)
