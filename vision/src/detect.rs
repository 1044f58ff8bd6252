//! Text detection: the PP-OCRv5 DBNet model and its DB post-processing
//! (threshold, connected components, box score, unclip, rotated rectangle).

use anyhow::{Context, Result};
use image::{GrayImage, Luma, RgbImage};
use imageproc::region_labelling::{connected_components, Connectivity};
use rten::Model;
use rten_tensor::prelude::*;
use rten_tensor::NdTensor;

use crate::geometry::{inside_convex, order_corners, short_side, unclip, Point};

/// Pixels with a text probability above this are part of a text region.
const BIN_THRESHOLD: f32 = 0.3;
/// Regions whose mean probability inside their box is lower are dropped.
const BOX_THRESHOLD: f32 = 0.6;
/// How far the shrunk DB regions are grown back (PaddleOCR uses 1.5).
const UNCLIP_RATIO: f32 = 1.6;
/// Regions thinner than this many detection pixels are noise.
const MIN_SIZE: f32 = 3.0;
/// At most this many regions are scored, against pathological maps.
const MAX_CANDIDATES: usize = 1000;

/// ImageNet statistics in R, G, B order, as used for PaddleOCR's detector.
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// A detected text region in original-image pixels.
#[derive(Debug, Clone)]
pub(crate) struct Detection {
    /// Corners: top-left, top-right, bottom-right, bottom-left.
    pub corners: [Point; 4],
    /// Mean text probability inside the (un-grown) box.
    #[allow(dead_code)]
    pub score: f32,
}

/// Size the detector sees: the long side capped at `max_side` (never
/// enlarged), both sides rounded to a multiple of 32 as DBNet requires.
pub(crate) fn detection_size(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let long = width.max(height) as f32;
    let scale = (max_side as f32 / long).min(1.0);
    let round32 = |v: u32| (((v as f32 * scale) / 32.0).round() as u32).max(1) * 32;
    (round32(width), round32(height))
}

/// Runs the detector on `image` (downscaled so its long side is at most
/// `max_side`) and returns text boxes in `image`'s own pixel coordinates.
pub(crate) fn detect(model: &Model, image: &RgbImage, max_side: u32) -> Result<Vec<Detection>> {
    let (dw, dh) = detection_size(image.width(), image.height(), max_side);
    let input = to_tensor(image, dw, dh);
    let output = model
        .run_one(input.into(), None)
        .context("running the text detection model")?;
    let map: NdTensor<f32, 4> = output
        .try_into()
        .context("text detection model returned an unexpected output")?;
    let [_, _, mh, mw] = map.shape();
    let probs = map.into_data();
    if probs.len() < mw * mh {
        anyhow::bail!("text detection model returned a map smaller than its shape");
    }
    let prob = |x: usize, y: usize| probs[y * mw + x];

    let sx = image.width() as f32 / mw as f32;
    let sy = image.height() as f32 / mh as f32;
    let mut out = Vec::new();
    for region in regions(mw, mh, &prob) {
        let rect = order_corners(min_rect(&region));
        if short_side(&rect) < MIN_SIZE {
            continue;
        }
        let score = box_score(&rect, mw, mh, &prob);
        if score < BOX_THRESHOLD {
            continue;
        }
        let grown = unclip(&rect, UNCLIP_RATIO);
        if short_side(&grown) < MIN_SIZE + 2.0 {
            continue;
        }
        let corners = grown.map(|p| {
            Point::new(
                (p.x * sx).clamp(0.0, image.width() as f32),
                (p.y * sy).clamp(0.0, image.height() as f32),
            )
        });
        out.push(Detection { corners, score });
    }
    Ok(out)
}

/// Resizes and normalises the image into the detector's `[1, 3, H, W]`
/// input, with channels in B, G, R order as PaddleOCR reads images with
/// OpenCV (the model was trained that way).
fn to_tensor(image: &RgbImage, width: u32, height: u32) -> NdTensor<f32, 4> {
    let resized = if width < image.width() && height < image.height() {
        // Box-filter downscale: fast and alias-free for big photos.
        image::imageops::thumbnail(image, width, height)
    } else {
        image::imageops::resize(image, width, height, image::imageops::FilterType::Triangle)
    };
    let (w, h) = (width as usize, height as usize);
    let mut data = vec![0f32; 3 * w * h];
    for (x, y, px) in resized.enumerate_pixels() {
        let i = y as usize * w + x as usize;
        for c in 0..3 {
            // Plane 0 gets blue, normalised with the first statistic.
            let v = f32::from(px.0[2 - c]) / 255.0;
            data[c * w * h + i] = (v - MEAN[c]) / STD[c];
        }
    }
    NdTensor::from_data([1, 3, h, w], data)
}

/// Connected components of the thresholded map, each given by the end
/// pixels of its horizontal runs (enough for the convex hull).
fn regions(w: usize, h: usize, prob: &impl Fn(usize, usize) -> f32) -> Vec<Vec<[f32; 2]>> {
    let mut bitmap = GrayImage::new(w as u32, h as u32);
    for y in 0..h {
        for x in 0..w {
            if prob(x, y) > BIN_THRESHOLD {
                bitmap.put_pixel(x as u32, y as u32, Luma([255]));
            }
        }
    }
    let labels = connected_components(&bitmap, Connectivity::Eight, Luma([0]));
    let count = labels.pixels().map(|p| p.0[0]).max().unwrap_or(0) as usize;
    let mut regions: Vec<Vec<[f32; 2]>> = vec![Vec::new(); count];
    for y in 0..h {
        for x in 0..w {
            let l = labels.get_pixel(x as u32, y as u32).0[0];
            if l == 0 {
                continue;
            }
            let left = x == 0 || labels.get_pixel(x as u32 - 1, y as u32).0[0] != l;
            let right = x + 1 == w || labels.get_pixel(x as u32 + 1, y as u32).0[0] != l;
            if left || right {
                // Pixel edges, not centres, so one-pixel runs have extent.
                let px = x as f32;
                let py = y as f32;
                if left {
                    regions[l as usize - 1].push([px, py]);
                    regions[l as usize - 1].push([px, py + 1.0]);
                }
                if right {
                    regions[l as usize - 1].push([px + 1.0, py]);
                    regions[l as usize - 1].push([px + 1.0, py + 1.0]);
                }
            }
        }
    }
    regions.retain(|r| !r.is_empty());
    if regions.len() > MAX_CANDIDATES {
        regions.sort_by_key(|r| std::cmp::Reverse(r.len()));
        regions.truncate(MAX_CANDIDATES);
    }
    regions
}

/// Minimum-area rotated rectangle around a region's points.
fn min_rect(points: &[[f32; 2]]) -> [Point; 4] {
    let pts: Vec<imageproc::point::Point<f32>> = points
        .iter()
        .map(|p| imageproc::point::Point::new(p[0], p[1]))
        .collect();
    imageproc::geometry::min_area_rect(&pts).map(|p| Point::new(p.x, p.y))
}

/// Mean probability of the map's pixels whose centres lie inside `rect`,
/// the DB "box score" that separates text from faint responses.
fn box_score(rect: &[Point; 4], w: usize, h: usize, prob: &impl Fn(usize, usize) -> f32) -> f32 {
    let min_x = rect.iter().map(|p| p.x).fold(f32::INFINITY, f32::min);
    let max_x = rect.iter().map(|p| p.x).fold(f32::NEG_INFINITY, f32::max);
    let min_y = rect.iter().map(|p| p.y).fold(f32::INFINITY, f32::min);
    let max_y = rect.iter().map(|p| p.y).fold(f32::NEG_INFINITY, f32::max);
    let x0 = (min_x.floor().max(0.0)) as usize;
    let x1 = (max_x.ceil() as usize).min(w);
    let y0 = (min_y.floor().max(0.0)) as usize;
    let y1 = (max_y.ceil() as usize).min(h);
    let (mut sum, mut n) = (0f32, 0u32);
    for y in y0..y1 {
        for x in x0..x1 {
            if inside_convex(rect, Point::new(x as f32 + 0.5, y as f32 + 0.5)) {
                sum += prob(x, y);
                n += 1;
            }
        }
    }
    if n == 0 {
        0.0
    } else {
        sum / n as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_size_caps_and_rounds() {
        assert_eq!(detection_size(4000, 3000, 1280), (1280, 960));
        assert_eq!(detection_size(1000, 700, 1280), (992, 704));
        assert_eq!(detection_size(10, 10, 1280), (32, 32));
    }
}
