#!/usr/bin/env python3
"""Import structure of src/ (Python 3.8+, standard library only).

  python3 scripts/layout/imports.py            # loops between files and folders, upward arrows, folder shares
  python3 scripts/layout/imports.py touch RE   # the src/ and tests/ files whose text matches RE

A file imports a module when it names it by `use crate::...`, `crate::...` or `super::...` (use
trees expanded); the edge goes to the file that defines the module (the longest path prefix that
is a file). Folders are src/'s top-level folders and files; `lib.rs` and `main.rs` are left out.
The layers come from src/lib.rs's doc tree: one line per layer, top down.
"""
import os
import re
import sys

SRC = "src"


def files():
    out = []
    for root, _, names in os.walk(SRC):
        out += [os.path.join(root, n) for n in names if n.endswith(".rs")]
    return sorted(out)


def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    return rel


def file_of(segments, known):
    """The file defining the longest prefix of `segments` (a module path)."""
    for n in range(len(segments), 0, -1):
        key = tuple(segments[:n])
        if key in known:
            return known[key]
    return None


def expand(tree):
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]."""
    tree = tree.replace(" ", "").replace("\n", "")
    i = tree.find("{")
    if i < 0:
        return [tree]
    prefix, inner = tree[:i], tree[i + 1 : tree.rfind("}")]
    parts, depth, start = [], 0, 0
    for j, c in enumerate(inner):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(inner[start:j])
            start = j + 1
    parts.append(inner[start:])
    out = []
    for p in parts:
        if p:
            out += expand(prefix + p)
    return out


def strip_comments(text):
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def edges():
    paths = files()
    known = {tuple(module_of(p)): p for p in paths}
    out = {p: set() for p in paths}
    for p in paths:
        mod = module_of(p)
        text = strip_comments(open(p, encoding="utf-8").read())
        refs = []
        for tree in re.findall(r"\buse\s+([^;]+);", text):
            refs += expand(tree)
        refs += re.findall(r"(?<![\w:])((?:crate|super)(?:::\w+)+)", text)
        for ref in refs:
            seg = ref.split("::")
            if seg[0] == "crate":
                target = seg[1:]
            elif seg[0] == "super":
                k = 0
                while k < len(seg) and seg[k] == "super":
                    k += 1
                target = mod[: len(mod) - k] + seg[k:]
            else:
                continue
            f = file_of(target, known)
            if f and f != p:
                out[p].add(f)
    return out


def sccs(graph):
    index, low, stack, on, result, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                result.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return result


def top(path):
    rel = os.path.relpath(path, SRC).split(os.sep)
    return rel[0] if len(rel) > 1 else rel[0][:-3]


def layers():
    """Layer of each top-level name, from lib.rs's ```text tree (0 = top)."""
    doc = [l[4:].rstrip() for l in open(os.path.join(SRC, "lib.rs")) if l.startswith("//!")]
    block = doc[doc.index("```text") + 1 : doc.index("```", doc.index("```text") + 1)]
    tops = {n.removesuffix(".rs") for n in os.listdir(SRC)}
    layer, n = {}, -1
    for line in block:
        if not line.startswith(" "):
            n += 1  # else a continuation of the line above
        for word in line.split():
            name = word.removesuffix("/").removesuffix(".rs")
            if word.endswith(("/", ".rs")) and "/" not in word[:-1] and name in tops:
                layer.setdefault(name, n)
    return layer


def code_lines(path):
    return sum(1 for l in open(path, encoding="utf-8") if l.strip() and not l.strip().startswith("//"))


def report():
    graph = edges()
    skip = {os.path.join(SRC, "lib.rs"), os.path.join(SRC, "main.rs")}
    graph = {k: {v for v in vs if v not in skip} for k, vs in graph.items() if k not in skip}
    # Files inside one folder, mod.rs aside (it declares the files and may define what they share).
    inner = {}
    for a, bs in graph.items():
        for b in bs:
            if os.path.dirname(a) == os.path.dirname(b) and not a.endswith("mod.rs") and not b.endswith("mod.rs"):
                inner.setdefault(a, set()).add(b)
    file_loops = sccs(inner)
    folders = {}
    for a, bs in graph.items():
        for b in bs:
            if top(a) != top(b):
                folders.setdefault(top(a), set()).add(top(b))
    folder_loops = sccs(folders)
    layer = layers()
    upward, sideways, unknown = [], [], set()
    for a, bs in sorted(folders.items()):
        for b in sorted(bs):
            if a not in layer or b not in layer:
                unknown |= {x for x in (a, b) if x not in layer}
            elif layer[b] < layer[a]:
                upward.append(f"{a} -> {b}")
            elif layer[b] == layer[a]:
                sideways.append(f"{a} -> {b}")
    if "-v" in sys.argv:
        for a, bs in sorted(folders.items()):
            print(f"{a} ({layer.get(a)}) -> {', '.join(f'{b} ({layer.get(b)})' for b in sorted(bs))}")
    print(f"files: {len(graph)}, import edges: {sum(len(v) for v in graph.values())}")
    print(f"loops between the files of one folder: {len(file_loops)} {file_loops}")
    print(f"loops between top-level folders: {len(folder_loops)} {folder_loops}")
    print(f"upward imports (against lib.rs's layers): {len(upward)} {upward}")
    print(f"imports within one layer line: {len(sideways)} {sideways}")
    if unknown:
        print(f"not in lib.rs's tree: {sorted(unknown)}")
    sizes = {}
    for p in graph:
        sizes[top(p)] = sizes.get(top(p), 0) + code_lines(p)
    total = sum(sizes.values())
    print(f"code lines (non-blank, non-comment) in src/: {total}")
    for name, n in sorted(sizes.items(), key=lambda kv: -kv[1])[:6]:
        print(f"  {name}: {n} ({100 * n / total:.1f}%)")


def touch(pattern):
    rx = re.compile(pattern)
    hits = []
    for root in ("src", "tests"):
        for dirpath, _, names in os.walk(root):
            for n in names:
                p = os.path.join(dirpath, n)
                if n.endswith((".rs", ".cu")) and rx.search(open(p, encoding="utf-8").read()):
                    hits.append(p)
    for h in sorted(hits):
        print(h)
    print(f"{len(hits)} files")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "touch":
        touch(sys.argv[2])
    else:
        report()
