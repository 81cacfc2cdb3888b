"""A counting reverse proxy in front of Azurite's blob and queue ports.

The app is given a connection string whose endpoints are the proxy's loopback ports; every
request is forwarded unchanged (shared-key signatures cover the path, query and x-ms-*
headers, never the host or port, so they still verify) and counted by storage operation
and by what it touched (which queue, which kind of blob). One request is one billable
storage transaction.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from localdev.ports import LOOPBACK

KEEPALIVE_SECONDS = 2.0
# Failures before a request reached Azurite (a pooled connection it had closed): retried here,
# so the app never sees a proxy artefact and the request is counted once.
_RETRYABLE = (aiohttp.ServerDisconnectedError, aiohttp.ClientConnectorError)

# Hop-by-hop headers, and those aiohttp recomputes for the body it forwards.
_DROP_REQUEST = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}
_DROP_RESPONSE = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}


def classify(service: str, method: str, path: str, query: str, headers: Any) -> tuple[str, str]:
    """(operation, resource) of one storage request, in the REST API's own operation names."""
    params = {k.lower(): v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
    parts = [p for p in path.split("/") if p][1:]  # drop the account name
    comp = params.get("comp", "").lower()
    if service == "queue":
        queue = parts[0] if parts else ""
        resource = f"queue:{queue}" if queue else "queue:(service)"
        if len(parts) >= 2 and parts[1] == "messages":
            if len(parts) >= 3:
                return {"DELETE": "DeleteMessage", "PUT": "UpdateMessage"}.get(method, f"{method}Message"), resource
            if method == "POST":
                return "PutMessage", resource
            if method == "GET":
                return ("PeekMessages" if params.get("peekonly") == "true" else "GetMessages"), resource
            if method == "DELETE":
                return "ClearMessages", resource
        if comp == "metadata":
            return ("GetQueueMetadata" if method in ("GET", "HEAD") else "SetQueueMetadata"), resource
        if comp == "list":
            return "ListQueues", resource
        return {"PUT": "CreateQueue", "DELETE": "DeleteQueue"}.get(method, f"{method}Queue"), resource
    container = parts[0] if parts else ""
    blob = "/".join(parts[1:])
    resource = f"blob:{_blob_kind(container, blob)}"
    if not blob:
        if comp == "list":
            return "ListBlobs", resource
        return {"PUT": "CreateContainer", "DELETE": "DeleteContainer"}.get(method, f"{method}Container"), resource
    if method == "PUT":
        named = {
            "appendblock": "AppendBlock",
            "block": "PutBlock",
            "blocklist": "PutBlockList",
            "metadata": "SetBlobMetadata",
            "properties": "SetBlobProperties",
            "lease": "LeaseBlob",
        }
        if comp in named:
            return named[comp], resource
        kind = str(headers.get("x-ms-blob-type", "")).lower()
        return ("CreateAppendBlob" if kind == "appendblob" else "PutBlob"), resource
    if method == "GET":
        return ("GetBlockList" if comp == "blocklist" else "GetBlob"), resource
    if method == "HEAD":
        return "GetBlobProperties", resource
    if method == "DELETE":
        return "DeleteBlob", resource
    return f"{method}Blob", resource


def _blob_kind(container: str, blob: str) -> str:
    """What a blob is for: `jobs/<job>/manifest.json` is a manifest, and so on."""
    if not blob:
        return f"{container}(container)"
    if container != "jobs":
        return container
    rest = blob.split("/", 1)[1] if "/" in blob else blob
    for prefix, kind in (
        ("manifest.json", "manifest"),
        ("progress.json", "progress"),
        ("shards/", "shard"),
        ("claims/", "claim"),
        ("fatal", "fatal"),
        ("ingest.lock", "ingest-lock"),
    ):
        if rest.startswith(prefix):
            return kind
    return "jobs:" + rest.rsplit("/", 1)[-1]


@dataclass
class Counts:
    """What the proxy saw since the last reset."""

    by_op: Counter[tuple[str, str]] = field(default_factory=Counter)  # (operation, resource)
    by_status: Counter[str] = field(default_factory=Counter)  # "GetBlob 404", ...

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def copy(self) -> Counts:
        return Counts(Counter(self.by_op), Counter(self.by_status))

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_operation": {f"{op} {res}": n for (op, res), n in self.by_op.most_common()},
            "non_2xx": dict(self.by_status.most_common()),
        }


class CountingProxy:
    """Listens on two loopback ports (blob, queue) and forwards to Azurite's."""

    def __init__(self, blob_port: int, queue_port: int) -> None:
        self.targets = {"blob": blob_port, "queue": queue_port}
        self.ports: dict[str, int] = {}
        self.counts = Counts()
        self._session: aiohttp.ClientSession | None = None
        self._runners: list[web.AppRunner] = []

    def reset(self) -> None:
        self.counts = Counts()

    def snapshot(self) -> Counts:
        return self.counts.copy()

    async def start(self) -> dict[str, int]:
        self._session = aiohttp.ClientSession(
            # Azurite closes idle connections after 5 s: never reuse one that old.
            connector=aiohttp.TCPConnector(limit=512, keepalive_timeout=KEEPALIVE_SECONDS),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=300),
            skip_auto_headers=("Content-Type", "Accept-Encoding", "User-Agent", "Accept"),
        )
        for service in ("blob", "queue"):
            app = web.Application(client_max_size=256 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._handler(service))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, LOOPBACK, 0)
            await site.start()
            self._runners.append(runner)
            server = site._server  # the only way aiohttp tells a port picked by the OS
            assert server is not None and server.sockets
            self.ports[service] = server.sockets[0].getsockname()[1]
        return self.ports

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _handler(self, service: str) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            assert self._session is not None
            op = classify(service, request.method, request.path, request.query_string, request.headers)
            self.counts.by_op[op] += 1
            body = await request.read()
            headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST)
            url = URL(f"http://{LOOPBACK}:{self.targets[service]}{request.raw_path}", encoded=True)
            for attempt in range(3):
                try:
                    async with self._session.request(
                        request.method, url, headers=headers, data=body or None, allow_redirects=False
                    ) as upstream:
                        payload = await upstream.read()
                        status = upstream.status
                        out = CIMultiDict(
                            (k, v) for k, v in upstream.headers.items() if k.lower() not in _DROP_RESPONSE
                        )
                        length = upstream.headers.get("Content-Length")
                    break
                except _RETRYABLE:
                    self.counts.by_status[f"{op[0]} proxy-retried"] += 1
                    if attempt == 2:
                        return web.Response(status=502, text="proxy: Azurite closed the connection")
                except (TimeoutError, aiohttp.ClientError) as exc:
                    self.counts.by_status[f"{op[0]} proxy-error"] += 1
                    return web.Response(status=502, text=f"proxy: {exc}")
            if status >= 300:
                self.counts.by_status[f"{op[0]} {status}"] += 1
            if request.method == "HEAD":
                # A HEAD answer has no body but its Content-Length is the blob's size: keep it.
                response = web.StreamResponse(status=status, headers=out)
                if length is not None:
                    response.content_length = int(length)
                await response.prepare(request)
                return response
            return web.Response(status=status, headers=out, body=payload)

        return handle
