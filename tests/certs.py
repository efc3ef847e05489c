"""Throwaway certificates for the --local-https tests: a CA, a server certificate for localhost
signed by it, and a client certificate signed by it."""
import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _build(subject, key, issuer, issuer_key, ca=False, san=None, usage=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory, stem, cert, key):
    cert_path, key_path = os.path.join(directory, stem + ".pem"), os.path.join(directory, stem + ".key")
    with open(cert_path, "wb") as out:
        out.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return cert_path, key_path


def make_certs(directory):
    """{'ca': (cert, key), 'server': (cert, key), 'client': (cert, key)} as file paths."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _build("test CA", ca_key, "test CA", ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _build("localhost", server_key, "test CA", ca_key, san=[
        x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        usage=ExtendedKeyUsageOID.SERVER_AUTH)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _build("tunnel client", client_key, "test CA", ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return {"ca": _write(directory, "ca", ca, ca_key), "server": _write(directory, "server", server, server_key),
            "client": _write(directory, "client", client, client_key)}


def make_wildcard_cert(directory, *domains):
    """A self-signed certificate for each domain and its wildcard: (cert path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(n) for domain in domains for n in (domain, "*." + domain)]
    cert = _build(domains[0], key, domains[0], key, san=names, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    return _write(directory, "wildcard", cert, key)


class CertAuthority:
    """A CA of the test's own, to sign server certificates that clients verify (no verify=False):
    `ca.path` is the file to trust, `ca.leaf(stem, *names)` writes a certificate for `names`."""

    def __init__(self, directory):
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._cert = _build("test CA", self._key, "test CA", self._key, ca=True)
        self.path = _write(directory, "test-ca", self._cert, self._key)[0]

    def leaf(self, stem, *names):
        """(cert path, key path): a server certificate signed by this CA, for DNS `names`."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _build(names[0], key, "test CA", self._key, san=[x509.DNSName(name) for name in names],
                      usage=ExtendedKeyUsageOID.SERVER_AUTH)
        return _write(self.directory, stem, cert, key)
