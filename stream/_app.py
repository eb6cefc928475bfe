"""The Faust application factory: no module-level app, so tests and workers build their own."""

from __future__ import annotations

import logging
from typing import Any

import faust

from stream._settings import Settings

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def _broker_credentials(settings: Settings) -> Any:
    k = settings.kafka
    if not k.security_protocol.startswith("SASL"):
        return None
    password = k.sasl_password.get_secret_value() if k.sasl_password else ""
    return faust.SASLCredentials(
        username=k.sasl_username or "",
        password=password,
        mechanism=k.sasl_mechanism,
        ssl_context=None,
    )


def create_app(settings: Settings) -> faust.App:
    """Build the Faust app and its agents from settings.

    Agents run with concurrency 1: with more, Faust can commit offsets past in-flight messages
    (faust-streaming #606), which would lose events.
    """
    k = settings.kafka
    app = faust.App(
        k.group_id,
        broker=[f"kafka://{b}" for b in k.bootstrap_servers.split(",")],
        broker_credentials=_broker_credentials(settings),
        store="memory://",
        datadir=str(settings.worker.data_dir),
        web_enabled=settings.worker.web_port is not None,
        web_port=settings.worker.web_port or 6066,
        topic_partitions=k.partitions,
        topic_replication_factor=k.replication_factor,
        topic_allow_declare=False,  # `sluice topics create` owns the topology
        consumer_auto_offset_reset="earliest",
    )
    events = app.topic(
        settings.topics.events,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    suspects = app.topic(
        settings.topics.suspects,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    @app.agent(events, concurrency=1)
    async def relay(stream: Any) -> None:
        # Placeholder stage until the filter lands: every event is a suspect.
        async for key, value in stream.items():
            await suspects.send(key=key, value=value)

    return app
