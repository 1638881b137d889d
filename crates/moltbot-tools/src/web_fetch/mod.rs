//! `web_fetch`: GET a URL and return its readable text, behind the SSRF guard.
//!
//! Every hop (the URL and each redirect target) is checked with [`HostPolicy`], and the
//! connection goes only to the addresses that passed: each hop gets its own client whose
//! resolver knows the checked addresses of that one host and refuses every other name, so a
//! DNS answer that changes between check and connect (rebinding) cannot reach a private
//! address. reqwest follows no redirects; [`WebFetchTool`] follows them itself, up to
//! `max_redirects`, checking each target. Proxies from the environment are ignored (a proxy
//! resolves names itself, past the guard).
//!
//! Only text is read (HTML, XHTML, JSON, XML, `text/*`); the body is streamed and cut at
//! `max_bytes`. The whole call is bounded by `timeout_secs` and the turn's time left, and
//! stops when the turn is cancelled. See [`render`] for how bodies become text.

mod render;

use crate::ssrf::HostPolicy;
use futures::future::BoxFuture;
use moltbot_core::config::WebFetchConfig;
use moltbot_core::tool::{args, DEFAULT_OUTPUT_CAP};
use moltbot_core::{Tool, ToolContext, ToolError, ToolOutput, ToolSpec};
use render::Kind;
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::debug;
use url::Url;

/// Counter of calls by `result`: ok, denied, error, timeout, cancelled.
pub const METRIC_CALLS: &str = "moltbot_tool_web_fetch_total";

const USER_AGENT: &str = concat!("moltbot-web-fetch/", env!("CARGO_PKG_VERSION"));
const ACCEPT_TYPES: &str = "text/html,application/xhtml+xml,application/json;q=0.9,\
                            text/*;q=0.8,application/xml;q=0.8,*/*;q=0.1";
/// Room kept for the "[output cut at …]" note, so output stays within `max_chars`.
const CUT_NOTE_ROOM: usize = 64;

/// The `web_fetch` tool. Cheap to share; holds no connections between calls.
pub struct WebFetchTool {
    spec: ToolSpec,
    policy: HostPolicy,
    max_bytes: usize,
    timeout: Duration,
    max_redirects: u32,
}

/// A response body read within the limits, before rendering.
struct Page {
    /// The final URL, after redirects.
    url: Url,
    kind: Kind,
    charset: Option<String>,
    body: Vec<u8>,
    truncated: bool,
}

impl WebFetchTool {
    /// Build the tool; fails when `allow_hosts` holds an entry that is not a host name, an
    /// address or a CIDR range.
    pub fn new(cfg: &WebFetchConfig) -> Result<Self, String> {
        let policy = HostPolicy::new(&cfg.allow_hosts, "tools.web_fetch.allow_hosts")?;
        let spec = ToolSpec {
            name: "web_fetch".into(),
            description: "Fetch a web page or document by URL (HTTP GET) and return its \
                          readable text: HTML as markdown-like text with links, JSON \
                          pretty-printed, other text as is. No JavaScript is run. Private and \
                          local network addresses are refused."
                .into(),
            parameters: serde_json::json!({
                "type": "object",
                "properties": {
                    "url": {"type": "string", "description": "Absolute http(s) URL."},
                    "max_chars": {
                        "type": "integer",
                        "minimum": 100,
                        "maximum": DEFAULT_OUTPUT_CAP,
                        "description": "Longest text to return."
                    }
                },
                "required": ["url"],
                "additionalProperties": false
            }),
        };
        Ok(Self {
            spec,
            policy,
            max_bytes: cfg.max_bytes,
            timeout: Duration::from_secs(cfg.timeout_secs),
            max_redirects: cfg.max_redirects,
        })
    }

    async fn run(
        &self,
        arguments: &serde_json::Value,
        ctx: &ToolContext,
    ) -> Result<ToolOutput, ToolError> {
        let url = parse_url(args::string(arguments, "url")?)?;
        // Larger requests are clamped rather than refused: the model gets the most we give.
        let cap = self.output_cap();
        let limit = args::opt_u64(arguments, "max_chars", 100, 1_000_000)?
            .map_or(cap, |n| usize::try_from(n).unwrap_or(cap).min(cap));
        let budget = self.timeout.min(ctx.timeout);
        let work = async {
            let page = self.fetch(url).await?;
            let max_bytes = self.max_bytes;
            // Parsing a few MB of HTML is CPU work: keep it off the async workers.
            tokio::task::spawn_blocking(move || page.into_text(max_bytes))
                .await
                .map_err(|e| ToolError::Failed(format!("rendering the page failed: {e}")))
        };
        let text = tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => return Err(ToolError::Cancelled),
            r = tokio::time::timeout(budget, work) => {
                r.unwrap_or(Err(ToolError::Timeout(budget)))?
            }
        };
        Ok(ToolOutput::text(cap_to(text, limit)))
    }

    /// GET `start`, following redirects; every hop is checked and pinned.
    async fn fetch(&self, start: Url) -> Result<Page, ToolError> {
        let mut url = start;
        let mut redirects = 0;
        let mut from: Option<Url> = None;
        loop {
            let addrs = self
                .policy
                .check_url(&url)
                .await
                .map_err(|e| match (&from, e) {
                    (Some(prev), ToolError::Denied(why)) => {
                        ToolError::Denied(format!("redirect from {prev} to {url}: {why}"))
                    }
                    (_, e) => e,
                })?;
            let client = pinned_client(&url, &addrs)?;
            let mut resp = client
                .get(url.clone())
                .header(ACCEPT, ACCEPT_TYPES)
                .send()
                .await
                .map_err(|e| ToolError::Failed(format!("cannot fetch {url}: {}", chain(&e))))?;
            let status = resp.status();
            debug!(%url, status = status.as_u16(), "web_fetch response");

            if status.is_redirection() {
                if let Some(location) = resp.headers().get(LOCATION) {
                    let next = location
                        .to_str()
                        .ok()
                        .and_then(|l| url.join(l.trim()).ok())
                        .ok_or_else(|| {
                            ToolError::Failed(format!(
                                "{url} redirected to an invalid location {location:?}"
                            ))
                        })?;
                    if redirects == self.max_redirects {
                        return Err(ToolError::Failed(format!(
                            "too many redirects: {url} redirected to {next} after {redirects} \
                             redirects; the limit is {} (tools.web_fetch.max_redirects)",
                            self.max_redirects
                        )));
                    }
                    redirects += 1;
                    from = Some(std::mem::replace(&mut url, next));
                    continue;
                }
            }
            if status.is_client_error() || status.is_server_error() {
                return Err(ToolError::Failed(format!(
                    "GET {url} returned HTTP {status}"
                )));
            }

            let (essence, charset) = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(render::parse_content_type)
                .unwrap_or_default();
            let kind = if essence.is_empty() {
                None // judged from the body below
            } else {
                Some(Kind::of_mime(&essence).ok_or_else(|| not_text(&url, &essence))?)
            };

            let mut body = Vec::with_capacity(
                resp.content_length()
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or(16 << 10)
                    .min(self.max_bytes),
            );
            let mut truncated = false;
            while let Some(chunk) = resp.chunk().await.map_err(|e| {
                ToolError::Failed(format!("reading the body of {url} failed: {}", chain(&e)))
            })? {
                let room = self.max_bytes - body.len();
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            let kind = match kind {
                Some(k) => k,
                None => Kind::sniff(&body)
                    .ok_or_else(|| not_text(&url, "binary data without a content type"))?,
            };
            return Ok(Page {
                url,
                kind,
                charset,
                body,
                truncated,
            });
        }
    }
}

impl Page {
    /// The tool's text: `URL:` (and `Title:` for HTML, a note when the body was cut),
    /// a blank line, then the readable text.
    fn into_text(self, max_bytes: usize) -> String {
        let kind = self.kind;
        let decoded = render::decode(&self.body, self.charset.as_deref(), kind);
        let rendered = render::render(kind, &decoded, &self.url);
        let mut out = format!("URL: {}\n", self.url);
        if let Some(title) = &rendered.title {
            out.push_str(&format!("Title: {title}\n"));
        }
        if self.truncated {
            out.push_str(&format!(
                "Note: the body was truncated at {max_bytes} bytes \
                 (tools.web_fetch.max_bytes); the rest was not read.\n"
            ));
        }
        out.push('\n');
        let text = rendered.text.trim();
        if text.is_empty() {
            out.push_str(if kind == Kind::Html {
                "(no readable text; the page may need JavaScript to show its content)"
            } else {
                "(empty body)"
            });
        } else {
            out.push_str(text);
        }
        out
    }
}

impl Tool for WebFetchTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call<'a>(
        &'a self,
        arguments: serde_json::Value,
        ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolOutput, ToolError>> {
        Box::pin(async move {
            let result = self.run(&arguments, ctx).await;
            let label = match &result {
                Ok(_) => "ok",
                Err(ToolError::Denied(_)) => "denied",
                Err(ToolError::Timeout(_)) => "timeout",
                Err(ToolError::Cancelled) => "cancelled",
                Err(
                    ToolError::InvalidArguments(_)
                    | ToolError::Unavailable(_)
                    | ToolError::Failed(_),
                ) => "error",
            };
            metrics::counter!(METRIC_CALLS, "result" => label).increment(1);
            if let Err(e) = &result {
                debug!(kind = e.kind(), cause = %e, "web_fetch refused or failed");
            }
            result
        })
    }
}

/// A client for one hop: no redirects, no proxy, and name resolution limited to the
/// addresses the guard passed for this URL's host. A client per hop costs a TLS config
/// build (about a millisecond) and buys pinning without shared mutable resolver state.
fn pinned_client(url: &Url, addrs: &[SocketAddr]) -> Result<reqwest::Client, ToolError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(NoDns))
        .user_agent(USER_AGENT);
    // An IP-literal host is connected to as is (it is what was checked).
    if let Some(url::Host::Domain(host)) = url.host() {
        builder = builder.resolve_to_addrs(host, addrs);
    }
    builder
        .build()
        .map_err(|e| ToolError::Failed(format!("cannot build the HTTP client: {}", chain(&e))))
}

/// The resolver under a hop's pinned name: refuses every name, so nothing the guard did not
/// check can be resolved (the pinned host is answered before this is asked).
struct NoDns;

impl reqwest::dns::Resolve for NoDns {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let msg = format!("`{}` was not checked by the SSRF guard", name.as_str());
        Box::pin(std::future::ready(Err(msg.into())))
    }
}

/// Parse the `url` argument. A bare `example.org/page` gets `https://` (models often leave
/// the scheme out).
fn parse_url(raw: &str) -> Result<Url, ToolError> {
    let raw = raw.trim();
    let parsed = match Url::parse(raw) {
        Err(url::ParseError::RelativeUrlWithoutBase) if !raw.contains("://") => {
            Url::parse(&format!("https://{raw}"))
        }
        other => other,
    };
    let mut url = parsed.map_err(|e| {
        ToolError::InvalidArguments(format!(
            "`url` must be an absolute http(s) URL ({e}), got {raw:?}"
        ))
    })?;
    url.set_fragment(None);
    Ok(url)
}

fn not_text(url: &Url, what: &str) -> ToolError {
    ToolError::Failed(format!(
        "{url} is {what}, not text; web_fetch reads HTML, text, JSON and XML only"
    ))
}

/// Cut `text` so that it and the cut note fit in `limit` characters.
fn cap_to(text: String, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text;
    }
    ToolOutput::text(text)
        .cap(limit.saturating_sub(CUT_NOTE_ROOM))
        .0
        .text
}

/// An error and its sources, `: `-joined (reqwest's own message says little).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hop_client_connects_only_to_the_pinned_addresses() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "pinned" }));
        tokio::spawn(async move { axum::serve(listener, app).await });

        // `.invalid` never resolves: reaching the server proves the pinned address is used.
        let url = Url::parse(&format!("http://pinned.invalid:{}/", addr.port())).unwrap();
        let client = pinned_client(&url, &[addr]).unwrap();
        let resp = client.get(url).send().await.unwrap();
        assert_eq!(resp.text().await.unwrap(), "pinned");

        // Any other name is refused, even one the system resolver knows.
        let other = Url::parse(&format!("http://localhost:{}/", addr.port())).unwrap();
        let err = chain(&client.get(other).send().await.unwrap_err());
        assert!(err.contains("not checked by the SSRF guard"), "{err}");
    }

    #[test]
    fn urls_and_caps() {
        assert_eq!(
            parse_url(" example.org/a#frag ").unwrap().as_str(),
            "https://example.org/a"
        );
        assert!(matches!(
            parse_url("http://"),
            Err(ToolError::InvalidArguments(_))
        ));
        let long = "x".repeat(1000);
        let cut = cap_to(long.clone(), 200);
        assert!(
            cut.chars().count() <= 200 && cut.contains("[output cut at"),
            "{cut}"
        );
        assert_eq!(cap_to(long.clone(), 1000), long);
    }
}
