"""Connection settings: Kafka security options, credentials in store URLs,
and that no password reaches a log line or a repr."""
import ssl

import certifi
import pytest
from aiohttp import web
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from harness import free_port, settings_for, with_path
from streamapp.connections import ConnectionSettingsError, faust_credentials, kafka_client_options, redact
from streamapp.stores.audit import AuditStore
from streamapp.stores.mongo import MongoStore

SASL_SSL = {"KAFKA_BOOTSTRAP": "broker-1:9094,broker-2:9094", "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "KAFKA_SASL_USERNAME": "streamapp", "KAFKA_SASL_PASSWORD": "s3cret-pw",
            "KAFKA_SSL_CAFILE": certifi.where()}


def test_plaintext_is_the_default():
    cfg = settings_for({"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"})
    assert kafka_client_options(cfg) == {"bootstrap_servers": cfg.kafka_bootstrap,
                                         "security_protocol": "PLAINTEXT"}
    assert faust_credentials(cfg) is None


def test_sasl_ssl_options_scram_512_by_default():
    cfg = settings_for(SASL_SSL)
    options = kafka_client_options(cfg)
    assert options["bootstrap_servers"] == "broker-1:9094,broker-2:9094"
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("streamapp", "s3cret-pw")
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert kafka_client_options(cfg, "other:1")["bootstrap_servers"] == "other:1"


def test_faust_gets_the_same_options_as_our_clients():
    """Faust turns broker_credentials into aiokafka options: the same as ours."""
    for env in (SASL_SSL, {**SASL_SSL, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                           "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256"},
                {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": certifi.where()}):
        cfg = settings_for(env)
        ours = kafka_client_options(cfg)
        faust = credentials_to_aiokafka_auth(faust_credentials(cfg))
        assert set(faust) - {"ssl_context"} <= set(ours)
        for key, value in faust.items():
            if key == "ssl_context":
                assert (value is None) == ("ssl_context" not in ours)
            else:
                assert ours[key] == value, key


@pytest.mark.parametrize("env, message", [
    ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
    ({**SASL_SSL, "KAFKA_SASL_PASSWORD": ""}, "KAFKA_SASL_PASSWORD"),
    ({**SASL_SSL, "KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM"),
    ({**SASL_SSL, "KAFKA_SSL_CERTFILE": "client.pem"}, "KAFKA_SSL_KEYFILE"),
])
def test_unusable_kafka_settings_say_which(env, message):
    with pytest.raises(ConnectionSettingsError, match=message) as error:
        kafka_client_options(settings_for(env))
    assert "s3cret-pw" not in str(error.value)


@pytest.mark.parametrize("url, shown", [
    ("postgresql://worker:pa:ss@db:5432/app", "postgresql://worker:***@db:5432/app"),
    ("mongodb://u:p@h1:27017,h2:27017/app?authSource=admin", "mongodb://u:***@h1:27017,h2:27017/app?authSource=admin"),
    ("https://elastic:x%40y@es:9200", "https://elastic:***@es:9200"),
    ("redis://:only-a-password@cache:6379/0", "redis://:***@cache:6379/0"),
    ("redis://cache:6379/0", "redis://cache:6379/0"),
    ("Cannot connect to http://a:b@host:1 and postgresql://c:d@host/e", "Cannot connect to http://a:***@host:1 and postgresql://c:***@host/e"),
])
def test_redact(url, shown):
    assert redact(url) == shown


def test_settings_repr_shows_no_password():
    cfg = settings_for({**SASL_SSL, "POSTGRES_DSN": "postgresql://w:pg-pw@db/app",
                        "ELASTICSEARCH_URL": "https://e:es-pw@es:9200",
                        "REDIS_URL": "redis://u:redis-pw@r:6379/0"})
    text = repr(cfg)
    for secret in ("s3cret-pw", "pg-pw", "es-pw", "redis-pw"):
        assert secret not in text
    assert "postgresql://w:***@db/app" in text


def test_test_namespaces_keep_credentials_and_query():
    url = "mongodb://u:p%2Fw@h:27017/streamapp?authSource=admin&tls=true"
    assert with_path(url, "streamapp_test") == "mongodb://u:p%2Fw@h:27017/streamapp_test?authSource=admin&tls=true"
    assert with_path("redis://u:p@h:6379/0", "3") == "redis://u:p@h:6379/3"


def test_mongo_client_takes_credentials_from_the_url_and_the_ca_file():
    """FerretDB here has no authentication to log in to: check what the client will send."""
    store = MongoStore("mongodb://app%40x:p%3Aw@db.example:27017/streamapp?authSource=admin&tls=true",
                       tls_ca_file=certifi.where())
    client = store.new_client()
    credentials = client.options.pool_options._credentials
    assert (credentials.username, credentials.password, credentials.source) == ("app@x", "p:w", "admin")
    assert client.options.pool_options._ssl_context is not None
    assert client.options._options["tlsCAFile"] == certifi.where()


@pytest.fixture
async def basic_auth_server():
    """A real HTTP server answering /_cluster/health only to user "audit", password "p@ss:w"."""
    import base64

    expected = "Basic " + base64.b64encode(b"audit:p@ss:w").decode()
    seen = []

    async def health(request):
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.json_response({"status": "green"})

    app = web.Application()
    app.router.add_get("/_cluster/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield port, seen
    await runner.cleanup()


async def test_audit_client_sends_the_urls_credentials(basic_auth_server):
    """The OpenSearch runner here has no security plugin: a small real HTTP
    server checks that the client sends the URL's user and password."""
    from opensearchpy.exceptions import AuthenticationException

    port, seen = basic_auth_server
    good = AuditStore(f"http://audit:p%40ss%3Aw@127.0.0.1:{port}", "audit")
    try:
        assert await good.ping()
    finally:
        await good.close()
    bad = AuditStore(f"http://audit:wrong@127.0.0.1:{port}", "audit")
    try:
        with pytest.raises(AuthenticationException):
            await bad.ping()
    finally:
        await bad.close()
    assert len(seen) == 2


def test_audit_client_verifies_with_the_ca_file():
    store = AuditStore("https://audit:pw@es.example:9200", "audit", ca_file=certifi.where())
    host = store.client.transport.hosts[0]
    assert host["use_ssl"] and host["http_auth"] == "audit:pw"
    assert store.client.transport.kwargs["ca_certs"] == certifi.where()
    assert store.client.transport.kwargs["verify_certs"] is True
