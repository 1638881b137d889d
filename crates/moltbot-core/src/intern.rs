//! Interned `&'static str`s for values that cross a process boundary.
//!
//! Labels such as a turn's channel (`http`, `telegram`), a route's reason or a tool error's
//! kind are `&'static str` in our types: they come from a small fixed vocabulary and are
//! used as metric labels. When such a value is read back from the message bus it has to
//! become `'static` again; [`intern`] keeps one leaked copy per distinct value. The table is
//! bounded so that a peer sending ever-new strings cannot grow it without limit.

use std::collections::HashSet;
use std::sync::Mutex;

/// A label from a small fixed vocabulary. Fields of this type deserialize with [`de`] /
/// [`de_opt`]; the alias (rather than a bare `&'static str`) keeps serde's derive from
/// treating the field as borrowed from the input, which would demand `'static` input.
pub type Label = &'static str;

/// Distinct values kept; past that, unknown values read as `"other"`.
const MAX_INTERNED: usize = 1024;

static TABLE: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);

/// The `'static` copy of `s` (the same pointer for equal strings).
pub fn intern(s: &str) -> &'static str {
    let mut guard = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    let table = guard.get_or_insert_with(HashSet::new);
    if let Some(found) = table.get(s) {
        return found;
    }
    if table.len() >= MAX_INTERNED {
        return "other";
    }
    // Leaked on purpose: at most MAX_INTERNED short strings for the process's lifetime.
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    table.insert(leaked);
    leaked
}

/// Serde helper: `#[serde(deserialize_with = "moltbot_core::intern::de")]`.
pub fn de<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
    Ok(intern(&s))
}

/// Serde helper for `Option<&'static str>` (use with `#[serde(default)]`).
pub fn de_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'static str>, D::Error> {
    let s = <Option<std::borrow::Cow<'de, str>> as serde::Deserialize>::deserialize(d)?;
    Ok(s.map(|s| intern(&s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_share_one_copy() {
        let a = intern(&String::from("telegram"));
        let b = intern("telegram");
        assert_eq!(a, "telegram");
        assert!(std::ptr::eq(a, b));
    }

    #[test]
    fn reads_from_json() {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(deserialize_with = "de")]
            kind: &'static str,
            #[serde(default, deserialize_with = "de_opt")]
            why: Option<&'static str>,
        }
        let t: T = serde_json::from_str(r#"{"kind":"ws","why":"template"}"#).unwrap();
        assert_eq!((t.kind, t.why), ("ws", Some("template")));
        let t: T = serde_json::from_str(r#"{"kind":"ws"}"#).unwrap();
        assert_eq!(t.why, None);
    }
}
