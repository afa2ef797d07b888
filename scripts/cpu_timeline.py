"""Where the machine's CPU goes while something runs: every --interval seconds, how many cores were busy and
how many each kind of process used (psql, PostgreSQL backends, upload worker, other workers, gateway, the
bench itself, the rest), from /proc (Linux), until interrupted. Processes that end between two samples
(a COPY backend) are counted up to their last sample.

    .venv/bin/python scripts/cpu_timeline.py > cpu.log &  DATABASE_URL=... scripts/bench --only copy --rounds 1
"""

from __future__ import annotations

import argparse
import os
import sys
import time

_TICKS = os.sysconf("SC_CLK_TCK")


def _machine() -> tuple[int, int]:
    """(all jiffies, idle jiffies) since boot."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return sum(fields), fields[3] + fields[4]


def _processes() -> dict[str, tuple[int, str]]:
    """{pid: (user + system ticks, command line)} of every process still readable."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline") as cmdline:
                command = cmdline.read().replace("\0", " ")
        except OSError:
            continue
        found[pid] = (int(fields[11]) + int(fields[12]), command)
    return found


def kind(command: str) -> str:
    if command.startswith("psql"):
        return "psql"
    if command.startswith("postgres"):
        return "postgres"
    if "--queues upload" in command:
        return "upload_worker"
    if "dramatiq" in command or "periodiq" in command:
        return "other_workers"
    if "gunicorn" in command:
        return "gateway"
    if "bench" in command:
        return "bench"
    return "rest"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    (total, idle), before, started = _machine(), _processes(), time.monotonic()
    try:
        while True:
            time.sleep(args.interval)
            (total_now, idle_now), now = _machine(), _processes()
            busy = (1 - (idle_now - idle) / max(total_now - total, 1)) * cores
            used: dict[str, float] = {}
            for pid, (ticks, command) in now.items():
                delta = ticks - before[pid][0] if pid in before else ticks
                if delta:
                    used[kind(command)] = used.get(kind(command), 0.0) + delta / _TICKS / args.interval
            print(f"{time.monotonic() - started:7.1f} s  busy {busy:4.2f}  "
                  + "  ".join(f"{name} {cores_used:.2f}" for name, cores_used in sorted(used.items())), flush=True)
            total, idle, before = total_now, idle_now, now
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
