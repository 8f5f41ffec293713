"""ACL authorizer micro-benchmark: decisions/second with a 50-rule policy vs allow-all.

Both authorizers run in the same process and the same run, through the same API,
so the ratio shows what rules cost per decision. Two workloads:

- hot: 1,000 distinct names asked over and over (answers come from the cache);
- cold: every name is new, so each decision does the exact + longest-prefix lookup
  and the bounded cache keeps evicting.

It also times parsing the policy text and compiling an authorizer from it, which a
token resolver pays on a cache miss.

    .venv/bin/python bench/acl_authorizer.py [--decisions 1000000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from proconsul.acl import Authorizer, parse_rules


def fifty_rule_policy() -> str:
    rules: list[str] = []
    for n in range(12):
        rules.append(f'service "svc-{n}" {{ policy = "write" }}')
        rules.append(f'service_prefix "team-{n}-" {{ policy = "read" }}')
    for n in range(8):
        rules.append(f'node "node-{n}" {{ policy = "write" }}')
        rules.append(f'key_prefix "app/{n}/" {{ policy = "write" }}')
    for n in range(8):
        rules.append(f'key "app/{n}/secret" {{ policy = "deny" }}')
    rules.append('service_prefix "" { policy = "read" }')
    rules.append('node_prefix "" { policy = "read" }')
    assert len(rules) == 50
    return "\n".join(rules) + "\n"


def names(count: int, tag: str) -> list[str]:
    # Mostly names that hit prefix rules, some exact hits, some that match only "".
    pool = [f"team-{n % 12}-{tag}{n}" for n in range(count)]
    pool[::7] = [f"svc-{n % 12}" for n in range(len(pool[::7]))]
    pool[::11] = [f"other-{tag}{n}" for n in range(len(pool[::11]))]
    return pool


def rate(check: Callable[[str], bool], workload: list[str], repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        for name in workload:
            check(name)
    elapsed = time.perf_counter() - start
    return len(workload) * repeat / elapsed


def compare(
    ours: Callable[[], Callable[[str], bool]],
    base: Callable[[], Callable[[str], bool]],
    workload: list[str],
    repeat: int,
    rounds: int = 5,
) -> tuple[float, float]:
    """Best rate of each, measured in alternation so machine noise hits both alike."""
    best_ours = best_base = 0.0
    for _ in range(rounds):
        best_ours = max(best_ours, rate(ours(), workload, repeat))
        best_base = max(best_base, rate(base(), workload, repeat))
    return best_ours, best_base


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=1_000_000)
    args = parser.parse_args()
    text = fifty_rule_policy()
    policy = parse_rules(text)

    def ruled() -> Callable[[str], bool]:
        return Authorizer([policy], default_policy="deny").service_read

    def allow_all() -> Callable[[str], bool]:
        return Authorizer(default_policy="allow").service_read

    hot = names(1000, "h")
    hot_repeat = max(1, args.decisions // len(hot))
    cold = names(args.decisions, "c")  # distinct names: every decision misses the cache
    print(f"service_read decisions/s ({args.decisions:,} per run, best of 5)")
    for label, workload, repeat in (("hot ", hot, hot_repeat), ("cold", cold, 1)):
        ours, base = compare(ruled, allow_all, workload, repeat)
        print(
            f"  {label}: 50-rule policy {ours:>12,.0f}/s   allow-all {base:>12,.0f}/s"
            f"   ratio {ours / base:.2f}"
        )

    rounds = 200
    start = time.perf_counter()
    for _ in range(rounds):
        parse_rules(text)
    parse_ms = (time.perf_counter() - start) / rounds * 1e3
    start = time.perf_counter()
    for _ in range(rounds):
        Authorizer([policy])
    compile_ms = (time.perf_counter() - start) / rounds * 1e3
    floor = max(rate(lambda name: True, hot, hot_repeat) for _ in range(3))
    print(f"  (a plain function returning True: {floor:,.0f}/s)")
    print(f"  parse 50 rules: {parse_ms:.2f} ms   compile authorizer: {compile_ms:.3f} ms")


if __name__ == "__main__":
    main()
