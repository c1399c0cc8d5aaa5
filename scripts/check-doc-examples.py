#!/usr/bin/env python3
"""Docs examples are compiled code, not hand copies.

A code block in docs/ preceded by `<!-- example: FILE#NAME -->` must be, line for
line, the region of FILE between the two `// [docs:NAME]` marker lines. FILE is
a test that compiles and runs the example, so the docs show code that builds
and passes. Usage: check-doc-examples.py REPO_ROOT. Exit 1 naming each
difference (the doc, the example, the first differing line)."""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
marker = re.compile(r"<!--\s*example:\s*(\S+)#(\S+)\s*-->")
problems, checked = [], 0


def region(path, name):
    lines = (root / path).read_text().splitlines()
    marks = [i for i, l in enumerate(lines) if l.strip() == f"// [docs:{name}]"]
    if len(marks) != 2:
        return None
    return lines[marks[0] + 1 : marks[1]]


for doc in sorted((root / "docs").rglob("*.md")):
    lines = doc.read_text().splitlines()
    for i, line in enumerate(lines):
        m = marker.fullmatch(line.strip())
        if not m:
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j >= len(lines) or not lines[j].startswith("```"):
            problems.append(f"{doc.relative_to(root)}:{i + 1}: no code block after the marker")
            continue
        end = j + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        block = lines[j + 1 : end]
        code = region(m.group(1), m.group(2))
        if code is None:
            problems.append(f"{doc.relative_to(root)}:{i + 1}: {m.group(1)} has no region "
                            f"'// [docs:{m.group(2)}]' (two marker lines)")
            continue
        checked += 1
        if block != code:
            k = next((k for k, (a, b) in enumerate(zip(block, code)) if a != b),
                     min(len(block), len(code)))
            problems.append(f"{doc.relative_to(root)}:{j + 2 + k}: example '{m.group(2)}' differs "
                            f"from {m.group(1)}: doc has {block[k] if k < len(block) else '(end)'!r}, "
                            f"code has {code[k] if k < len(code) else '(end)'!r}")

for p in problems:
    print(p)
print(f"doc examples: {checked} checked, {len(problems)} problems")
sys.exit(1 if problems or checked == 0 else 0)
