"""Files the user points at: corpora (bounded, text only), model folders (every tensor present
and expected, safetensors only) and output paths (regular files only, never a planted link)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from slmrec.errors import SlmrecError
from tests.reliability.conftest import one_line

TEXT = "The quick brown fox jumps over the lazy dog.\n\n" * 40

CORPUS_CASES = [
    ("nul-bytes", ".txt", TEXT.encode() + b"\0" * 100, "binary data"),
    ("all-nul", ".txt", b"\0" * 20000, "binary data"),
    ("nul-late", ".txt", TEXT.encode() * 50 + b"\0" + TEXT.encode(), "binary data"),
    ("elf-header", ".txt", b"\x7fELF\x02\x01\x01" + b"\0" * 100, "binary data"),
    ("png-header", ".txt", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "binary data"),
    ("control-chars", ".txt", b"\x01\x02\x03" + TEXT.encode(), "binary data"),
    ("latin1", ".txt", "caf\xe9 ".encode("latin-1") * 20, "not utf-8"),
    ("truncated-utf8", ".txt", TEXT.encode() + "é".encode()[:1], "not utf-8"),
    ("empty", ".txt", b"", "empty file"),
    ("blank", ".txt", b" \n\n\t \n", "empty file"),
    ("wrong-suffix", ".csv", TEXT.encode(), "unsupported corpus type"),
    ("no-suffix", "", TEXT.encode(), "unsupported corpus type"),
    ("jsonl-nul", ".jsonl", b'{"text": "a"}\n\0\n', "binary data"),
]


@pytest.mark.parametrize("suffix,raw,needle", [c[1:] for c in CORPUS_CASES],
                         ids=[c[0] for c in CORPUS_CASES])
def test_corpus_files_are_checked_while_read(tmp_path, suffix, raw, needle):
    from runners.data import read_corpus_text

    f = tmp_path / f"corpus{suffix}"
    f.write_bytes(raw)
    with pytest.raises(SlmrecError) as exc:
        read_corpus_text(f)
    one_line(exc.value, "corpus", needle)


def test_a_sparse_gigabyte_is_refused_by_size_without_reading(tmp_path):
    from runners.data import read_corpus_text

    f = tmp_path / "huge.txt"
    with open(f, "wb") as fh:
        fh.truncate(2**30)  # 1 GB of holes: reading it would cost seconds and gigabytes
    with pytest.raises(SlmrecError) as exc:
        read_corpus_text(f)
    one_line(exc.value, "1,024.0 MB", "limit of 256 MB", "SLMREC_MAX_CORPUS_MB")


def test_the_size_limit_is_configurable(tmp_path, monkeypatch):
    from runners.data import read_corpus_text

    f = tmp_path / "c.txt"
    f.write_text(TEXT * 100)
    monkeypatch.setenv("SLMREC_MAX_CORPUS_MB", "0.01")
    with pytest.raises(SlmrecError) as exc:
        read_corpus_text(f)
    one_line(exc.value, "over the limit")
    monkeypatch.setenv("SLMREC_MAX_CORPUS_MB", "1")
    assert read_corpus_text(f) == TEXT * 100


@pytest.mark.parametrize("kind", ["folder", "fifo", "missing", "dev-null"])
def test_corpus_must_be_a_regular_file(tmp_path, kind):
    from runners.data import read_corpus_text

    f = tmp_path / "c.txt"
    if kind == "folder":
        f.mkdir()
    elif kind == "fifo":
        os.mkfifo(f)
    elif kind == "dev-null":
        f = Path("/dev/null")
    with pytest.raises(SlmrecError) as exc:
        read_corpus_text(f)
    one_line(exc.value, "not found" if kind == "missing" else "not a regular file")


def test_streamed_tokenisation_equals_whole(monkeypatch):
    """Tokenising in batches of documents gives exactly the stream of one call over all."""
    import runners.data as data

    tok = data.bpe_tokenizer(512)
    docs = [f"document {i}: " + TEXT[: 50 + i] for i in range(700)]
    texts = {"train": docs, "validation": docs[:3], "calibration": []}
    whole = []
    for ids in tok(docs, add_special_tokens=False)["input_ids"]:
        whole += ids + [tok.eos_token_id]
    monkeypatch.setattr(data, "TOKENIZE_BATCH", 64)
    corpus = data.Corpus(tok, texts, {}, "test")
    assert corpus.streams["train"].tolist() == whole
    assert len(corpus.streams["calibration"]) == 0


# ---- model folders ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A tiny model saved as a plain Hugging Face folder (safetensors)."""
    from runners.models import tiny_model

    model, tok = tiny_model(layers=1, hidden=32, heads=2, kv_heads=1, intermediate=64, vocab=300)
    folder = tmp_path_factory.mktemp("hf") / "model"
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _rewrite_tensors(folder: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    recipe = folder / "slmrec.json"  # states with no standard layout use slmrec-model.safetensors
    name = json.loads(recipe.read_text()).get("weights", "model.safetensors") if recipe.is_file() else "model.safetensors"
    f = folder / name
    tensors = edit(load_file(str(f)))
    save_file(tensors, str(f), metadata={"format": "pt"})


def _drop_all(t):
    return {"unrelated.weight": next(iter(t.values()))}


def _drop_one(t):
    t.pop(sorted(k for k in t if "layers.0.mlp" in k)[0])
    return t


def _add_one(t):
    import torch

    t["model.layers.7.extra.weight"] = torch.zeros(2, 2)
    return t


MODEL_CASES = [
    ("no-model-tensors", lambda f: _rewrite_tensors(f, _drop_all), "missing tensor"),
    ("one-missing", lambda f: _rewrite_tensors(f, _drop_one), "1 missing tensor (model.layers.0.mlp"),
    ("one-unexpected", lambda f: _rewrite_tensors(f, _add_one), "unexpected tensor (model.layers.7"),
    ("truncated-weights", lambda f: (f / "model.safetensors").write_bytes(
        (f / "model.safetensors").read_bytes()[:100]), "corrupt or truncated"),
    ("garbage-header", lambda f: (f / "model.safetensors").write_bytes(b"\xff" * 64),
     "corrupt or truncated"),
    ("no-weights", lambda f: (f / "model.safetensors").unlink(), "no .safetensors weights"),
    ("pickle-only", lambda f: ((f / "model.safetensors").rename(f / "pytorch_model.bin")),
     "never pickle"),
    ("config-not-json", lambda f: (f / "config.json").write_text("{oops"), "not a valid json"),
    ("config-a-list", lambda f: (f / "config.json").write_text("[1, 2]"), "not a valid json"),
    ("config-missing", lambda f: (f / "config.json").unlink(), "no config.json"),
    ("remote-code", lambda f: (f / "config.json").write_text(json.dumps(
        {**json.loads((f / "config.json").read_text()), "auto_map": {"AutoModel": "x.Y"}})),
     "remote code"),
]


@pytest.mark.parametrize("mutate,needle", [c[1:] for c in MODEL_CASES],
                         ids=[c[0] for c in MODEL_CASES])
def test_model_folders_are_checked_before_loading(tmp_path, hf_folder, mutate, needle):
    from runners.models import check_model_folder

    folder = _copy(hf_folder, tmp_path / "m")
    mutate(folder)
    with pytest.raises(SlmrecError) as exc:
        check_model_folder(str(folder))
    one_line(exc.value, needle)


def test_intact_model_folder_passes_and_loads(hf_folder):
    from runners.models import check_model_folder, load_model

    check_model_folder(str(hf_folder))
    model, tok = load_model(str(hf_folder))
    assert model is not None and tok is not None


@pytest.mark.parametrize("edit,needle", [(_drop_one, "missing tensor"),
                                         (_add_one, "unexpected tensor")], ids=["missing", "extra"])
def test_loading_names_missing_and_unexpected_tensors(tmp_path, hf_folder, edit, needle):
    """The loader's own check (transformers' loading report), behind the pre-load check."""
    from runners.models import load_model

    folder = _copy(hf_folder, tmp_path / "m")
    _rewrite_tensors(folder, edit)
    with pytest.raises(SlmrecError) as exc:
        load_model(str(folder))
    one_line(exc.value, needle)


@pytest.mark.parametrize("files,needle", [
    ({"adapter_model.bin": b"pickle"}, "pickle weights"),
    ({"adapter_model.safetensors": b"x", "extra.pt": b"pickle"}, "pickle weights"),
    ({}, "safetensors only"),
], ids=["bin-only", "bin-beside", "nothing"])
def test_adapters_load_from_safetensors_only(tmp_path, files, needle):
    """peft falls back to torch.load when adapter_model.safetensors is absent: refused first."""
    from runners.checkpoint import check_adapter_folder

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    for name, raw in files.items():
        (adapter / name).write_bytes(raw)
    with pytest.raises(SlmrecError) as exc:
        check_adapter_folder(adapter)
    one_line(exc.value, needle)


def test_no_torch_load_reachable_from_a_checkpoint_adapter(tmp_path, tiny_model_dir, monkeypatch):
    import torch

    from runners.checkpoint import RECIPE, load_checkpoint

    folder = _copy(tiny_model_dir, tmp_path / "ck")
    recipe = json.loads((folder / RECIPE).read_text())
    (folder / RECIPE).write_text(json.dumps({**recipe, "lora": "adapter"}))
    (folder / "adapter").mkdir()
    (folder / "adapter" / "adapter_config.json").write_text("{}")
    (folder / "adapter" / "adapter_model.bin").write_bytes(b"not even a pickle")

    def refuse(*a, **k):
        raise AssertionError("torch.load was called")
    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(SlmrecError) as exc:
        load_checkpoint(folder)
    one_line(exc.value, "pickle weights")


# ---- safe writes --------------------------------------------------------------------------------

def _target(tmp_path: Path, kind: str) -> Path:
    t = tmp_path / "out.yaml"
    if kind == "symlink":
        (tmp_path / "real.yaml").write_text("precious")
        t.symlink_to(tmp_path / "real.yaml")
    elif kind == "dangling-symlink":
        t.symlink_to(tmp_path / "nowhere" / "x")
    elif kind == "fifo":
        os.mkfifo(t)
    elif kind == "folder":
        t.mkdir()
    elif kind == "dev-null":
        return Path("/dev/null")
    elif kind == "missing-folder":
        return tmp_path / "no" / "such" / "out.yaml"
    elif kind == "proc":
        return Path("/proc/self/slmrec-out.yaml")
    elif kind == "socket":
        import socket

        s = socket.socket(socket.AF_UNIX)
        s.bind(str(t))
        s.close()
    return t


SAFE_CASES = [("symlink", "symbolic link"), ("dangling-symlink", "symbolic link"),
              ("fifo", "fifo"), ("folder", "a folder"), ("dev-null", "character device"),
              ("missing-folder", "does not exist"), ("proc", "cannot write"),
              ("socket", "a socket")]


@pytest.mark.parametrize("kind,needle", SAFE_CASES, ids=[c[0] for c in SAFE_CASES])
def test_safe_write_refuses_what_is_not_a_regular_file(tmp_path, kind, needle):
    from slmrec.safeio import write_text

    t = _target(tmp_path, kind)
    before = os.lstat(t) if os.path.lexists(t) else None
    with pytest.raises(SlmrecError) as exc:
        write_text(t, "new")
    one_line(exc.value, needle)
    if before is not None:  # the thing is untouched: same kind, same inode
        after = os.lstat(t)
        assert (after.st_ino, stat.S_IFMT(after.st_mode)) == (before.st_ino, stat.S_IFMT(before.st_mode))
    if kind == "symlink":
        assert (tmp_path / "real.yaml").read_text() == "precious"
    assert not list(tmp_path.glob(".*.tmp"))


def test_safe_write_follows_a_symlink_only_when_asked(tmp_path):
    from slmrec.safeio import write_text

    t = _target(tmp_path, "symlink")
    write_text(t, "new", follow_symlinks=True)
    assert t.is_symlink() and (tmp_path / "real.yaml").read_text() == "new"


def test_a_planted_predictable_temp_link_is_never_followed(tmp_path):
    from slmrec.safeio import write_text

    victim = tmp_path / "victim"
    victim.write_text("keep")
    for name in ("out.yaml.tmp", ".out.yaml.tmp", f".out.yaml.{os.getpid()}.tmp"):
        (tmp_path / name).symlink_to(victim)
    write_text(tmp_path / "out.yaml", "plan")
    assert victim.read_text() == "keep" and (tmp_path / "out.yaml").read_text() == "plan"


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    from slmrec.safeio import write_with

    t = tmp_path / "out.json"
    t.write_text("old")

    def fail(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")
    with pytest.raises(SlmrecError) as exc:
        write_with(t, fail)
    one_line(exc.value, "no space left")
    assert t.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 256 KB tmpfs where the machine allows mounting one (root), else skipped (the simulated
    ENOSPC tests above and in test_faults.py still run)."""
    import subprocess

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_on_a_real_tmpfs(tiny_tmpfs):
    from slmrec.safeio import write_text

    t = tiny_tmpfs / "out.txt"
    t.write_text("old")
    with pytest.raises(SlmrecError) as exc:
        write_text(t, "x" * 400_000)
    one_line(exc.value, "no space left on the device")
    assert t.read_text() == "old" and [p.name for p in tiny_tmpfs.iterdir()] == ["out.txt"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """slmrec checkpoints of a tiny model as the runners leave it: float, int4 packed
    (weight-only quant), dynamic int8."""
    import torch

    from runners.models import save_checkpoint, tiny_model
    from runners.registry import get_runner_class

    base = tmp_path_factory.mktemp("ckpts")
    out = {}
    model, tok = tiny_model(layers=1, hidden=32, heads=2, kv_heads=1, intermediate=64, vocab=300)
    out["float"] = save_checkpoint(model, tok, base / "float")
    from runners.base import StepContext

    for name, rid, params in (("int4", "weight-only-quant", {"bits": 4, "group_size": 32}),
                              ("int8-dynamic", "dynamic-int8", {})):
        m, t = tiny_model(layers=1, hidden=32, heads=2, kv_heads=1, intermediate=64, vocab=300)
        cls = get_runner_class(rid)
        ctx = StepContext(model=m, tokenizer=t, corpus=None, workdir=base / f"w-{name}", seed=0,
                          progress=lambda *a: None, log=lambda *a: None, load_teacher=None)
        with torch.no_grad():
            res = cls().run(ctx, cls.Params.model_validate(params))
        out[name] = save_checkpoint(res.model, t, base / name)
    recipe = {k: json.loads((out[k] / "slmrec.json").read_text()) for k in out}
    assert recipe["int4"]["quant"] and recipe["int8-dynamic"]["dynamic_int8"]
    return out


@pytest.mark.parametrize("kind", ["float", "int4", "int8-dynamic"])
def test_intact_checkpoints_pass_the_preload_check(checkpoints, kind):
    """No false alarm: what the runners save passes (quantized and dynamic modules included)."""
    from runners.models import check_model_folder

    check_model_folder(str(checkpoints[kind]))


@pytest.mark.parametrize("kind", ["float", "int4", "int8-dynamic"])
def test_checkpoints_missing_a_tensor_are_refused_before_loading(tmp_path, checkpoints, kind):
    from runners.models import check_model_folder

    folder = _copy(checkpoints[kind], tmp_path / "ck")
    _rewrite_tensors(folder, lambda t: {k: v for k, v in t.items() if "layers.0.mlp" not in k})
    with pytest.raises(SlmrecError) as exc:
        check_model_folder(str(folder))
    one_line(exc.value, "missing tensor", "layers.0.mlp")


def test_legacy_buffers_transformers_ignores_are_no_false_alarm(tmp_path, hf_folder):
    """Older Llama folders carry rotary inv_freq buffers: transformers ignores them, so do we."""
    import torch

    from runners.models import check_model_folder, load_model

    folder = _copy(hf_folder, tmp_path / "m")

    def add_inv_freq(t):
        t["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
        return t
    _rewrite_tensors(folder, add_inv_freq)
    check_model_folder(str(folder))
    assert load_model(str(folder))[0] is not None
