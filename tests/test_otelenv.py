"""Which OpenTelemetry settings a process runs with: config file, then OTEL_*, then defaults."""

from __future__ import annotations

import pytest

from gateway.config_telemetry import TelemetryConfig
from gateway.telemetry.otelenv import Sampling, resolve

BASE = "http://127.0.0.1:4318"


def cfg(**kw: object) -> TelemetryConfig:
    return TelemetryConfig.model_validate(kw)


def test_nothing_configured_means_no_export_and_the_documented_defaults() -> None:
    s = resolve(cfg(), {})
    assert s.traces_endpoint is None and s.metrics_endpoint is None and not s.tracing
    assert s.service_name == "killgate"
    assert s.sampling == Sampling(parent_based=True, ratio=0.01)
    assert s.export_interval == 15.0 and s.max_queue == 2048


def test_the_file_endpoint_gets_the_signal_paths() -> None:
    s = resolve(cfg(otlp_endpoint=BASE + "/"), {})
    assert s.traces_endpoint == BASE + "/v1/traces"
    assert s.metrics_endpoint == BASE + "/v1/metrics"


def test_env_endpoints_apply_when_the_file_names_none() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
           "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:9999/custom"}
    s = resolve(cfg(), env)
    assert s.traces_endpoint == "http://t:9999/custom"  # a signal URL is used as is
    assert s.metrics_endpoint == "http://c:4318/v1/metrics"
    # the file wins over the environment
    assert resolve(cfg(otlp_endpoint=BASE), env).traces_endpoint == BASE + "/v1/traces"


def test_exporters_none_and_sdk_disabled_turn_signals_off() -> None:
    on = cfg(otlp_endpoint=BASE)
    s = resolve(on, {"OTEL_TRACES_EXPORTER": "none"})
    assert s.traces_endpoint is None and s.metrics_endpoint is not None
    s = resolve(on, {"OTEL_METRICS_EXPORTER": "none"})
    assert s.traces_endpoint is not None and s.metrics_endpoint is None
    s = resolve(on, {"OTEL_SDK_DISABLED": "true"})
    assert s.traces_endpoint is None and s.metrics_endpoint is None


def test_service_name_file_then_env_then_default() -> None:
    assert resolve(cfg(service_name="edge"), {"OTEL_SERVICE_NAME": "x"}).service_name == "edge"
    # None: the SDK's resource detection reads the variables
    assert resolve(cfg(), {"OTEL_SERVICE_NAME": "x"}).service_name is None
    assert resolve(cfg(), {"OTEL_RESOURCE_ATTRIBUTES": "service.name=y"}).service_name is None
    assert resolve(cfg(), {"OTEL_RESOURCE_ATTRIBUTES": "team=z"}).service_name == "killgate"


@pytest.mark.parametrize(("sampler", "arg", "want"), [
    ("always_on", None, Sampling(False, 1.0)),
    ("always_off", None, Sampling(False, 0.0)),
    ("traceidratio", "0.5", Sampling(False, 0.5)),
    ("traceidratio", None, Sampling(False, 1.0)),
    ("parentbased_always_on", None, Sampling(True, 1.0)),
    ("parentbased_always_off", None, Sampling(True, 0.0)),
    ("parentbased_traceidratio", "0.25", Sampling(True, 0.25)),
    ("parentbased_traceidratio", "2", Sampling(True, 1.0)),  # out of range: the default
    ("parentbased_traceidratio", "abc", Sampling(True, 1.0)),
    ("jaeger_remote", None, Sampling(True, 0.01)),  # unsupported: the file's default
])
def test_otel_traces_sampler(sampler: str, arg: str | None, want: Sampling) -> None:
    env = {"OTEL_TRACES_SAMPLER": sampler}
    if arg is not None:
        env["OTEL_TRACES_SAMPLER_ARG"] = arg
    assert resolve(cfg(), env).sampling == want


def test_the_files_sample_ratio_wins_over_the_env_sampler() -> None:
    env = {"OTEL_TRACES_SAMPLER": "always_on"}
    assert resolve(cfg(traces={"sample_ratio": 0.1}), env).sampling == Sampling(True, 0.1)


def test_export_interval_and_queue_from_env() -> None:
    env = {"OTEL_METRIC_EXPORT_INTERVAL": "5000", "OTEL_BSP_MAX_QUEUE_SIZE": "64"}
    s = resolve(cfg(), env)
    assert s.export_interval == 5.0 and s.max_queue == 64 and s.max_batch == 64
    assert resolve(cfg(metrics={"export_interval": "30s"}), env).export_interval == 30.0


@pytest.mark.parametrize("value", ["collector:4318", "localhost:4318/v1/traces",
                                   "grpc://c:4317", "http://", "user:pw@c:4318"])
def test_an_env_endpoint_that_is_no_http_url_is_refused_with_a_warning(
        value: str, caplog: pytest.LogCaptureFixture) -> None:
    """`OTEL_EXPORTER_OTLP_ENDPOINT=collector:4318` (the scheme forgotten, a common slip)
    used to turn tracing on with every export failing ("No connection adapters were
    found"), one error line a batch; now that signal is off, said once, naming the
    variable and not its value."""
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        caplog.clear()
        s = resolve(cfg(), {var: value})
        assert s.traces_endpoint is None
        warned = [r for r in caplog.records if r.getMessage() == "otel_env_ignored"]
        assert warned and all("value" not in r.kg_fields for r in warned)  # type: ignore[attr-defined]
        assert {r.kg_fields["variable"] for r in warned} == {var}  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", ["http://c:4318", "https://otlp.example.com/v1/traces",
                                   "HTTP://C:4318/", "http://[::1]:4318",
                                   "https://u:p@otlp.example.com?x=1"])
def test_http_env_endpoints_are_taken(value: str) -> None:
    assert resolve(cfg(), {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": value}).traces_endpoint == value
