import random
from email.utils import formatdate

import pytest
import requests

from opik_otel.retry import (
    MAX_RETRY_AFTER_SECONDS,
    RETRYABLE_STATUS,
    RetryPolicy,
    describe_failure,
    parse_retry_after,
    redact_url,
)

NOW = 1_700_000_000.0


# --- parse_retry_after -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("100000", MAX_RETRY_AFTER_SECONDS),
    ],
)
def test_parse_retry_after_seconds(value, expected):
    assert parse_retry_after(value, now=NOW) == expected


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "-1", "-0.5", "abc", "1e3", "nan", "inf", "1_000", "12 s", "0x10"],
)
def test_parse_retry_after_garbage_is_none(value):
    assert parse_retry_after(value, now=NOW) is None


def test_parse_retry_after_http_date_in_future():
    value = formatdate(NOW + 42, usegmt=True)
    assert parse_retry_after(value, now=NOW) == pytest.approx(42.0)


def test_parse_retry_after_http_date_in_past_means_now():
    value = formatdate(NOW - 3600, usegmt=True)
    assert parse_retry_after(value, now=NOW) == 0.0


def test_parse_retry_after_http_date_is_capped():
    value = formatdate(NOW + 86400, usegmt=True)
    assert parse_retry_after(value, now=NOW) == MAX_RETRY_AFTER_SECONDS


def test_parse_retry_after_obsolete_date_formats():
    # RFC 850 and asctime forms have no zone marker; they are GMT by definition.
    # NOW is 2023-11-14 22:13:20 UTC.
    assert parse_retry_after("Tuesday, 14-Nov-23 22:14:20 GMT", now=NOW) == pytest.approx(60.0)
    assert parse_retry_after("Tue Nov 14 22:13:50 2023", now=NOW) == pytest.approx(30.0)


def test_parse_retry_after_uses_clock_by_default():
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(formatdate(usegmt=True)) is not None


# --- RetryPolicy -------------------------------------------------------------------------------


def test_retryable_status_set():
    assert RETRYABLE_STATUS == frozenset({408, 429, 500, 502, 503, 504})
    policy = RetryPolicy()
    for status in (408, 429, 500, 502, 503, 504):
        assert policy.should_retry_status(status)
    for status in (200, 400, 401, 403, 404, 405, 413, 501):
        assert not policy.should_retry_status(status)


def test_delay_without_jitter_is_exponential_and_capped():
    policy = RetryPolicy(initial_backoff=0.5, multiplier=2.0, max_backoff=30.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_delay_huge_attempt_does_not_overflow():
    policy = RetryPolicy(jitter=0.0)
    assert policy.delay(10_000) == policy.max_backoff
    assert policy.delay(0) == policy.initial_backoff


def test_delay_jitter_only_shortens_and_stays_in_range():
    policy = RetryPolicy(initial_backoff=1.0, multiplier=2.0, max_backoff=30.0, jitter=0.2)
    rng = random.Random(1234)
    for attempt in range(1, 12):
        base = min(1.0 * 2.0 ** (attempt - 1), 30.0)
        for _ in range(50):
            delay = policy.delay(attempt, rng=rng)
            assert base * 0.8 <= delay <= base


def test_delay_jitter_varies_and_is_reproducible_with_rng():
    policy = RetryPolicy()
    first = [policy.delay(3, rng=random.Random(7)) for _ in range(3)]
    assert len(set(first)) == 1
    rng = random.Random(7)
    assert len({policy.delay(3, rng=rng) for _ in range(20)}) > 1


def test_retry_after_wins_but_is_capped_by_max_backoff():
    policy = RetryPolicy(max_backoff=30.0)
    assert policy.delay(1, retry_after=12.0) == 12.0
    assert policy.delay(5, retry_after=0.0) == 0.0
    assert policy.delay(1, retry_after=120.0) == 30.0


def test_invalid_retry_after_is_ignored():
    policy = RetryPolicy(jitter=0.0)
    assert policy.delay(2, retry_after=-3.0) == 1.0
    assert policy.delay(2, retry_after=float("nan")) == 1.0


def test_has_attempts_left():
    policy = RetryPolicy(max_attempts=3)
    assert policy.has_attempts_left(1)
    assert policy.has_attempts_left(2)
    assert not policy.has_attempts_left(3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"initial_backoff": -1},
        {"max_backoff": -1},
        {"multiplier": 0.5},
        {"jitter": 1.5},
        {"jitter": -0.1},
    ],
)
def test_policy_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_policy_is_frozen():
    with pytest.raises(Exception):
        RetryPolicy().max_attempts = 3  # type: ignore[misc]


# --- describe_failure --------------------------------------------------------------------------

CLOUD = "https://www.comet.com/opik/api/v1/private/otel/v1/traces"


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_points_at_key_and_workspace(status):
    message = describe_failure(status, None, CLOUD)
    assert "OPIK_API_KEY" in message and "OPIK_WORKSPACE" in message
    assert str(status) in message


@pytest.mark.parametrize("status", [404, 405])
def test_wrong_url_shows_url_and_examples(status):
    url = "http://localhost:8080/v1/traces"
    message = describe_failure(status, None, url)
    assert url in message
    assert "https://www.comet.com/opik/api" in message
    assert "http://localhost:5173/api" in message


def test_grpc_port_hint():
    message = describe_failure(404, None, "http://localhost:4317/v1/traces")
    assert "gRPC" in message


def test_payload_too_large_mentions_split():
    message = describe_failure(413, None, CLOUD)
    assert "413" in message and "split" in message


@pytest.mark.parametrize("status", sorted(RETRYABLE_STATUS))
def test_retryable_status_mentions_retry(status):
    message = describe_failure(status, None, CLOUD)
    assert str(status) in message and "retried" in message


@pytest.mark.parametrize("status", [400, 418, 501, 302, 200])
def test_other_statuses_have_a_message(status):
    message = describe_failure(status, None, CLOUD)
    assert str(status) in message and CLOUD in message


def test_connection_error_says_unreachable_and_still_queued():
    error = requests.exceptions.ConnectionError("Failed to establish a new connection")
    message = describe_failure(None, error, "http://localhost:5173/api")
    assert "unreachable" in message
    assert "http://localhost:5173/api" in message
    assert "stays queued" in message
    assert "ConnectionError" in message


def test_builtin_connection_refused():
    message = describe_failure(None, ConnectionRefusedError(111, "refused"), CLOUD)
    assert "unreachable" in message


def test_timeout_and_tls_errors():
    assert "in time" in describe_failure(None, requests.exceptions.ReadTimeout("slow"), CLOUD)
    assert "in time" in describe_failure(None, TimeoutError(), CLOUD)
    assert "TLS" in describe_failure(None, requests.exceptions.SSLError("bad cert"), CLOUD)


def test_invalid_url_error():
    message = describe_failure(None, requests.exceptions.MissingSchema("no scheme"), "localhost")
    assert "not a usable URL" in message


def test_unknown_error_and_nothing_at_all():
    assert "ValueError" in describe_failure(None, ValueError("boom"), CLOUD)
    assert "unknown" in describe_failure(None, None, CLOUD)


def test_status_wins_over_error():
    message = describe_failure(401, requests.exceptions.ConnectionError("x"), CLOUD)
    assert "OPIK_API_KEY" in message


def test_userinfo_and_query_never_appear():
    url = "https://alice:s3cret@opik.example.com/opik/api?token=hunter2#frag"
    for status, error in [(401, None), (404, None), (None, ConnectionError("x")), (None, None)]:
        message = describe_failure(status, error, url)
        assert "s3cret" not in message and "alice" not in message
        assert "hunter2" not in message
        assert "https://opik.example.com/opik/api" in message


def test_secrets_in_exception_text_are_redacted():
    error = requests.exceptions.ConnectionError(
        "cannot reach https://bob:pw123@host/api, headers={'Authorization': 'key-abc'}"
    )
    message = describe_failure(None, error, CLOUD)
    assert "pw123" not in message and "bob" not in message
    assert "key-abc" not in message


def test_long_exception_text_is_shortened():
    message = describe_failure(None, ValueError("x" * 10_000), CLOUD)
    assert len(message) < 600


def test_redact_url():
    assert redact_url("http://u:p@[::1]:5173/api?x=1") == "http://[::1]:5173/api"
    assert redact_url("http://localhost:5173/api") == "http://localhost:5173/api"
    assert "pw" not in redact_url("http://u:pw@[bad")
