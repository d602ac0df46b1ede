"""Every setting of omnirec, read from ``OMNIREC_*`` environment variables.

One class serves the flow, the API and the CLI so a value means the same thing
everywhere; each deployable reads only the fields it needs.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SCOPES = frozenset({"recommend", "profile", "admin"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OMNIREC_", env_file=".env", extra="ignore", env_ignore_empty=True)

    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "rec"
    log_format: Literal["text", "json"] = Field("text", description="log lines of the flow and the API: plain "
                                                "text, or one JSON object per line for a log shipper")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    topic_web: str = "web.events"
    topic_store: str = "store.events"
    topic_catalog: str = "catalog.products"
    topic_offers: str = "offers"
    topic_feedback: str = "recs.feedback"
    topic_churn_alerts: str = "alerts.churn"
    topic_deadletter: str = "events.deadletter"
    topic_partitions: int = Field(4, ge=1)

    half_life_days: float = Field(14.0, gt=0, description="decay of affinities and popularity")
    cooccurrence_half_life_days: float = Field(60.0, gt=0)
    replenishable_categories: list[str] = Field(
        default_factory=list,
        description="explicit override: categories whose items may always come back after a purchase "
                    "(what is rebought is learned from the stream; leave empty)")
    anonymous_ttl_days: float = Field(
        90.0, gt=0, description="an anonymous (not yet stitched) profile expires in Redis this long after its "
                                "last event; a stitched one becomes a link and stays")
    erasure_retention_days: float = Field(
        30.0, gt=0, description="after a customer is erased, their events with an event time before the erasure "
                                "plus this are ignored (late events and retries cannot bring them back)")
    repeat_half_life_days: float = Field(
        180.0, gt=0, description="decay of the learned repeat-purchase habits of items and categories")
    max_event_bytes: int = Field(65_536, gt=0)
    max_event_lateness_days: float = Field(30.0, gt=0)
    max_event_future_hours: float = Field(24.0, gt=0)
    earliest_event_date: str = Field("2000-01-01", pattern=r"^\d{4}-\d{2}-\d{2}$",
                                     description="older timestamps are dead-lettered (epoch seconds sent as ms?)")
    latest_event_date: str = Field("2100-01-01", pattern=r"^\d{4}-\d{2}-\d{2}$",
                                   description="newer timestamps are dead-lettered, even in replays of history")
    max_item_qty: float = Field(10_000.0, gt=0, le=1e9, description="larger quantities per line are dead-lettered")
    max_item_price: float = Field(1_000_000.0, gt=0, le=1e12,
                                  description="larger unit (and list) prices and product prices are dead-lettered")

    recovery_dir: str = ".omnirec/recovery"
    snapshot_interval_s: float = Field(2.0, gt=0)
    flow_batch_size: int = Field(1000, gt=0)
    flow_fetch_wait_ms: int = Field(250, ge=1, le=5000, description="longest the broker holds an empty fetch of the "
                                    "flow's Kafka source: the idle poll rate (one fetch per partition per wait) "
                                    "against the added delay on a quiet partition")
    flow_idle_poll_ms: int = Field(200, ge=1, le=5000, description="how long a Kafka source partition of the flow "
                                   "rests after an empty poll: idle CPU against the added delay on a quiet "
                                   "partition (flows/kafka_source.py)")
    workers: int = Field(1, ge=1)

    redis_retry_base_s: float = Field(0.1, gt=0, description="first wait before the Redis sink retries a batch")
    redis_retry_max_s: float = Field(5.0, gt=0, description="cap of the Redis sink's exponential backoff")
    redis_socket_timeout_s: float = Field(5.0, gt=0, description="the flow's Redis connect and read timeout")
    kafka_reconnect_backoff_max_ms: int = Field(
        1000, gt=0, description="librdkafka reconnect.backoff.max.ms of the flow's and the API's clients")
    flow_metrics_port: int = Field(0, ge=0, le=65535, description="the flow's Prometheus /metrics port; 0: off")
    broker_check_s: float = Field(5.0, gt=0, description="how often the flow checks its input topics' ids")

    nbo_control_share: float = Field(0.02, ge=0, le=1, description="random control group share")
    nbo_max_offers_per_day: int = Field(2, ge=0)
    nbo_max_offers_per_week: int = Field(5, ge=0)
    nbo_dismiss_cooldown_days: float = Field(14.0, ge=0)
    nbo_kind_levers: dict[str, float] = Field(default_factory=dict, description="offer kind → lever")
    nbo_context_weights: dict[str, dict[str, float]] | None = Field(
        None, description="context → offer kind → weight; None keeps the built-in weights")

    churn_shards: int = Field(8, ge=1, description="churn timer shards (fixed: results must not depend on workers)")
    churn_threshold: float = Field(0.85, gt=0, lt=1, description="churn score that raises an alert")
    churn_wall_clock: bool = Field(True, description="live: alerts also follow the wall clock once caught up")
    churn_catch_up_s: float = Field(3600.0, ge=0, description="wall clock drives timers only this close to it")
    churn_tick_s: float = Field(1.0, gt=0, description="how often timers are checked")
    churn_timer_bucket_s: float = Field(900.0, gt=0, description="timers fire once the clock passes their bucket")
    churn_settle_s: float = Field(5.0, ge=0, description="wall time the churn clock lags the parsed events")
    churn_alerts_maxlen: int = Field(10_000, gt=0, description="alerts kept in the Redis stream")

    api_keys: dict[str, list[str]] = Field(default_factory=dict)
    api_catalog_refresh_s: float = Field(2.0, gt=0)
    api_neighbors_refresh_s: float = Field(10.0, gt=0, description="how often the API re-reads every item's "
                                           "neighbour list (home page anchors)")
    api_repeats_refresh_s: float = Field(30.0, gt=0, description="the API rebuilds the repeat habits at most this often")
    api_max_in_flight: int = Field(32, gt=0, description="requests one API process works on at once; past it, "
                                   "503 with Retry-After at once (health, readiness and metrics are exempt)")
    api_shed_retry_after_s: int = Field(1, ge=1, description="Retry-After of a request shed past api_max_in_flight")
    api_stream_queue: int = Field(256, gt=0, description="alert batches a live alert stream may fall behind "
                                  "before it is closed (the client resumes with Last-Event-ID)")
    redis_max_connections: int = Field(64, gt=0)
    max_request_bytes: int = Field(1_048_576, gt=0, description="larger request bodies are answered 413")
    signing_keys: dict[str, str] = Field(
        default_factory=dict,
        description="JSON: key id → secret (16+ bytes) for decision and recommendation ids; the last one signs, "
                    "all verify; empty: the API makes a random key per process (ids then die with it)")
    rate_limit_per_s: float = Field(200.0, ge=0, description="requests a second per API key and API process; 0: off")
    rate_limit_burst: int = Field(400, ge=1, description="requests an API key may make at once")

    @field_validator("api_keys")
    @classmethod
    def _known_scopes(cls, keys: dict[str, list[str]]) -> dict[str, list[str]]:
        for key, scopes in keys.items():
            unknown = set(scopes) - SCOPES
            if unknown:
                raise ValueError(f"API key {key[:12]}…: unknown scopes {sorted(unknown)}")
        return keys

    @field_validator("signing_keys")
    @classmethod
    def _valid_signing_keys(cls, keys: dict[str, str]) -> dict[str, str]:
        if keys:
            from online_models.refs import SigningKeys

            SigningKeys.of(keys)  # raises naming the bad key id
        return keys

    @property
    def event_topics(self) -> list[str]:
        return [self.topic_web, self.topic_store]

    @property
    def all_topics(self) -> list[str]:
        return [
            self.topic_web, self.topic_store, self.topic_catalog, self.topic_offers,
            self.topic_feedback, self.topic_churn_alerts, self.topic_deadletter,
        ]

    def arbitration(self):
        """The next-best-offer settings as the pure domain wants them."""
        from online_models.offers import ArbitrationSettings, ContactPolicy

        policy = ContactPolicy(self.nbo_max_offers_per_day, self.nbo_max_offers_per_week,
                               self.nbo_dismiss_cooldown_days)
        extra = {} if self.nbo_context_weights is None else {"context_weights": self.nbo_context_weights}
        return ArbitrationSettings(control_share=self.nbo_control_share, kind_levers=self.nbo_kind_levers,
                                   policy=policy, **extra)

    def engine(self):
        """The engine's settings: what every step of the flow, the evaluators and benches reads."""
        from online_models.clock import DAY_MS, HOUR_MS, ClockSettings
        from online_models.engine import EngineSettings
        from online_models.events import ParseLimits, parse_ts

        lateness_ms = int(self.max_event_lateness_days * DAY_MS)
        return EngineSettings(
            key_prefix=self.key_prefix, topic_catalog=self.topic_catalog, topic_offers=self.topic_offers,
            topic_feedback=self.topic_feedback, half_life_days=self.half_life_days,
            cooccurrence_half_life_days=self.cooccurrence_half_life_days,
            limits=ParseLimits(max_bytes=self.max_event_bytes, max_lateness_ms=lateness_ms,
                               max_future_ms=int(self.max_event_future_hours * HOUR_MS),
                               earliest_ts_ms=parse_ts(self.earliest_event_date + "T00:00:00Z"),
                               latest_ts_ms=parse_ts(self.latest_event_date + "T00:00:00Z"),
                               max_item_qty=self.max_item_qty, max_item_price=self.max_item_price),
            churn_shards=self.churn_shards, churn_threshold=self.churn_threshold,
            anonymous_ttl_s=int(self.anonymous_ttl_days * 86_400),
            erasure_retention_ms=int(self.erasure_retention_days * DAY_MS),
            clock=ClockSettings(use_wall_clock=self.churn_wall_clock, catch_up_ms=int(self.churn_catch_up_s * 1000),
                                bucket_ms=int(self.churn_timer_bucket_s * 1000), lookback_ms=lateness_ms,
                                settle_ms=int(self.churn_settle_s * 1000)),
            alerts_maxlen=self.churn_alerts_maxlen,
        )

    def hashed_api_keys(self) -> dict[str, frozenset[str]]:
        """sha256 hex digest → scopes; plain keys are hashed so only digests stay in memory."""
        hashed = {}
        for key, scopes in self.api_keys.items():
            digest = key.removeprefix("sha256:") if key.startswith("sha256:") else hash_key(key)
            hashed[digest.lower()] = frozenset(scopes)
        return hashed


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@lru_cache
def get_settings() -> Settings:
    return Settings()
