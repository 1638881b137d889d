//! What the actions do to one page: load a URL, snapshot, click, type, scroll, screenshot.
//!
//! Elements are addressed by the refs the snapshot script puts on them
//! (`data-moltbot-ref="e12"`), so a click needs a snapshot of the same document first.

use chromiumoxide::cdp::browser_protocol::input::InsertTextParams;
use chromiumoxide::cdp::browser_protocol::page::{
    CaptureScreenshotFormat, EventFrameStartedLoading,
};
use chromiumoxide::cdp::js_protocol::runtime::EvaluateParams;
use chromiumoxide::error::CdpError;
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::{Element, Page};
use futures::StreamExt;
use moltbot_core::{Attachment, ToolError, ToolOutput};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;
use url::Url;

const SNAPSHOT_JS: &str = include_str!("snapshot.js");

/// The attribute holding an element's ref.
const REF_ATTR: &str = "data-moltbot-ref";

/// Characters of page text in a snapshot, at most (the element list has its own budget, so
/// the tool's output cap never cuts the refs off).
const TEXT_BUDGET: usize = 6_000;

/// Characters of the element list in a snapshot, at most.
const ELEMENTS_BUDGET: usize = 5_000;

/// How long after a click or key press a navigation must start to be waited for. Browsers
/// start a link's or form's navigation within milliseconds; this only bounds the wait when
/// nothing navigates.
const NAVIGATION_GRACE: Duration = Duration::from_millis(500);

/// A CDP failure as a tool error.
pub(crate) fn cdp(err: CdpError) -> ToolError {
    ToolError::Failed(format!("browser: {err}"))
}

/// Whether `r` looks like a ref the snapshot hands out (`e` and digits), which also keeps it
/// safe to put in a CSS selector.
pub(crate) fn valid_ref(r: &str) -> bool {
    r.len() <= 10
        && r.strip_prefix('e')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Evaluate `expression` in the page's main frame and deserialize its value.
///
/// Goes through `Runtime.evaluate` without a context id, so it runs in whatever document is
/// current (chromiumoxide's cached context id can be stale right after a navigation).
async fn evaluate<T: DeserializeOwned>(page: &Page, expression: String) -> Result<T, ToolError> {
    let mut params = EvaluateParams::new(expression);
    params.return_by_value = Some(true);
    params.await_promise = Some(true);
    let resp = page.execute(params).await.map_err(cdp)?;
    if let Some(ex) = &resp.result.exception_details {
        let detail = ex
            .exception
            .as_ref()
            .and_then(|e| e.description.clone())
            .unwrap_or_else(|| ex.text.clone());
        return Err(ToolError::Failed(format!("page script failed: {detail}")));
    }
    let value = resp.result.result.value.clone().unwrap_or_default();
    serde_json::from_value(value)
        .map_err(|e| ToolError::Failed(format!("unexpected page script result: {e}")))
}

/// The page's title (empty when it cannot be read).
pub(crate) async fn title(page: &Page) -> String {
    evaluate(page, "document.title".to_string())
        .await
        .unwrap_or_default()
}

/// Load `url` in `page`. Returns whether the page was still loading when the navigation
/// budget ran out (its content so far is still worth a snapshot).
pub(crate) async fn load(page: &Page, url: &Url, budget: Duration) -> Result<bool, ToolError> {
    match tokio::time::timeout(budget, page.goto(url.as_str())).await {
        Err(_) => Ok(true),
        Ok(Ok(_)) => Ok(false),
        Ok(Err(err)) => {
            let mut msg = format!("cannot open {url}: {err}");
            if err.to_string().contains("TUNNEL_CONNECTION_FAILED") {
                msg.push_str(
                    "\nhint: the address may be refused by `tools.browser.allow_hosts` \
                     (private and loopback addresses are)",
                );
            }
            Err(ToolError::Failed(msg))
        }
    }
}

/// Run `act` (a click or key press) and, when it starts a navigation of the main frame,
/// wait until the new page has loaded (at most `budget`). Returns whether the page was
/// still loading when the budget ran out.
async fn act_and_settle(
    page: &Page,
    budget: Duration,
    act: impl Future<Output = Result<(), ToolError>>,
) -> Result<bool, ToolError> {
    let main = page.mainframe().await.map_err(cdp)?;
    // Listen before acting so the start of the navigation cannot be missed.
    let mut started = page
        .event_listener::<EventFrameStartedLoading>()
        .await
        .map_err(cdp)?;
    act.await?;
    let navigating = tokio::time::timeout(NAVIGATION_GRACE, async {
        while let Some(ev) = started.next().await {
            if main.as_ref().is_none_or(|m| *m == ev.frame_id) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    if !navigating {
        return Ok(false);
    }
    // chromiumoxide marks the frame as loading before it hands out the event, so this waits
    // for the new document's `load`.
    match tokio::time::timeout(budget, page.wait_for_navigation()).await {
        Err(_) => Ok(true),
        Ok(Ok(_)) => Ok(false),
        Ok(Err(err)) => Err(cdp(err)),
    }
}

/// The element tagged `r`, after checking it is on the page. Links and forms that would
/// open a new tab are made to open in this one (tabs the page opens are not tracked).
async fn element(page: &Page, r: &str) -> Result<Element, ToolError> {
    if !valid_ref(r) {
        return Err(ToolError::InvalidArguments(format!(
            "`ref` must look like `e12` (from a snapshot), got {r:?}"
        )));
    }
    let selector = format!("[{REF_ATTR}=\"{r}\"]");
    let found: bool = evaluate(
        page,
        format!(
            "(() => {{ const el = document.querySelector('{selector}'); if (!el) return false; \
             for (const t of [el.closest('a[target]'), el.form || el.closest('form[target]')]) \
             {{ if (t) t.removeAttribute('target'); }} return true; }})()"
        ),
    )
    .await?;
    if !found {
        return Err(ToolError::InvalidArguments(format!(
            "`ref` {r} is not on the page; take a snapshot first"
        )));
    }
    page.find_element(selector).await.map_err(cdp)
}

pub(crate) async fn click(page: &Page, r: &str, budget: Duration) -> Result<bool, ToolError> {
    let el = element(page, r).await?;
    act_and_settle(page, budget, async {
        el.click()
            .await
            .map_err(|e| ToolError::Failed(format!("cannot click `ref` {r}: {e}")))?;
        Ok(())
    })
    .await
}

/// Replace the content of the field tagged `r` with `text` (for a `select`, choose the
/// option whose label or value is `text`), then press Enter when `submit`.
pub(crate) async fn type_text(
    page: &Page,
    r: &str,
    text: &str,
    submit: bool,
    budget: Duration,
) -> Result<bool, ToolError> {
    let el = element(page, r).await?;
    // Focus and select the current content so the inserted text replaces it.
    let js = r#"function(text) {
        this.scrollIntoView({ block: "center" });
        this.focus();
        if (this.tagName === "SELECT") {
            const want = text.trim().toLowerCase();
            const opt = Array.from(this.options).find((o) =>
                o.text.trim().toLowerCase() === want || o.value.toLowerCase() === want);
            if (!opt) return "no_option";
            this.value = opt.value;
            this.dispatchEvent(new Event("input", { bubbles: true }));
            this.dispatchEvent(new Event("change", { bubbles: true }));
            return "selected";
        }
        if (typeof this.select === "function") {
            this.select();
        } else if (this.isContentEditable) {
            const range = document.createRange();
            range.selectNodeContents(this);
            const sel = window.getSelection();
            sel.removeAllRanges();
            sel.addRange(range);
        } else {
            return "not_editable";
        }
        if (text === "") {
            document.execCommand("delete");
        }
        return "ready";
    }"#;
    let call = chromiumoxide::cdp::js_protocol::runtime::CallFunctionOnParams::builder()
        .function_declaration(js)
        .object_id(el.remote_object_id.clone())
        .argument(
            chromiumoxide::cdp::js_protocol::runtime::CallArgument::builder()
                .value(serde_json::Value::String(text.to_string()))
                .build(),
        )
        .return_by_value(true)
        .build()
        .map_err(ToolError::Failed)?;
    let state = page.execute(call).await.map_err(cdp)?;
    match state.result.result.value.as_ref().and_then(|v| v.as_str()) {
        Some("ready") if !text.is_empty() => {
            page.execute(InsertTextParams::new(text))
                .await
                .map_err(cdp)?;
        }
        Some("ready" | "selected") => {}
        Some("no_option") => {
            return Err(ToolError::InvalidArguments(format!(
                "`text` {text:?} is not an option of `ref` {r}"
            )))
        }
        Some("not_editable") => {
            return Err(ToolError::InvalidArguments(format!(
                "`ref` {r} is not a text field; use `click` for it"
            )))
        }
        other => {
            return Err(ToolError::Failed(format!(
                "cannot type into `ref` {r}: unexpected state {other:?}"
            )))
        }
    }
    if !submit {
        return Ok(false);
    }
    act_and_settle(page, budget, async {
        el.press_key("Enter").await.map_err(cdp)?;
        Ok(())
    })
    .await
}

/// Where the page is scrolled to.
#[derive(Debug, Deserialize)]
struct ScrollState {
    scroll_y: u64,
    scroll_height: u64,
    viewport_height: u64,
}

/// Scroll by `pixels` (default: most of a screen) and say where the page now is.
pub(crate) async fn scroll(
    page: &Page,
    down: bool,
    pixels: Option<u64>,
) -> Result<String, ToolError> {
    let sign = if down { "" } else { "-" };
    let amount = pixels.map_or_else(
        || "Math.round(window.innerHeight * 0.8)".to_string(),
        |p| p.to_string(),
    );
    let state: ScrollState = evaluate(
        page,
        format!(
            "(() => {{ window.scrollBy({{ top: {sign}{amount}, behavior: 'instant' }}); \
             return {{ scroll_y: Math.round(window.scrollY), \
             scroll_height: Math.round(document.documentElement.scrollHeight), \
             viewport_height: Math.round(window.innerHeight) }}; }})()"
        ),
    )
    .await?;
    let bottom = (state.scroll_y + state.viewport_height).min(state.scroll_height);
    let mut line = format!(
        "Scrolled {}; now showing {}–{} of {} px.",
        if down { "down" } else { "up" },
        state.scroll_y,
        bottom,
        state.scroll_height
    );
    if down && bottom >= state.scroll_height {
        line.push_str(" This is the bottom of the page.");
    } else if !down && state.scroll_y == 0 {
        line.push_str(" This is the top of the page.");
    }
    Ok(line)
}

/// A PNG of the visible part of the page.
pub(crate) async fn screenshot(page: &Page) -> Result<ToolOutput, ToolError> {
    let png = page
        .screenshot(
            ScreenshotParams::builder()
                .format(CaptureScreenshotFormat::Png)
                .build(),
        )
        .await
        .map_err(cdp)?;
    let url = page.url().await.map_err(cdp)?.unwrap_or_default();
    let size = match png_size(&png) {
        Some((w, h)) => format!("{w}×{h} PNG"),
        None => "PNG".to_string(),
    };
    Ok(ToolOutput {
        text: format!(
            "Screenshot of {url} ({size}, {} KB) attached.",
            png.len().div_ceil(1024)
        ),
        attachments: vec![Attachment {
            mime: "image/png".to_string(),
            data: png,
        }],
    })
}

/// Width and height from a PNG's header.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || !png.starts_with(b"\x89PNG\r\n\x1a\n") {
        return None;
    }
    let w = u32::from_be_bytes(png[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(png[20..24].try_into().ok()?);
    Some((w, h))
}

/// What the snapshot script returns.
#[derive(Debug, Deserialize)]
pub(crate) struct Snapshot {
    pub title: String,
    pub url: String,
    text: String,
    elements: Vec<SnapshotElement>,
    total_elements: usize,
    scroll_y: u64,
    scroll_height: u64,
    viewport_height: u64,
}

#[derive(Debug, Deserialize)]
struct SnapshotElement {
    #[serde(rename = "ref")]
    r#ref: String,
    role: String,
    name: String,
    href: Option<String>,
    placeholder: Option<String>,
    value: Option<String>,
    checked: Option<bool>,
    #[serde(default)]
    disabled: bool,
}

pub(crate) async fn snapshot(page: &Page) -> Result<Snapshot, ToolError> {
    evaluate(page, SNAPSHOT_JS.to_string()).await
}

impl Snapshot {
    /// The text the model reads: title, URL, page text, then the numbered elements.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Title: {}", self.title);
        let _ = writeln!(out, "URL: {}", self.url);
        if self.scroll_height > self.viewport_height {
            let _ = writeln!(
                out,
                "Scroll: {} of {} px (viewport {} px)",
                self.scroll_y, self.scroll_height, self.viewport_height
            );
        }
        out.push('\n');
        let total = self.text.chars().count();
        match self.text.char_indices().nth(TEXT_BUDGET) {
            None => out.push_str(&self.text),
            Some((cut, _)) => {
                out.push_str(&self.text[..cut]);
                let _ = write!(out, "\n[text cut at {TEXT_BUDGET} of {total} characters]");
            }
        }
        if self.elements.is_empty() {
            out.push_str("\n\nNo interactive elements.");
            return out;
        }
        let _ = write!(out, "\n\nInteractive elements ({}):", self.total_elements);
        let start = out.len();
        let mut shown = 0;
        for el in &self.elements {
            let line = el.render();
            if out.len() - start + line.len() > ELEMENTS_BUDGET {
                break;
            }
            out.push('\n');
            out.push_str(&line);
            shown += 1;
        }
        if shown < self.total_elements {
            let _ = write!(
                out,
                "\n[{} more elements not listed; scroll or use a narrower page]",
                self.total_elements - shown
            );
        }
        out
    }
}

impl SnapshotElement {
    fn render(&self) -> String {
        let mut line = format!("[{}] {}", self.r#ref, self.role);
        if !self.name.is_empty() {
            let _ = write!(line, " {:?}", self.name);
        }
        if let Some(href) = &self.href {
            let _ = write!(line, " -> {href}");
        }
        if let Some(p) = &self.placeholder {
            let _ = write!(line, " placeholder={p:?}");
        }
        if let Some(v) = &self.value {
            let _ = write!(line, " value={v:?}");
        }
        match self.checked {
            Some(true) => line.push_str(" (checked)"),
            Some(false) => line.push_str(" (unchecked)"),
            None => {}
        }
        if self.disabled {
            line.push_str(" (disabled)");
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_are_checked_before_they_reach_a_selector() {
        assert!(valid_ref("e1"));
        assert!(valid_ref("e123"));
        assert!(!valid_ref("e"));
        assert!(!valid_ref("12"));
        assert!(!valid_ref("e1\"]"));
        assert!(!valid_ref("e12345678901"));
    }

    #[test]
    fn png_header_gives_the_size() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend_from_slice(&1280u32.to_be_bytes());
        png.extend_from_slice(&800u32.to_be_bytes());
        assert_eq!(png_size(&png), Some((1280, 800)));
        assert_eq!(png_size(b"GIF89a"), None);
    }

    fn element(r: &str, role: &str, name: &str) -> SnapshotElement {
        SnapshotElement {
            r#ref: r.into(),
            role: role.into(),
            name: name.into(),
            href: None,
            placeholder: None,
            value: None,
            checked: None,
            disabled: false,
        }
    }

    #[test]
    fn snapshot_keeps_refs_within_budget_when_text_is_long() {
        let mut link = element("e1", "link", "Next");
        link.href = Some("/page2".into());
        let mut field = element("e2", "textbox", "Name");
        field.placeholder = Some("your name".into());
        field.value = Some("bob".into());
        let many: Vec<SnapshotElement> = (3..2000)
            .map(|i| element(&format!("e{i}"), "button", "Press"))
            .collect();
        let total = 2 + many.len();
        let snap = Snapshot {
            title: "T".into(),
            url: "http://x/".into(),
            text: "word ".repeat(5_000),
            elements: [link, field].into_iter().chain(many).collect(),
            total_elements: total,
            scroll_y: 0,
            scroll_height: 3000,
            viewport_height: 800,
        };
        let out = snap.render();
        assert!(
            out.contains("[text cut at 6000 of 25000 characters]"),
            "{out}"
        );
        assert!(out.contains("[e1] link \"Next\" -> /page2"));
        assert!(out.contains("[e2] textbox \"Name\" placeholder=\"your name\" value=\"bob\""));
        assert!(out.contains("more elements not listed"));
        assert!(out.chars().count() < 12_000, "{}", out.chars().count());
    }
}
