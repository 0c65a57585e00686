"""The server-side TLS context for STARTTLS and implicit-TLS listeners.

TLS 1.2 at least, the library's default cipher list (forward secrecy, AEAD), no
compression, no renegotiation, and no client certificates asked for: clients
prove who they are with AUTH.
"""

from __future__ import annotations

import ssl

from relay.config import ConfigError, TlsConfig

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """Build the context or raise ConfigError naming the key whose file is at fault."""
    if not tls.cert_file:
        raise ConfigError("tls.cert_file", "is not set")
    if not tls.key_file:
        raise ConfigError("tls.key_file", "is not set")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[tls.min_version]
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    if hasattr(ssl, "OP_NO_RENEGOTIATION"):
        ctx.options |= ssl.OP_NO_RENEGOTIATION
    ctx.verify_mode = ssl.CERT_NONE
    for key in ("cert_file", "key_file"):
        path = getattr(tls, key)
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"tls.{key}", f"cannot read {path}: {exc.strerror}") from None
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            "tls.cert_file", f"cannot load the certificate {tls.cert_file} with key {tls.key_file}: {exc}"
        ) from None
    return ctx
