"""The witness's HTTP face: Starlette on uvicorn, one route, bounded bodies.

``POST /add-checkpoint`` hands the body to :class:`Witness` in a worker
thread (its SQLite commit fsyncs, which must not stall the event loop);
the witness's own lock and SQLite's write lock make each check-and-store
atomic however many clients call at once.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ledger.witness.core import Witness

MAX_BODY = 64 * 1024  # 63 proof lines and a checkpoint with a few signatures fit many times over


class BodyTooLarge(Exception):
    pass


async def _bounded_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isascii() or not declared.isdigit() or len(declared) > 9
                                 or int(declared) > MAX_BODY):
        raise BodyTooLarge
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > MAX_BODY:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(witness: Witness) -> Starlette:
    async def add_checkpoint(request: Request) -> Response:
        try:
            body = await _bounded_body(request)
        except BodyTooLarge:
            return PlainTextResponse(f"request body above {MAX_BODY} bytes\n", status_code=413)
        answer = await run_in_threadpool(witness.add_checkpoint, body)
        # Set verbatim: Starlette would append "; charset=utf-8" to a text/* media type, and
        # tlog-witness asks for exactly "text/x.tlog.size" on a 409.
        return Response(answer.body.encode(), status_code=answer.status,
                        headers={"content-type": answer.content_type})

    return Starlette(routes=[Route("/add-checkpoint", add_checkpoint, methods=["POST"])])


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: the system picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def make_server(witness: Witness) -> uvicorn.Server:
    config = uvicorn.Config(create_app(witness), log_level="warning", lifespan="off", access_log=False)
    return uvicorn.Server(config)


@contextmanager
def running(witness: Witness, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``witness`` from a background thread on an ephemeral port; yields its URL; stops on exit."""
    sock = bind(host, 0)
    server = make_server(witness)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            threading.Event().wait(0.01)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
