//! End-to-end OCR tests on rendered scenes with the real PP-OCRv5 models.
//! Requires `AVIARY_MODELS_DIR` (see `common::engine`).

mod common;

use std::time::Instant;

use aviary_vision::{Image, Point, Reader, TextLine};
use common::*;
use image::Rgb;
use imageproc::geometric_transformations::{warp, Border, Interpolation, Projection};

fn find_plate<'a>(lines: &'a [TextLine], want: &str) -> &'a TextLine {
    lines
        .iter()
        .find(|l| alnum(&l.text) == want)
        .unwrap_or_else(|| panic!("no line reads {want}; got {lines:?}"))
}

#[test]
fn read_text_finds_plate_and_its_position() {
    let mut scene = grey_scene(1000, 700);
    let (panel, ink) = draw_plate(&mut scene, 300, 280, (420, 110), "AB-123-CD", 64.0);
    let image = Image::from_rgb(scene);

    let t = Instant::now();
    let lines = engine().read_text(&image).unwrap();
    println!("read_text 1000x700: {:?}", t.elapsed());

    let line = find_plate(&lines, "AB123CD");
    assert!(line.confidence > 0.8, "confidence {}", line.confidence);
    assert_eq!(line.chars.len(), line.text.chars().count());
    // The quad surrounds the ink and stays near the white panel.
    for corner in corners_of(ink) {
        assert!(
            quad_contains(&line.corners, corner, 3.0),
            "ink corner {corner:?} outside {:?}",
            line.corners
        );
    }
    let qb = quad_bounds(&line.corners);
    assert!(qb.0 >= panel.0 - 25.0 && qb.1 >= panel.1 - 25.0);
    assert!(qb.2 <= panel.2 + 25.0 && qb.3 <= panel.3 + 25.0);
}

#[test]
fn coordinates_are_in_original_pixels_for_large_photos() {
    // 3200×2400 is downscaled 2.5× for detection; corners must come back
    // in the big frame.
    let mut scene = grey_scene(3200, 2400);
    let (_, ink) = draw_plate(&mut scene, 2000, 1500, (700, 180), "KL-456-MN", 110.0);
    let image = Image::from_rgb(scene);
    let t = Instant::now();
    let lines = engine().read_text(&image).unwrap();
    println!("read_text 3200x2400: {:?}", t.elapsed());
    let line = find_plate(&lines, "KL456MN");
    let cx = line.corners.iter().map(|p| p.x).sum::<f32>() / 4.0;
    let cy = line.corners.iter().map(|p| p.y).sum::<f32>() / 4.0;
    let (ix, iy) = ((ink.0 + ink.2) / 2.0, (ink.1 + ink.3) / 2.0);
    assert!(
        (cx - ix).abs() < 20.0 && (cy - iy).abs() < 20.0,
        "centre ({cx}, {cy}) vs ink ({ix}, {iy})"
    );
    for corner in corners_of(ink) {
        assert!(quad_contains(&line.corners, corner, 6.0));
    }
}

#[test]
fn read_text_handles_rotation_and_perspective() {
    let mut flat = grey_scene(1000, 700);
    let (_, ink) = draw_plate(&mut flat, 300, 280, (420, 110), "AB-123-CD", 64.0);
    // Rotate by 12° around the plate and add a mild perspective skew.
    let src = corners_of((0.0, 0.0, 1000.0, 700.0));
    let dst = [
        Point::new(60.0, -40.0),
        Point::new(980.0, 60.0),
        Point::new(930.0, 760.0),
        Point::new(-20.0, 640.0),
    ];
    let proj =
        Projection::from_control_points(src.map(|p| (p.x, p.y)), dst.map(|p| (p.x, p.y))).unwrap();
    let warped = warp(
        &flat,
        proj,
        Interpolation::Bilinear,
        Border::Constant(Rgb([120, 124, 128])),
    );
    let ink_centre = proj * ((ink.0 + ink.2) / 2.0, (ink.1 + ink.3) / 2.0);

    let lines = engine().read_text(&Image::from_rgb(warped)).unwrap();
    let line = find_plate(&lines, "AB123CD");
    let cx = line.corners.iter().map(|p| p.x).sum::<f32>() / 4.0;
    let cy = line.corners.iter().map(|p| p.y).sum::<f32>() / 4.0;
    assert!(
        (cx - ink_centre.0).abs() < 20.0 && (cy - ink_centre.1).abs() < 20.0,
        "centre ({cx}, {cy}) vs {ink_centre:?}"
    );
    // The box follows the tilt: its top edge rises or falls like the plate.
    let slope = (line.corners[1].y - line.corners[0].y) / (line.corners[1].x - line.corners[0].x);
    assert!(
        slope > 0.03,
        "top edge slope {slope} does not follow the warp"
    );
}

#[test]
fn read_region_reads_known_quad() {
    let mut scene = grey_scene(1000, 700);
    let (panel, _) = draw_plate(&mut scene, 300, 280, (420, 110), "AB-123-CD", 64.0);
    let image = Image::from_rgb(scene);
    let quad = corners_of(panel);
    let t = Instant::now();
    let line = engine().read_region(&image, quad).unwrap();
    println!("read_region 420x110 plate: {:?}", t.elapsed());
    assert_eq!(alnum(&line.text), "AB123CD", "got {line:?}");
    assert!(line.confidence > 0.8);
    assert_eq!(line.corners, quad);
}

#[test]
fn read_region_turns_tall_quads() {
    let mut scene = grey_scene(1000, 700);
    let (panel, _) = draw_plate(&mut scene, 300, 280, (420, 110), "XY-789-ZW", 64.0);
    // Rotate the scene 90° clockwise: the plate now reads top to bottom.
    let rotated = image::imageops::rotate90(&scene);
    let h = scene.height() as f32;
    // (x, y) -> (h - 1 - y, x) under rotate90.
    let tall = (h - panel.3, panel.0, h - panel.1, panel.2);
    let line = engine()
        .read_region(&Image::from_rgb(rotated), corners_of(tall))
        .unwrap();
    assert_eq!(alnum(&line.text), "XY789ZW", "got {line:?}");
}

#[test]
fn lines_come_in_reading_order() {
    let mut scene = grey_scene(1000, 700);
    draw_plate(&mut scene, 100, 380, (300, 90), "LEFT", 56.0);
    draw_plate(&mut scene, 600, 390, (300, 90), "RIGHT", 56.0);
    draw_plate(&mut scene, 250, 120, (500, 90), "TOP LINE", 56.0);
    let lines = engine().read_text(&Image::from_rgb(scene)).unwrap();
    let texts: Vec<String> = lines.iter().map(|l| alnum(&l.text)).collect();
    let pos = |w: &str| {
        texts
            .iter()
            .position(|t| t == w)
            .unwrap_or_else(|| panic!("{w} not found in {texts:?}"))
    };
    assert!(pos("TOPLINE") < pos("LEFT"), "{texts:?}");
    assert!(pos("LEFT") < pos("RIGHT"), "{texts:?}");
}

#[test]
fn blank_image_has_no_text() {
    let scene = image::RgbImage::from_pixel(640, 480, Rgb([200, 200, 200]));
    let lines = engine().read_text(&Image::from_rgb(scene)).unwrap();
    assert!(lines.is_empty(), "{lines:?}");
}

#[test]
fn timing_on_photo_sized_scene() {
    // 1280×960, like a downsized phone photo, with a small plate (≈ 30 px
    // letters) and two other lines.
    let mut scene = grey_scene(1280, 960);
    draw_plate(&mut scene, 120, 100, (520, 90), "OPEN 9-18 DAILY", 44.0);
    let (panel, _) = draw_plate(&mut scene, 700, 560, (230, 56), "AB-123-CD", 32.0);
    draw_plate(&mut scene, 150, 380, (360, 70), "Parking 2h", 36.0);
    let image = Image::from_rgb(scene);
    let engine = engine();
    let mut best = std::time::Duration::MAX;
    let mut lines = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        lines = engine.read_text(&image).unwrap();
        best = best.min(t.elapsed());
    }
    println!(
        "read_text 1280x960 ({} lines), best of 3: {best:?}",
        lines.len()
    );
    let plate = find_plate(&lines, "AB123CD");
    assert!(quad_contains(
        &plate.corners,
        Point::new((panel.0 + panel.2) / 2.0, (panel.1 + panel.3) / 2.0),
        0.0
    ));
    let mut best = std::time::Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let again = engine.read_region(&image, corners_of(panel)).unwrap();
        best = best.min(t.elapsed());
        assert_eq!(alnum(&again.text), "AB123CD");
    }
    println!("read_region 230x56 plate, best of 3: {best:?}");
}
