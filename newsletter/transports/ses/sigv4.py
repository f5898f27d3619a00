"""AWS Signature Version 4 for the SES v2 API: the canonical request, the string to sign and the Authorization header
(docs/providers/ses.md; AWS's "Create a signed AWS API request").
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from datetime import datetime
from urllib.parse import quote

from newsletter.transports._http import ApiTransport

SERVICE = "ses"


# Signature Version 4


def sigv4(
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    access_key_id: str,
    secret_access_key: str,
    region: str,
    service: str,
    query: Mapping[str, str] | None = None,
) -> str:
    """Return the Authorization header for a request; headers must hold host and x-amz-date (20150830T123600Z).

    Every given header is signed. Canonical URI and query are percent-encoded once (RFC 3986 unreserved kept).
    """
    lowered = {name.lower(): " ".join(str(value).split()) for name, value in headers.items()}
    amz_date = lowered["x-amz-date"]
    signed = ";".join(sorted(lowered))
    canonical_request = "\n".join(
        [
            method.upper(),
            quote(path or "/", safe="/-_.~"),
            canonical_query(query or {}),
            "".join(f"{name}:{lowered[name]}\n" for name in sorted(lowered)),
            signed,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = ("AWS4" + secret_access_key).encode()
    for part in (amz_date[:8], region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return f"AWS4-HMAC-SHA256 Credential={access_key_id}/{scope}, SignedHeaders={signed}, Signature={signature}"


def canonical_query(query: Mapping[str, str]) -> str:
    """The SigV4 canonical query string, which is also what we send: sorted, each key and value encoded once."""
    encoded = sorted((quote(key, safe="-_.~"), quote(value, safe="-_.~")) for key, value in query.items())
    return "&".join(f"{key}={value}" for key, value in encoded)


class SesSigning(ApiTransport):
    """SesTransport's signed_headers(), for every call it makes."""

    access_key_id: str
    secret_access_key: str
    region: str
    host: str
    clock: Callable[[], datetime]

    def signed_headers(
        self,
        method: str,
        path: str,
        content: bytes = b"",
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """The given headers with Host, X-Amz-Date (now) and the SigV4 Authorization that signs them all."""
        signed = {**(headers or {}), "Host": self.host, "X-Amz-Date": self.clock().strftime("%Y%m%dT%H%M%SZ")}
        signed["Authorization"] = sigv4(
            method,
            path,
            signed,
            content,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            region=self.region,
            service=SERVICE,
            query=query,
        )
        return signed
