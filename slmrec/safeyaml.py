"""The one YAML reader for user files (KB, scenarios, plans): safe, bounded, strict.

    data, node = load(text)          raises YamlProblem(message, line)
    clip(value)                      a value quoted for a message, at most 80 characters

- safe: yaml's SafeLoader (the C one when available): no tags that build Python objects.
- bounded: a file is at most MAX_BYTES; the document's size *after* alias expansion is counted
  on the composed node graph (each alias counted as the full size of what it points to, in
  linear time) and refused above MAX_NODES, so a 500-byte "billion laughs" file is an error
  line, not minutes of CPU and gigabytes of memory; nesting is limited to MAX_DEPTH.
- strict: a mapping with the same key twice is refused (YAML says keys are unique; PyYAML
  silently keeps the last).
"""

from __future__ import annotations

import yaml

MAX_BYTES = 8 * 2**20
MAX_NODES = 200_000
MAX_DEPTH = 64
CLIP = 80

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlProblem(ValueError):
    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.message, self.line = message, line


def clip(value: object, n: int = CLIP) -> str:
    """repr(value), cut to about n characters (rejected values are quoted, never dumped)."""
    try:
        text = value if isinstance(value, str) and len(value) > 4 * n else None
        r = repr(text[: 2 * n] if text is not None else value)
    except Exception:  # noqa: BLE001  (a repr that raises: say what it is)
        r = f"<{type(value).__name__}>"
    if len(r) > n:
        r = r[: n - 1] + "…"
    return r


def _check(root: yaml.Node) -> None:
    """Expanded size, nesting depth and duplicate keys of the composed document."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in sizes:  # an alias (or a shared node): its full size again, computed once
            return sizes[key]
        if depth > MAX_DEPTH:
            raise YamlProblem(f"nested more than {MAX_DEPTH} levels deep",
                              node.start_mark.line + 1)
        sizes[key] = 1  # a recursive alias counts once (the constructor then rejects it)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                total += size(child, depth + 1)
        elif isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                    ident = f"{k.tag}:{k.value}"
                    if ident in seen:
                        raise YamlProblem(f"duplicate key {clip(k.value)} (first on line "
                                          f"{seen[ident]}); each key may appear once",
                                          k.start_mark.line + 1)
                    seen[ident] = k.start_mark.line + 1
                total += size(k, depth + 1) + size(v, depth + 1)
        sizes[key] = total
        if total > MAX_NODES:
            raise YamlProblem(f"document expands to more than {MAX_NODES:,} values (aliases "
                              "included); refusing it", node.start_mark.line + 1)
        return total

    size(root, 0)


def load(text: str) -> tuple[object, yaml.Node | None]:
    """(data, root node) of one YAML document; YamlProblem for anything unsafe or invalid."""
    if len(text) > MAX_BYTES:
        raise YamlProblem(f"file is larger than {MAX_BYTES // 2**20} MB; refusing to parse it")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check(node)
        return loader.construct_document(node), node
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        msg = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise YamlProblem(f"invalid YAML: {msg[:200]}", mark.line + 1 if mark else None) from None
    except RecursionError:
        raise YamlProblem(f"nested more than {MAX_DEPTH} levels deep") from None
    finally:
        loader.dispose()


def load_file(path) -> object:
    """Read and load a YAML file (bounded size); YamlProblem on any failure."""
    from pathlib import Path

    p = Path(path)
    try:
        with open(p, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise YamlProblem(f"cannot read file: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise YamlProblem(f"file is larger than {MAX_BYTES // 2**20} MB; refusing to parse it")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlProblem(f"not UTF-8 text (byte {exc.start})") from None
    return load(text)[0]
