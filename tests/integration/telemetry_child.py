"""Run by tests/integration/test_telemetry.py in a child process: the real Azure Monitor distro,
configured by processing/adapters/telemetry.py from the environment, exporting one stage's span,
log record and metric to a loopback "Application Insights" with a managed-identity token.

A child process, because the distro installs global providers and instrumentations once per
process. Before anything is imported, every connection and DNS lookup that is not loopback is
refused and written to stdout (`EGRESS <host>`), so the test can show that none was tried.
"""

from __future__ import annotations

import socket
import sys

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_real_connect = socket.socket.connect
_real_getaddrinfo = socket.getaddrinfo


def _host(address: object) -> str:
    return str(address[0]) if isinstance(address, tuple) else str(address)


def _guarded_connect(self: socket.socket, address: object) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6) and _host(address) not in _LOOPBACK:
        print(f"EGRESS {_host(address)}", flush=True)
        raise ConnectionRefusedError(f"test: no traffic to {_host(address)}")
    _real_connect(self, address)


def _guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
    if host is not None and str(host) not in _LOOPBACK:
        print(f"EGRESS {host}", flush=True)
        raise socket.gaierror(f"test: no lookup of {host}")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.getaddrinfo = _guarded_getaddrinfo  # type: ignore[assignment]


def main() -> None:
    import logging

    from opentelemetry import metrics, trace

    from processing.adapters import telemetry

    logging.getLogger("processing").setLevel(logging.INFO)
    print("EXPORTER", telemetry.configure(), flush=True)

    class Msg:
        dequeue_count = 2
        insertion_time = None

        def get_body(self) -> bytes:
            return sys.argv[1].encode()

    with telemetry.stage("finalize", Msg()):
        logging.getLogger("processing.child").warning("a log record about the job")
        telemetry.job_state(type("Manifest", (), {"pipeline_name": "echo", "state": "done"})())
    trace.get_tracer_provider().force_flush()
    metrics.get_meter_provider().force_flush()
    from opentelemetry._logs import get_logger_provider

    get_logger_provider().force_flush()
    print("FLUSHED", flush=True)


if __name__ == "__main__":
    main()
