"""The floor: outbound texts every policy set must block, fixed in code, whatever the policy files say.

The compliance manifest (policies/outbound/required.yaml) keeps the rules it lists in force, but it is a file
too: delete ``rates.yaml`` and its manifest entry in the same change and every remaining check still passes.
The design card's promise ("an output policy checks every outbound text and blocks rate quotes and loan
terms") does not depend on any file, so it is written here. The start-up self-test and `textback policy
check` run every text below through the built guard (service.policy.selftest); each must be blocked by a
rule the manifest requires at ``min_severity: block``, so the manifest has to name at least one rule per
category, and a rule it does not list (which may be downgraded or deleted at will) does not count.

A policy set that lets a floor text through fails, naming the category it no longer covers. The texts are
plain, unambiguous cases of each category: the manifest's and the rules' own examples are where the hard
phrasings live. Changing this list is a code change, reviewed like one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FloorCategory:
    name: str  # snake_case, shown in findings: floor.rate_quote
    what: str  # for people: "rate or APR quotes"
    must_block: tuple[str, ...]


FLOOR: tuple[FloorCategory, ...] = (
    FloorCategory("rate_quote", "rate or APR quotes", (
        "Rates from 5.99% APR this week.",
        "The rate is 6.25 today.",
        "I can get you six and a quarter percent.",
    )),
    FloorCategory("payment_amount", "payment amounts", (
        "Your payment would be about $1,900 a month.",
        "Payments as low as 999 a month.",
        "That works out to twenty-one hundred a month.",
    )),
    FloorCategory("repayment_term", "repayment terms", (
        "A 30-year fixed is the most popular choice.",
        "Pay it off in 15 years.",
        "That's 360 payments.",
    )),
    FloorCategory("loan_product", "loan products and payment structures", (
        "Our 5/1 ARM is popular with buyers.",
        "Interest-only payments for the first ten years.",
        "A balloon payment keeps your payments low.",
    )),
    FloorCategory("approval_promise", "promises of approval", (
        "You're pre-approved for $400,000!",
        "Guaranteed approval for every buyer.",
        "You'll definitely qualify.",
    )),
    FloorCategory("points_fees", "points and fee offers", (
        "Zero points and no closing costs this month.",
        "We'll waive the origination fee.",
        "2 discount points buys your rate down.",
    )),
    FloorCategory("down_payment", "down payment figures", (
        "Only 3% down for first-time buyers.",
        "Zero down on our VA loans.",
        "Nothing down for veterans.",
    )),
)

FLOOR_SOURCE = "service/policy/floor.py"
