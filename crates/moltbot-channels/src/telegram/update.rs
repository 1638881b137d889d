//! The parts of Bot API `Update`s the adapter reads, and their mapping to [`Inbound`].
//!
//! Only what the mapping needs is declared; every other field is ignored, and everything
//! that Telegram may leave out is optional, so a new Telegram feature does not break parsing.

use moltbot_core::Inbound;
use serde::Deserialize;

use super::KIND;

/// Who the bot is (from `getMe`): what mentions and replies are matched against.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Me {
    pub id: i64,
    /// Without the `@`.
    #[serde(default)]
    pub username: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Update {
    pub update_id: i64,
    pub message: Option<Message>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Message {
    pub message_id: i64,
    pub from: Option<User>,
    /// The chat an anonymous group admin or a channel posts as.
    pub sender_chat: Option<Chat>,
    pub chat: Chat,
    pub text: Option<String>,
    pub caption: Option<String>,
    #[serde(default)]
    pub entities: Vec<Entity>,
    #[serde(default)]
    pub caption_entities: Vec<Entity>,
    pub reply_to_message: Option<Box<Message>>,
    pub message_thread_id: Option<i64>,
    #[serde(default)]
    pub is_topic_message: bool,
}

#[derive(Debug, Deserialize)]
pub(crate) struct User {
    pub id: i64,
    #[serde(default)]
    pub is_bot: bool,
    #[serde(default)]
    pub first_name: String,
    pub username: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Chat {
    pub id: i64,
    /// `private`, `group`, `supergroup` or `channel`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: Option<String>,
    pub username: Option<String>,
}

/// A `MessageEntity`: offsets and lengths are in UTF-16 code units.
#[derive(Debug, Deserialize)]
pub(crate) struct Entity {
    #[serde(rename = "type")]
    pub kind: String,
    pub offset: usize,
    pub length: usize,
    /// The mentioned user of a `text_mention`.
    pub user: Option<User>,
}

/// The message an update carries, as the hub wants it; `None` for what the hub has no use
/// for (no text, sent by a bot, other update kinds).
pub(crate) fn to_inbound(update: &Update, me: &Me) -> Option<Inbound> {
    let m = update.message.as_ref()?;
    let (text, entities) = match (&m.text, &m.caption) {
        (Some(text), _) => (text, &m.entities),
        (None, Some(caption)) => (caption, &m.caption_entities),
        (None, None) => return None,
    };
    if m.from.as_ref().is_some_and(|u| u.is_bot) {
        return None;
    }
    let (sender_id, sender_name) = match (&m.from, &m.sender_chat) {
        (Some(u), _) => {
            let name = u.username.clone().filter(|n| !n.is_empty());
            let first = Some(u.first_name.clone()).filter(|n| !n.is_empty());
            (u.id, name.or(first))
        }
        (None, Some(c)) => (c.id, c.username.clone().or_else(|| c.title.clone())),
        (None, None) => (m.chat.id, None),
    };
    let is_group = matches!(m.chat.kind.as_str(), "group" | "supergroup" | "channel");
    let mentioned = is_mentioned(m, text, entities, me, is_group);
    let stripped = strip_mention(text, &me.username);
    Some(Inbound {
        channel: KIND.to_string(),
        external_id: format!("{}:{}", m.chat.id, m.message_id),
        chat_id: m.chat.id.to_string(),
        sender_id: sender_id.to_string(),
        sender_name,
        // A message that is only the mention keeps it, rather than becoming empty.
        text: if stripped.trim().is_empty() {
            text.clone()
        } else {
            stripped
        },
        is_group,
        mentioned,
        reply_to: Some(m.message_id.to_string()),
        thread: m
            .message_thread_id
            .filter(|_| m.is_topic_message)
            .map(|t| t.to_string()),
    })
}

/// The bot was @mentioned, named in a text mention, replied to, or given a command.
fn is_mentioned(m: &Message, text: &str, entities: &[Entity], me: &Me, is_group: bool) -> bool {
    let ours = |name: &str| !me.username.is_empty() && name.eq_ignore_ascii_case(&me.username);
    let by_entity = entities.iter().any(|e| match e.kind.as_str() {
        "mention" => utf16_slice(text, e.offset, e.length)
            .and_then(|s| s.strip_prefix('@'))
            .is_some_and(ours),
        "text_mention" => e.user.as_ref().is_some_and(|u| u.id == me.id),
        // `/cmd@botname` names us; a bare `/cmd` is ours only in a direct chat.
        "bot_command" => {
            match utf16_slice(text, e.offset, e.length).and_then(|s| s.split_once('@')) {
                Some((_, bot)) => ours(bot),
                None => !is_group,
            }
        }
        _ => false,
    });
    let replied_to = m
        .reply_to_message
        .as_ref()
        .and_then(|r| r.from.as_ref())
        .is_some_and(|u| u.id == me.id);
    by_entity || replied_to
}

/// `text` without a leading `@botname` (and the `,` or `:` after it), and with
/// `/cmd@botname` shortened to `/cmd`.
fn strip_mention(text: &str, username: &str) -> String {
    if username.is_empty() {
        return text.to_string();
    }
    let trimmed = text.trim_start();
    let mention_len = 1 + username.len();
    let leading = trimmed
        .get(..mention_len)
        .filter(|m| m.starts_with('@') && m[1..].eq_ignore_ascii_case(username))
        .is_some();
    let ends_word = |rest: &str| {
        rest.chars()
            .next()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
    };
    if leading && ends_word(&trimmed[mention_len..]) {
        let rest = trimmed[mention_len..].trim_start_matches([',', ':']);
        return rest.trim_start().to_string();
    }
    if trimmed.starts_with('/') {
        let command_end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
        if let Some((command, bot)) = trimmed[..command_end].split_once('@') {
            if bot.eq_ignore_ascii_case(username) {
                return format!("{command}{}", &trimmed[command_end..]);
            }
        }
    }
    text.to_string()
}

/// The part of `text` an entity covers, given in UTF-16 code units.
fn utf16_slice(text: &str, offset: usize, length: usize) -> Option<&str> {
    let mut units = 0;
    let mut start = None;
    for (i, c) in text.char_indices() {
        if units == offset {
            start = Some(i);
        }
        if units == offset + length {
            return Some(&text[start?..i]);
        }
        units += c.len_utf16();
    }
    if units == offset {
        start = Some(text.len());
    }
    (units == offset + length).then(|| &text[start.unwrap_or(text.len())..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn me() -> Me {
        Me {
            id: 42,
            username: "MoltBot".into(),
        }
    }

    fn inbound(message: serde_json::Value) -> Option<Inbound> {
        let update: Update =
            serde_json::from_value(json!({"update_id": 1, "message": message})).unwrap();
        to_inbound(&update, &me())
    }

    fn group(text: &str, entities: serde_json::Value) -> serde_json::Value {
        json!({
            "message_id": 7,
            "from": {"id": 5, "is_bot": false, "first_name": "Ann", "username": "ann"},
            "chat": {"id": -100, "type": "supergroup", "title": "G"},
            "text": text,
            "entities": entities,
        })
    }

    #[test]
    fn a_direct_message_maps_every_field() {
        let m = inbound(json!({
            "message_id": 3,
            "from": {"id": 5, "is_bot": false, "first_name": "Ann"},
            "chat": {"id": 5, "type": "private"},
            "text": "hello",
        }))
        .unwrap();
        assert_eq!(m.external_id, "5:3");
        assert_eq!((m.chat_id.as_str(), m.sender_id.as_str()), ("5", "5"));
        assert_eq!(m.sender_name.as_deref(), Some("Ann"));
        assert_eq!(m.text, "hello");
        assert!(!m.is_group && !m.mentioned);
        assert_eq!(m.reply_to.as_deref(), Some("3"));
        assert_eq!(m.thread, None);
    }

    #[test]
    fn a_mention_of_the_bot_is_detected_and_stripped() {
        let m = inbound(group(
            "@moltbot, what time is it?",
            json!([{"type": "mention", "offset": 0, "length": 8}]),
        ))
        .unwrap();
        assert!(m.is_group && m.mentioned);
        assert_eq!(m.text, "what time is it?");
        assert_eq!(m.sender_name.as_deref(), Some("ann"));

        let other = inbound(group(
            "@someone else",
            json!([{"type": "mention", "offset": 0, "length": 8}]),
        ))
        .unwrap();
        assert!(!other.mentioned);
        assert_eq!(other.text, "@someone else");
    }

    #[test]
    fn entity_offsets_are_utf16() {
        // 🎉 is two UTF-16 units, so the mention starts at 3, not 2.
        let m = inbound(group(
            "🎉 @MoltBot hi",
            json!([{"type": "mention", "offset": 3, "length": 8}]),
        ))
        .unwrap();
        assert!(m.mentioned);
        assert_eq!(m.text, "🎉 @MoltBot hi");
        assert_eq!(utf16_slice("a🎉b", 1, 2), Some("🎉"));
        assert_eq!(utf16_slice("ab", 2, 0), Some(""));
        assert_eq!(utf16_slice("ab", 1, 5), None);
    }

    #[test]
    fn text_mentions_replies_and_commands_count() {
        let text_mention = group(
            "hey bot",
            json!([{"type": "text_mention", "offset": 4, "length": 3, "user": {"id": 42}}]),
        );
        assert!(inbound(text_mention).unwrap().mentioned);

        let mut reply = group("and this?", json!([]));
        reply["reply_to_message"] = json!({
            "message_id": 6, "from": {"id": 42, "is_bot": true, "first_name": "Molt"},
            "chat": {"id": -100, "type": "supergroup"}, "text": "earlier answer",
        });
        assert!(inbound(reply).unwrap().mentioned);

        let command = inbound(group(
            "/status@moltbot now",
            json!([{"type": "bot_command", "offset": 0, "length": 15}]),
        ))
        .unwrap();
        assert!(command.mentioned);
        assert_eq!(command.text, "/status now");

        let bare = group(
            "/status",
            json!([{"type": "bot_command", "offset": 0, "length": 7}]),
        );
        assert!(!inbound(bare).unwrap().mentioned);
        let other_bot = group(
            "/status@otherbot",
            json!([{"type": "bot_command", "offset": 0, "length": 16}]),
        );
        assert!(!inbound(other_bot).unwrap().mentioned);
    }

    #[test]
    fn a_bare_command_in_a_direct_chat_counts() {
        let m = inbound(json!({
            "message_id": 1, "from": {"id": 5, "first_name": "A"},
            "chat": {"id": 5, "type": "private"}, "text": "/start",
            "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
        }))
        .unwrap();
        assert!(m.mentioned && !m.is_group);
    }

    #[test]
    fn bots_and_textless_messages_are_skipped_captions_are_used() {
        let mut from_bot = group("hi", json!([]));
        from_bot["from"]["is_bot"] = json!(true);
        assert!(inbound(from_bot).is_none());

        let sticker = json!({
            "message_id": 1, "from": {"id": 5, "first_name": "A"},
            "chat": {"id": 5, "type": "private"}, "sticker": {"file_id": "x"},
        });
        assert!(inbound(sticker).is_none());

        let photo = inbound(json!({
            "message_id": 1, "from": {"id": 5, "first_name": "A"},
            "chat": {"id": 5, "type": "private"}, "photo": [], "caption": "look",
        }))
        .unwrap();
        assert_eq!(photo.text, "look");
    }

    #[test]
    fn topics_become_threads_and_a_lone_mention_is_kept() {
        let mut topic = group(
            "@MoltBot",
            json!([{"type": "mention", "offset": 0, "length": 8}]),
        );
        topic["message_thread_id"] = json!(9);
        topic["is_topic_message"] = json!(true);
        let m = inbound(topic).unwrap();
        assert_eq!(m.thread.as_deref(), Some("9"));
        assert_eq!(m.text, "@MoltBot");
        assert_eq!(strip_mention("@MoltBotFan hi", "MoltBot"), "@MoltBotFan hi");
    }
}
