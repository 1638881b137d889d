//! How chat messages become the prompt text: the model's own chat template when llama.cpp
//! knows it, ChatML otherwise.

use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use moltbot_core::ChatMessage;

/// How messages become the prompt text.
pub(super) enum PromptFormat {
    /// The chat template stored in the GGUF metadata, applied by llama.cpp.
    Model(LlamaChatTemplate),
    /// `<|im_start|>role\ncontent<|im_end|>` (ChatML), for models without a usable template.
    ChatMl,
}

impl PromptFormat {
    pub(super) fn for_model(model: &LlamaModel) -> PromptFormat {
        let template = match model.chat_template(None) {
            Ok(t) => t,
            Err(e) => {
                tracing::info!(cause = %e, "model has no chat template; using ChatML");
                return PromptFormat::ChatMl;
            }
        };
        // llama.cpp recognises templates by their shape and refuses ones it does not know;
        // find out now rather than on every request.
        let probe = [
            LlamaChatMessage::new("system".into(), "s".into()),
            LlamaChatMessage::new("user".into(), "u".into()),
        ];
        let probe: Result<Vec<_>, _> = probe.into_iter().collect();
        match probe.map(|msgs| model.apply_chat_template(&template, &msgs, true)) {
            Ok(Ok(_)) => PromptFormat::Model(template),
            Ok(Err(e)) => {
                tracing::warn!(cause = %e, "llama.cpp cannot apply the model's chat template; using ChatML");
                PromptFormat::ChatMl
            }
            // "s" and "u" hold no NUL byte, so building the probe cannot fail; fall back anyway.
            Err(_) => PromptFormat::ChatMl,
        }
    }

    pub(super) fn render(&self, model: &LlamaModel, messages: &[ChatMessage]) -> String {
        if let PromptFormat::Model(template) = self {
            // llama.cpp takes C strings: a NUL byte in user text would cut it short. Drop them.
            let chat: Result<Vec<_>, _> = messages
                .iter()
                .map(|m| {
                    LlamaChatMessage::new(m.role.as_str().to_string(), without_nul(&m.content))
                })
                .collect();
            match chat.map(|chat| model.apply_chat_template(template, &chat, true)) {
                Ok(Ok(prompt)) => return prompt,
                Ok(Err(e)) => tracing::warn!(cause = %e, "chat template failed; using ChatML"),
                Err(e) => tracing::warn!(cause = %e, "chat template failed; using ChatML"),
            }
        }
        chatml(messages)
    }
}

fn without_nul(s: &str) -> String {
    s.replace('\0', "")
}

pub(super) fn chatml(messages: &[ChatMessage]) -> String {
    let mut out = String::new();
    for m in messages {
        out.push_str("<|im_start|>");
        out.push_str(m.role.as_str());
        out.push('\n');
        out.push_str(&without_nul(&m.content));
        out.push_str("<|im_end|>\n");
    }
    out.push_str("<|im_start|>assistant\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use moltbot_core::Role;

    #[test]
    fn chatml_fallback_ends_with_the_assistant_turn() {
        let p = chatml(&[
            ChatMessage::new(Role::System, "be brief"),
            ChatMessage::new(Role::User, "hi\0"),
        ]);
        assert_eq!(
            p,
            "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }
}
