"""Which production variant answers a request, as SageMaker splits an endpoint's traffic.

An endpoint is a set of variants, each serving one model of the model directory with a weight. The supervisor
puts them in the routing table (`endpoints`): the endpoint of SAGESTACK_ENDPOINT_CONFIG, and, for a model with a
compiled twin (`<name>_compiled`) that the file does not name, an endpoint `<name>` with the variants `uncompiled`
and `compiled`, weighted 0/1 by COMPILEDMODEL. `sagestack variants set-weights` changes the weights in the
table, which every gateway worker reads on its next request (UpdateEndpointWeightsAndCapacities, no restart).

A request names an endpoint (or, naming nothing, gets the default one) and is split by weight, unless
X-Amzn-SageMaker-Target-Variant pins a variant, or the custom attribute `compiled=true|false` (a shorthand) picks
the compiled or uncompiled one. A request naming a variant's model gets that variant. Any other model is an
endpoint of one variant, AllTraffic.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass

from server.endpoint_config import DEFAULT_VARIANT, EndpointConfig
from server.errors import bad_request, not_found
from server.routes import EndpointRoute, RouteTable, VariantRoute

TARGET_VARIANT = "X-Amzn-SageMaker-Target-Variant"
INVOKED_VARIANT = "x-Amzn-Invoked-Production-Variant"
COMPILED_SUFFIX = "_compiled"  # <name>_compiled is the compiled variant of <name>
COMPILED, UNCOMPILED = "compiled", "uncompiled"  # a compiled twin's variant names

Weights = dict[tuple[str, str], float]  # (endpoint, variant) -> weight set at run time


@dataclass(frozen=True)
class Choice:
    endpoint: str
    variant: str
    model: str
    shadow: VariantRoute | None = None
    shadow_percentage: float = 0.0


def endpoints(config: EndpointConfig | None, models: Iterable[str], compiled_model: bool,
              weights: Weights) -> dict[str, EndpointRoute]:  # fmt: skip
    """The routing table's endpoints: the configured one, then one per compiled twin the config leaves out."""
    names = set(models)
    out: dict[str, EndpointRoute] = {}
    named: set[str] = set()
    if config is not None:

        def route(v) -> VariantRoute:  # fmt: skip
            return VariantRoute(v.name, v.model, weights.get((config.name, v.name), v.weight))

        shadow = route(config.shadow) if config.shadow else None
        out[config.name] = EndpointRoute(config.name, [route(v) for v in config.variants], shadow,
                                         config.shadow_percentage)  # fmt: skip
        named = {v.model for v in (*config.variants, *filter(None, [config.shadow]))}
    for base in sorted(names):
        twin = base + COMPILED_SUFFIX
        if twin not in names or base.endswith(COMPILED_SUFFIX) or {base, twin} & named or base in out:
            continue
        compiled = 1.0 if compiled_model else 0.0
        out[base] = EndpointRoute(base, [
            VariantRoute(UNCOMPILED, base, weights.get((base, UNCOMPILED), 1.0 - compiled)),
            VariantRoute(COMPILED, twin, weights.get((base, COMPILED), compiled)),
        ])  # fmt: skip
    return out


def set_weights(endpoint: EndpointRoute, wanted: dict[str, float]) -> list[VariantRoute]:
    """The endpoint's variants with `wanted` weights, or a ValueError naming the unknown variant or bad weight."""
    known = [v.name for v in endpoint.variants]
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise ValueError(f"endpoint {endpoint.name!r} has no variant {', '.join(map(repr, unknown))} (has: "
                         f"{', '.join(known)})")  # fmt: skip
    if any(not math.isfinite(w) or w < 0 for w in wanted.values()):
        raise ValueError("a variant's weight must be a number, 0 or more")
    out = [VariantRoute(v.name, v.model, wanted.get(v.name, v.weight)) for v in endpoint.variants]
    if sum(v.weight for v in out) <= 0:
        raise ValueError("at least one variant must keep a weight above 0")
    return out


class Chooser:
    """One gateway worker's split. SAGESTACK_VARIANT_SEED makes it repeatable (each worker draws the same sequence)."""

    def __init__(self, seed: int | None) -> None:
        self.rng = random.Random(seed)

    def choose(self, table: RouteTable, name: str, target: str | None, compiled: str | None) -> Choice:
        endpoint, pinned = _endpoint_of(table, name)
        if endpoint is None:
            if target is not None and target != DEFAULT_VARIANT:
                raise bad_request(f"{TARGET_VARIANT}: model '{name}' has one variant, {DEFAULT_VARIANT}, "
                                  f"not {target!r}")  # fmt: skip
            if compiled is not None:
                _compiled_flag(compiled)
                raise not_found(f"model '{name.removesuffix(COMPILED_SUFFIX)}' has no compiled and uncompiled "
                                f"variants (compiled={compiled})")  # fmt: skip
            return Choice(name, DEFAULT_VARIANT, name)
        if target is not None:
            variant = next((v for v in endpoint.variants if v.name == target), None)
            if variant is None:
                raise bad_request(f"{TARGET_VARIANT}: endpoint '{endpoint.name}' has no variant {target!r} (has: "
                                  f"{', '.join(v.name for v in endpoint.variants)})")  # fmt: skip
        elif compiled is not None:
            want = _compiled_flag(compiled)
            found = [v for v in endpoint.variants if v.model.endswith(COMPILED_SUFFIX) == want]
            if len(found) != 1:
                raise not_found(f"endpoint '{endpoint.name}' has no single {'compiled' if want else 'uncompiled'} "
                                f"variant (compiled={compiled})")  # fmt: skip
            variant = found[0]
        elif pinned is not None:
            variant = pinned
        else:
            variant = self.rng.choices(endpoint.variants, [v.weight for v in endpoint.variants])[0]
        if variant is endpoint.shadow:
            return Choice(endpoint.name, variant.name, variant.model)
        return Choice(endpoint.name, variant.name, variant.model, endpoint.shadow, endpoint.shadow_percentage)

    def sampled(self, percentage: float) -> bool:
        """Whether this request is in a `percentage` share (the shadow's copy, data capture)."""
        return percentage >= 100 or (percentage > 0 and self.rng.random() * 100 < percentage)


def _endpoint_of(table: RouteTable, name: str) -> tuple[EndpointRoute | None, VariantRoute | None]:
    """The endpoint a name means, and the variant it pins when the name is a variant's model."""
    if name in table.endpoints:
        return table.endpoints[name], None
    for endpoint in table.endpoints.values():
        for variant in (*endpoint.variants, *filter(None, [endpoint.shadow])):
            if variant.model == name:
                return endpoint, variant
    return None, None


def _compiled_flag(raw: str) -> bool:
    if raw.lower() not in ("true", "false"):
        raise bad_request(f"custom attribute compiled={raw!r} must be true or false")
    return raw.lower() == "true"
