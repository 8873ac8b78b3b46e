"""Who an opt-out stops: one reviewable file, read strictly like the other sending policies.

    policies/sending/opt_out.yaml   kind: opt_out   scope: broker | brokerage | all

`broker`: a STOP stops the texts of the broker whose number was texted. `brokerage` (the default and the shipped
value): it stops every broker of the same brokerage. `all`: every number this textback serves.

The same brokerage: each broker's brokerage is its company NMLS ID when the brokers file gives one, else its
brokerage name compared ignoring case and spaces ("Harbor Mortgage Group" = "harbor  MORTGAGE group", "SOCIÉTÉ
HYPOTHÉCAIRE" = "Société hypothécaire", in any Unicode form and with any Unicode space). So two
brokers with the same company NMLS ID are one brokerage whatever their names; two different IDs are two
brokerages whatever their names; and a broker without an ID is in the brokerage of the brokers without one that
have its name, never in one identified by an ID (give every broker of a company its company_nmls_id: `textback
policy check` names a broker whose brokerage name matches a broker with an ID while it has none). An
equivalence, so that a START to any broker of a scope reopens the same scope for each of its brokers. The rule
is computed here only (`brokerage_key`), in Python: sync_brokers stores it on each Broker row
(`Broker.brokerage_key`) and the one SQL statement (service.optout_lock.opt_out_state) compares that column, so
SQL never spells the rule a second time (its lower() is ASCII-only on SQLite). `same_brokerage` compares the same
key for the examples, the check, the audit and the tests.

Opt-in: the latest opt-out or opt-in word from the number within the scope wins, so START to any broker of the
scope makes the number textable again in that scope. A carrier block (Twilio error 21610, the carrier's own
record of a STOP to one sending number) stops that one number only: it is not a word from the borrower, and no
START to another number lifts it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from service.policy.files import PolicyFileModel, load_policy_model

OPT_OUT_FILE = Path("sending") / "opt_out.yaml"
Scope = Literal["broker", "brokerage", "all"]
DEFAULT_SCOPE: Scope = "brokerage"


class _BrokerLike(Protocol):
    @property
    def brokerage(self) -> str: ...
    @property
    def company_nmls_id(self) -> str | None: ...


class _BrokerNamed(_BrokerLike, Protocol):
    @property
    def name(self) -> str: ...


def brokerage_name_key(name: str) -> str:
    """The brokerage name as compared: one Unicode form (NFKC), case folded (any script, not ASCII only),
    without any whitespace (Unicode's, which includes no-break and thin spaces)."""
    return "".join(unicodedata.normalize("NFKC", name).casefold().split())


def brokerage_key(broker: _BrokerLike) -> str:
    """Which brokerage a broker is in, as stored on Broker.brokerage_key and compared in SQL: "nmls:<company
    NMLS ID>", else "name:<brokerage_name_key>"."""
    if broker.company_nmls_id:
        return f"nmls:{broker.company_nmls_id}"
    return f"name:{brokerage_name_key(broker.brokerage)}"


def same_brokerage(a: _BrokerLike, b: _BrokerLike) -> bool:
    """Whether two brokers are one brokerage (`brokerage_key`)."""
    return brokerage_key(a) == brokerage_key(b)


def brokerage_findings(brokers: Sequence[_BrokerNamed]) -> list[str]:
    """Brokers without a company NMLS ID whose brokerage name is that of a broker with one: under the scope
    `brokerage` they are a brokerage of their own, which is most likely a missing company_nmls_id."""
    identified: dict[str, list[_BrokerNamed]] = {}
    for broker in brokers:
        if broker.company_nmls_id:
            identified.setdefault(brokerage_name_key(broker.brokerage), []).append(broker)
    findings = []
    for broker in brokers:
        named = identified.get(brokerage_name_key(broker.brokerage), [])
        if broker.company_nmls_id or not named:
            continue
        others = ", ".join(f"{b.name} (company NMLS ID {b.company_nmls_id})" for b in named)
        findings.append(f"{broker.name} has no company_nmls_id but the brokerage name of {others}: under the "
                        "opt-out scope 'brokerage' an opt-out to one does not stop the other's texts until they "
                        "give the same company NMLS ID")
    return findings


class ExampleBroker(BaseModel):
    """A broker as an example names it: the brokerage name and, when it has one, the company NMLS ID."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    brokerage: StrictStr = Field(min_length=1)
    company_nmls_id: StrictStr | None = Field(default=None, pattern=r"^\d{1,12}$")


class OptOutExample(BaseModel):
    """A STOP to `stop_to`: is `sender` (another broker) the same brokerage?"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stop_to: ExampleBroker
    sender: ExampleBroker
    same_brokerage: bool

    @property
    def label(self) -> str:
        def name(b: ExampleBroker) -> str:
            return f"{b.brokerage!r}" + (f" (NMLS {b.company_nmls_id})" if b.company_nmls_id else "")
        verdict = "the same brokerage" if self.same_brokerage else "another brokerage"
        return f"{name(self.stop_to)} and {name(self.sender)}: {verdict}"


class OptOutFile(PolicyFileModel):
    """policies/sending/opt_out.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["opt_out"]
    scope: Scope = DEFAULT_SCOPE
    examples: list[OptOutExample] = Field(min_length=1)


@dataclass(frozen=True)
class OptOutPolicy:
    """The loaded file (the default, brokerage, when a policy set has none)."""

    scope: Scope = DEFAULT_SCOPE
    examples: tuple[OptOutExample, ...] = ()
    path: Path | None = None

    def example_findings(self) -> list[str]:
        """Each example whose brokers `same_brokerage` judges otherwise than the file says; empty when they agree."""
        return [f"{self.path}: example {example.label!r} is judged "
                f"{'the same brokerage' if not example.same_brokerage else 'another brokerage'}"
                for example in self.examples if same_brokerage(example.stop_to, example.sender) != example.same_brokerage]


def load_opt_out_policy(policies_dir: Path) -> OptOutPolicy:
    """Read policies/sending/opt_out.yaml strictly (PolicyError naming the file and field); the default scope
    (brokerage) when the policy set has no such file."""
    path = policies_dir / OPT_OUT_FILE
    if not path.exists():
        return OptOutPolicy()
    loaded = load_policy_model(path, OptOutFile)
    return OptOutPolicy(scope=loaded.scope, examples=tuple(loaded.examples), path=path)
