"""SPDY/3.1, the server side, as much as Kubernetes' streaming uses it.

The apiserver reaches `kubectl exec` and `port-forward` targets through the
kubelet, which proxies an HTTP connection upgraded to SPDY/3.1 to the
runtime's streaming server. The client opens every stream (SYN_STREAM with a
`streamtype` header); the server answers each with SYN_REPLY, sends DATA,
half-closes with FIN and may reset. Header blocks are zlib-compressed with the
protocol's dictionary, one compression context per direction for the whole
connection. Flow control is not used by Kubernetes' peer (moby/spdystream
ignores WINDOW_UPDATE and SETTINGS), so none is enforced here either.
"""

from __future__ import annotations

import logging
import struct
import threading
import zlib
from collections.abc import Callable
from typing import BinaryIO

log = logging.getLogger(__name__)

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = (
    1, 2, 3, 4, 6, 7, 8, 9)
FLAG_FIN = 0x01
RST_PROTOCOL_ERROR, RST_INVALID_STREAM, RST_REFUSED_STREAM, RST_CANCEL = 1, 2, 3, 5

# The header compression dictionary of SPDY/3 (draft-mbelshe-httpbis-spdy-00,
# 2.6.10.1): length-prefixed words, then a tail of status lines, dates and
# common values.
_WORDS = [
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset",
    "accept-encoding", "accept-language", "accept-ranges", "age", "allow", "authorization",
    "cache-control", "connection", "content-base", "content-encoding", "content-language",
    "content-length", "content-location", "content-md5", "content-range", "content-type", "date",
    "etag", "expect", "expires", "from", "host", "if-match", "if-modified-since", "if-none-match",
    "if-range", "if-unmodified-since", "last-modified", "location", "max-forwards", "pragma",
    "proxy-authenticate", "proxy-authorization", "range", "referer", "retry-after", "server", "te",
    "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning",
    "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url",
    "public", "set-cookie", "keep-alive", "origin"]
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417"
    "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
    "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
    "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct "
    "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,"
    "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,"
    "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.")
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()

Headers = dict[str, list[str]]


class ProtocolError(Exception):
    pass


def encode_headers(h: Headers) -> bytes:
    out = [struct.pack(">I", len(h))]
    for name, values in h.items():
        n, v = name.lower().encode(), "\0".join(values).encode()
        out += [struct.pack(">I", len(n)), n, struct.pack(">I", len(v)), v]
    return b"".join(out)


def decode_headers(raw: bytes) -> Headers:
    try:
        (count,), pos = struct.unpack_from(">I", raw), 4
        h: Headers = {}
        for _ in range(count):
            (n,) = struct.unpack_from(">I", raw, pos)
            name = raw[pos + 4:pos + 4 + n].decode()
            pos += 4 + n
            (n,) = struct.unpack_from(">I", raw, pos)
            h.setdefault(name.lower(), []).extend(raw[pos + 4:pos + 4 + n].decode().split("\0"))
            pos += 4 + n
        return h
    except (struct.error, UnicodeDecodeError) as e:
        raise ProtocolError(f"malformed header block: {e}") from None


def control_frame(kind: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(payload)) + payload


def data_frame(stream_id: int, flags: int, data: bytes) -> bytes:
    return struct.pack(">II", stream_id & 0x7FFFFFFF, (flags << 24) | len(data)) + data


class Stream:
    """One client-opened stream: its headers, a queue of received data, and
    the server's half (write, close with FIN, reset)."""

    def __init__(self, session: Session, sid: int, headers: Headers) -> None:
        self.session = session
        self.id = sid
        self.headers = headers
        self._cv = threading.Condition()
        self._chunks: list[bytes] = []
        self.remote_closed = False  # the peer sent FIN or reset
        self.local_closed = False

    def header(self, name: str, default: str = "") -> str:
        return (self.headers.get(name) or [default])[0]

    @property
    def type(self) -> str:
        return self.header("streamtype")

    def _received(self, data: bytes, fin: bool) -> None:
        with self._cv:
            if data:
                self._chunks.append(data)
            if fin:
                self.remote_closed = True
            self._cv.notify_all()

    def read(self, timeout: float | None = None) -> bytes:
        """The next chunk the peer sent; b"" once it half-closed."""
        with self._cv:
            self._cv.wait_for(lambda: self._chunks or self.remote_closed, timeout)
            return self._chunks.pop(0) if self._chunks else b""

    def write(self, data: bytes) -> None:
        if self.local_closed:
            return
        for i in range(0, len(data), 1 << 16):
            self.session.send(data_frame(self.id, 0, data[i:i + (1 << 16)]))

    def close(self) -> None:
        if not self.local_closed:
            self.local_closed = True
            self.session.send(data_frame(self.id, FLAG_FIN, b""))

    def reset(self, status: int = RST_CANCEL) -> None:
        self.local_closed = True
        self._received(b"", True)
        self.session.send(control_frame(RST_STREAM, 0, struct.pack(">II", self.id, status)))


class Session:
    """A server-side SPDY/3.1 connection over an upgraded HTTP connection.
    `on_stream` is called (on the reader thread, so it must not block) for
    each stream the client opens, after the SYN_REPLY is sent."""

    def __init__(self, rfile: BinaryIO, wfile: BinaryIO,
                 on_stream: Callable[[Stream], None]) -> None:
        self.rfile = rfile
        self.wfile = wfile
        self.on_stream = on_stream
        self.streams: dict[int, Stream] = {}
        self._wlock = threading.Lock()
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(zdict=DICTIONARY)
        self.closed = threading.Event()

    def send(self, frame: bytes) -> None:
        with self._wlock:
            if self.closed.is_set():
                return
            try:
                self.wfile.write(frame)
                self.wfile.flush()
            except OSError:
                self.closed.set()

    def _read_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.rfile.read(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def serve(self) -> None:
        """Read frames until the peer goes away; then every stream is closed."""
        try:
            while not self.closed.is_set():
                head = self._read_exact(8)
                (word, rest) = struct.unpack(">II", head)
                flags, length = rest >> 24, rest & 0xFFFFFF
                payload = self._read_exact(length) if length else b""
                if word & 0x80000000:
                    self._control((word >> 16) & 0x7FFF, word & 0xFFFF, flags, payload)
                else:
                    s = self.streams.get(word & 0x7FFFFFFF)
                    if s is not None:
                        s._received(payload, bool(flags & FLAG_FIN))
        except (EOFError, OSError):
            pass
        except ProtocolError as e:
            log.warning("spdy: %s", e)
            self.goaway(1)
        finally:
            self.closed.set()
            for s in list(self.streams.values()):
                s._received(b"", True)

    def _control(self, version: int, kind: int, flags: int, payload: bytes) -> None:
        if version != VERSION:
            raise ProtocolError(f"SPDY version {version} (only {VERSION} is spoken)")
        if kind == SYN_STREAM:
            sid = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
            headers = self._headers(payload[10:])
            s = Stream(self, sid, headers)
            s.remote_closed = bool(flags & FLAG_FIN)
            self.streams[sid] = s
            self.send(control_frame(SYN_REPLY, 0, struct.pack(">I", sid)
                                    + self._compress(encode_headers({}))))
            self.on_stream(s)
        elif kind == RST_STREAM:
            sid = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
            if (st := self.streams.get(sid)) is not None:
                st.local_closed = True
                st._received(b"", True)
        elif kind == PING:
            self.send(control_frame(PING, 0, payload[:4]))
        elif kind == GOAWAY:
            raise EOFError
        elif kind == HEADERS:
            self._headers(payload[4:])  # keeps the compression context in step
        # SETTINGS, WINDOW_UPDATE, SYN_REPLY (we open no streams): nothing to do.

    def _headers(self, block: bytes) -> Headers:
        try:
            raw = self._inflate.decompress(block)
        except zlib.error as e:
            raise ProtocolError(f"header block does not inflate: {e}") from None
        return decode_headers(raw)

    def _compress(self, raw: bytes) -> bytes:
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def goaway(self, status: int = 0) -> None:
        last = max(self.streams, default=0)
        self.send(control_frame(GOAWAY, 0, struct.pack(">II", last, status)))
        with self._wlock:
            self.closed.set()
