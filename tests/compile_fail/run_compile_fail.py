#!/usr/bin/env python3
"""Compile-fail test runner (cib style).

Usage: run_compile_fail.py --cxx "<compiler command>" [--flag F ...] FILE...

Each FILE must fail to compile, and the compiler's output must contain the text
of every `// EXPECT: <text>` line of the file. A file that compiles, or fails
for another reason, makes the runner exit with status 1.
"""

import argparse
import shlex
import subprocess
import sys


def expectations(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("// EXPECT:"):
                out.append(line[len("// EXPECT:"):].strip())
    return out


def check(cxx, flags, path):
    expects = expectations(path)
    if not expects:
        return f"{path}: no '// EXPECT:' line"
    cmd = shlex.split(cxx) + flags + ["-fsyntax-only", path]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if proc.returncode == 0:
        return f"{path}: compiled, but it must not"
    missing = [e for e in expects if e not in output]
    if missing:
        head = "\n".join(output.splitlines()[:40])
        return (f"{path}: failed to compile, but the output lacks: {missing}\n"
                f"--- first lines of the compiler output ---\n{head}")
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cxx", required=True, help="compiler command line")
    parser.add_argument("--flag", action="append", default=[], help="one compiler flag")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    failures = [msg for msg in (check(args.cxx, args.flag, p) for p in args.files) if msg]
    for msg in failures:
        print("FAIL " + msg)
    for p in args.files:
        if not any(m.startswith(p + ":") for m in failures):
            print("ok   " + p)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
