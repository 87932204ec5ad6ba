"""``--threads``: how many CPU threads a command's tensor work uses.

On a shared beamline PC, a command that takes every core while another job runs is slowed
many times over by the contention (measured on scan 54: 1.1 s idle, 13-25 s beside one busy
process with two threads, 2 s with one thread). The default therefore counts the cores this
process may use (its CPU affinity) minus the processes running right now, never less than one;
``--threads N`` or the ``OMP_NUM_THREADS`` environment variable fix the number instead.
"""

from __future__ import annotations

import argparse
import os


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    """The ``--threads`` option of every command that computes."""
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="CPU threads (default: the cores this process may use minus those busy right now, at least 1; "
                        "OMP_NUM_THREADS also sets it)")


def _running_others() -> int:
    """Processes running or runnable now, other than this one (the kernel's instantaneous count)."""
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, running - 1)


def default_threads() -> int:
    """Cores available to this process (affinity) minus the other running processes, >= 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - _running_others())


def choose_threads(requested: int | None, reserved: int = 0) -> int:
    """The thread count a command uses: ``requested``, else ``OMP_NUM_THREADS``, else
    :func:`default_threads` minus ``reserved`` cores (at least 1).

    ``reserved``: cores other processes of this command need, as ``cdinn train``'s DataLoader
    workers that simulate samples: on 2 cores, two training threads beside one such worker
    trained the 2D CDI NN at half the samples/s of one thread (3.5 vs 6.6 steps/s).
    """
    if requested is not None:
        return requested
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) >= 1:
        return int(env)
    return max(1, default_threads() - reserved)


def apply_threads(requested: int | None) -> int:
    """Set torch's intra-op thread count for this process; returns the count it replaced."""
    import torch  # the CLI's start-up (``--help``) does not pay for torch

    previous = torch.get_num_threads()
    torch.set_num_threads(choose_threads(requested))
    return previous
