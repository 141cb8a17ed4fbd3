"""Corpora: train / validation / calibration token streams from the bundled text or a user file,
and the byte-level BPE tokenizer that tiny models use.

Default text: the standard library's `pydoc_data.topics` (about 465 K characters of English prose,
PSF licence): nothing to download. Whole topics go to validation and calibration (about 5% of the
characters each, seeded), the rest to train; because pydoc repeats sections across topics, every
train paragraph that shares a run of NGRAM_WORDS words (or its whole text) with held-out text is
then dropped, and calibration likewise yields to validation. So the model is never trained or
calibrated on text it is scored on (tests/runners/test_runners_data.py checks that no 32-token
n-gram is shared). Paragraphs are then grouped into chunks of about 1,000 characters.
"""

from __future__ import annotations

import json
import os
import random
from functools import lru_cache
from pathlib import Path

from slmrec.errors import Problem, SlmrecError

SPLITS = ("train", "validation", "calibration")
HELD_OUT = ("validation", "calibration")  # in priority order: each keeps its text over the later ones
CLAIM_ORDER = (*HELD_OUT, "train")
HELD_OUT_FRACTION = 0.05
NGRAM_WORDS = 8  # a shared 32-token run spans 10 or more words (BPE-512: ~60 characters), so 8 of them in a row
CHUNK_CHARS = 1000
MIN_TOKENS = 48
EOS, BOS = "<|endoftext|>", "<|bos|>"
TOKENIZE_BATCH = 256  # documents tokenised at a time


def bundled_texts() -> list[str]:
    from pydoc_data.topics import topics
    return [topics[k] for k in sorted(topics)]


def _paragraphs(text: str) -> list[str]:
    return [p for p in text.split("\n\n") if p.strip()]


def _group(paras: list[str]) -> list[str]:
    """Paragraphs of one document grouped into ~CHUNK_CHARS pieces."""
    out, cur = [], ""
    for para in paras:
        cur = f"{cur}\n\n{para}" if cur else para
        if len(cur) >= CHUNK_CHARS:
            out.append(cur)
            cur = ""
    if cur.strip():
        out.append(cur)
    return out


def _chunks(texts: list[str]) -> list[str]:
    """Paragraphs grouped into ~CHUNK_CHARS pieces, never across documents; repeated pieces
    are kept once so no text is in two splits."""
    return list(dict.fromkeys(c for text in texts for c in _group(_paragraphs(text))))


def word_ngrams(text: str, n: int = NGRAM_WORDS) -> set[tuple[str, ...]]:
    words = text.split()
    return {tuple(words[i: i + n]) for i in range(len(words) - n + 1)}


class _Seen:
    """Text already claimed by a held-out split: its word n-grams and its exact paragraphs."""

    def __init__(self):
        self.grams: set[tuple[str, ...]] = set()
        self.exact: set[str] = set()

    def add(self, text: str) -> None:
        self.grams |= word_ngrams(text)
        self.exact.add(text.strip())

    def shares(self, text: str) -> bool:
        return text.strip() in self.exact or not self.grams.isdisjoint(word_ngrams(text))


def _split_topics(texts: list[str], seed: int) -> dict[str, list[str]]:
    """Whole documents to the held-out splits (seeded, ~HELD_OUT_FRACTION of the characters
    each), then every paragraph sharing text with an earlier held-out split is dropped."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    budget = HELD_OUT_FRACTION * sum(map(len, texts))
    owner: dict[int, str] = {}
    it = iter(order)
    for split in HELD_OUT:
        size = 0
        for i in it:
            if size + len(texts[i]) > 1.5 * budget:  # a huge topic stays in train
                continue
            owner[i] = split
            size += len(texts[i])
            if size >= budget:
                break
    seen = _Seen()
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for split in CLAIM_ORDER:
        docs = [i for i in sorted(order) if owner.get(i, "train") == split]
        kept_by_doc = []
        for i in docs:
            kept = [p for p in _paragraphs(texts[i]) if not seen.shares(p)]
            kept_by_doc.append(kept)
        for kept in kept_by_doc:  # claimed after the whole split, so a split keeps its own repeats
            for p in kept:
                seen.add(p)
            out[split].extend(_group(kept))
        out[split] = list(dict.fromkeys(out[split]))
    return out


class Corpus:
    """Token streams per split (1-D LongTensors, documents joined by EOS) plus the raw texts.

    `pairs[split]` holds (prompt, response) tuples when the source was an instruction .jsonl.
    """

    def __init__(self, tokenizer, texts: dict[str, list[str]], pairs: dict[str, list[tuple[str, str]]],
                 source: str):
        import torch
        self.tokenizer, self.texts, self.source = tokenizer, texts, source
        self.pair_splits = pairs
        eos = tokenizer.eos_token_id
        self.streams = {}
        for split in SPLITS:  # in batches of documents: memory follows the token count
            pieces = []
            docs = texts[split]
            for i in range(0, len(docs), TOKENIZE_BATCH):
                ids: list[int] = []
                for doc in tokenizer(docs[i: i + TOKENIZE_BATCH], add_special_tokens=False)["input_ids"]:
                    ids.extend(doc)
                    if eos is not None:
                        ids.append(eos)
                pieces.append(torch.tensor(ids, dtype=torch.long))
            self.streams[split] = torch.cat(pieces) if pieces else torch.tensor([], dtype=torch.long)

    @property
    def train(self):
        return self.streams["train"]

    @property
    def validation(self):
        return self.streams["validation"]

    @property
    def calibration(self):
        return self.streams["calibration"]

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return self.pair_splits.get("train", [])

    def blocks(self, split: str, seq_len: int, n: int):
        """The first n non-overlapping blocks (n, seq_len) of a split: fixed, for evaluation.

        Fewer when the split is short; a split shorter than seq_len gives one shorter block.
        """
        stream = self.streams[split]
        if len(stream) <= seq_len:
            return stream[None, :]
        k = max(1, min(n, len(stream) // seq_len))
        return stream[: k * seq_len].view(k, seq_len)

    def sample(self, split: str, seq_len: int, batch_size: int, generator):
        """Random windows (batch_size, seq_len) for training; `generator` makes them repeatable."""
        import torch
        stream = self.streams[split]
        seq_len = min(seq_len, len(stream) - 1)
        starts = torch.randint(0, len(stream) - seq_len, (batch_size,), generator=generator)
        return torch.stack([stream[s: s + seq_len] for s in starts.tolist()])

    def prompts(self, split: str, n: int, max_tokens: int = 32) -> list[str]:
        """Short text prompts (pair prompts when present, else document openings)."""
        if self.pair_splits.get(split):
            return [p for p, _ in self.pair_splits[split][:n]]
        out = []
        for text in self.texts[split][:n]:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
            out.append(self.tokenizer.decode(ids))
        return out

    def pair_examples(self, split: str, seq_len: int):
        """(input_ids, labels) of the pairs, prompt tokens masked with -100 in labels, padded."""
        import torch
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        ids_out, labels_out = [], []
        for prompt, response in self.pair_splits.get(split, []):
            p = tok(format_prompt(prompt), add_special_tokens=False)["input_ids"]
            r = tok(response, add_special_tokens=False)["input_ids"] + eos_ids(tok)
            ids, labels = (p + r)[:seq_len], ([-100] * len(p) + r)[:seq_len]
            fill = seq_len - len(ids)
            ids_out.append(ids + [pad] * fill)
            labels_out.append(labels + [-100] * fill)
        return torch.tensor(ids_out, dtype=torch.long), torch.tensor(labels_out, dtype=torch.long)


def eos_ids(tok) -> list[int]:
    return [tok.eos_token_id] if tok.eos_token_id is not None else []


def format_prompt(prompt: str) -> str:
    return prompt.rstrip() + "\n"


def load_corpus(tokenizer, path: str | None = None, seed: int = 0) -> Corpus:
    """The bundled text (path None), a .txt file, or a .jsonl of {"text"} / {"prompt","response"}."""
    pairs: list[tuple[str, str]] = []
    if path is None:
        texts, source = _split_topics(bundled_texts(), seed), "pydoc_data.topics"
        return _checked(Corpus(tokenizer, texts, {}, source))
    else:
        p = Path(path).expanduser()
        source = str(p)
        raw = read_corpus_text(p)
        if p.suffix == ".txt":
            docs = _chunks([raw])
        else:
            docs, pairs = _read_jsonl(source, raw)
    texts, pair_splits = _split(docs, pairs, seed)
    return _checked(Corpus(tokenizer, texts, pair_splits, source))


def _checked(corpus: Corpus) -> Corpus:
    source = corpus.source
    total = sum(len(s) for s in corpus.streams.values())
    if total < MIN_TOKENS:
        raise SlmrecError.one(source, f"too little text: {total} tokens, need at least {MIN_TOKENS}")
    if min(len(s) for s in corpus.streams.values()) == 0:
        corpus = _split_stream(corpus)
    return corpus


def max_corpus_bytes() -> int:
    """The largest corpus file read: $SLMREC_MAX_CORPUS_MB (default 256 MB). Corpora are held
    in memory as text and token ids; a larger file is refused with this figure, not read."""
    try:
        mb = float(os.environ.get("SLMREC_MAX_CORPUS_MB", "256"))
    except ValueError:
        mb = 256.0
    return int(max(mb, 0.001) * 2**20)


def read_corpus_text(path: str | os.PathLike) -> str:
    """A corpus file's text, checked while it is read in blocks: a regular .txt/.jsonl file of at
    most max_corpus_bytes(), UTF-8, no NUL bytes or other binary control characters, not blank.
    SlmrecError (one line: the file, the byte offset, the limit) otherwise."""
    import codecs

    p = Path(path).expanduser()
    source = str(p)
    if not p.exists():
        raise SlmrecError.one(source, "corpus file not found")
    if not p.is_file():
        raise SlmrecError.one(source, "not a regular file (a folder, device or pipe); give a "
                              ".txt or .jsonl file")
    if p.suffix not in (".txt", ".jsonl"):
        raise SlmrecError.one(source, f"unsupported corpus type '{p.suffix or 'none'}'; valid: .txt, .jsonl")
    limit = max_corpus_bytes()
    size = p.stat().st_size
    if size > limit:
        raise SlmrecError.one(source, f"corpus is {size / 2**20:,.1f} MB, over the limit of "
                              f"{limit / 2**20:,.0f} MB; use a smaller file or raise "
                              "$SLMREC_MAX_CORPUS_MB")
    decoder = codecs.getincrementaldecoder("utf-8")()
    parts: list[str] = []
    offset = 0
    bad = set(range(0, 9)) | {11, 12} | set(range(14, 32)) | {127}
    try:
        with open(p, "rb") as fh:
            while True:
                block = fh.read(1 << 20)
                if not block:
                    break
                if offset + len(block) > limit:
                    raise SlmrecError.one(source, f"corpus grew past the limit of "
                                          f"{limit / 2**20:,.0f} MB while being read")
                hit = next((i for i, b in enumerate(block[:4096]) if b in bad), None) \
                    if offset == 0 else None
                if hit is None:
                    hit = block.find(b"\0")
                    hit = None if hit < 0 else hit
                if hit is not None:
                    raise SlmrecError.one(source, f"binary data (byte 0x{block[hit]:02x} at offset "
                                          f"{offset + hit}); a corpus must be UTF-8 text")
                try:
                    parts.append(decoder.decode(block))
                except UnicodeDecodeError as e:
                    raise SlmrecError.one(source, f"not UTF-8 text (byte {offset + e.start})") from None
                offset += len(block)
            parts.append(decoder.decode(b"", final=True))
    except UnicodeDecodeError as e:
        raise SlmrecError.one(source, f"not UTF-8 text (truncated at byte {offset + e.start})") from None
    except OSError as e:
        raise SlmrecError.one(source, f"cannot read: {e.strerror or e}") from None
    raw = "".join(parts)
    if not raw.strip():
        raise SlmrecError.one(source, "empty file: no text to train or evaluate on")
    return raw


def _read_jsonl(source: str, raw: str):
    docs, pairs, problems = [], [], []
    for n, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(Problem(source, f"invalid JSON ({e.msg} at column {e.colno})", line=n))
            continue
        if not isinstance(rec, dict):
            problems.append(Problem(source, "expected an object with 'text', or 'prompt' and 'response'", line=n))
        elif "prompt" in rec or "response" in rec:
            bad = [k for k in ("prompt", "response") if not isinstance(rec.get(k), str)]
            if bad:
                problems.append(Problem(source, f"missing or non-string '{bad[0]}' (a pair needs "
                                        "string 'prompt' and 'response')", field=bad[0], line=n))
            else:
                pairs.append((rec["prompt"], rec["response"]))
                docs.append(format_prompt(rec["prompt"]) + rec["response"])
        elif isinstance(rec.get("text"), str):
            docs.append(rec["text"])
            pairs.append(None)  # keeps pairs aligned with docs
        else:
            keys = ", ".join(map(repr, rec)) or "none"
            problems.append(Problem(source, f"missing key 'text' (or 'prompt' and 'response'); found {keys}",
                                    field="text", line=n))
        if len(problems) >= 10:
            break
    if problems:
        raise SlmrecError(problems)
    if not docs:
        raise SlmrecError.one(source, "no records: every line is blank")
    return docs, pairs


def _split(docs: list[str], pairs: list, seed: int):
    """90/5/5 by document with a seeded shuffle (pairs follow their documents); a calibration or
    train document sharing text with an earlier held-out split is dropped (see _Seen)."""
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(0.05 * len(docs))) if len(docs) >= 3 else 0
    cuts = {"validation": order[:n_val], "calibration": order[n_val: 2 * n_val], "train": order[2 * n_val:]}
    seen = _Seen()
    for split in CLAIM_ORDER:
        cuts[split] = [i for i in sorted(cuts[split]) if not seen.shares(docs[i])]
        for i in cuts[split]:
            seen.add(docs[i])
    texts = {s: [docs[i] for i in idx] for s, idx in cuts.items()}
    pair_splits = {}
    if any(pairs):  # aligned with docs; None for plain-text records
        pair_splits = {s: [pairs[i] for i in idx if pairs[i]] for s, idx in cuts.items()}
    return texts, pair_splits


def _split_stream(corpus: Corpus) -> Corpus:
    """Too few documents to split by document: split the joined token stream 90/5/5 instead."""
    import torch
    stream = torch.cat([corpus.streams[s] for s in SPLITS])
    n = len(stream)
    a, b = int(n * 0.9), int(n * 0.95)
    corpus.streams = {"train": stream[:a], "validation": stream[a:b], "calibration": stream[b:]}
    return corpus


# ---- tokenizer for tiny models ------------------------------------------------------------------

@lru_cache(maxsize=8)
def _bpe_json(vocab: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from runners.models import cache_root
    cached = cache_root() / "tokenizers" / f"bpe-{vocab}.json"
    if cached.is_file():
        return cached.read_text()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[EOS, BOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(bundled_texts(), trainer)
    text = tok.to_str()
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, cached)  # atomic: concurrent test workers never read half a file
    return text


def bpe_tokenizer(vocab: int = 512):
    """A byte-level BPE tokenizer (eos = pad = id 0, bos = id 1) trained on the bundled corpus."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    if vocab < 260:
        raise SlmrecError.one("<tiny_model>", f"vocab {vocab} too small: byte-level BPE needs at least 260",
                              field="vocab")
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_bpe_json(vocab)),
                                  eos_token=EOS, bos_token=BOS, pad_token=EOS)
    return tok
