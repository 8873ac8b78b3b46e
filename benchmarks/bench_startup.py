"""Start-up cost of the output guard's self-test: `uv run python benchmarks/bench_startup.py [--rounds N]`.

`OutputGuard.load` holds the rules to the compliance manifest and runs every example of every rule (and the
manifest's) through the built Guard, once per policy version: a pass is recorded under the cache folder and
the next start with the same policy set and guard code skips the examples. This measures, in one run:

- baseline: reading and compiling the rules and building and verifying the Guard (`load_outbound_rules` +
  `OutputGuard.from_rules`: what any start does, with no manifest and no examples);
- cold: `OutputGuard.load` with an empty cache folder (manifest + every example + recording the pass);
- cached: `OutputGuard.load` when the cache holds this policy version;
- the first example of each rule only (what start-up ran before issue 9), for comparison.

`import guardrails` is paid once per process before any of these and reported apart. Offline.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.policy.files import load_outbound_rules, policy_version
from service.policy.guard import OutputGuard


def _median_ms(fn: Callable[[], object], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=Path, default=ROOT / "policies")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    policies = args.policies

    start = time.perf_counter()
    first = OutputGuard.load(policies)  # pays `import guardrails` and registers the validator
    first_s = time.perf_counter() - start
    rules = load_outbound_rules(policies)
    version = policy_version(policies)

    build = _median_ms(
        lambda: OutputGuard.from_rules(load_outbound_rules(policies), policy_version(policies), policies), args.rounds
    )
    guard = OutputGuard.from_rules(rules, version, policies)
    old_self_test = _median_ms(
        lambda: [guard.check(r.rule.examples.must_match[0]) for r in rules if r.rule.severity == "block"], args.rounds
    )
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10**6))
        cold = _median_ms(lambda: OutputGuard.load(policies, cache_dir=Path(tmp) / f"c{next(counter)}"), args.rounds)
        warm_dir = Path(tmp) / "warm"
        OutputGuard.load(policies, cache_dir=warm_dir)
        cached = _median_ms(lambda: OutputGuard.load(policies, cache_dir=warm_dir), args.rounds)
        examples = OutputGuard.load(policies, cache_dir=warm_dir).self_test.examples  # type: ignore[union-attr]

    print(f"policy set {version}: {len(rules)} outbound rules; the self-test checks {examples} texts")
    print(f"first load in this process (import guardrails + cold self-test): {first_s:.2f} s")
    print(f"{'median of ' + str(args.rounds) + ' rounds':<46} {'ms':>8} {'x build':>8}")
    for name, ms in [
        ("read rules, build the Guard (baseline)", build),
        ("first example of each rule only (before)", old_self_test),
        ("load, cold: manifest + every example", cold),
        ("load, cached for this policy version", cached),
    ]:
        print(f"{name:<46} {ms:>8.1f} {ms / build:>8.2f}")
    print(f"cold / cached: {cold / cached:.1f}x")
    assert first.self_test is not None


if __name__ == "__main__":
    main()
