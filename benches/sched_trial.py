#!/usr/bin/env python3
"""Scheduler settings for the processes of one `loadgen --stack` run, applied from outside.

A trial tool, not part of the stack: it asks whether the CPU scheduler's choices, rather than the
CPU each process needs, decide the 10,000 events/s latency tail (benches/RESULTS.md, twentieth
session). It waits for loadgen's "stack up" line in LOG (the run's stdout, redirected there), then
every 0.5 s, until ingest exits, applies each MODE to the threads named that it has not set yet
(process lists are refreshed every 5 s):

  ingest-slice=US   every ingest thread asks for an EEVDF slice of US microseconds (Linux >= 6.12:
                    sched_setattr with sched_runtime under SCHED_OTHER; a shorter slice lets a
                    waking thread preempt the one running)
  beam-slice=US     the same for every RabbitMQ (beam.smp) thread
  worker-idle       every worker thread under SCHED_IDLE (a normal thread waking preempts it at once)
  pg-idle           every Postgres backend of the bench database under SCHED_IDLE
  pin-bg=CPU        the worker's threads and every Postgres process on CPU alone (undo with
                    `taskset -pc 0-N` on Postgres's processes after the run: its postmaster keeps it)

Usage: loadgen --stack ... > LOG & python3 benches/sched_trial.py LOG MODE...
"""

import ctypes
import os
import re
import struct
import subprocess
import sys
import time

SYS_SCHED_SETATTR = 314  # x86_64
SCHED_OTHER, SCHED_IDLE = 0, 5
LIBC = ctypes.CDLL(None, use_errno=True)


def sched_setattr(tid, policy, slice_ns=0):
    """struct sched_attr (56 bytes): size, policy, flags, nice, priority, runtime, deadline,
    period, util_min, util_max. Returns 0 or the errno."""
    attr = ctypes.create_string_buffer(
        struct.pack("IIQiIQQQII", 56, policy, 0, 0, 0, slice_ns, 0, 0, 0, 0), 56
    )
    if LIBC.syscall(SYS_SCHED_SETATTR, tid, attr, 0) != 0:
        return ctypes.get_errno()
    return 0


def pin(tid, cpu):
    """Returns 0 or the errno, as sched_setattr does."""
    try:
        os.sched_setaffinity(tid, {cpu})
    except OSError as e:
        return e.errno
    return 0


def threads(pid):
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return []


def pids(*command):
    out = subprocess.run(command, capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def bench_backends():
    return pids(
        "psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc",
        "SELECT pid FROM pg_stat_activity WHERE datname = 'faultline_bench' "
        "AND pid <> pg_backend_pid()",
    )


def main():
    log, modes = sys.argv[1], sys.argv[2:]
    stack = re.compile(r"ingest :\d+ \(pid Some\((\d+)\)\), worker :\d+ \(pid Some\((\d+)\)\)")
    while True:
        try:
            found = stack.search(open(log).read())
        except FileNotFoundError:
            found = None
        if found:
            break
        time.sleep(0.1)
    ingest, worker = int(found.group(1)), int(found.group(2))
    applied, errors, done = 0, set(), set()
    rounds = 0
    backends, beams, postgres = [], [], []
    while os.path.exists(f"/proc/{ingest}"):
        # Listing processes costs a fork each (psql, pgrep): every 5 s, not every round, so the
        # trial takes no CPU worth measuring from what it measures.
        if rounds % 10 == 0:
            backends = bench_backends() if "pg-idle" in modes else []
            beams = pids("pgrep", "beam.smp") if any(m.startswith("beam") for m in modes) else []
            postgres = pids("pgrep", "postgres") if any(m.startswith("pin") for m in modes) else []
        rounds += 1
        for mode in modes:
            name, _, value = mode.partition("=")
            # Which threads, and the call that sets one (it returns 0 or the errno).
            if name == "ingest-slice":
                tids = threads(ingest)
                apply = lambda t: sched_setattr(t, SCHED_OTHER, int(value) * 1000)
            elif name == "beam-slice":
                tids = [t for p in beams for t in threads(p)]
                apply = lambda t: sched_setattr(t, SCHED_OTHER, int(value) * 1000)
            elif name == "worker-idle":
                tids = threads(worker)
                apply = lambda t: sched_setattr(t, SCHED_IDLE)
            elif name == "pg-idle":
                tids = backends
                apply = lambda t: sched_setattr(t, SCHED_IDLE)
            elif name == "pin-bg":
                tids = threads(worker) + postgres
                apply = lambda t: pin(t, int(value))
            else:
                sys.exit(f"unknown mode {mode}")
            for tid in tids:
                if (name, tid) in done:
                    continue
                err = apply(tid)
                if err:
                    errors.add((name, err))
                else:
                    applied += 1
                    done.add((name, tid))
        time.sleep(0.5)
    print(f"sched_trial: {applied} settings applied, errors {sorted(errors)}", file=sys.stderr)


if __name__ == "__main__":
    main()
