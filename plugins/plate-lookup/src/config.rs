//! The bot's settings, with their defaults and checks.

use crate::formats::{Format, BUILT_IN};

/// Formats read when `formats` is not set: all the built-in ones.
pub const DEFAULT_FORMATS: &str = "fr-siv,fr-fni,fr-fni-corse,de,it,es,nl";
/// Register fields shown when `fields` is not set.
pub const DEFAULT_FIELDS: &str = "status,make,colour,notes";
/// Readings below this confidence ask for a better photo.
pub const DEFAULT_MIN_CONFIDENCE: f32 = 0.8;

/// The settings the bot reads.
pub const KEYS: &[&str] = &["formats", "patterns", "fields", "min_confidence"];

/// What the bot works with.
#[derive(Debug, Clone)]
pub struct Config {
    pub formats: Vec<Format>,
    /// The register's columns shown in an answer, in order.
    pub fields: Vec<String>,
    pub min_confidence: f32,
}

impl Config {
    /// Reads the settings through `get`: `formats` (built-in names, comma
    /// separated), `patterns` (more formats, `name=PATTERN` separated by
    /// `;`, see [`crate::formats`]), `fields`, `min_confidence` (0 to 1).
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let mut formats = Vec::new();
        for name in get("formats")
            .as_deref()
            .unwrap_or(DEFAULT_FORMATS)
            .split(',')
        {
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            formats.push(Format::built_in(name).ok_or_else(|| {
                let known: Vec<&str> = BUILT_IN.iter().map(|(n, _, _)| *n).collect();
                format!(
                    "setting `formats`: no format `{name}` (there are {})",
                    known.join(", ")
                )
            })?);
        }
        for entry in get("patterns").unwrap_or_default().split(';') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let (name, pattern) = entry
                .split_once('=')
                .ok_or_else(|| format!("setting `patterns`: `{entry}` is not name=PATTERN"))?;
            formats.push(
                Format::parse(name.trim(), pattern.trim(), "")
                    .map_err(|e| format!("setting `patterns`: {e}"))?,
            );
        }
        if formats.is_empty() {
            return Err("settings `formats` and `patterns` name no plate format".into());
        }
        let fields = get("fields")
            .as_deref()
            .unwrap_or(DEFAULT_FIELDS)
            .split(',')
            .map(|f| f.trim().to_owned())
            .filter(|f| !f.is_empty())
            .collect();
        let min_confidence = match get("min_confidence") {
            None => DEFAULT_MIN_CONFIDENCE,
            Some(text) => text
                .trim()
                .parse::<f32>()
                .ok()
                .filter(|c| (0.0..=1.0).contains(c))
                .ok_or_else(|| {
                    format!("setting `min_confidence`: `{text}` is not a number from 0 to 1")
                })?,
        };
        Ok(Config {
            formats,
            fields,
            min_confidence,
        })
    }
}
