//! Frames of OpenClaw's gateway protocol v4: `req`, `res` and `event` envelopes as JSON text.

use serde::Serialize;
use serde_json::{json, Value};

pub const PROTOCOL_VERSION: u64 = 4;

/// Error codes the OpenClaw clients understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidRequest,
    Forbidden,
    Unavailable,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidRequest => "INVALID_REQUEST",
            Code::Forbidden => "FORBIDDEN",
            Code::Unavailable => "UNAVAILABLE",
        }
    }
}

/// A failed request: code, message and optional details.
#[derive(Debug, Clone)]
pub struct RpcError {
    pub code: Code,
    pub message: String,
    pub details: Option<Value>,
    pub retry_after_ms: Option<u64>,
}

impl RpcError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: Code::InvalidRequest,
            message: message.into(),
            details: None,
            retry_after_ms: None,
        }
    }

    pub fn unavailable(message: impl Into<String>, retry_after_ms: Option<u64>) -> Self {
        Self {
            code: Code::Unavailable,
            message: message.into(),
            details: None,
            retry_after_ms,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn to_json(&self) -> Value {
        let mut e = json!({"code": self.code.as_str(), "message": self.message});
        if let Some(d) = &self.details {
            e["details"] = d.clone();
        }
        if let Some(ms) = self.retry_after_ms {
            e["retryable"] = json!(true);
            e["retryAfterMs"] = json!(ms);
        }
        e
    }
}

/// A parsed request frame.
#[derive(Debug, Clone)]
pub struct Req {
    pub id: Value,
    pub method: String,
    pub params: Value,
}

/// Parse a text frame into a request. Returns the id (if any) with the error so the caller
/// can answer it.
pub fn parse_req(text: &str) -> Result<Req, (Option<Value>, RpcError)> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| (None, RpcError::invalid(format!("invalid frame: {e}"))))?;
    let id = v.get("id").cloned();
    if v.get("type").and_then(Value::as_str) != Some("req") {
        return Err((
            id,
            RpcError::invalid("invalid frame: `type` must be \"req\""),
        ));
    }
    let Some(id) = id.filter(|i| i.is_string() || i.is_number()) else {
        return Err((None, RpcError::invalid("invalid frame: `id` is required")));
    };
    let Some(method) = v.get("method").and_then(Value::as_str) else {
        return Err((
            Some(id),
            RpcError::invalid("invalid frame: `method` must be a string"),
        ));
    };
    Ok(Req {
        id,
        method: method.to_string(),
        params: v.get("params").cloned().unwrap_or(Value::Null),
    })
}

pub fn res_ok(id: &Value, payload: impl Serialize) -> Value {
    json!({"type": "res", "id": id, "ok": true, "payload": payload})
}

pub fn res_err(id: &Value, err: &RpcError) -> Value {
    json!({"type": "res", "id": id, "ok": false, "error": err.to_json()})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_and_rejects_bad_frames() {
        let r = parse_req(r#"{"type":"req","id":"1:x","method":"health"}"#).unwrap();
        assert_eq!(r.method, "health");
        assert!(r.params.is_null());
        let (id, e) = parse_req(r#"{"type":"req","id":"2","params":{}}"#).unwrap_err();
        assert_eq!(id, Some(json!("2")));
        assert!(e.message.contains("method"));
        assert!(parse_req("not json").is_err());
        let (_, e) = parse_req(r#"{"type":"event","id":"3","method":"x"}"#).unwrap_err();
        assert!(e.message.contains("req"));
    }

    #[test]
    fn error_json_shape() {
        let e = RpcError::unavailable("busy", Some(1000));
        let v = res_err(&json!("7"), &e);
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"]["code"], "UNAVAILABLE");
        assert_eq!(v["error"]["retryAfterMs"], 1000);
    }
}
