"""The app's doors, before any page or answer: requests for a host it does not serve are refused (DNS rebinding),
pages can't be framed or sniffed into another type, and HEAD is answered wherever GET is (a 405 says what is)."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pipeline.serving.web.answers import LIST_TOO_LONG

MAX_URL = 16 * 1024  # characters of an address read whole; the longest list a page takes is under a third of it

# Sent with every answer: scripts, styles and everything else from this app only (no inline script), no framing by
# other sites, no type sniffing, no full URLs (the list lives in them) to others.
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                           "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = [(b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"same-origin")]


class SecurityHeaders:
    """Adds `SECURITY_HEADERS` to every response, answers HEAD as GET without the body, and names HEAD beside GET in
    a 405's Allow. Plain ASGI: no task per request, as `@app.middleware` makes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = scope["method"] == "HEAD"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *SECURITY_HEADERS]
                if message["status"] == 405:
                    headers = [(name, value + b", HEAD" if name == b"allow" and b"GET" in value else value)
                               for name, value in headers]
                message = {**message, "headers": headers}
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"} if head else scope, receive, send_with_headers)


class PlainSpokenHttp(HttpToolsProtocol):
    """uvicorn's HTTP protocol (httptools), except that an address too long to read is refused with a 414 and a
    sentence: httptools cannot parse one past 64 KiB, which uvicorn answers with "Invalid HTTP request received"."""

    def send_400_response(self, msg: str) -> None:
        if len(self.url) <= MAX_URL:
            super().send_400_response(msg)
            return
        sentence = f"The address is too long: {LIST_TOO_LONG}.".encode()
        headers = b"".join(name + b": " + value + b"\r\n" for name, value in SECURITY_HEADERS)
        self.transport.write(b"HTTP/1.1 414 URI Too Long\r\ncontent-type: text/plain; charset=utf-8\r\n" + headers
                             + b"content-length: " + str(len(sentence)).encode() + b"\r\nconnection: close\r\n\r\n"
                             + sentence)
        self.transport.close()


def close_doors(app: FastAPI, allowed_hosts: list[str]) -> None:
    """Answer only requests addressed to `allowed_hosts` (the Host header, port aside), with the security headers."""
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    app.add_middleware(SecurityHeaders)
