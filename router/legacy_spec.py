"""The `legacy_http` backend's section of the experiment file: URL, path, method, health, headers, TLS and JMESPath mappings.

`router.config` re-exports these classes and validates them as part of `RouterConfig` (the arm
`legacy`'s `backend:`), so every error names its field from the top of the file
(`arms.legacy.backend.response: ...`). Expressions are compiled here, once per distinct text;
files the section names (a Secret's value, certificates) are read by the backend when it is built
(`router.backends.legacy_mapping`), not here: the ramp controller validates the same file where
they are not mounted.
"""

from __future__ import annotations

import functools
import re
from typing import Literal

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Request headers the router sets itself on a legacy call; a configured header may not replace them.
_ROUTER_HEADERS = frozenset({"host", "content-length", "content-type", "connection", "transfer-encoding", "keep-alive", "upgrade"})
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110 token)


@functools.lru_cache(maxsize=512)
def compile_jmespath(expression: str) -> ParsedResult:
    """The compiled JMESPath expression (once per distinct text; raises jmespath's ParseError/LexerError)."""
    return jmespath.compile(expression)


def _check_jmespath(expression: str) -> str:
    try:
        compile_jmespath(expression)
    except JMESPathError as err:  # ParseError and LexerError: the message points at the bad character
        raise ValueError(f"not a JMESPath expression: {' '.join(str(err).split())}") from None
    return expression


def _check_header_name(name: str) -> str:
    if not _TOKEN.match(name):
        raise ValueError(f"{name!r} is not an HTTP header name")
    if name.lower() in _ROUTER_HEADERS:
        raise ValueError(f"{name!r} is set by the router itself")
    return name


class HeaderFileSpec(_Strict):
    """A header value read from a file (a mounted Secret), when the backend is built; surrounding whitespace is dropped."""

    file: str = Field(..., min_length=1, description="Path of the file holding the value.")


class LegacyHealthSpec(_Strict):
    """The legacy system's health check: `GET {url}{path}` answering `expect_status`."""

    path: str = Field("/healthz", pattern=r"^/", description="Path of the health check (GET).")
    expect_status: int = Field(200, ge=100, le=599, description="The status a healthy system answers.")


class LegacyTlsSpec(_Strict):
    """TLS towards an https:// legacy system: whom to trust, and the router's client certificate."""

    ca_file: str | None = Field(None, description="PEM bundle of the CAs to trust (default: the system's trust store).")
    cert_file: str | None = Field(None, description="PEM client certificate (mutual TLS); may hold the key too.")
    key_file: str | None = Field(None, description="PEM private key of cert_file.")
    verify: bool = Field(True, description="Check the server's certificate and host name; false only for a test system.")

    @model_validator(mode="after")
    def _consistent(self) -> LegacyTlsSpec:
        if self.key_file and not self.cert_file:
            raise ValueError("key_file needs cert_file (the client certificate it belongs to)")
        if not self.verify and self.ca_file:
            raise ValueError("ca_file is not used with verify: false; drop one of them")
        return self


class LegacyHttpSpec(_Strict):
    """The legacy system's HTTP JSON API (`modelramp legacy`, or production's own), and how to map it.

    Without `request`/`response` the body is modelramp's own (`{"instances": [...]}` in,
    `{"predictions": [{output: value}]}` out, as `modelramp legacy` speaks). `request` is a
    JMESPath expression over `{"instances": [rows]}` giving the body to send; `response` maps each
    model output to a JMESPath expression over the answer giving one value per row. Expressions
    are compiled when the file is loaded, so a typo is a rejected file, not a failing request.
    """

    kind: Literal["legacy_http"] = "legacy_http"
    url: str = Field("http://127.0.0.1:8081", description="Base URL of the legacy system (http or https).")
    path: str = Field("/v1/predict", pattern=r"^/", description="Path of the predict call.")
    method: Literal["POST", "PUT"] = Field("POST", description="Method of the predict call.")
    health: LegacyHealthSpec = LegacyHealthSpec()
    headers: dict[str, str | HeaderFileSpec] = Field({}, description="Headers sent on every call: a value, or {file: PATH} read from a file.")
    forward_headers: list[str] = Field([], description="Client request headers copied to the predict call when present (case-insensitive).")
    tls: LegacyTlsSpec | None = Field(None, description="TLS settings of an https:// URL.")
    request: str | None = Field(None, description="JMESPath over {\"instances\": [rows]} giving the body; default: that object as is.")
    response: dict[str, str] | None = Field(None, description="Model output name -> JMESPath over the answer giving one value per row; "
                                                              "default: the answer's `predictions[*].<output>`.")
    timeout_ms: float = Field(500.0, gt=0, description="Per-request deadline.")

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        if not re.match(r"^https?://[^/?#]+", url):
            raise ValueError(f"must be an http:// or https:// URL with a host, got {url!r}")
        return url

    @field_validator("headers", mode="before")
    @classmethod
    def _header_values(cls, headers: object) -> object:
        # One clear message rather than pydantic's two (one per member of the union).
        for name, value in headers.items() if isinstance(headers, dict) else ():
            if not isinstance(value, (str, HeaderFileSpec)) and not (isinstance(value, dict) and set(value) == {"file"}):
                raise ValueError(f"header {name!r}: a value is a string or {{file: PATH}}, got {value!r}")
        return headers

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str | HeaderFileSpec]) -> dict[str, str | HeaderFileSpec]:
        seen: set[str] = set()
        for name, value in headers.items():
            _check_header_name(name)
            if name.lower() in seen:
                raise ValueError(f"header {name!r} is given twice")
            seen.add(name.lower())
            if isinstance(value, str) and ("\r" in value or "\n" in value or not value.isascii()):
                raise ValueError(f"header {name!r}: a value must be one line of ASCII")
        return headers

    @field_validator("forward_headers")
    @classmethod
    def _forward_headers(cls, names: list[str]) -> list[str]:
        for name in names:
            _check_header_name(name)
        if len({n.lower() for n in names}) != len(names):
            raise ValueError("a header is named twice")
        return names

    @field_validator("request")
    @classmethod
    def _request(cls, expression: str | None) -> str | None:
        return None if expression is None else _check_jmespath(expression)

    @field_validator("response")
    @classmethod
    def _response(cls, mapping: dict[str, str] | None) -> dict[str, str] | None:
        if mapping is None:
            return None
        if not mapping:
            raise ValueError("must name at least one model output (output name: JMESPath expression)")
        for output, expression in mapping.items():
            if not output:
                raise ValueError("an output name is empty")
            try:
                _check_jmespath(expression)
            except ValueError as err:
                raise ValueError(f"output {output!r}: {err}") from None
        return mapping

    @model_validator(mode="after")
    def _tls_and_headers(self) -> LegacyHttpSpec:
        if self.tls is not None and not self.url.startswith("https://"):
            raise ValueError(f"tls is set but url {self.url!r} is not https://")
        static = {name.lower() for name in self.headers}
        both = [name for name in self.forward_headers if name.lower() in static]
        if both:
            raise ValueError(f"forward_headers {both} are also set in headers; a header comes from one place")
        return self
