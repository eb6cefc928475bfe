"""Sluice's Kafka stream application: settings, topology, the app factory and the CLI."""

from stream._app import create_app
from stream._kafka import SluiceKafkaError, client_config, ensure_topics
from stream._settings import KafkaSettings, LLMSettings, Settings, TopicNames, WorkerSettings

__all__ = [
    "KafkaSettings",
    "LLMSettings",
    "Settings",
    "SluiceKafkaError",
    "TopicNames",
    "WorkerSettings",
    "client_config",
    "create_app",
    "ensure_topics",
]
