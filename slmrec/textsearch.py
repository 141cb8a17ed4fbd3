"""Ranked full-text search over the KB (TF-IDF over names, aliases, families and summaries)."""

from __future__ import annotations

from dataclasses import dataclass

from sklearn.feature_extraction.text import TfidfVectorizer

from slmrec.kb import KB


@dataclass(frozen=True)
class Hit:
    id: str
    kind: str
    name: str
    score: float


def _documents(kb: KB) -> list[tuple[str, str, str, str]]:
    docs = []
    for m in kb.methods.values():
        text = " ".join([m.id.replace("-", " "), m.name, " ".join(m.aliases), m.family.replace("/", " "),
                         m.component, m.summary])
        docs.append((m.id, "method", m.name, text))
    for c in kb.components.values():
        docs.append((c.id, "component", c.name, f"{c.id} {c.name} {c.summary}"))
    for s in kb.sources.values():
        docs.append((s.id, "source", s.title, f"{s.id} {s.title} {' '.join(s.authors)} {s.venue or ''}"))
    for h in kb.hardware.values():
        docs.append((h.id, "hardware", h.name, f"{h.id} {h.name} {h.kind} {h.note or ''}"))
    for b in kb.models.values():
        docs.append((b.id, "model", b.name, f"{b.id} {b.name} {b.family} {b.architecture}"))
    return docs


class TextIndex:
    def __init__(self, kb: KB):
        self.docs = _documents(kb)
        # Word n-grams catch phrases; character n-grams forgive typos and partial words.
        self.vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True)
        self.matrix = self.vec.fit_transform([d[3].lower() for d in self.docs])

    def search(self, query: str, limit: int = 10, kind: str | None = None) -> list[Hit]:
        if not query.strip():
            return []
        scores = (self.matrix @ self.vec.transform([query.lower()]).T).toarray().ravel()
        order = scores.argsort()[::-1]
        hits = []
        for i in order:
            if scores[i] <= 0.05:
                break
            doc = self.docs[i]
            if kind and doc[1] != kind:
                continue
            hits.append(Hit(doc[0], doc[1], doc[2], round(float(scores[i]), 3)))
            if len(hits) >= limit:
                break
        return hits
