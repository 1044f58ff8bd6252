//! Synthetic photos of vehicles with known plates: a street with a shop
//! sign and its phone number, a poster carrying a plate-like string under a
//! headline (clutter that looks like a plate), a car and its plate on the
//! bumper, with dirt on it and a shadow across it; then the camera:
//! perspective (yaw and pitch up to 25°, roll up to 8°), focus and motion
//! blur, sensor noise, night, and JPEG artefacts.
//!
//! Everything is decided by a seed, so a photo is the same on every run.
//! [`Set::Tune`] and [`Set::Accuracy`] draw from disjoint seeds: tune on
//! one, measure on the other.

use ab_glyph::{FontVec, PxScale};
use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_text_mut, text_size};
use imageproc::geometric_transformations::{warp, Border, Interpolation, Projection};
use imageproc::rect::Rect;

/// The fonts plates are drawn in (Debian `fonts-dejavu-core`).
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
];

/// Which photos: the ones to tune on, or the ones to measure on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    Tune,
    Accuracy,
}

/// How one photo is drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// The plate's height in pixels before perspective.
    pub plate_height: u32,
    pub font: usize,
    pub yaw: f32,
    pub pitch: f32,
    pub roll: f32,
    /// Gaussian blur sigma (0: none).
    pub blur: f32,
    /// Motion blur: the length of the smear in pixels (0: none) and its
    /// direction in degrees.
    pub motion: f32,
    pub motion_angle: f32,
    /// How much a shadow across the plate darkens it, 0 (none) to 1.
    pub shadow: f32,
    /// Spots of dirt on the plate.
    pub dirt: u8,
    /// Noise amplitude, 0 to 255.
    pub noise: u8,
    pub night: bool,
    pub jpeg_quality: u8,
}

impl Params {
    /// A frontal, sharp daylight photo with a large plate.
    pub fn easy() -> Params {
        Params {
            plate_height: 70,
            font: 0,
            yaw: 0.0,
            pitch: 0.0,
            roll: 0.0,
            blur: 0.0,
            motion: 0.0,
            motion_angle: 0.0,
            shadow: 0.0,
            dirt: 0,
            noise: 0,
            night: false,
            jpeg_quality: 90,
        }
    }

    /// A plate too small and blurred for anyone to read.
    pub fn unreadable() -> Params {
        Params {
            plate_height: 8,
            blur: 3.0,
            jpeg_quality: 30,
            ..Params::easy()
        }
    }

    /// 0 (easy) to about 1 (hard): small plates, angles, blur, motion,
    /// shadow, dirt, noise, night and strong compression all count.
    pub fn difficulty(&self) -> f32 {
        let small = ((70.0 - self.plate_height as f32) / 45.0).clamp(0.0, 1.0);
        let angle = (self.yaw.abs() + self.pitch.abs()) / 50.0 + self.roll.abs() / 16.0;
        let blur = self.blur / 2.5 + self.motion / 12.0;
        let marks = self.shadow / 2.0 + f32::from(self.dirt) / 16.0;
        let noise = f32::from(self.noise) / 40.0;
        let night = if self.night { 0.5 } else { 0.0 };
        let jpeg = (95.0 - f32::from(self.jpeg_quality)) / 60.0;
        (small + angle + blur + marks + noise + night + jpeg) / 4.0
    }
}

/// One generated photo.
#[derive(Debug, Clone)]
pub struct Photo {
    pub jpeg: Vec<u8>,
    /// The plate as it is written on the car.
    pub plate: String,
    pub params: Params,
}

impl Photo {
    /// [`Params::difficulty`] of the photo.
    pub fn difficulty(&self) -> f32 {
        self.params.difficulty()
    }
}

/// A small deterministic random source (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn pick(&mut self, chars: &str) -> char {
        let chars: Vec<char> = chars.chars().collect();
        chars[self.below(chars.len() as u64) as usize]
    }
}

const LETTERS_SIV: &str = "ABCDEFGHJKLMNPQRSTVWXYZ";
const LETTERS: &str = "ABCDEFGHJKLMNPRSTVWXYZ";
const LETTERS_ES: &str = "BCDFGHJKLMNPRSTVWXYZ";
const LETTERS_NL: &str = "BDFGHJKLMNPRSTVWXYZ";
const DIGITS: &str = "0123456789";

/// Dutch plates are yellow; the others white.
fn is_yellow(plate: &str) -> bool {
    let groups: Vec<usize> = plate.split('-').map(str::len).collect();
    groups == [2, 3, 1]
}

/// A random plate of one of the shipped formats, with its separators:
/// French SIV and FNI, German, Italian, Spanish and Dutch.
fn random_plate(rng: &mut Rng) -> String {
    let s =
        |n: usize, from: &str, rng: &mut Rng| (0..n).map(|_| rng.pick(from)).collect::<String>();
    match rng.below(6) {
        4 => format!("{} {}", s(4, DIGITS, rng), s(3, LETTERS_ES, rng)),
        5 => format!(
            "{}-{}-{}",
            s(2, LETTERS_NL, rng),
            s(3, DIGITS, rng),
            s(1, LETTERS_NL, rng)
        ),
        0 => format!(
            "{}-{}-{}",
            s(2, LETTERS_SIV, rng),
            s(3, DIGITS, rng),
            s(2, LETTERS_SIV, rng)
        ),
        1 => format!(
            "{} {} {}",
            s(4, DIGITS, rng),
            s(2, LETTERS_SIV, rng),
            s(2, DIGITS, rng)
        ),
        2 => format!(
            "{}-{} {}",
            s(1 + rng.below(2) as usize, LETTERS, rng),
            s(2, LETTERS, rng),
            s(3 + rng.below(2) as usize, "123456789", rng)
        ),
        _ => format!(
            "{} {} {}",
            s(2, LETTERS, rng),
            s(3, DIGITS, rng),
            s(2, LETTERS, rng)
        ),
    }
}

/// Photo `index` of `set`.
pub fn photo(set: Set, index: u32) -> Photo {
    let seed = match set {
        Set::Tune => u64::from(index),
        Set::Accuracy => (1 << 40) + u64::from(index),
    };
    let mut rng = Rng::new(seed);
    let plate = random_plate(&mut rng);
    let hard = rng.below(3);
    let params = Params {
        plate_height: match hard {
            0 => 60 + rng.below(30) as u32,
            1 => 38 + rng.below(22) as u32,
            _ => 26 + rng.below(14) as u32,
        },
        font: rng.below(FONTS.len() as u64) as usize,
        yaw: rng.range(-25.0, 25.0) * hard as f32 / 2.0,
        pitch: rng.range(-25.0, 25.0) * hard as f32 / 2.0,
        roll: rng.range(-8.0, 8.0) * hard as f32 / 2.0,
        blur: rng.range(0.0, 1.6) * hard as f32 / 2.0,
        motion: if rng.below(3) == 0 {
            rng.range(0.0, 6.0) * hard as f32 / 2.0
        } else {
            0.0
        },
        motion_angle: rng.range(-30.0, 30.0),
        shadow: if rng.below(3) == 0 {
            rng.range(0.2, 0.6)
        } else {
            0.0
        },
        dirt: (rng.below(6) * hard) as u8,
        noise: (rng.below(20) * hard) as u8,
        night: hard == 2 && rng.below(2) == 0,
        jpeg_quality: 95 - (rng.below(25) * hard) as u8,
    };
    let decoy = random_plate(&mut rng);
    Photo {
        jpeg: render(&plate, &decoy, &params, &mut rng),
        plate,
        params,
    }
}

/// A photo of `plate` drawn with `params` (a decoy plate on a poster).
pub fn photo_with(plate: &str, params: &Params) -> Photo {
    let mut rng = Rng::new(7);
    Photo {
        jpeg: render(plate, "KL-789-MN", params, &mut rng),
        plate: plate.to_owned(),
        params: params.clone(),
    }
}

/// The photos of a set whose difficulty is in the top third.
pub fn hardest_third(photos: &[Photo]) -> Vec<&Photo> {
    let mut sorted: Vec<&Photo> = photos.iter().collect();
    sorted.sort_by(|a, b| b.difficulty().total_cmp(&a.difficulty()));
    sorted.truncate(photos.len().div_ceil(3));
    sorted
}

fn font(index: usize) -> FontVec {
    let path = FONTS[index % FONTS.len()];
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("{path} (Debian fonts-dejavu-core): {e}"));
    FontVec::try_from_vec(bytes).expect("a TrueType font")
}

fn render(plate: &str, decoy: &str, params: &Params, rng: &mut Rng) -> Vec<u8> {
    let (w, h) = (1280u32, 960u32);
    let sky = rng.below(60) as u8;
    let mut image = RgbImage::from_fn(w, h, |_, y| {
        let shade = 140 + sky / 2 + (y * 60 / h) as u8;
        Rgb([shade, shade, shade.saturating_add(12)])
    });
    let sans = font(0);
    // A shop sign with its phone number, and a poster with a plate-like
    // string under a headline.
    draw_filled_rect_mut(
        &mut image,
        Rect::at(60, 50).of_size(540, 150),
        Rgb([30, 60, 120]),
    );
    draw_text_mut(
        &mut image,
        Rgb([250, 250, 250]),
        80,
        65,
        PxScale::from(56.0),
        &sans,
        "BOULANGERIE",
    );
    draw_text_mut(
        &mut image,
        Rgb([250, 230, 120]),
        80,
        135,
        PxScale::from(44.0),
        &sans,
        "04 91 23 45 67",
    );
    draw_filled_rect_mut(
        &mut image,
        Rect::at(820, 60).of_size(380, 190),
        Rgb([230, 200, 60]),
    );
    draw_text_mut(
        &mut image,
        Rgb([120, 20, 20]),
        840,
        75,
        PxScale::from(48.0),
        &sans,
        "GRANDE VENTE",
    );
    draw_text_mut(
        &mut image,
        Rgb([20, 20, 120]),
        850,
        150,
        PxScale::from(52.0),
        &sans,
        decoy,
    );
    // The car.
    let body = Rgb([
        rng.below(200) as u8 + 30,
        rng.below(120) as u8 + 10,
        rng.below(120) as u8 + 10,
    ]);
    draw_filled_rect_mut(&mut image, Rect::at(290, 420).of_size(700, 330), body);
    draw_filled_rect_mut(
        &mut image,
        Rect::at(380, 440).of_size(520, 110),
        Rgb([60, 80, 95]),
    );
    for x in [330, 840] {
        draw_filled_rect_mut(
            &mut image,
            Rect::at(x, 720).of_size(120, 90),
            Rgb([20, 20, 20]),
        );
    }
    draw_plate(&mut image, plate, params, 640, 660);
    soil(&mut image, params, 640, 660, rng);
    shade(&mut image, params.shadow, rng);
    let mut image = camera(image, params, rng);
    if params.night {
        for p in image.pixels_mut() {
            for c in &mut p.0 {
                *c = ((f32::from(*c) / 255.0).powf(1.6) * 150.0) as u8;
            }
        }
    }
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, params.jpeg_quality)
        .encode_image(&image)
        .expect("a JPEG");
    out
}

/// The plate's width and height in pixels before perspective.
fn plate_size(params: &Params) -> (u32, u32) {
    let height = params.plate_height.max(4);
    (height * 47 / 10, height)
}

/// An EU plate (white, or yellow for Dutch ones) with a black border
/// centred on (cx, cy).
fn draw_plate(image: &mut RgbImage, plate: &str, params: &Params, cx: i32, cy: i32) {
    let font = font(params.font);
    let (width, height) = plate_size(params);
    let paper = if is_yellow(plate) {
        Rgb([240, 200, 30])
    } else {
        Rgb([245, 245, 240])
    };
    let (x, y) = (cx - width as i32 / 2, cy - height as i32 / 2);
    draw_filled_rect_mut(
        image,
        Rect::at(x - 2, y - 2).of_size(width + 4, height + 4),
        Rgb([15, 15, 15]),
    );
    draw_filled_rect_mut(image, Rect::at(x, y).of_size(width, height), paper);
    // The blue band on the left.
    let band = (height / 4).max(2);
    draw_filled_rect_mut(
        image,
        Rect::at(x, y).of_size(band, height),
        Rgb([20, 50, 160]),
    );
    let room = width - band - height / 8;
    let mut scale = height as f32 * 0.85;
    while text_size(PxScale::from(scale), &font, plate).0 > room * 9 / 10 && scale > 4.0 {
        scale -= 1.0;
    }
    let (tw, th) = text_size(PxScale::from(scale), &font, plate);
    draw_text_mut(
        image,
        Rgb([10, 10, 10]),
        x + band as i32 + (room as i32 - tw as i32) / 2,
        y + (height as i32 - th as i32) / 2 - (scale * 0.12) as i32,
        PxScale::from(scale),
        &font,
        plate,
    );
}

/// Spots of dirt, brown and half see-through, on the plate centred on
/// (cx, cy).
fn soil(image: &mut RgbImage, params: &Params, cx: i32, cy: i32, rng: &mut Rng) {
    let (width, height) = plate_size(params);
    for _ in 0..params.dirt {
        let r = rng.range(0.06, 0.16) * height as f32;
        let x0 = cx as f32 + rng.range(-0.5, 0.5) * width as f32;
        let y0 = cy as f32 + rng.range(-0.5, 0.5) * height as f32;
        let alpha = rng.range(0.3, 0.6);
        let (lo, hi) = ((x0 - r) as i32, (x0 + r) as i32 + 1);
        for y in (y0 - r) as i32..=(y0 + r) as i32 {
            for x in lo..hi {
                let (dx, dy) = (x as f32 - x0, y as f32 - y0);
                if dx * dx + dy * dy > r * r || x < 0 || y < 0 {
                    continue;
                }
                if let Some(p) = image.get_pixel_mut_checked(x as u32, y as u32) {
                    for (c, mud) in p.0.iter_mut().zip([95.0, 75.0, 50.0]) {
                        *c = (f32::from(*c) * (1.0 - alpha) + mud * alpha) as u8;
                    }
                }
            }
        }
    }
}

/// A hard-edged shadow (a post, a building's edge) over the lower part of
/// the scene, crossing the plate on a slant: everything on one side of
/// the edge darkened by `strength`.
fn shade(image: &mut RgbImage, strength: f32, rng: &mut Rng) {
    if strength <= 0.0 {
        return;
    }
    let edge = rng.range(520.0, 760.0);
    let slant = rng.range(-0.6, 0.6);
    for (x, y, p) in image.enumerate_pixels_mut() {
        if y < 380 || (x as f32) < edge + slant * (y as f32 - 660.0) {
            continue;
        }
        for c in &mut p.0 {
            *c = (f32::from(*c) * (1.0 - strength)) as u8;
        }
    }
}

/// Perspective, focus and motion blur, and sensor noise.
fn camera(image: RgbImage, params: &Params, rng: &mut Rng) -> RgbImage {
    let (w, h) = (image.width() as f32, image.height() as f32);
    let (yaw, pitch, roll) = (
        params.yaw.to_radians(),
        params.pitch.to_radians(),
        params.roll.to_radians(),
    );
    // The far side of a turned plane looks shorter; roll turns it.
    let squeeze_x = 0.5 * yaw.sin();
    let squeeze_y = 0.5 * pitch.sin();
    let corners = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)];
    let moved: Vec<(f32, f32)> = corners
        .iter()
        .map(|&(x, y)| {
            let (u, v) = (x / w - 0.5, y / h - 0.5);
            let (u, v) = (
                u * (1.0 + squeeze_x * v * 2.0),
                v * (1.0 + squeeze_y * u * 2.0),
            );
            let (u, v) = (u * 0.92, v * 0.92);
            let (u, v) = (
                u * roll.cos() - v * roll.sin(),
                u * roll.sin() + v * roll.cos(),
            );
            ((u + 0.5) * w, (v + 0.5) * h)
        })
        .collect();
    let from = corners;
    let to = [moved[0], moved[1], moved[2], moved[3]];
    let mut out = match Projection::from_control_points(from, to) {
        Some(projection) => warp(
            &image,
            projection,
            Interpolation::Bilinear,
            Border::Constant(Rgb([90, 90, 90])),
        ),
        None => image,
    };
    if params.blur > 0.05 {
        out = imageproc::filter::gaussian_blur_f32(&out, params.blur);
    }
    if params.motion >= 1.0 {
        out = smear(&out, params.motion, params.motion_angle);
    }
    if params.noise > 0 {
        let amplitude = i32::from(params.noise);
        for p in out.pixels_mut() {
            let n = rng.below(2 * amplitude as u64 + 1) as i32 - amplitude;
            for c in &mut p.0 {
                *c = (i32::from(*c) + n).clamp(0, 255) as u8;
            }
        }
    }
    out
}

/// Motion blur: each pixel the mean of the pixels along a line of
/// `length` pixels in direction `angle` (degrees) through it.
fn smear(image: &RgbImage, length: f32, angle: f32) -> RgbImage {
    let steps = length.round() as i32;
    let (dx, dy) = (angle.to_radians().cos(), angle.to_radians().sin());
    let (w, h) = (image.width() as i32, image.height() as i32);
    let offsets: Vec<(i32, i32)> = (0..=steps)
        .map(|k| {
            let t = k as f32 - steps as f32 / 2.0;
            ((t * dx).round() as i32, (t * dy).round() as i32)
        })
        .collect();
    RgbImage::from_fn(image.width(), image.height(), |x, y| {
        let mut sum = [0u32; 3];
        for &(ox, oy) in &offsets {
            let sx = (x as i32 + ox).clamp(0, w - 1) as u32;
            let sy = (y as i32 + oy).clamp(0, h - 1) as u32;
            for (s, c) in sum.iter_mut().zip(image.get_pixel(sx, sy).0) {
                *s += u32::from(c);
            }
        }
        let n = offsets.len() as u32;
        Rgb(sum.map(|s| (s / n) as u8))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photos_are_the_same_every_time_and_the_sets_differ() {
        let a = photo(Set::Accuracy, 3);
        assert_eq!(a.jpeg, photo(Set::Accuracy, 3).jpeg);
        assert_ne!(a.plate, photo(Set::Tune, 3).plate);
        let decoded = image::load_from_memory(&a.jpeg).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (1280, 960));
    }

    #[test]
    fn dirt_shadow_and_motion_change_the_plate() {
        let plate = "AB-123-CD";
        let clean = decode(&photo_with(plate, &Params::easy()).jpeg);
        for params in [
            Params {
                dirt: 6,
                ..Params::easy()
            },
            Params {
                shadow: 0.5,
                ..Params::easy()
            },
            Params {
                motion: 6.0,
                ..Params::easy()
            },
        ] {
            let marked = decode(&photo_with(plate, &params).jpeg);
            // The plate's box, before perspective (easy: none but the
            // camera's 0.92 zoom about the centre).
            let differs = (600..720)
                .flat_map(|y| (480..800).map(move |x| (x, y)))
                .filter(|&(x, y)| {
                    let (a, b) = (clean.get_pixel(x, y).0, marked.get_pixel(x, y).0);
                    a.iter().zip(b).any(|(a, b)| a.abs_diff(b) > 40)
                })
                .count();
            assert!(differs > 200, "{params:?} changed {differs} pixels");
        }
        assert!(is_yellow("XT-662-J") && !is_yellow("AB-123-CD"));
    }

    fn decode(jpeg: &[u8]) -> RgbImage {
        image::load_from_memory(jpeg).unwrap().to_rgb8()
    }

    #[test]
    fn difficulty_orders_easy_before_hard() {
        assert!(Params::easy().difficulty() < 0.1);
        assert!(Params::unreadable().difficulty() > Params::easy().difficulty() + 0.4);
        let photos: Vec<Photo> = (0..9).map(|i| photo(Set::Tune, i)).collect();
        let hard = hardest_third(&photos);
        assert_eq!(hard.len(), 3);
        let easiest_hard = hard.iter().map(|p| p.difficulty()).fold(f32::MAX, f32::min);
        assert!(
            photos
                .iter()
                .filter(|p| p.difficulty() > easiest_hard)
                .count()
                <= 3
        );
    }
}
