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


def _run_s(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    samples: dict[str, list[float]] = {name: [] for name in CASES}
    for command in CASES.values():  # warm the file cache and the bytecode
        _run_s(command)
    for _ in range(args.rounds):
        for name, command in CASES.items():
            samples[name].append(_run_s(command))

    floor = statistics.median(samples["python -c pass"])
    print(f"CLI start-up, median of {args.rounds} fresh processes each ({sys.executable}):")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"  {name:<28} {median * 1000:7.1f} ms   {median / floor:5.1f} x python -c pass")
    help_s = statistics.median(samples["textback --help"])
    print(f"textback --help: {help_s:.3f} s ({'under' if help_s < 0.3 else 'OVER'} the 0.3 s target)")


if __name__ == "__main__":
    main()
