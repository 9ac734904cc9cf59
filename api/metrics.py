"""What `/metrics` tells, in Prometheus text: requests and their latency by route template and
status (Litestar's Prometheus plugin, which the step fast path goes through too), and the envs
(by state, live ones by user, deaths by cause), read from the registry when scraped."""

import collections
from collections.abc import Iterator

from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from api.auth import may_view
from supervisor.handle import State
from supervisor.registry import Registry

PREFIX = "gym_supervisor"
# Labels are route templates (`/v1/envs/{instance_id}/step`), never paths: ids would make a
# series each. Latency buckets reach from the step's fraction of a millisecond to slow creates.
CONFIG = PrometheusConfig(
    app_name="gym-supervisor", prefix=PREFIX, group_path=True,
    buckets=[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
)


class EnvCollector:
    """Owns nothing: reads the registry at each scrape, so the step path keeps no env counts."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        handles = self.registry.handles()
        states = collections.Counter(h.state.value for h in handles)
        by_state = GaugeMetricFamily(f"{PREFIX}_envs", "Envs listed, by state", labels=["state"])
        for state in State:
            by_state.add_metric([state.value], states[state.value])
        yield by_state
        users = collections.Counter(h.owner for h in handles if h.cause is None)
        live = GaugeMetricFamily(f"{PREFIX}_user_live_envs", "Live envs of each user", labels=["user"])
        for user, count in sorted(users.items()):
            live.add_metric([user], count)
        yield live
        deaths = CounterMetricFamily(f"{PREFIX}_env_deaths", "Env deaths, by cause", labels=["cause"])
        for cause, count in self.registry.deaths.items():
            deaths.add_metric([cause], count)
        yield deaths


def watch(registry: Registry) -> None:
    REGISTRY.register(EnvCollector(registry))  # type: ignore[arg-type]


class Metrics(PrometheusController):
    """`GET /metrics`, for viewers and admins; not in the OpenAPI schema."""

    guards = [may_view]
    include_in_schema = False


def requests_by_status() -> dict[str, int]:
    """Requests answered since start, by status (from the plugin's counter)."""
    out: collections.Counter[str] = collections.Counter()
    for metric in REGISTRY.collect():
        if metric.name == f"{PREFIX}_requests":
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    out[str(sample.labels["status_code"])] += int(sample.value)
    return dict(sorted(out.items()))
