//! Raw TCP clients for the HTTP edge tests: what a slow or idle client does,
//! byte by byte, which an HTTP client library would not let a test do.

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// One TCP connection to a service, written to by hand.
pub struct RawClient {
    stream: TcpStream,
}

impl RawClient {
    pub async fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        Self { stream }
    }

    /// Sends `bytes`; `false` if the server has already closed the connection.
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// Sends a whole `GET path` and reads its answer; the connection stays open.
    pub async fn get(&mut self, path: &str) -> Option<String> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        if !self.send(request.as_bytes()).await {
            return None;
        }
        self.read_head(Duration::from_secs(20)).await
    }

    /// Reads until the end of a response head, or `None` if the connection
    /// closes first or nothing complete comes `within`.
    pub async fn read_head(&mut self, within: Duration) -> Option<String> {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.stream.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => head.extend_from_slice(&buf[..n]),
            }
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&head[..end]).into_owned();
                // Skip the body, announced by Content-Length, so the next read starts clean.
                let length = text
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                let mut rest = head.len() - (end + 4);
                while rest < length {
                    match tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut buf))
                        .await
                    {
                        Ok(Ok(n)) if n > 0 => rest += n,
                        _ => return None,
                    }
                }
                return Some(text);
            }
        }
    }

    /// How long until the server closes the connection (reading and
    /// discarding whatever it sends), or `None` if it is still open after `within`.
    pub async fn closed_within(&mut self, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            let left = (started + within).checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.stream.read(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// An HS256 customer token for `subject`, valid for an hour.
pub fn customer_token(secret: &str, subject: &str) -> String {
    let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": subject, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).expect("key"),
    )
    .expect("token")
}
