//! Turning uploaded bytes into an upright RGB image.
//!
//! The format is always recognised from the content (magic bytes), never from
//! a file name or a client-supplied media type, because both are easy to get
//! wrong or to forge.

use std::io::Cursor;

use image::codecs::jpeg::JpegDecoder;
use image::codecs::png::PngDecoder;
use image::codecs::webp::WebPDecoder;
use image::{DynamicImage, ImageDecoder, RgbImage};

/// Largest number of pixels [`decode`] accepts (50 megapixels).
///
/// A small compressed file can describe a huge image ("decompression bomb");
/// the cap keeps one upload from exhausting the host's memory.
pub const MAX_PIXELS: u64 = 50_000_000;

/// A decoded, upright RGB8 image ready for text detection.
///
/// The pixel data is already rotated according to the EXIF orientation, so
/// its width and height are those a person sees on screen; all coordinates
/// returned by the engine are in this image's pixels.
#[derive(Debug, Clone)]
pub struct Image {
    rgb: RgbImage,
}

impl Image {
    /// Wraps an RGB image that is already upright (e.g. one rendered in
    /// memory), for callers that do not start from encoded bytes.
    pub fn from_rgb(rgb: RgbImage) -> Image {
        Image { rgb }
    }

    /// The pixels, so callers can inspect or crop the image themselves.
    pub fn rgb(&self) -> &RgbImage {
        &self.rgb
    }

    /// Width in pixels of the upright image, the frame of all coordinates.
    pub fn width(&self) -> u32 {
        self.rgb.width()
    }

    /// Height in pixels of the upright image, the frame of all coordinates.
    pub fn height(&self) -> u32 {
        self.rgb.height()
    }

    /// Consumes the wrapper and returns the pixels without copying.
    pub fn into_rgb(self) -> RgbImage {
        self.rgb
    }
}

/// Why bytes could not be turned into an [`Image`].
///
/// Each variant's message is meant to be shown to the person who sent the
/// file, so it says what went wrong and, where possible, what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A recognised image (or document) format that this crate cannot
    /// decode, such as HEIC photos from iPhones.
    #[error(
        "{format} files are not supported; please send the picture as JPEG, PNG or WebP instead \
         (on an iPhone: Settings > Camera > Formats > Most Compatible)"
    )]
    Unsupported {
        /// Short human name of the format, e.g. `"HEIC"`.
        format: &'static str,
    },
    /// The file starts like a supported image but ends early, typically an
    /// interrupted upload.
    #[error("the image file is truncated (incomplete upload?); please send it again")]
    Truncated,
    /// The bytes are not in any image format this crate recognises.
    #[error("this is not an image; please send a JPEG, PNG or WebP picture")]
    NotAnImage,
    /// The file looks like a supported format but its content is corrupt.
    #[error("the image could not be decoded ({0}); please send it again as JPEG, PNG or WebP")]
    Undecodable(String),
    /// The image has more pixels than [`MAX_PIXELS`].
    #[error(
        "the image is too large ({width}x{height} pixels, limit {max} pixels); please send a smaller picture"
    )]
    TooLarge {
        /// Declared width in pixels.
        width: u32,
        /// Declared height in pixels.
        height: u32,
        /// The pixel limit that was exceeded.
        max: u64,
    },
}

/// Media type of `bytes` judged by their magic bytes, for the host's upload
/// check (e.g. `"image/jpeg"`, `"image/heic"`, `"application/pdf"`).
///
/// Returns `None` when the content matches no known format. A `Some` does not
/// mean [`decode`] can read it: only JPEG, PNG and WebP are decoded.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Some("image/jpeg");
    }
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some("image/png");
    }
    if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return Some("image/webp");
    }
    if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        return Some("image/gif");
    }
    if bytes.starts_with(b"%PDF-") {
        return Some("application/pdf");
    }
    if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        return Some("image/tiff");
    }
    if bytes.starts_with(b"BM") && bytes.len() >= 14 {
        return Some("image/bmp");
    }
    if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        return sniff_iso_bmff(bytes);
    }
    None
}

/// Classifies an ISO-BMFF file (HEIC, HEIF, AVIF) by the brands in its
/// `ftyp` box; other ISO-BMFF files (MP4 video …) give `None`.
fn sniff_iso_bmff(bytes: &[u8]) -> Option<&'static str> {
    let box_len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let end = box_len.clamp(12, bytes.len());
    // Major brand at 8..12, minor version at 12..16, compatible brands after.
    let mut brands: Vec<&[u8]> = vec![&bytes[8..12]];
    let mut pos = 16;
    while pos + 4 <= end {
        brands.push(&bytes[pos..pos + 4]);
        pos += 4;
    }
    let has = |names: &[&[u8]]| brands.iter().any(|b| names.contains(b));
    if has(&[b"avif", b"avis"]) {
        Some("image/avif")
    } else if has(&[b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis"]) {
        Some("image/heic")
    } else if has(&[b"mif1", b"msf1"]) {
        Some("image/heif")
    } else {
        None
    }
}

/// Decodes a JPEG, PNG or WebP file into an upright RGB image.
///
/// The EXIF orientation is applied so phone photos come out the way they
/// were taken. Other recognised formats (HEIC, AVIF, GIF, PDF …) give
/// [`DecodeError::Unsupported`]; incomplete files give
/// [`DecodeError::Truncated`]; images above [`MAX_PIXELS`] give
/// Whether [`decode`] reads images of `media_type` (as [`sniff`] names it).
pub fn decodes(media_type: &str) -> bool {
    matches!(media_type, "image/jpeg" | "image/png" | "image/webp")
}

/// [`DecodeError::TooLarge`].
pub fn decode(bytes: &[u8]) -> Result<Image, DecodeError> {
    let media_type = sniff(bytes).ok_or(DecodeError::NotAnImage)?;
    let dynamic = match media_type {
        "image/jpeg" => {
            if !jpeg_is_complete(bytes) {
                return Err(DecodeError::Truncated);
            }
            decode_with(JpegDecoder::new(Cursor::new(bytes)).map_err(map_image_error)?)?
        }
        "image/png" => {
            if !png_is_complete(bytes) {
                return Err(DecodeError::Truncated);
            }
            decode_with(PngDecoder::new(Cursor::new(bytes)).map_err(map_image_error)?)?
        }
        "image/webp" => {
            if !webp_is_complete(bytes) {
                return Err(DecodeError::Truncated);
            }
            decode_with(WebPDecoder::new(Cursor::new(bytes)).map_err(map_image_error)?)?
        }
        other => {
            return Err(DecodeError::Unsupported {
                format: format_name(other),
            })
        }
    };
    Ok(Image {
        rgb: dynamic.into_rgb8(),
    })
}

/// Short human name for a media type returned by [`sniff`].
fn format_name(media_type: &str) -> &'static str {
    match media_type {
        "image/heic" => "HEIC",
        "image/heif" => "HEIF",
        "image/avif" => "AVIF",
        "image/gif" => "GIF",
        "image/tiff" => "TIFF",
        "image/bmp" => "BMP",
        "application/pdf" => "PDF",
        _ => "this format",
    }
}

/// Checks the declared size, decodes the pixels and applies the EXIF
/// orientation; shared by all supported formats.
fn decode_with(mut decoder: impl ImageDecoder) -> Result<DynamicImage, DecodeError> {
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(DecodeError::TooLarge {
            width,
            height,
            max: MAX_PIXELS,
        });
    }
    // A broken EXIF block should not prevent reading the picture itself.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(map_image_error)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Maps a decoder error to the user-facing variants, recognising early ends
/// of file that the structural checks did not catch.
fn map_image_error(err: image::ImageError) -> DecodeError {
    if let image::ImageError::IoError(io) = &err {
        if io.kind() == std::io::ErrorKind::UnexpectedEof {
            return DecodeError::Truncated;
        }
    }
    if let image::ImageError::Limits(_) = &err {
        return DecodeError::Undecodable("image exceeds decoder memory limits".into());
    }
    let text = err.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("eof") || lower.contains("end of file") || lower.contains("truncat") {
        return DecodeError::Truncated;
    }
    DecodeError::Undecodable(text)
}

/// True when a JPEG's marker structure runs to its end-of-image marker.
///
/// Walks the segments (skipping their payloads, so EXIF thumbnails do not
/// count) and the entropy-coded scans; some decoders silently grey-fill a
/// cut-off file, so truncation has to be detected explicitly.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let mut pos = 2; // after SOI
    loop {
        // Find the next marker, skipping fill bytes.
        while pos < bytes.len() && bytes[pos] != 0xFF {
            pos += 1;
        }
        while pos < bytes.len() && bytes[pos] == 0xFF {
            pos += 1;
        }
        let Some(&marker) = bytes.get(pos) else {
            return false;
        };
        pos += 1;
        match marker {
            0xD9 => return true,
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(len) = bytes
            .get(pos..pos + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            return false;
        };
        pos += len;
        if pos > bytes.len() {
            return false;
        }
        if marker == 0xDA {
            // Entropy-coded data: skip until a marker that is neither a
            // stuffed 0xFF00 nor a restart marker.
            loop {
                let Some(rel) = bytes[pos..].iter().position(|&b| b == 0xFF) else {
                    return false;
                };
                pos += rel;
                match bytes.get(pos + 1) {
                    None => return false,
                    Some(0x00) | Some(0xD0..=0xD7) | Some(0xFF) => pos += 1,
                    Some(_) => break,
                }
            }
        }
    }
}

/// True when a PNG's chunk list reaches its `IEND` chunk.
fn png_is_complete(bytes: &[u8]) -> bool {
    let mut pos = 8;
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]])
            as usize;
        let kind = &bytes[pos + 4..pos + 8];
        let next = pos + 12 + len;
        if next > bytes.len() {
            return false;
        }
        if kind == b"IEND" {
            return true;
        }
        pos = next;
    }
    false
}

/// True when a WebP file is at least as long as its RIFF header declares.
fn webp_is_complete(bytes: &[u8]) -> bool {
    let declared = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    bytes.len() >= declared.saturating_add(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_iso_bmff_brands() {
        let mut heic = vec![0, 0, 0, 24];
        heic.extend_from_slice(b"ftypmif1\0\0\0\0mif1heic");
        assert_eq!(sniff(&heic), Some("image/heic"));
        let mut avif = vec![0, 0, 0, 20];
        avif.extend_from_slice(b"ftypavif\0\0\0\0mif1");
        assert_eq!(sniff(&avif), Some("image/avif"));
        let mut mp4 = vec![0, 0, 0, 20];
        mp4.extend_from_slice(b"ftypisom\0\0\0\0mp41");
        assert_eq!(sniff(&mp4), None);
    }

    #[test]
    fn sniffs_other_magic() {
        assert_eq!(sniff(b"%PDF-1.7\n"), Some("application/pdf"));
        assert_eq!(sniff(b"GIF89a\x01\x00"), Some("image/gif"));
        assert_eq!(sniff(b"hello world"), None);
    }
}
