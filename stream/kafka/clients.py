"""Kafka plumbing shared by the worker and the CLI tools: client configuration and the topology.

kafka-python is imported where it is used, so importing this module costs nothing.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from sluice.stream.errors import SluiceKafkaError
from sluice.stream.settings import KafkaSettings

__all__ = [
    "SluiceKafkaError",
    "aiokafka_config",
    "client_config",
    "librdkafka_config",
]

log = logging.getLogger(__name__)


def client_config(kafka: KafkaSettings) -> dict[str, Any]:
    """kafka-python keyword arguments; the SASL password is unwrapped only here."""
    cfg: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "security_protocol": kafka.security_protocol,
        "bootstrap_timeout_ms": int(kafka.connect_timeout_s * 1000),
    }
    if kafka.security_protocol.startswith("SASL"):
        cfg["sasl_mechanism"] = kafka.sasl_mechanism
        cfg["sasl_plain_username"] = kafka.sasl_username
        if kafka.sasl_password is not None:
            cfg["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    if kafka.security_protocol.endswith("SSL"):
        cfg["ssl_check_hostname"] = kafka.ssl_check_hostname
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if (path := getattr(kafka, name)) is not None:
                cfg[name] = str(path)
    return cfg


def listener(kafka: KafkaSettings) -> str:
    """Which listener the settings talk to, for errors: address, protocol, mechanism and user
    (never the password)."""
    parts: list[str] = [kafka.security_protocol]
    if kafka.security_protocol.startswith("SASL"):
        parts.append(f"{kafka.sasl_mechanism} as user {kafka.sasl_username!r}")
    if kafka.security_protocol.endswith("SSL"):
        parts.append(f"CA {kafka.ssl_cafile or 'system'}")
    return f"{kafka.bootstrap_servers} ({', '.join(parts)})"


def unreachable(kafka: KafkaSettings, exc: BaseException) -> str:
    """The message of a failed first contact: the listener, the error, and what to check."""
    hint = ""
    if kafka.security_protocol != "PLAINTEXT":
        hint = (
            "; check that the listener speaks this protocol, that the CA signed its certificate"
            + (", and the SASL credentials" if kafka.security_protocol.startswith("SASL") else "")
            + " (the client log above names the cause)"
        )
    return f"cannot reach Kafka at {listener(kafka)}: {type(exc).__name__}: {exc}{hint}"


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context of aiokafka and Faust clients (None without TLS): the settings' CA, the
    client certificate for mTLS, hostname checking as configured."""
    if not kafka.security_protocol.endswith("SSL"):
        return None
    context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    if kafka.ssl_certfile:
        context.load_cert_chain(
            str(kafka.ssl_certfile), str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None
        )
    context.check_hostname = kafka.ssl_check_hostname
    return context


def aiokafka_config(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka keyword arguments: kafka-python's names, less the file ones and the bootstrap
    timeout (aiokafka retries on its own), plus a TLS context."""
    opts = {k: v for k, v in client_config(kafka).items()
            if not k.startswith("ssl_") and k != "bootstrap_timeout_ms"}  # fmt: skip
    context = ssl_context(kafka)
    if context is not None:
        opts["ssl_context"] = context
    return opts


def librdkafka_config(kafka: KafkaSettings) -> dict[str, Any]:
    """confluent-kafka (librdkafka) properties of the same listener; the SASL password is
    unwrapped only here. Its log lines go to the `sluice.kafka.librdkafka` logger, where the
    repeat filter holds back a reconnect storm as it does aiokafka's."""
    cfg: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "security.protocol": kafka.security_protocol.lower(),
        "socket.connection.setup.timeout.ms": int(kafka.connect_timeout_s * 1000),
        "logger": logging.getLogger("sluice.kafka.librdkafka"),
        "log.connection.close": False,  # an idle broker closing a connection is not news
    }
    if kafka.security_protocol.startswith("SASL"):
        cfg["sasl.mechanisms"] = kafka.sasl_mechanism
        if kafka.sasl_username is not None:
            cfg["sasl.username"] = kafka.sasl_username
        if kafka.sasl_password is not None:
            cfg["sasl.password"] = kafka.sasl_password.get_secret_value()
    if kafka.security_protocol.endswith("SSL"):
        cfg["ssl.endpoint.identification.algorithm"] = (
            "https" if kafka.ssl_check_hostname else "none"
        )
        for name, prop in (("ssl_cafile", "ssl.ca.location"),
                           ("ssl_certfile", "ssl.certificate.location"),
                           ("ssl_keyfile", "ssl.key.location")):  # fmt: skip
            if (path := getattr(kafka, name)) is not None:
                cfg[prop] = str(path)
    return cfg
