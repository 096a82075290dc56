"""The MySQL metadata connection asks for TLS exactly as pymysql would, without loading CA certificates."""

from __future__ import annotations

import ssl

import pymysql.connections

from osiris_dagster.sources.mysql_reader import _connection_class

_ARGS = {"host": "127.0.0.1", "user": "root", "defer_connect": True}


def _described(context: ssl.SSLContext) -> dict[str, object]:
    return {
        "protocol": context.protocol,
        "verify_mode": context.verify_mode,
        "check_hostname": context.check_hostname,
        "verify_flags": context.verify_flags,
        "options": context.options,
        "minimum_version": context.minimum_version,
        "maximum_version": context.maximum_version,
        "post_handshake_auth": context.post_handshake_auth,
        "ciphers": [cipher["name"] for cipher in context.get_ciphers()],
    }


def test_preferred_tls_is_pymysqls_own_context_without_the_ca_store() -> None:
    ours = _connection_class()(**_ARGS)
    theirs = pymysql.connections.Connection(**_ARGS)
    assert (ours.ssl, ours._ssl_required) == (theirs.ssl, theirs._ssl_required) == (True, False)
    assert _described(ours.ctx) == _described(theirs.ctx)
    assert ours.ctx.verify_mode == ssl.CERT_NONE  # pymysql verifies nothing here: the store was never read
    assert ours.ctx.cert_store_stats()["x509_ca"] == 0


def test_explicit_tls_options_keep_pymysqls_handling() -> None:
    ours = _connection_class()(**_ARGS, ssl_verify_identity=True)
    theirs = pymysql.connections.Connection(**_ARGS, ssl_verify_identity=True)
    assert ours._ssl_required and ours.ctx.verify_mode == ssl.CERT_REQUIRED
    assert _described(ours.ctx) == _described(theirs.ctx)
    assert ours.ctx.cert_store_stats() == theirs.ctx.cert_store_stats()
