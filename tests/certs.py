"""Certificates for local TLS servers, made with ``cryptography``: an authority, leaf
certificates signed by it (valid, expired, for another name) and self-signed ones."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import warnings
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    cert: Path  # PEM
    key: Path  # PEM

    def server_context(self, *, tls10_only: bool = False) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if tls10_only:
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            with warnings.catch_warnings():  # deprecated: the point of this server
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _build(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
    names: tuple[str, ...] = (),
    expired: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    start, end = (now - 30 * DAY, now - DAY) if expired else (now - DAY, now + 30 * DAY)
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        alt: list[x509.GeneralName] = []
        for n in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alt.append(x509.DNSName(n))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(
    directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> Issued:
    out = Issued(directory / f"{stem}.pem", directory / f"{stem}.key")
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return out


class Authority:
    """A certificate authority in ``directory`` (``ca.pem``) that issues leaf certs."""

    def __init__(self, directory: Path, name: str = "dropfetch test CA") -> None:
        self.directory = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.files = _write(directory, "ca", _build(name, self.key, None, ca=True), self.key)

    def issue(self, stem: str, *names: str, expired: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _build(names[0], key, (self.name, self.key), ca=False, names=names, expired=expired)
        return _write(self.directory, stem, cert, key)


def self_signed(directory: Path, *names: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    return _write(directory, "self", _build(names[0], key, None, ca=False, names=names), key)
