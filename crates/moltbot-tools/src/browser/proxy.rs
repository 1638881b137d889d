//! The browser's egress proxy: Chromium sends every request (pages, subresources, redirects,
//! page scripts' fetches, WebSockets) through this loopback HTTP proxy, which connects only
//! where [`HostPolicy::check_url`] allows. Checking the URLs the model opens is not enough on
//! its own: a link, a redirect or a page script could otherwise reach a private address.
//!
//! It speaks just enough HTTP/1.1: `CONNECT host:port` becomes a tunnel; a plain request
//! (`GET http://host/path`) is forwarded in origin form with `Connection: close`, so a kept-alive
//! connection is never reused for another host. Connections go to the addresses the policy
//! checked, so a second DNS answer cannot swap in a private one.

use crate::ssrf::HostPolicy;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use url::{Position, Url};

/// Connections handled at once; Chromium opens at most 32 per proxy.
const MAX_CONNECTIONS: usize = 64;

/// Longest request head read, in bytes.
const MAX_HEAD: u64 = 64 << 10;

/// Budget for the browser to send a request head, and for the upstream to accept.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A running proxy; stops (with its connections) when dropped.
#[derive(Debug)]
pub(crate) struct EgressProxy {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl EgressProxy {
    /// Listen on a free loopback port.
    pub(crate) async fn start(policy: Arc<HostPolicy>) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, policy, stop.clone()));
        Ok(Self { addr, stop })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(listener: TcpListener, policy: Arc<HostPolicy>, stop: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return, // the semaphore is never closed
            },
        };
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    warn!(cause = %err, "browser proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let policy = policy.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                res = serve(stream, &policy) => {
                    if let Err(err) = res {
                        debug!(cause = %err, "browser proxy: connection ended");
                    }
                }
            }
            drop(permit);
        });
    }
}

/// One client connection: read the request head, check the target, then relay bytes.
async fn serve(stream: TcpStream, policy: &HostPolicy) -> io::Result<()> {
    let mut client = BufReader::new(stream);
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) | Err(_) => return Ok(()),
        Ok(Err(err)) => return Err(err),
    };
    let Some((request_line, headers)) = head.split_first() else {
        return Ok(());
    };
    let line = String::from_utf8_lossy(request_line);
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return respond(
            client.get_mut(),
            "400 Bad Request",
            "malformed request line",
        )
        .await;
    };

    let tunnel = method.eq_ignore_ascii_case("CONNECT");
    let parsed = if tunnel {
        Url::parse(&format!("https://{target}/"))
    } else {
        Url::parse(target)
    };
    let url = match parsed {
        Ok(url) if tunnel || url.scheme() == "http" => url,
        _ => {
            let msg = format!("cannot proxy {method} {target}");
            return respond(client.get_mut(), "400 Bad Request", &msg).await;
        }
    };
    let addrs = match policy.check_url(&url).await {
        Ok(addrs) => addrs,
        Err(err) => {
            debug!(target = %target, cause = %err, "browser proxy: refused");
            let msg = format!("moltbot refused {target}: {err}");
            return respond(client.get_mut(), "403 Forbidden", &msg).await;
        }
    };
    let mut upstream =
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addrs[..])).await {
            Ok(Ok(s)) => s,
            Ok(Err(err)) => {
                let msg = format!("cannot connect to {target}: {err}");
                return respond(client.get_mut(), "502 Bad Gateway", &msg).await;
            }
            Err(_) => {
                let msg = format!("cannot connect to {target}: timed out");
                return respond(client.get_mut(), "504 Gateway Timeout", &msg).await;
            }
        };

    if tunnel {
        client
            .get_mut()
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await?;
    } else {
        let mut out = format!(
            "{method} {} {version}\r\n",
            &url[Position::BeforePath..Position::AfterQuery]
        )
        .into_bytes();
        for header in headers {
            let name = header.split(|b| *b == b':').next().unwrap_or_default();
            let name = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
            if matches!(
                name.as_str(),
                "connection" | "keep-alive" | "proxy-connection" | "proxy-authorization"
            ) {
                continue;
            }
            out.extend_from_slice(header);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        upstream.write_all(&out).await?;
    }
    // Bytes the client sent after the head (a request body, or an eager TLS hello).
    let early = client.buffer().to_vec();
    if !early.is_empty() {
        upstream.write_all(&early).await?;
    }
    let mut client = client.into_inner();
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// The request line and header lines (without line ends), or `None` when the client closed
/// before sending a head.
async fn read_head(client: &mut BufReader<TcpStream>) -> io::Result<Option<Vec<Vec<u8>>>> {
    let mut lines = Vec::new();
    let mut read = 0u64;
    loop {
        let mut line = Vec::new();
        let n = (&mut *client)
            .take(MAX_HEAD - read)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return if lines.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "request head too long or cut short",
                ))
            };
        }
        read += n as u64;
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        if line.is_empty() {
            if lines.is_empty() {
                continue; // stray line end before a request
            }
            return Ok(Some(lines));
        }
        lines.push(line);
    }
}

async fn respond(client: &mut TcpStream, status: &str, body: &str) -> io::Result<()> {
    let msg = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(msg.as_bytes()).await?;
    client.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn upstream() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    let body = req.lines().next().unwrap_or_default().to_string();
                    let _ = s
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                });
            }
        });
        addr
    }

    async fn roundtrip(proxy: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(proxy).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn forwards_allowed_requests_and_refuses_the_rest() {
        let target = upstream().await;
        let allow = HostPolicy::new(&["127.0.0.1".into()], "tools.browser.allow_hosts").unwrap();
        let proxy = EgressProxy::start(Arc::new(allow)).await.unwrap();

        let ok = roundtrip(
            proxy.addr(),
            &format!("GET http://{target}/a?b=1 HTTP/1.1\r\nHost: {target}\r\nProxy-Connection: keep-alive\r\n\r\n"),
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(ok.ends_with("GET /a?b=1 HTTP/1.1"), "{ok}");

        let tunnel = roundtrip(
            proxy.addr(),
            &format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\nGET /t HTTP/1.1\r\n\r\n"),
        )
        .await;
        assert!(
            tunnel.starts_with("HTTP/1.1 200 Connection Established\r\n\r\nHTTP/1.1 200 OK"),
            "{tunnel}"
        );

        // 127.0.0.2 is loopback too, but not allowlisted.
        let port = target.port();
        for req in [
            format!("GET http://127.0.0.2:{port}/ HTTP/1.1\r\n\r\n"),
            format!("CONNECT 127.0.0.2:{port} HTTP/1.1\r\n\r\n"),
            "CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n".to_string(),
        ] {
            let out = roundtrip(proxy.addr(), &req).await;
            assert!(out.starts_with("HTTP/1.1 403"), "{req}: {out}");
            assert!(out.contains("allow_hosts"), "{out}");
        }
        let out = roundtrip(proxy.addr(), "GET ftp://x/ HTTP/1.1\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    }
}
