"""The HTTP plumbing both speech servers share, this stack's (server.py here)
and the tests' (tests/speech/server.py): a quiet request handler that
answers JSON, and errors in the shape of OpenAI's API, the multipart field
a transcription request carries its audio in, and WAV encoding. Standard
library only, so either venv can import it.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import wave
from http.server import BaseHTTPRequestHandler


class ServiceHandler(BaseHTTPRequestHandler):
    """A keep-alive handler that logs nothing (errors still go to stderr)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def send(self, status: int, payload: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def error_type(self, status: int) -> str:
        """The `type` an error answer of `status` carries."""
        return "invalid_request_error" if status == 400 else "server_error"

    def error(self, status: int, message: str) -> None:
        body = {"error": {"message": message, "type": self.error_type(status)}}
        self.send(status, json.dumps(body).encode())


def multipart_field(ctype: str, raw: bytes, name: str) -> bytes | None:
    """The decoded content of form field `name` in a multipart body whose
    Content-Type header is `ctype`; None when the body has no such field."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {ctype}\r\n\r\n".encode() + raw)
    found = None
    for part in msg.iter_parts():
        if part.get_param("name", header="content-disposition") == name:
            found = part.get_payload(decode=True)
    return found


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    """Mono 16-bit PCM at `rate` as a WAV file."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()
