//! The load's HTTP/1.1 client: each request is written as bytes prepared before the run, each
//! answer read up to its `Content-Length`, one keep-alive connection per task.
//!
//! Why not hyper's client: the load generator shares the machine with what it measures, and every
//! microsecond it spends is taken from ingest, RabbitMQ and Postgres. hyper builds a `Request`,
//! hashes and writes its headers, and hands each request to a second task that drives the
//! connection; here a request is one `write` of ready bytes and its answer one or two `read`s, in
//! the task that waits for it (benches/RESULTS.md, thirteenth session, has the difference).
//! Only what ingest answers is understood: a status line, headers, and a body with a
//! `Content-Length`; anything else is reported as an error, never guessed at.

use anyhow::{Context, bail};
use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Longest answer head accepted; ingest's are a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;
/// Headers parsed per answer; ingest sends about ten.
const MAX_HEADERS: usize = 32;

/// A request ready to send: head and body in one buffer.
pub fn request(host: &str, path: &str, key: &str, body: &[u8]) -> Bytes {
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
         x-api-key: {key}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// One keep-alive connection.
pub struct Connection {
    stream: TcpStream,
    /// Bytes read and not yet consumed: after [`Connection::round_trip`], the answer's head and
    /// body; the next round trip drops them.
    buf: Vec<u8>,
    /// Where the last answer's body is in `buf`.
    body: std::ops::Range<usize>,
}

/// What [`Connection::round_trip`] read.
pub struct Answer {
    pub status: u16,
    /// The server asked to close the connection (`Connection: close`): do not reuse it.
    pub close: bool,
}

/// The parts of an answer's head the client needs, once it is complete.
#[derive(Debug, PartialEq)]
struct Head {
    len: usize,
    status: u16,
    content_length: usize,
    close: bool,
}

/// Parses an answer's head from the start of `buf`; `None` while it is incomplete.
fn parse_head(buf: &[u8]) -> anyhow::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf).context("unparseable answer head")? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if buf.len() > MAX_HEAD => {
            bail!("answer head longer than {MAX_HEAD} bytes")
        }
        httparse::Status::Partial => return Ok(None),
    };
    let status = resp.code.context("answer without a status")?;
    let mut content_length = None;
    let mut close = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).context("content-length is not text")?;
            content_length = Some(
                text.trim()
                    .parse::<usize>()
                    .with_context(|| format!("bad content-length {text:?}"))?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("answer with a transfer-encoding: only content-length bodies are read");
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= h.value.eq_ignore_ascii_case(b"close");
        }
    }
    // A 204 or 304 has no body; every other answer from ingest declares its length.
    let content_length = match (content_length, status) {
        (Some(n), _) => n,
        (None, 204 | 304) => 0,
        (None, _) => bail!("answer {status} without content-length"),
    };
    Ok(Some(Head {
        len,
        status,
        content_length,
        close,
    }))
}

impl Connection {
    pub async fn open(host: &str, port: u16) -> anyhow::Result<Self> {
        let stream = TcpStream::connect((host, port))
            .await
            .with_context(|| format!("connecting to {host}:{port}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
            body: 0..0,
        })
    }

    /// Sends `request` and reads its whole answer; the body is then [`Connection::body`].
    pub async fn round_trip(&mut self, request: &[u8]) -> anyhow::Result<Answer> {
        self.buf.clear();
        self.body = 0..0;
        self.stream
            .write_all(request)
            .await
            .context("writing the request")?;
        let head = loop {
            if let Some(head) = parse_head(&self.buf)? {
                break head;
            }
            self.fill().await?;
        };
        let end = head.len + head.content_length;
        while self.buf.len() < end {
            self.fill().await?;
        }
        // Nothing is pipelined, so bytes past the body can only be a server error.
        if self.buf.len() > end {
            bail!("{} bytes after the answer's body", self.buf.len() - end);
        }
        self.body = head.len..end;
        Ok(Answer {
            status: head.status,
            close: head.close,
        })
    }

    /// The body of the last answer.
    pub fn body(&self) -> &[u8] {
        &self.buf[self.body.clone()]
    }

    /// Reads what the socket has into `buf`; an end of stream mid-answer is an error.
    async fn fill(&mut self) -> anyhow::Result<()> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(self.buf.capacity().max(4096));
        }
        let n = self
            .stream
            .read_buf(&mut self.buf)
            .await
            .context("reading the answer")?;
        if n == 0 {
            bail!("connection closed by ingest before the answer was complete");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn a_head_is_parsed_only_when_complete() {
        let full = b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\nContent-Length: 12\r\n\r\n{\"data\":{}}\n";
        assert_eq!(parse_head(&full[..30]).unwrap(), None);
        let head = parse_head(full).unwrap().unwrap();
        assert_eq!(
            head,
            Head {
                len: full.len() - 12,
                status: 202,
                content_length: 12,
                close: false
            }
        );
        let close =
            b"HTTP/1.1 503 Service Unavailable\r\nconnection: Close\r\ncontent-length: 0\r\n\r\n";
        assert!(parse_head(close).unwrap().unwrap().close);
    }

    #[test]
    fn answers_the_client_cannot_frame_are_errors() {
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(parse_head(chunked).is_err());
        let no_length = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n";
        assert!(parse_head(no_length).is_err());
        assert_eq!(
            parse_head(b"HTTP/1.1 204 No Content\r\n\r\n")
                .unwrap()
                .unwrap()
                .content_length,
            0
        );
        assert!(parse_head(b"HTTP/1.1 202 Accepted\r\ncontent-length: x\r\n\r\n").is_err());
        let long = [b"HTTP/1.1 200 OK\r\nx: ".as_slice(), &[b'a'; MAX_HEAD + 1]].concat();
        assert!(parse_head(&long).is_err());
    }

    /// A server that reads each request whole, then answers in pieces, so the client must
    /// gather the head and the body across reads; it closes after the second answer.
    #[tokio::test]
    async fn answers_split_across_reads_are_gathered_on_one_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            for body in ["{\"n\":1}", "{\"n\":22}"] {
                let mut got = Vec::new();
                while !got.ends_with(b"{}") {
                    let mut b = [0u8; 64];
                    let n = s.read(&mut b).await.unwrap();
                    assert!(n > 0);
                    got.extend_from_slice(&b[..n]);
                }
                seen.push(String::from_utf8(got).unwrap());
                let answer = format!(
                    "HTTP/1.1 202 Accepted\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                for piece in answer.as_bytes().chunks(7) {
                    s.write_all(piece).await.unwrap();
                    s.flush().await.unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
            seen
        });
        let mut c = Connection::open("127.0.0.1", port).await.unwrap();
        let req = request("127.0.0.1", "/api/errors", "k3y", b"{}");
        let a = c.round_trip(&req).await.unwrap();
        assert_eq!((a.status, a.close), (202, false));
        assert_eq!(c.body(), b"{\"n\":1}");
        let a = c.round_trip(&req).await.unwrap();
        assert_eq!(a.status, 202);
        assert_eq!(c.body(), b"{\"n\":22}");
        let seen = server.await.unwrap();
        assert_eq!(
            seen[0],
            "POST /api/errors HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
             x-api-key: k3y\r\ncontent-length: 2\r\n\r\n{}"
        );
        // The server has gone: the next round trip fails (closed or reset), it does not hang.
        assert!(c.round_trip(&req).await.is_err());
    }
}
