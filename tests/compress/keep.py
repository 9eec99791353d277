#!/usr/bin/env python3
"""Lists, for each output of the corpus, the strings a model needs from it (<id>.keep, one a
line): every error and warning line with its location, failing test names and their
assertion messages, summary and count lines, exit status lines, file paths of search hits
and listings, branch names and commit ids. The rules follow what tool-output compression
promises to keep (docs/compression.md); they read only the output and its command, never
the compressor. Run after collect.sh; the .keep files are checked in beside the outputs.
"""
import os
import re
import sys

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

LINE_RULES = [
    # rustc and clippy diagnostics, and the place each points at
    (r"^(error|warning)(\[\w+\])?: .*", 0),
    # gcc/clang, mypy, flake8-style one-line diagnostics
    (r"^\S+:\d+(:\d+)?: (fatal error|error|warning|note): .*", 0),
    # eslint
    (r"^\s+\d+:\d+\s+(error|warning)\s+.*", 0),
    # pytest
    (r"^(FAILED|ERROR) .*", 0),
    (r"^E\s+\S.*", 0),
    (r"^\S+\.py:\d+: \w+.*", 0),
    (r"^=+ .*\b(passed|failed|error|errors|no tests ran)\b.* =+$", 0),
    # cargo test
    (r"^test .* FAILED$", 0),
    (r"panicked at (\S+)", 1),
    (r"^test result: .*", 0),
    (r"^running \d+ tests?$", 0),
    # mocha and node
    (r"^\s+\d+ (passing|failing|pending)\b.*", 0),
    (r"^\s+\d+\) .*", 0),
    (r"^\s*(AssertionError|Error|TypeError|ReferenceError)\b.*", 0),
    # python tracebacks
    (r"^Traceback \(most recent call last\):$", 0),
    (r"^\w+(Error|Exception)\b.*", 0),
    # build systems
    (r"^make(\[\d+\])?: \*\*\* .*", 0),
    (r"^CMake (Error|Warning).*", 0),
    (r"^-- (Configuring done|Generating done|Build files have been written to: .*)", 0),
    # summaries and counts
    (r"^\s*Finished .*", 0),
    (r".*\bgenerated \d+ warnings?\b.*", 0),
    (r"^Found \d+ errors?.*", 0),
    (r"^.*\d+ problems? \(.*", 0),
    (r"^Successfully installed .*", 0),
    (r"^added \d+ packages.*", 0),
    (r"^\s*\d+ files? changed.*", 0),
    (r"^Success: no issues found.*", 0),
    (r"^\d+ files? would be reformatted.*", 0),
    (r"(?i).*\bexit (code|status)\b.*", 0),
]
COMPILED = [(re.compile(p), g) for p, g in LINE_RULES]


def clean(text):
    text = re.sub(r"\x1b\[[0-9;?]*[ -/]*[@-~]", "", text)
    return "\n".join(l.rsplit("\r", 1)[-1] for l in text.split("\n"))


def line_rules(lines):
    keep = []
    for i, line in enumerate(lines):
        # Code frames (`12 |     code`) quote the source: context, not findings.
        if re.match(r"^\s*\d*\s*\|", line):
            continue
        # The place a diagnostic points at: the `-->` line right under its header (rustc,
        # clippy, ruff); notes' secondary places are context, not the diagnostic's location.
        m = re.match(r"^\s*--> (\S+)", line)
        if m and i > 0 and re.match(r"^(error|warning)|^[A-Z]+[0-9]+ ", lines[i - 1]):
            keep.append(m.group(1))
            continue
        for pattern, group in COMPILED:
            m = pattern.match(line) if pattern.pattern.startswith("^") else pattern.search(line)
            if m:
                found = m.group(group).strip()
                if len(found) > 200:
                    found = found[:200]
                keep.append(found)
                break
    return keep


def git_rules(command, lines):
    keep = []
    sub = command.split()[1] if len(command.split()) > 1 else ""
    for i, line in enumerate(lines):
        m = re.match(r"^commit ([0-9a-f]{40})", line)
        if m:
            keep.append(m.group(1))
            # the subject: the first message line
            for nxt in lines[i + 1 : i + 8]:
                if nxt.startswith("    ") and nxt.strip():
                    keep.append(nxt.strip()[:100])
                    break
        m = re.match(r"^On branch (\S+)", line)
        if m:
            keep.append(line.strip())
        m = re.match(r"^\t(?:modified|new file|deleted|renamed|both modified):\s+(\S+)", line)
        if m:
            keep.append(m.group(1))
        m = re.match(r"^diff --git a/(\S+)", line)
        if m:
            keep.append(m.group(1))
        if sub == "branch":
            name = line.lstrip("* ").split()[0] if line.strip() else ""
            if name:
                keep.append(name)
        if sub == "blame" or (sub == "log" and "--oneline" in command):
            if line.strip():
                keep.append(line.split()[0].lstrip("^"))
    if sub == "status":
        section = None
        for line in lines:
            if line.startswith("Untracked files:"):
                section = "untracked"
            elif line and not line.startswith("\t") and not line.startswith(" "):
                section = None if not line.startswith("Untracked") else section
            elif section == "untracked" and line.startswith("\t"):
                keep.append(line.strip())
    return keep


def search_rules(command, lines):
    keep = []
    listing = any(w in command.split()[0:1] for w in ("find", "ls", "tree")) or "--files" in command
    for line in lines:
        if not line.strip():
            continue
        if command.startswith("ls -la"):
            name = line.split()[-1] if len(line.split()) >= 9 else None
            if name and name not in (".", ".."):
                keep.append(name)
        elif command.startswith("ls -R"):
            if line.endswith(":"):
                keep.append(line[:-1])
            else:
                keep.extend(line.split())
        elif command.startswith("tree"):
            pass
        elif listing:
            path = line.strip().removeprefix("./")
            keep.append(path.rsplit("/", 1)[0] if "/" in path else path)
        else:
            keep.append(line.split(":", 1)[0])
    return keep


def json_rules(text):
    import json

    try:
        value = json.loads(text)
    except ValueError:
        return []
    if isinstance(value, dict):
        return ['"%s"' % k for k in value.keys()]
    return []


def npm_rules(command, lines):
    keep = []
    if command.startswith("npm ls") and "--json" not in command:
        for line in lines:
            m = re.match(r"^[├└]── (\S+)", line)
            if m:
                keep.append(m.group(1))
    return keep


def main():
    rows = [l.rstrip("\n").split("\t", 4) for l in open(os.path.join(HERE, "index.tsv"))]
    for ident, kind, project, status, command in rows:
        text = clean(open(os.path.join(HERE, ident + ".out"), encoding="utf-8", errors="replace").read())
        lines = text.split("\n")
        keep = line_rules(lines)
        if kind == "git":
            keep += git_rules(command, lines)
        elif kind == "search":
            keep += search_rules(command, lines)
        elif kind == "json":
            keep += json_rules(text)
        elif kind == "npm":
            keep += npm_rules(command, lines)
        elif kind == "read":
            non_empty = [l for l in lines if l.strip()]
            keep += [non_empty[0].strip(), non_empty[-1].strip()] if non_empty else []
        elif kind == "log":
            non_empty = [l for l in lines if l.strip()]
            keep += [non_empty[0].strip(), non_empty[-1].strip()] if non_empty else []
        seen = set()
        unique = []
        for k in keep:
            if k and k not in seen:
                seen.add(k)
                unique.append(k)
        with open(os.path.join(HERE, ident + ".keep"), "w", encoding="utf-8") as f:
            for k in unique:
                f.write(k + "\n")
        print("%-28s %5d strings" % (ident, len(unique)), file=sys.stderr)


if __name__ == "__main__":
    main()
