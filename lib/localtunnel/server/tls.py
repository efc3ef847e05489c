"""TLS on the public port itself (issue 16, part 2): certificates from --tls-cert/--tls-key and
from --tls-dir, chosen per connection by SNI, and read again on SIGHUP without dropping anyone.

Connections keep the context they were accepted with; a reload only changes what the next
handshake gets. TLS 1.2 and later, with the ssl module's secure default ciphers.
"""
import logging
import os
import ssl

log = logging.getLogger(__name__)


class TlsError(Exception):
    """A certificate or key cannot be used; the message names the file and says why."""


class Certificates:
    """The server's certificates, by the names they cover."""

    def __init__(self, cert=None, key=None, directory=None):
        self._sources = (cert, key, directory)
        self._default, self._exact, self._wildcard = self._load()

    def reload(self):
        """Read every file again; on any error keep serving the old set and say why."""
        try:
            self._default, self._exact, self._wildcard = self._load()
        except TlsError as exc:
            log.error("tls: not reloaded, still serving the previous certificates: %s", exc)
            return False
        log.info("tls: certificates reloaded (%d names)", len(self._exact) + len(self._wildcard))
        return True

    def wrap(self, sock):
        """`sock` as a server-side TLS socket, its handshake not yet done (the caller bounds it)."""
        return self._default.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)

    def _load(self):
        cert, key, directory = self._sources
        pairs = [(cert, key or cert)] if cert else []
        if directory:
            pairs += _pairs_in(directory)
        if not pairs:
            raise TlsError("--tls-dir %s holds no certificate with its key (NAME.pem or NAME.crt beside NAME.key)"
                           % directory)
        exact, wildcard, contexts = {}, {}, []
        for cert_path, key_path in pairs:
            context = _context(cert_path, key_path)
            contexts.append(context)
            for name in _names(cert_path):
                if name.startswith("*."):
                    wildcard.setdefault(name[2:], context)
                else:
                    exact.setdefault(name, context)
        default = contexts[0]
        # Every context hands its connections to the right one; the first is the fallback.
        for context in contexts:
            context.sni_callback = self._pick
        return default, exact, wildcard

    def _pick(self, sock, server_name, _context):
        if not server_name:
            return None
        name = server_name.lower().rstrip(".")
        chosen = self._exact.get(name) or self._wildcard.get(name.partition(".")[2])
        if chosen is not None:
            sock.context = chosen
        return None


def _context(cert_path, key_path):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_path, key_path)
    except FileNotFoundError:
        missing = key_path if os.path.exists(cert_path) else cert_path
        raise TlsError("%s: no such file" % missing) from None
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise TlsError("%s with key %s: %s (is the key the certificate's own?)"
                       % (cert_path, key_path, getattr(exc, "reason", None) or exc)) from None
    return context


def _names(cert_path):
    """The DNS names a certificate covers (its subjectAltName, else its common name)."""
    try:
        decoded = ssl._ssl._test_decode_cert(cert_path)    # the ssl module's own PEM reader
    except (ssl.SSLError, OSError) as exc:
        raise TlsError("%s: cannot read it: %s" % (cert_path, exc)) from None
    names = [value.lower() for kind, value in decoded.get("subjectAltName", ()) if kind == "DNS"]
    if not names:
        names = [value.lower() for rdn in decoded.get("subject", ()) for key, value in rdn if key == "commonName"]
    return names


def _pairs_in(directory):
    """(cert, key) paths in `directory`: NAME.pem or NAME.crt (or NAME.fullchain.pem... any
    NAME.* certificate) beside NAME.key, sorted by name, so which comes first is stable."""
    try:
        entries = sorted(os.listdir(directory))
    except OSError as exc:
        raise TlsError("--tls-dir %s: %s" % (directory, exc.strerror)) from None
    pairs = []
    for entry in entries:
        stem, extension = os.path.splitext(entry)
        if extension in (".pem", ".crt") and stem + ".key" in entries:
            pairs.append((os.path.join(directory, entry), os.path.join(directory, stem + ".key")))
    return pairs
