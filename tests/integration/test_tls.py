"""SMPP over TLS: the partner listener (`tls_listen`) and an upstream connector (`tls = true`).

A self-signed certificate for 127.0.0.1 is made per test with `cryptography`. smpplib (an
independent client) binds and submits over TLS; then one of our connectors binds over TLS to
that same listener, verifying the certificate against the CA file from its config.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl

import smpplib.client
import smpplib.consts
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from protocol import pdu as P
from smscenter.config import settings_from_dict
from smscenter.smpp.connector import Connector
from tests.integration.conftest import PASSWORDS
from tests.patience import PATIENCE


def make_certificate(folder):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smscenter test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "server.crt", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def smpplib_over_tls(port: int, cafile) -> str:
    context = ssl.create_default_context(cafile=str(cafile))
    context.check_hostname = False  # smpplib wraps without a server name; the chain is still verified
    client = smpplib.client.Client("127.0.0.1", port, ssl_context=context, allow_unknown_opt_params=True)
    client.connect()
    try:
        client.bind_transceiver(system_id="acme", password=PASSWORDS["acme"])
        pdu = client.send_message(
            source_addr_ton=5, source_addr="ACME", dest_addr_ton=1, destination_addr="33612345678",
            short_message=b"over TLS",
        )
        resp = client.read_pdu()
        assert resp.sequence == pdu.sequence and resp.status == 0
        client.unbind()
        return resp.message_id.decode()
    finally:
        client.disconnect()


async def test_tls_listener_and_tls_connector(start_server, make_settings, tmp_path):
    cert, key = make_certificate(tmp_path)
    settings = make_settings(
        server={"listen": [], "tls_listen": ["127.0.0.1:0"], "tls_cert": str(cert), "tls_key": str(key)}
    )
    running = await start_server(settings)
    (host, port), = running.server.addresses
    # An independent client over TLS.
    message_id = await asyncio.to_thread(smpplib_over_tls, port, cert)
    assert message_id
    # Plain SMPP on the TLS port gets nowhere (the handshake fails, nothing is bound).
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"\x00\x00\x00\x10\x00\x00\x00\x15\x00\x00\x00\x00\x00\x00\x00\x01")
    data = await asyncio.wait_for(reader.read(100), PATIENCE)
    assert not data.startswith(b"\x00\x00\x00\x10\x80\x00\x00\x15")
    writer.close()
    # Our own connector, verifying the certificate with the CA file from its config.
    config = settings_from_dict(
        {
            "connector": [
                {
                    "name": "tls-up", "host": "127.0.0.1", "port": port, "system_id": "acme",
                    "password": PASSWORDS["acme"], "tls": True, "tls_ca": str(cert),
                    "reconnect_min": "50ms", "reconnect_max": "200ms",
                }
            ]
        },
        base_dir=tmp_path,
    ).connectors[0]
    connector = Connector(config)
    await connector.start()
    try:
        await connector.wait_up(5)
        resp = await connector.submit(
            P.SubmitSm(source_addr_ton=5, source_addr="ACME", dest_addr_ton=1, dest_addr_npi=1,
                       destination_addr="33612345678", short_message=b"connector over TLS"),
            timeout=5,
        )
        assert resp.command_status == 0 and resp.message_id
    finally:
        await connector.stop(0.5)
