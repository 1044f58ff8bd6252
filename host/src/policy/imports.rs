//! What a component's imports mean for its sandbox: which grant each one
//! needs, and which are never given to a bot.

use wasmtime::component::Component;
use wasmtime::Engine;

/// What an import needs before the host will link it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// Harmless or empty for bots (logging, clocks, random, empty env/stdin).
    Always,
    /// Allowed when this grant is present.
    Grant(&'static str),
    /// Never given to a bot; the reason says why.
    Never(&'static str),
}

/// The interface names (without version) a component imports, sorted.
pub fn component_imports(engine: &Engine, component: &Component) -> Vec<String> {
    let mut names: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    names.sort();
    names
}

/// The requirement of one import, e.g. `wasi:http/outgoing-handler@0.2.4`.
pub fn requirement(import: &str) -> Requirement {
    let name = import.split('@').next().unwrap_or(import);
    match name {
        "aviary:bot/types" | "aviary:bot/log" | "aviary:bot/config" => Requirement::Always,
        "aviary:bot/messaging" => Requirement::Grant("send"),
        "aviary:bot/kv" => Requirement::Grant("kv"),
        "aviary:bot/llm" => Requirement::Grant("llm"),
        "aviary:bot/attachments" => Requirement::Grant("attachment_bytes"),
        "aviary:bot/vision" => Requirement::Grant("vision"),
        "aviary:bot/schedule" => Requirement::Grant("timers"),
        "aviary:bot/outbox" => Requirement::Grant("http"),
        "wasi:http/outgoing-handler" | "wasi:http/types" => Requirement::Grant("http"),
        _ if name.starts_with("wasi:filesystem/") => Requirement::Never("bots get no filesystem"),
        _ if name.starts_with("wasi:sockets/") => {
            Requirement::Never("bots get no sockets; use wasi:http with an http grant")
        }
        _ if name.starts_with("wasi:io/")
            || name.starts_with("wasi:clocks/")
            || name.starts_with("wasi:random/")
            || name.starts_with("wasi:cli/") =>
        {
            Requirement::Always
        }
        _ => Requirement::Never("the host provides no such interface"),
    }
}

/// Why an import is refused given the grants present, if it is.
pub fn refusal(import: &str, granted: impl Fn(&str) -> bool) -> Option<String> {
    match requirement(import) {
        Requirement::Always => None,
        Requirement::Grant(grant) if granted(grant) => None,
        Requirement::Grant(grant) => {
            let field = match grant {
                "llm" => "llm_models",
                "vision" => "vision = true",
                other => other,
            };
            Some(format!("the component imports {import}, which needs the `{grant}` grant (add `{field}` to the bot's policy)"))
        }
        Requirement::Never(reason) => Some(format!(
            "the component imports {import}, which no grant allows: {reason}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_map_to_grants() {
        assert_eq!(requirement("aviary:bot/kv@0.1.0"), Requirement::Grant("kv"));
        assert_eq!(
            requirement("wasi:http/outgoing-handler@0.2.6"),
            Requirement::Grant("http")
        );
        assert_eq!(
            requirement("wasi:cli/environment@0.2.6"),
            Requirement::Always
        );
        assert!(matches!(
            requirement("wasi:filesystem/preopens@0.2.6"),
            Requirement::Never(_)
        ));
        assert!(matches!(
            requirement("wasi:sockets/tcp@0.2.6"),
            Requirement::Never(_)
        ));
        assert!(matches!(
            requirement("acme:evil/thing"),
            Requirement::Never(_)
        ));
        let message = refusal("aviary:bot/kv@0.1.0", |_| false).unwrap();
        assert!(
            message.contains("aviary:bot/kv") && message.contains("`kv` grant"),
            "{message}"
        );
        assert!(refusal("aviary:bot/kv@0.1.0", |g| g == "kv").is_none());
        let message = refusal("aviary:bot/vision@0.1.3", |_| false).unwrap();
        assert!(message.contains("`vision = true`"), "{message}");
        assert_eq!(
            requirement("aviary:bot/attachments@0.1.3"),
            Requirement::Grant("attachment_bytes")
        );
    }
}
