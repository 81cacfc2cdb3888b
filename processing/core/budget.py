"""A job's budget: what may still be sent, decided from a ledger every instance shares.

The ledger (`jobs/<job>/budget.json`, processing/adapters/budget_ledger.py) holds what the job
has spent and what requests in flight have reserved. Before a rows message calls the model,
its rows reserve their worst case (the prompt's admission estimate plus the whole completion
budget, priced at the job's price); afterwards the reservation is settled with what Azure
billed. So instances never promise the same dollars twice, and the job can overspend only by
what the estimate missed on the requests in flight: a retry of an answer that failed its
schema check, or a prompt longer than its estimate.

For each row of a message, in order:

| the row's worst case ...                              | then                                         |
|-------------------------------------------------------|----------------------------------------------|
| fits what is neither spent nor reserved               | `SEND`: reserve it, call the model           |
| fits what is not spent, but not beside others' holds  | `WAIT`: re-enqueue it until they settle      |
| does not fit what is not spent (or budget reached)    | `REFUSE`: a `budget` row error; reached      |

Once reached, every later row of the job is refused without a model call: the job ends `done`,
its unsent rows as `budget` errors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from processing.core.errors import JobInputError

# The upload's blob metadata that carries `rowsmith submit --budget-usd` (metadata names are
# C# identifiers). It can only lower the pipeline's cap: whoever may upload may not lift it.
BUDGET_META = "rowsmith_budget_usd"

# A reservation whose instance died before settling it lapses after this long (longer than an
# invocation may run: host.json functionTimeout), so a crash never holds the budget for ever.
RESERVATION_SECONDS = 15 * 60
# How long a row waits for others' reservations to settle before it asks again.
WAIT_SECONDS = 3.0
# Dollars are floats: sums that should be equal may differ in the last bits.
CENT_FRACTION = 1e-9


class Admit(StrEnum):
    SEND = "send"
    WAIT = "wait"
    REFUSE = "refuse"


@dataclass
class Ledger:
    spent_usd: float = 0.0
    reserved: dict[str, list[float]] = field(default_factory=dict)  # reservation id -> [usd, lapses at]
    reached: bool = False
    refused_at_usd: float = 0.0  # the spend when the first row was refused (what the manifest reports)

    def held(self, now: float) -> float:
        return sum(usd for usd, until in self.reserved.values() if until > now)

    def lapse(self, now: float) -> None:
        self.reserved = {k: v for k, v in self.reserved.items() if v[1] > now}

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Ledger:
        data = json.loads(raw)
        return cls(
            spent_usd=float(data.get("spent_usd", 0.0)),
            reserved={str(k): [float(v[0]), float(v[1])] for k, v in dict(data.get("reserved", {})).items()},
            reached=bool(data.get("reached", False)),
            refused_at_usd=float(data.get("refused_at_usd", 0.0)),
        )


def admit(ledger: Ledger, budget_usd: float, asks: Sequence[float], reservation: str, now: float) -> list[Admit]:
    """Decide each ask in order and update the ledger: the sent ones reserved under `reservation`."""
    ledger.lapse(now)
    free = budget_usd - ledger.spent_usd - ledger.held(now)
    decisions: list[Admit] = []
    taken = 0.0
    for ask in asks:
        if ledger.reached:
            decisions.append(Admit.REFUSE)
        elif ask <= free - taken + CENT_FRACTION:
            decisions.append(Admit.SEND)
            taken += ask
        elif ledger.spent_usd + ask > budget_usd + CENT_FRACTION:
            # Would not fit even if every reservation settled at nothing: the budget is spent.
            ledger.reached = True
            ledger.refused_at_usd = ledger.spent_usd
            decisions.append(Admit.REFUSE)
        else:
            decisions.append(Admit.WAIT)
    if taken:
        ledger.reserved[reservation] = [taken, now + RESERVATION_SECONDS]
    return decisions


def settle(ledger: Ledger, reservation: str, spent_usd: float) -> None:
    """Replace a reservation by what its requests were billed."""
    ledger.reserved.pop(reservation, None)
    ledger.spent_usd += spent_usd


def refused_text(budget_usd: float) -> str:
    return (
        f"the job's budget of ${budget_usd:g} was spent before this row was sent (pipeline budget_usd or "
        "submit --budget-usd); take them with `rowsmith results JOB --failed` and submit that file with a larger budget"
    )


def job_budget(pipeline_usd: float, metadata: dict[str, str] | None, name: str) -> float | None:
    """The job's cap: the pipeline's, or the upload's if lower; None when neither sets one."""
    raw = {k.lower(): v for k, v in (metadata or {}).items()}.get(BUDGET_META)
    upload: float | None = None
    if raw is not None:
        try:
            upload = float(raw)
        except ValueError:
            upload = None
        if upload is None or not math.isfinite(upload) or upload <= 0:
            raise JobInputError(
                f"{name} was uploaded with budget {raw!r} (blob metadata {BUDGET_META}), which is not a positive "
                "number of dollars",
                where=f"blob metadata {BUDGET_META}",
                fix="upload it again with rowsmith submit --budget-usd <dollars>, or without a budget",
            )
    caps = [usd for usd in (pipeline_usd or None, upload) if usd]
    return min(caps) if caps else None


def worst_case_usd(price: Any, prompt_estimate: int, completion_budget: int) -> float:
    """What one request may cost at most, as reserved: its prompt estimate and its whole budget."""
    return float(price.cost(prompt_estimate, completion_budget))


def check_priced(budget_usd: float | None, priced: bool, deployment: str, pipeline: str, name: str) -> None:
    """A budget needs a price: without one, spend cannot be counted in dollars (ingest and submit)."""
    if budget_usd and not priced:
        raise JobInputError(
            f"{name} has a budget of ${budget_usd:g}, but the price table has no price for deployment "
            f"{deployment!r}, so what it spends cannot be counted in dollars",
            where=f"pipelines/{pipeline}.toml (budget_usd) or submit --budget-usd",
            fix="add the deployment's model to a prices file named by ROWSMITH_PRICES_FILE (the shape of "
            "processing/core/prices.json), or name a priced model as the deployment; then upload the file again",
        )
