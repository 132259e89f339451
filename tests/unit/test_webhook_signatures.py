"""Each signature scheme of TRIGGERS.md: valid, wrong secret, tampered body, stale
timestamp, missing header (``triggers.signatures``)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac

import pytest

from capability.triggers import signatures
from tests.support.signing import sign

NOW = dt.datetime(2027, 5, 3, 12, 0, tzinfo=dt.UTC)
TS = int(NOW.timestamp())
BODY = b'{"id": "evt_1", "ref": "refs/heads/main"}'
SECRETS = {"github": "gh-secret", "stripe": "whsec_stripe", "slack": "slack-secret",
           "standard-webhooks": "whsec_" + base64.b64encode(b"0123456789abcdef").decode(),
           "hmac-sha256": "plain-secret"}
TIMED = ("stripe", "slack", "standard-webhooks")


def _check(scheme: str, secret: str, headers: dict[str, str], body: bytes = BODY,
           now: dt.datetime = NOW) -> str | None:
    lower = {k.lower(): v for k, v in headers.items()}
    return signatures.verify(signatures.Scheme(scheme, secret), lower, body, now)


@pytest.mark.parametrize("scheme", list(SECRETS))
def test_a_valid_signature_passes(scheme: str) -> None:
    assert _check(scheme, SECRETS[scheme], sign(scheme, SECRETS[scheme], BODY, TS)) is None


@pytest.mark.parametrize("scheme", list(SECRETS))
def test_the_wrong_secret_is_refused(scheme: str) -> None:
    other = ("whsec_" + base64.b64encode(b"another-key-1234").decode()
             if scheme == "standard-webhooks" else "not-the-secret")
    assert _check(scheme, SECRETS[scheme], sign(scheme, other, BODY, TS)) == "bad signature"


@pytest.mark.parametrize("scheme", list(SECRETS))
def test_a_tampered_body_is_refused(scheme: str) -> None:
    headers = sign(scheme, SECRETS[scheme], BODY, TS)
    assert _check(scheme, SECRETS[scheme], headers, BODY.replace(b"main", b"evil")) == \
        "bad signature"


@pytest.mark.parametrize("scheme", TIMED)
def test_a_stale_or_future_timestamp_is_refused(scheme: str) -> None:
    for at in (TS - 301, TS + 301):
        reason = _check(scheme, SECRETS[scheme], sign(scheme, SECRETS[scheme], BODY, at))
        assert reason is not None and "outside the tolerance of 300 s" in reason
    assert _check(scheme, SECRETS[scheme], sign(scheme, SECRETS[scheme], BODY, TS - 299)) is None


@pytest.mark.parametrize("scheme", list(SECRETS))
def test_a_missing_header_is_refused(scheme: str) -> None:
    reason = _check(scheme, SECRETS[scheme], {})
    assert reason is not None and reason.startswith(("missing", "Stripe"))


def test_hmac_sha256_with_its_own_header_prefix_and_base64() -> None:
    mac = hmac.new(b"k", BODY, hashlib.sha256).digest()
    scheme = signatures.Scheme("hmac-sha256", "k", header="X-Hook-Sig", prefix="sha256=",
                               encoding="base64")
    good = {"x-hook-sig": "sha256=" + base64.b64encode(mac).decode()}
    assert signatures.verify(scheme, good, BODY, NOW) is None
    assert signatures.verify(scheme, {"x-hook-sig": base64.b64encode(mac).decode()}, BODY,
                             NOW) == "X-Hook-Sig does not start with 'sha256='"


def test_stripe_accepts_any_of_several_v1_signatures() -> None:
    good = sign("stripe", "s", BODY, TS)["Stripe-Signature"]
    header = good.replace("v1=", "v1=00ff,v1=")
    assert _check("stripe", "s", {"Stripe-Signature": header}) is None


@pytest.mark.parametrize(("scheme", "headers", "expected"), [
    ("github", {"x-github-delivery": "g-1"}, "g-1"),
    ("stripe", {}, "evt_1"),
    ("standard-webhooks", {"webhook-id": "msg_1"}, "msg_1"),
    ("slack", {"x-slack-request-timestamp": "1", "x-slack-signature": "v0=ab"}, "1:v0=ab"),
    ("none", {"idempotency-key": "k-9"}, "k-9"),
    ("none", {}, None),
])
def test_delivery_ids(scheme: str, headers: dict[str, str], expected: str | None) -> None:
    assert signatures.delivery_id(scheme, headers, BODY) == expected
