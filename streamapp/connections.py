"""How every client of ours connects: Kafka security options, TLS contexts,
and masking credentials out of anything we log or show.

One function builds the Kafka options (``kafka_client_options``) and every
aiokafka client we open takes them: the simulator's producer and admin, the
audit consumer, the tally, the tests.  The Faust app gets the same settings
as ``broker_credentials`` (``faust_credentials``), which Faust turns into the
same aiokafka keyword arguments for its consumer, its producer and the client
that creates topics.
"""
from __future__ import annotations

import re
import ssl
from typing import Any, Dict, Optional

from .config import Settings

KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


class ConnectionSettingsError(ValueError):
    """A connection setting that cannot work; the message names the setting."""


def _check_kafka(cfg: Settings) -> None:
    protocol = cfg.kafka_security_protocol
    if protocol not in KAFKA_PROTOCOLS:
        raise ConnectionSettingsError(
            f"KAFKA_SECURITY_PROTOCOL={protocol!r}: expected one of {', '.join(KAFKA_PROTOCOLS)}")
    if protocol.startswith("SASL_"):
        if cfg.kafka_sasl_mechanism not in KAFKA_SASL_MECHANISMS:
            raise ConnectionSettingsError(
                f"KAFKA_SASL_MECHANISM={cfg.kafka_sasl_mechanism!r}: expected one of "
                f"{', '.join(KAFKA_SASL_MECHANISMS)}")
        if not cfg.kafka_sasl_username or not cfg.kafka_sasl_password:
            raise ConnectionSettingsError(
                f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
    if bool(cfg.kafka_ssl_certfile) != bool(cfg.kafka_ssl_keyfile):
        raise ConnectionSettingsError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")


def kafka_ssl_context(cfg: Settings) -> Optional[ssl.SSLContext]:
    """The TLS context for SSL and SASL_SSL (None otherwise): verifies the
    broker's certificate and host name against KAFKA_SSL_CAFILE (or the
    system's CAs), and presents a client certificate when one is set."""
    _check_kafka(cfg)
    if cfg.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cfg.kafka_ssl_cafile or None)
    if cfg.kafka_ssl_certfile:
        context.load_cert_chain(cfg.kafka_ssl_certfile, cfg.kafka_ssl_keyfile)
    return context


def kafka_client_options(cfg: Settings, bootstrap: Optional[str] = None) -> Dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin):
    the bootstrap servers and how to authenticate and encrypt."""
    _check_kafka(cfg)
    protocol = cfg.kafka_security_protocol
    options: Dict[str, Any] = {"bootstrap_servers": bootstrap or cfg.kafka_bootstrap,
                               "security_protocol": protocol}
    if protocol.startswith("SASL_"):
        options.update(sasl_mechanism=cfg.kafka_sasl_mechanism,
                       sasl_plain_username=cfg.kafka_sasl_username,
                       sasl_plain_password=cfg.kafka_sasl_password)
    context = kafka_ssl_context(cfg)
    if context is not None:
        options["ssl_context"] = context
    return options


def faust_credentials(cfg: Settings) -> Any:
    """Faust's ``broker_credentials`` for these settings (None for PLAINTEXT).

    faust-streaming passes them to aiokafka as the same options
    ``kafka_client_options`` gives (``credentials_to_aiokafka_auth``).
    """
    import faust

    _check_kafka(cfg)
    protocol = cfg.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = kafka_ssl_context(cfg)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    # With an SSL context Faust's SASL credentials say SASL_SSL, without SASL_PLAINTEXT.
    return faust.SASLCredentials(username=cfg.kafka_sasl_username, password=cfg.kafka_sasl_password,
                                 mechanism=cfg.kafka_sasl_mechanism, ssl_context=context)


#: ``scheme://user:password@`` (the password may be empty or hold ``:``).
_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<password>[^@\s]*)@")


def redact(text: str) -> str:
    """``text`` with the password of every URL in it masked: ``user:***@``.

    For anything we log, print or answer with (errors from clients may quote
    the URL they were given)."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
