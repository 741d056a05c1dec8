"""A self-signed certificate for configs that need TLS files (``nats-server -t`` loads them)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nurserywatch.fleet_nats import HubTLS


def self_signed(d: Path) -> HubTLS:
    """c.pem (its own CA) and k.pem in ``d``, for a central node named hub-1.example.org."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hub")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hub-1.example.org")]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (d / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "k.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return HubTLS(str(d / "c.pem"), str(d / "k.pem"), str(d / "c.pem"))
