//! Text recognition: the PP-OCRv5 CRNN model on rectified line crops and
//! greedy CTC decoding against the character dictionary.

use std::path::Path;

use anyhow::{bail, Context, Result};
use image::imageops::FilterType;
use image::RgbImage;
use rten::Model;
use rten_tensor::prelude::*;
use rten_tensor::NdTensor;

/// Input height of the recogniser.
pub(crate) const REC_HEIGHT: u32 = 48;
/// Narrowest input; narrower crops are padded. PaddleOCR pads to 320, but
/// the cost of the model grows with the width, and short crops (plates,
/// labels) read as well with little padding.
const MIN_WIDTH: u32 = 64;
/// Input widths are rounded up to a multiple of this (the model's stride).
const WIDTH_STEP: u32 = 8;
/// Widest input, bounding the cost of one extremely long line.
const MAX_WIDTH: u32 = 1920;
/// Crops recognised in one model call.
const BATCH: usize = 6;

/// Index-aligned recogniser dictionary: entry 0 is the CTC blank.
pub(crate) struct CharTable {
    chars: Vec<char>,
}

impl CharTable {
    /// Reads `ppocr_keys_v5.txt` (one character per line, the first line
    /// being the blank and the last a single space).
    pub(crate) fn load(path: &Path) -> Result<CharTable> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading character table {}", path.display()))?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let chars: Vec<char> = text
            .split('\n')
            .map(|line| {
                let line = line.strip_suffix('\r').unwrap_or(line);
                line.chars().next().unwrap_or(' ')
            })
            .collect();
        if chars.len() < 3 {
            bail!("character table {} is too short", path.display());
        }
        Ok(CharTable { chars })
    }

    /// Number of classes, which must equal the recogniser's output width.
    pub(crate) fn len(&self) -> usize {
        self.chars.len()
    }
}

/// One recognised crop: the text and each character with its probability.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reading {
    pub text: String,
    pub confidence: f32,
    pub chars: Vec<(char, f32)>,
}

/// Recognises each upright line crop, batching crops of similar width.
pub(crate) fn recognize(
    model: &Model,
    table: &CharTable,
    crops: &[RgbImage],
) -> Result<Vec<Reading>> {
    let mut order: Vec<usize> = (0..crops.len()).collect();
    let ratio = |i: usize| crops[i].width() as f32 / crops[i].height().max(1) as f32;
    order.sort_by(|&a, &b| ratio(a).total_cmp(&ratio(b)));
    let mut out = vec![Reading::default(); crops.len()];
    for chunk in order.chunks(BATCH) {
        let resized: Vec<RgbImage> = chunk.iter().map(|&i| resize_to_height(&crops[i])).collect();
        let width = resized
            .iter()
            .map(|r| r.width())
            .max()
            .unwrap_or(MIN_WIDTH)
            .max(MIN_WIDTH)
            .div_ceil(WIDTH_STEP)
            * WIDTH_STEP;
        let input = to_tensor(&resized, width);
        let output = model
            .run_one(input.into(), None)
            .context("running the text recognition model")?;
        let probs: NdTensor<f32, 3> = output
            .try_into()
            .context("text recognition model returned an unexpected output")?;
        let [n, _, classes] = probs.shape();
        if classes != table.len() || n != chunk.len() {
            bail!(
                "recognition model outputs {classes} classes for {n} crops, but the character table has {} entries",
                table.len()
            );
        }
        let data = probs.into_data();
        for (k, &i) in chunk.iter().enumerate() {
            let steps = data.len() / n;
            out[i] = ctc_decode(&data[k * steps..(k + 1) * steps], classes, table);
        }
    }
    Ok(out)
}

/// Scales a crop to the recogniser's height keeping its aspect ratio.
fn resize_to_height(crop: &RgbImage) -> RgbImage {
    let ratio = crop.width() as f32 / crop.height().max(1) as f32;
    let width = ((REC_HEIGHT as f32 * ratio).ceil() as u32).clamp(1, MAX_WIDTH);
    image::imageops::resize(crop, width, REC_HEIGHT, FilterType::Triangle)
}

/// Packs crops into a `[N, 3, 48, width]` tensor normalised to [-1, 1] in
/// B, G, R order; the padding on the right is 0 (mid-grey), like PaddleOCR.
fn to_tensor(crops: &[RgbImage], width: u32) -> NdTensor<f32, 4> {
    let (w, h) = (width as usize, REC_HEIGHT as usize);
    let mut data = vec![0f32; crops.len() * 3 * h * w];
    for (n, crop) in crops.iter().enumerate() {
        let base = n * 3 * h * w;
        for (x, y, px) in crop.enumerate_pixels() {
            let i = y as usize * w + x as usize;
            for c in 0..3 {
                data[base + c * h * w + i] = f32::from(px.0[2 - c]) / 127.5 - 1.0;
            }
        }
    }
    NdTensor::from_data([crops.len(), 3, h, w], data)
}

/// Greedy CTC: best class per step, repeats merged, blanks dropped.
/// Confidence is the mean best probability of the emitted characters.
fn ctc_decode(probs: &[f32], classes: usize, table: &CharTable) -> Reading {
    let mut chars = Vec::new();
    let mut prev = 0usize;
    for row in probs.chunks_exact(classes) {
        let (best, p) = row
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |acc, (i, &v)| {
                if v > acc.1 {
                    (i, v)
                } else {
                    acc
                }
            });
        if best != 0 && best != prev {
            chars.push((table.chars[best], p));
        }
        prev = best;
    }
    // Leading/trailing spaces carry no information.
    while chars.first().is_some_and(|c| c.0 == ' ') {
        chars.remove(0);
    }
    while chars.last().is_some_and(|c| c.0 == ' ') {
        chars.pop();
    }
    let text: String = chars.iter().map(|c| c.0).collect();
    let confidence = if chars.is_empty() {
        0.0
    } else {
        chars.iter().map(|c| c.1).sum::<f32>() / chars.len() as f32
    };
    Reading {
        text,
        confidence,
        chars,
    }
}
