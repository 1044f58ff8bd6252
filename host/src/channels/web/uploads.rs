//! Files posted with a message (`multipart/form-data`): checked whole
//! before anything is stored, then written as blobs before the message that
//! carries them is acknowledged.
//!
//! A file must fit the bot's `attachment_bytes` grant (a bot without it
//! takes none) and the media types its manifest `accepts`, judged from the
//! content, never the client's word. An image the host can decode (JPEG,
//! PNG, WebP, GIF) is decoded in full, so a truncated or corrupt photo is
//! refused here rather than reaching the bot.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};

use super::ApiError;
use crate::runtime::LoadedBot;
use crate::store::{Attachment, Store};

/// Files one message may carry.
pub const MAX_FILES: usize = 8;
/// Longest file name kept.
const MAX_NAME_BYTES: usize = 255;

/// A message as posted in a multipart form: its `text` field (optional
/// when files come) and its `file` fields.
pub struct Upload {
    pub text: String,
    pub files: Vec<File>,
}

/// One posted file, checked.
pub struct File {
    pub name: Option<String>,
    pub media_type: &'static str,
    pub bytes: Bytes,
}

/// The boundary of a `multipart/form-data` request, if it is one.
pub fn boundary(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let mime: &str = value.split(';').next()?.trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    multer::parse_boundary(value).ok()
}

/// Reads and checks the form posted to `bot`.
pub async fn read(bot: &LoadedBot, boundary: String, body: Bytes) -> Result<Upload, ApiError> {
    let stream = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut text = None;
    let mut files = Vec::new();
    while let Some(field) = form.next_field().await.map_err(malformed)? {
        match field.name() {
            Some("text") if text.is_none() => text = Some(field.text().await.map_err(malformed)?),
            Some("file") => {
                if files.len() == MAX_FILES {
                    return Err(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("a message carries at most {MAX_FILES} files"),
                    ));
                }
                let name = field.file_name().map(clean_name);
                let bytes = field.bytes().await.map_err(malformed)?;
                files.push(check(bot, name, bytes).await?);
            }
            Some("text") => return Err(ApiError::bad_request("the form has two `text` fields")),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown form field {other:?}: a message is a `text` field and `file` fields"
                )))
            }
        }
    }
    let text = text.unwrap_or_default();
    if text.is_empty() && files.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the form has neither `text` nor a `file`",
        ));
    }
    Ok(Upload { text, files })
}

/// Writes the checked files as blobs (durably) and returns the
/// attachments to store with the message.
pub fn store(store: &Store, files: &[File]) -> Result<Vec<Attachment>, ApiError> {
    files
        .iter()
        .map(|file| {
            Ok(Attachment {
                id: store.put_blob(&file.bytes)?,
                name: file.name.clone(),
                media_type: file.media_type.to_owned(),
                size: file.bytes.len() as u64,
            })
        })
        .collect()
}

/// Checks one file against the bot's grant and what it accepts.
async fn check(bot: &LoadedBot, name: Option<String>, bytes: Bytes) -> Result<File, ApiError> {
    let id = &bot.manifest.id;
    let shown = name.as_deref().unwrap_or("the file");
    let Some(granted) = bot.policy.grant.attachment_bytes.filter(|&n| n > 0) else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("bot `{id}` takes no attachments (its policy grants no `attachment_bytes`)"),
        ));
    };
    if bytes.len() as u64 > granted {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{shown} is {} bytes; bot `{id}` takes attachments of at most {granted} bytes",
                bytes.len()
            ),
        ));
    }
    let media_type = aviary_vision::sniff(&bytes).unwrap_or("application/octet-stream");
    if !bot.manifest.takes(media_type) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "{shown} is {media_type} (judged from its content); bot `{id}` takes {}",
                bot.manifest.accepts.join(", ")
            ),
        ));
    }
    if aviary_vision::decodes(media_type) {
        let image = bytes.clone();
        let decoded = tokio::task::spawn_blocking(move || aviary_vision::decode(&image).map(drop))
            .await
            .map_err(|e| ApiError::internal(anyhow::anyhow!("the image check stopped: {e}")))?;
        if let Err(error) = decoded {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{shown} cannot be read: {error}"),
            ));
        }
    }
    Ok(File {
        name,
        media_type,
        bytes,
    })
}

/// A file name without any path, control characters or excess length.
fn clean_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let clean: String = base.chars().filter(|c| !c.is_control()).collect();
    crate::text::cut(&clean, MAX_NAME_BYTES).into_owned()
}

fn malformed(error: multer::Error) -> ApiError {
    ApiError::bad_request(format!("malformed multipart form: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_their_paths_and_control_characters() {
        assert_eq!(clean_name("../../etc/passwd"), "passwd");
        assert_eq!(clean_name("C:\\photos\\car.jpg"), "car.jpg");
        assert_eq!(clean_name("a\nb\u{7}.png"), "ab.png");
    }

    #[test]
    fn only_multipart_forms_have_a_boundary() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "multipart/form-data; boundary=xyz".parse().unwrap(),
        );
        assert_eq!(boundary(&headers).as_deref(), Some("xyz"));
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert_eq!(boundary(&headers), None);
    }
}
