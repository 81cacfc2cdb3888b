"""Token prices per model, shipped as data (prices.json beside this module) and overridable.

Every entry says where its figures come from and when they were taken; an entry without a
published Azure price carries a `placeholder` note that the estimate shows with the cost, so a
guess is never presented as a price. ROWSMITH_PRICES_FILE names a JSON file of the same shape
whose models replace or add to the shipped ones (an enterprise agreement's rates, a new model).
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from processing.core.errors import ConfigurationError

SHIPPED = Path(__file__).with_name("prices.json")
PER = 1_000_000  # prices are per million tokens


@dataclass(frozen=True)
class Price:
    model: str
    input: float  # USD per million prompt tokens
    cached_input: float  # USD per million prompt tokens served from the prompt cache
    output: float  # USD per million answer (and reasoning) tokens
    batch_discount: float  # share the Batch API takes off, 0.5 = half price
    reasoning: bool  # the model spends reasoning tokens, billed as output (the estimate budgets them apart)
    source: str
    as_of: str
    placeholder: str = ""  # why this is not a published Azure price, when it is not

    def cost(self, prompt_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float:
        """USD for these tokens at the pay-as-you-go price."""
        fresh = prompt_tokens - cached_tokens
        return (fresh * self.input + cached_tokens * self.cached_input + output_tokens * self.output) / PER

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Price:
        """The snapshot a job's manifest keeps (so a price change never reprices a running job)."""
        return _entry(str(data.get("model", "")), data, "manifest")


def _entry(model: str, data: Any, source: str) -> Price:
    if not isinstance(data, dict):
        raise ConfigurationError(f"prices {source}: model {model!r} must be an object")
    try:
        price = Price(
            model=model,
            input=float(data["input"]),
            cached_input=float(data.get("cached_input", data["input"])),
            output=float(data["output"]),
            batch_discount=float(data.get("batch_discount", 0.0)),
            reasoning=bool(data.get("reasoning", False)),
            source=str(data.get("source", source)),
            as_of=str(data.get("as_of", "")),
            placeholder=str(data.get("placeholder", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"prices {source}: model {model!r} needs numbers input and output (USD per million tokens): {exc}"
        ) from None
    if min(price.input, price.cached_input, price.output) < 0 or not 0 <= price.batch_discount <= 1:
        raise ConfigurationError(f"prices {source}: model {model!r} has a negative price or a discount outside 0..1")
    return price


def _read(path: Path) -> dict[str, Price]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"prices file {path} cannot be read as JSON: {exc}") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise ConfigurationError(f'prices file {path} must be a JSON object with a "models" object')
    return {name: _entry(name, entry, str(path)) for name, entry in models.items()}


def load_prices(override: Path | None = None) -> dict[str, Price]:
    """The shipped table, with the override file's models replacing or adding to it."""
    prices = _read(SHIPPED)
    if override:
        prices.update(_read(override))
    return prices


def price_for(model: str, prices: dict[str, Price]) -> Price | None:
    """The deployment's price: by exact name, else the longest model name it starts with
    (`gpt-4o-mini-batch` is priced as `gpt-4o-mini`); None when the table has no such model."""
    if model in prices:
        return prices[model]
    matches = [name for name in prices if model.startswith(name)]
    return prices[max(matches, key=len)] if matches else None


@functools.cache
def _table(override: Path | None) -> dict[str, Price]:
    return load_prices(override)


def job_price(deployment: str, override: Path | None) -> Price | None:
    """The price a new job of `deployment` is billed at (the table is read once per process)."""
    return price_for(deployment, _table(override))
