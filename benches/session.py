#!/usr/bin/env python3
"""Benchmark: keystroke-to-echo latency through a clutch session (xx -> holder -> PTY -> cat
and back) against a direct PTY running cat, measured in the same run, interleaved; and the
holder's resident memory. Targets: added median <= 1 ms, holder RSS <= 5 MB.

Run from the repo: `cargo build --release && python3 benches/session.py`.
"""
import os, pty, select, statistics, sys, tempfile, time, json, signal

XX = os.path.abspath("target/release/xx")
ROUNDS = 400

def spawn(argv, env):
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(argv[0], argv, env)
    return pid, fd

def read_until(fd, needle, timeout=5.0):
    buf = b""
    deadline = time.monotonic() + timeout
    while needle not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"never saw {needle!r}: {buf[-200:]!r}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            buf += os.read(fd, 65536)
    return buf

def echo_latency(fd):
    """Milliseconds from writing one byte to reading it back (cat's output, after the tty echo)."""
    samples = []
    for i in range(ROUNDS):
        ch = chr(ord("a") + i % 26).encode()
        t = time.perf_counter()
        os.write(fd, ch)
        read_until(fd, ch)
        samples.append((time.perf_counter() - t) * 1000)
    return samples

def main():
    home = tempfile.mkdtemp()
    agents = os.path.join(home, "config", "agents")
    os.makedirs(agents)
    with open(os.path.join(agents, "catty.toml"), "w") as f:
        f.write('name = "catty"\nletter = "z"\ndisplay_name = "cat"\nbinary = "cat"\ninstall = "coreutils"\n'
                'protocol = "chat"\nprofile = "catty"\n[modes]\ninit = []\n[gateway]\n')
    env = dict(os.environ, CLUTCH_HOME=home, TERM="xterm")
    direct_pid, direct_fd = spawn(["cat"], env)
    held_pid, held_fd = spawn([XX, "zid"], env)
    time.sleep(0.5)
    meta = json.load(open(os.path.join(home, "run", "sessions", "catty-1.json")))
    direct, held = [], []
    for _ in range(5):  # interleave blocks so machine noise hits both alike
        direct += echo_latency(direct_fd)
        held += echo_latency(held_fd)
    rss = 0
    with open(f"/proc/{meta['holder_pid']}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    d, h = statistics.median(direct), statistics.median(held)
    print(f"keystroke to echo, median of {len(direct)}: direct PTY {d:.3f} ms, through a clutch session {h:.3f} ms, "
          f"added {h - d:.3f} ms (target <= 1)")
    print(f"p99: direct {sorted(direct)[int(len(direct)*0.99)]:.3f} ms, session {sorted(held)[int(len(held)*0.99)]:.3f} ms")
    print(f"holder RSS: {rss / 1024:.1f} MB (target <= 5)")
    os.kill(meta["holder_pid"], signal.SIGTERM)
    os.kill(direct_pid, signal.SIGTERM)

if __name__ == "__main__":
    main()
