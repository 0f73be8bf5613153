"""Kafka TLS and SASL settings as client arguments (aiokafka and Faust).

Every Kafka client llmpulse builds (the worker's Faust app, the emitter's
producer, the publisher, admin clients) takes its security arguments from here,
so one ``[kafka]`` section configures them all.

>>> from llmpulse.settings import KafkaSettings
>>> kw = aiokafka_security(KafkaSettings(security_protocol="SASL_PLAINTEXT",
...     sasl_mechanism="SCRAM-SHA-512", sasl_username="svc", sasl_password="pw"))
>>> sorted(kw), kw["sasl_plain_password"]
(['sasl_mechanism', 'sasl_plain_password', 'sasl_plain_username', 'security_protocol'], 'pw')
"""

from __future__ import annotations

import ssl
from typing import Any

from llmpulse.errors import ConfigError
from llmpulse.settings import KafkaSettings


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """The TLS context of a SSL or SASL_SSL connection (system CAs unless ``ssl_cafile``)."""
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(kafka, name)
        if path is not None and not path.is_file():
            raise ConfigError(f"kafka.{name}", f"{path} is not a readable file")
    if (kafka.ssl_certfile is None) != (kafka.ssl_keyfile is None):
        raise ConfigError("kafka.ssl_keyfile", "a client certificate needs its key, and back")
    ctx = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    ctx.check_hostname = kafka.ssl_check_hostname
    if kafka.ssl_certfile is not None and kafka.ssl_keyfile is not None:
        try:
            ctx.load_cert_chain(
                str(kafka.ssl_certfile),
                str(kafka.ssl_keyfile),
                kafka.ssl_password.get_secret_value() if kafka.ssl_password else None,
            )
        except (ssl.SSLError, OSError) as exc:
            # The message names the files, never the key's password.
            raise ConfigError(
                "kafka.ssl_certfile", f"cannot load {kafka.ssl_certfile}: {exc.strerror or exc}"
            ) from None
    return ctx


def aiokafka_security(kafka: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaProducer``/``AIOKafkaConsumer``/admin clients."""
    out: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    sasl = kafka.security_protocol.startswith("SASL_")
    if sasl:
        if kafka.sasl_mechanism is None:
            raise ConfigError("kafka.sasl_mechanism", f"{kafka.security_protocol} needs one")
        if not kafka.sasl_username or kafka.sasl_password is None:
            raise ConfigError(
                "kafka.sasl_username", f"{kafka.sasl_mechanism} needs a username and a password"
            )
        out["sasl_mechanism"] = kafka.sasl_mechanism
        out["sasl_plain_username"] = kafka.sasl_username
        out["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    elif kafka.sasl_mechanism is not None:
        raise ConfigError(
            "kafka.sasl_mechanism", f"set but security_protocol is {kafka.security_protocol}"
        )
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        out["ssl_context"] = ssl_context(kafka)
    return out


def faust_credentials(kafka: KafkaSettings) -> Any:
    """``broker_credentials`` for ``faust.App`` (None for PLAINTEXT)."""
    import faust

    if kafka.security_protocol == "PLAINTEXT":
        return None
    kw = aiokafka_security(kafka)
    if "sasl_mechanism" in kw:
        return faust.SASLCredentials(
            username=kw["sasl_plain_username"],
            password=kw["sasl_plain_password"],
            ssl_context=kw.get("ssl_context"),
            mechanism=kw["sasl_mechanism"],
        )
    return faust.SSLCredentials(kw["ssl_context"])
