#!/usr/bin/env python3
"""The peers' compression of the corpus, for `cargo bench --bench gateway -- compress`.

    compress_peers.py CORPUS_DIR [--headroom] [--rtk PATH]

Prints {"headroom": {id: text}, "rtk": {id: text}} as JSON; the bench scores every tool's
texts the same way (reduction, must-keep recall).

headroom: each output goes to headroom.compress() as the result of a Bash tool call that ran
its command, followed by two more turns (so it is not the protected last message), with
protect_recent=0; the condensed tool result is what is scored.

rtk: each command rtk has a filter for (cargo, git, ls, tree, find, grep, ruff, pytest, pip,
npm, npx, tsc) is run as `rtk <command>` in an empty directory, with shims first on PATH in
place of the programs it runs that print the recorded output and exit with the recorded
status, so rtk filters exactly what was recorded. Commands it has no filter for go through
unchanged, as its shell hook leaves them. rtk runs some commands with flags of its own (a
porcelain `git status`, say) and then parses what it expects of those: where the recorded
output is not in that shape, rtk's result is what it made of it.
"""
import json
import os
import shlex
import stat
import subprocess
import sys
import tempfile


def load(corpus):
    rows = []
    for line in open(os.path.join(corpus, "index.tsv"), encoding="utf-8"):
        ident, kind, project, status, command = line.rstrip("\n").split("\t", 4)
        output = open(os.path.join(corpus, ident + ".out"), encoding="utf-8", errors="replace").read()
        rows.append((ident, kind, int(status), command, output))
    return rows


def headroom_texts(rows):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import headroom

    texts = {}
    for ident, kind, status, command, output in rows:
        messages = [
            {"role": "user", "content": "Run it and tell me what you see."},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": command}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": output}]},
            {"role": "assistant", "content": "Done."},
            {"role": "user", "content": "Go on."},
        ]
        try:
            result = headroom.compress(messages, model="claude-sonnet-4-5-20250929", protect_recent=0)
            content = result.messages[2]["content"]
            block = content[0] if isinstance(content, list) else {"content": content}
            text = block.get("content", output)
            if isinstance(text, list):
                text = "\n".join(part.get("text", "") for part in text if isinstance(part, dict))
            texts[ident] = text
        except Exception as error:  # a failure counts as no compression
            print("headroom failed on %s: %s" % (ident, error), file=sys.stderr)
            texts[ident] = output
    return texts


def program_of(command):
    """The program the command's last stage runs, and that stage."""
    stage = command
    for sep in ("&&", ";"):
        stage = stage.split(sep)[-1]
    stage = stage.split("|")[0].strip()
    try:
        words = shlex.split(stage)
    except ValueError:  # a quoted `;` or `|` cut the stage: the command's own words
        words = command.split()
    if words[:2] == ["python", "-m"]:
        words = words[2:]
    if words[:1] == ["npx"]:
        words = words[1:]
    return words


RTK_FILTERS = {"cargo", "git", "ls", "tree", "find", "grep", "ruff", "pytest", "pip", "npm", "npx", "tsc"}
RUNNERS = {"pytest": ["python", "python3"], "pip": ["python", "python3", "pip3", "uv"],
           "ruff": ["python", "python3"], "npm": ["npx", "node"], "npx": ["npm", "node"]}


def rtk_texts(rows, rtk):
    texts = {}
    for ident, kind, status, command, output in rows:
        words = program_of(command)
        if words[0] not in RTK_FILTERS:
            texts[ident] = output
            continue
        with tempfile.TemporaryDirectory() as work:
            shim_dir = os.path.join(work, "shim")
            os.mkdir(shim_dir)
            recorded = os.path.join(work, "recorded")
            with open(recorded, "w", encoding="utf-8") as f:
                f.write(output)
            for program in [words[0]] + RUNNERS.get(words[0], []):
                shim = os.path.join(shim_dir, program)
                with open(shim, "w") as f:
                    f.write("#!/bin/sh\n/bin/cat %s\nexit %d\n" % (shlex.quote(recorded), status))
                os.chmod(shim, stat.S_IRWXU)
            env = dict(os.environ, PATH=shim_dir + ":" + os.environ.get("PATH", ""), NO_COLOR="1")
            try:
                done = subprocess.run([rtk] + words, cwd=work, env=env, capture_output=True, text=True, timeout=60)
                text = done.stdout + done.stderr
            except Exception as error:
                print("rtk failed on %s: %s" % (ident, error), file=sys.stderr)
                text = output
        texts[ident] = text
    return texts


def main():
    corpus = sys.argv[1]
    rows = load(corpus)
    out = {}
    if "--headroom" in sys.argv:
        out["headroom"] = headroom_texts(rows)
    if "--rtk" in sys.argv:
        out["rtk"] = rtk_texts(rows, sys.argv[sys.argv.index("--rtk") + 1])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
