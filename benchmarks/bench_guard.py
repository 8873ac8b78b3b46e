"""Cost of the output guard per text: `uv run python benchmarks/bench_guard.py [--rounds N]`.

Times `OutputGuard.check` (the guardrails Guard, what sending uses) and `scan` (the same regexes without
guardrails) over every outbound example and every rendered template, and the one-off cost of building the
guard (mostly `import guardrails`). Offline: nothing here touches the network.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.policy.files import load_outbound_rules
from service.policy.guard import OutputGuard
from service.policy.verdicts import scan


def _texts(policies: Path) -> list[tuple[str, dict[str, str]]]:
    rules = load_outbound_rules(policies)
    texts = [(t, {}) for r in rules for t in [*r.rule.examples.must_match, *r.rule.examples.must_not_match]]
    try:
        from service.templates import load_templates

        texts += [(r.text, r.required) for r in load_templates(policies).sample_renders() if r.audience == "borrower"]
    except ImportError:
        pass
    return texts


def _time(fn: Callable[[str, dict[str, str]], object], texts: list[tuple[str, dict[str, str]]], rounds: int) -> list[float]:
    for text, required in texts:  # warm up
        fn(text, required)
    samples: list[float] = []
    for _ in range(rounds):
        for text, required in texts:
            start = time.perf_counter_ns()
            fn(text, required)
            samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def _row(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{name:<28} {statistics.median(ordered):>10.1f} {p99:>10.1f} {statistics.fmean(ordered):>10.1f} {len(ordered):>8}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=Path, default=ROOT / "policies")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    start = time.perf_counter()
    guard = OutputGuard.load(args.policies)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    OutputGuard.load(args.policies)
    reload_s = time.perf_counter() - start

    texts = _texts(args.policies)
    rules = [loaded.rule for loaded in guard.rules]
    guarded = _time(lambda t, r: guard.check(t, required=r), texts, args.rounds)
    plain = _time(lambda t, _r: scan(t, rules), texts, args.rounds)

    print(f"policy set {guard.policy_version}: {len(rules)} outbound rules, {len(texts)} texts x {args.rounds} rounds")
    print(f"first OutputGuard.load (imports guardrails): {load_s:.2f} s; a second load: {reload_s * 1000:.1f} ms")
    print(f"{'per text, microseconds':<28} {'median':>10} {'p99':>10} {'mean':>10} {'n':>8}")
    print(_row("OutputGuard.check", guarded))
    print(_row("scan (regexes only)", plain))


if __name__ == "__main__":
    main()
