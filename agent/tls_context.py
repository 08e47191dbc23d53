"""The TLS of a node's MQTT link, from its identity (agent/identity.py): built once per run, used by the
agent (agent/startup.py) and by update mode (agent/ota_mode.py) alike, so a node that talks TLS never
falls back to plain. Loaded only to build it.
"""

from agent.errors import AgentError


def for_link(ident):
    """The link's `tls` (agent/link.py): () for plain MQTT, else (the context of every session, the name
    the broker's certificate must carry), the certificate chaining to the identity's CA. One context for
    the node's life: it takes about 3 KB of heap."""
    if not ident.tls:
        return ()
    import tls

    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    # The default for a client, but not in older firmware; absent from the stubs.
    ctx.verify_mode = tls.CERT_REQUIRED  # type: ignore[attr-defined]
    try:
        for der in ident.ca:
            ctx.load_verify_locations(der)  # DER: this mbedtls build parses no PEM (agent/identity.py)
    except ValueError:
        raise AgentError("identity: broker ca is not a valid certificate")
    ident.ca = None  # the context holds them parsed
    return ctx, ident.server_name
