"""Start-up of the command line: `uv run python benchmarks/bench_cli_startup.py [--rounds N]`.

Times, as fresh processes in one run (interleaved, so a busy machine slows all alike):
- `python -c pass`: the interpreter alone, the floor every command pays;
- `textback --help`: the command list (issue 10's target: under 0.3 s; it lists the sub-commands from
  service/cli.py's table without importing them);
- `textback <command> --help` for a light and a heavy sub-command, which import their own modules.
Reports the median of each and its ratio to `python -c pass`. `uv run` adds its own start (about 0.1 s to
check the environment); this measures the command itself, as the installed console script runs it.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "import sys; from service.cli import main; sys.exit(main())"]
CASES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "textback --help": [*CLI, "--help"],
    "textback contacts --help": [*CLI, "contacts", "--help"],
    "textback policy --help": [*CLI, "policy", "--help"],
}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_s(command: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one fresh process; CPU is what a busy machine does not inflate."""
    start, cpu = time.perf_counter(), _cpu_s()
    subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start, _cpu_s() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in CASES}
    for command in CASES.values():  # warm the file cache and the bytecode
        _run_s(command)
    for _ in range(args.rounds):
        for name, command in CASES.items():
            samples[name].append(_run_s(command))

    def median(name: str, which: int) -> float:
        return statistics.median(sample[which] for sample in samples[name])

    floor = median("python -c pass", 0)
    print(f"CLI start-up, median of {args.rounds} fresh processes each ({sys.executable}):")
    print(f"  {'':<28} {'wall ms':>8} {'x pass':>7} {'CPU ms':>8}")
    for name in CASES:
        wall = median(name, 0)
        print(f"  {name:<28} {wall * 1000:8.1f} {wall / floor:7.1f} {median(name, 1) * 1000:8.1f}")
    help_s = median("textback --help", 0)
    print(f"textback --help: {help_s:.3f} s ({'under' if help_s < 0.3 else 'OVER'} the 0.3 s target)")


if __name__ == "__main__":
    main()
