"""Certificates for the TLS tests: a test CA and server certificates that are
right, for the wrong name, self-signed, or expired."""
import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path, cert, key=None):
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        key_path = path.with_suffix(".key")
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return path, key_path
    return path


class CertAuthority:
    """A CA in `directory`; `ca_file` is its certificate, for `server.ca_file`."""

    def __init__(self, directory):
        self.dir = directory
        self.key = _key()
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(_name("Smart Router Test CA"))
                     .issuer_name(_name("Smart Router Test CA")).public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.ca_file = _write(directory / "ca.crt", self.cert)

    def server(self, name, dns_names, expired=False, self_signed=False):
        """A server certificate and key (paths) for `dns_names`."""
        key = _key()
        now = datetime.datetime.now(datetime.timezone.utc)
        start, end = ((now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)) if expired
                      else (now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)))
        issuer, signer = (_name(dns_names[0]), key) if self_signed else (self.cert.subject, self.key)
        cert = (x509.CertificateBuilder().subject_name(_name(dns_names[0])).issuer_name(issuer)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
                .sign(signer, hashes.SHA256()))
        return _write(self.dir / f"{name}.crt", cert, key)
