//! Text detection and recognition on photos for Aviary bots.
//!
//! Decodes uploaded pictures ([`decode`]), then finds and reads lines of
//! text with PaddleOCR's PP-OCRv5 models run natively through `rten`
//! ([`Engine`]), or with Debian's tesseract ([`Tesseract`]) to compare.
//! Typical use: a bot that reads number plates or signs from
//! phone photos.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use aviary_vision::Reader;
//! let engine = aviary_vision::Engine::load(std::path::Path::new("/srv/models"))?;
//! let image = aviary_vision::decode(&std::fs::read("photo.jpg")?)?;
//! for line in engine.read_text(&image)? {
//!     println!("{} ({:.2})", line.text, line.confidence);
//! }
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod decode;
mod detect;
mod engine;
mod geometry;
mod recognize;
mod tesseract;

pub use decode::{decode, decodes, sniff, DecodeError, Image, MAX_PIXELS};
pub use engine::{
    order_quad, Engine, Reader, TextLine, DEFAULT_DETECTION_MAX_SIDE, MIN_LINE_CONFIDENCE,
};
pub use geometry::Point;
pub use tesseract::Tesseract;
