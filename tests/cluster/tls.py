"""TLS files for the cluster tests' Redis servers: a CA of the test's own and one server
certificate for the addresses given, made with openssl in a folder of the test. Clients
verify the servers against the CA (REDIS_TLS_CA_CERT_FILE), as across hosts in production
(docs/data-tier.md)."""

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RedisTls:
    ca: Path
    cert: Path
    key: Path

    def server_env(self) -> dict[str, str]:
        """scripts/redis.sh's settings for TLS only on its TCP port."""
        return {
            "REDIS_TLS_CERT_FILE": str(self.cert),
            "REDIS_TLS_KEY_FILE": str(self.key),
            "REDIS_TLS_CA_CERT_FILE": str(self.ca),
        }


def redis_tls_files(folder: Path, addresses: list[str]) -> RedisTls:
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.crt", folder / "ca.key"
    cert, key, request = folder / "redis.crt", folder / "redis.key", folder / "redis.csr"
    extensions = folder / "redis.ext"
    names = ",".join(["DNS:localhost", *(f"IP:{address}" for address in addresses)])
    extensions.write_text(f"subjectAltName={names}\nextendedKeyUsage=serverAuth,clientAuth\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=messy-test-redis-ca",
        "-keyout", str(ca_key), "-out", str(ca),
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=messy-redis", "-keyout", str(key), "-out", str(request),
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2",
        "-extfile", str(extensions), "-out", str(cert),
    )  # fmt: skip
    return RedisTls(ca=ca, cert=cert, key=key)
