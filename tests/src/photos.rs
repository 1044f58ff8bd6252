//! Photos of vehicles with known plates, drawn for the plate-lookup tests:
//! a street, a car body, its plate on the bumper, and writing around it
//! that is not the plate (a shop sign with a phone number).

use ab_glyph::{FontVec, PxScale};
use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_text_mut, text_size};
use imageproc::rect::Rect;

/// The font plates are drawn in (Debian `fonts-dejavu-core`).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf";

fn font() -> FontVec {
    let bytes =
        std::fs::read(FONT).unwrap_or_else(|e| panic!("{FONT} (Debian fonts-dejavu-core): {e}"));
    FontVec::try_from_vec(bytes).expect("a TrueType font")
}

/// A 1280×960 street photo of a car whose plate reads `plate`, the plate
/// `plate_height` pixels high, as a JPEG of `quality`.
pub fn car(plate: &str, plate_height: u32, quality: u8) -> Vec<u8> {
    let mut image = RgbImage::from_fn(1280, 960, |_, y| {
        let shade = 150 + (y * 60 / 960) as u8;
        Rgb([shade, shade, shade.saturating_add(10)])
    });
    let font = font();
    // A shop sign with a phone number, high up.
    draw_filled_rect_mut(
        &mut image,
        Rect::at(80, 60).of_size(520, 150),
        Rgb([30, 60, 120]),
    );
    draw_text_mut(
        &mut image,
        Rgb([250, 250, 250]),
        100,
        75,
        PxScale::from(56.0),
        &font,
        "BOULANGERIE",
    );
    draw_text_mut(
        &mut image,
        Rgb([250, 230, 120]),
        100,
        145,
        PxScale::from(44.0),
        &font,
        "04 91 23 45 67",
    );
    // The car body, its windows and its wheels.
    draw_filled_rect_mut(
        &mut image,
        Rect::at(290, 420).of_size(700, 330),
        Rgb([140, 20, 25]),
    );
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
    // The plate: white, a black border, black characters, about 4.7:1.
    let height = plate_height.max(4);
    let width = height * 47 / 10;
    let (x, y) = (640 - width as i32 / 2, 660 - height as i32 / 2);
    draw_filled_rect_mut(
        &mut image,
        Rect::at(x - 2, y - 2).of_size(width + 4, height + 4),
        Rgb([15, 15, 15]),
    );
    draw_filled_rect_mut(
        &mut image,
        Rect::at(x, y).of_size(width, height),
        Rgb([245, 245, 240]),
    );
    let mut scale = height as f32 * 0.85;
    while text_size(PxScale::from(scale), &font, plate).0 > width * 9 / 10 && scale > 4.0 {
        scale -= 1.0;
    }
    let (tw, th) = text_size(PxScale::from(scale), &font, plate);
    draw_text_mut(
        &mut image,
        Rgb([10, 10, 10]),
        x + (width as i32 - tw as i32) / 2,
        y + (height as i32 - th as i32) / 2 - (scale * 0.12) as i32,
        PxScale::from(scale),
        &font,
        plate,
    );
    if plate_height < 12 {
        image = image::imageops::blur(&image, 3.0);
    }
    jpeg(&image, quality)
}

/// `image` as a JPEG of `quality`.
pub fn jpeg(image: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(image)
        .expect("a JPEG");
    out
}
