"""The network timer's child process: `python -m fastdeepiot.profiling.timerchild`.

Started by `profiling.timer.NetworkTimer`; never run by hand. It is its own `__main__`, so the caller's
script is never imported again (multiprocessing's spawn would re-import it). It talks to its parent
through length-prefixed pickle frames on stdin/stdout (fd 1 is moved to stderr first, so a network
that prints cannot corrupt them) and ends when the parent closes the pipe or dies.

    ("init", {sys_path, backend, policy}) -> conditions
    ("load", [payload, ...])              -> [error or None per network]   (replaces what was loaded)
    ("replace", i, payload)               -> error or None
    ("run", rounds, indices)              -> [rounds or error per network]
    None                                  -> exit
"""

from __future__ import annotations

import os
import signal
import sys

import torch

from fastdeepiot.profiling.timer import (TimerPolicy, _describe, address_layout_condition, allocator_condition,
                                         recv_frame, runner_from_payload, send_frame, time_runners)


def serve(inp, out) -> None:
    backend, policy, runners = None, TimerPolicy(), []

    def load(payload):
        try:
            return runner_from_payload(backend, payload), None
        except Exception as e:  # noqa: BLE001 - reported to the parent per network
            return None, _describe(e)

    def close_all():
        for r in runners:
            if r is not None:
                r.close()

    while True:
        try:
            msg = recv_frame(inp)
        except (EOFError, OSError):
            return
        if msg is None:
            return
        try:
            if msg[0] == "init":
                cfg = msg[1]
                for p in cfg["sys_path"]:  # after our own entries: installed packages come first
                    if p not in sys.path:
                        sys.path.append(p)
                backend, policy = cfg["backend"], TimerPolicy(**cfg["policy"])
                torch.set_num_threads(backend.threads)
                reply = {"process": "child", "pid": os.getpid(), "torch_threads": torch.get_num_threads(),
                         "allocator": allocator_condition(), "address_layout": address_layout_condition()}
            elif msg[0] == "load":
                close_all()
                loaded = [load(p) for p in msg[1]]
                runners = [r for r, _ in loaded]
                reply = [err for _, err in loaded]
            elif msg[0] == "replace":
                _, i, payload = msg
                if runners[i] is not None:
                    runners[i].close()
                runners[i], reply = load(payload)
            elif msg[0] == "run":
                reply = time_runners(runners, policy, msg[1], only=msg[2])
            else:
                raise ValueError(f"unknown request {msg[0]!r}")
            send_frame(out, ("ok", reply))
        except Exception as e:  # noqa: BLE001
            send_frame(out, ("error", _describe(e)))


def main() -> None:
    # started in a session of its own (a terminal's Ctrl-C goes to the parent, which closes the pipe and so
    # ends us); a SIGINT sent here all the same is ignored
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed from here on goes to stderr, not into the frames
    sys.stdout = sys.stderr
    serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
