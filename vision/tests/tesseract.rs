//! Debian's tesseract behind the same [`Reader`] as PP-OCRv5, on a
//! rendered scene. Requires the `tesseract-ocr` package, which `cargo
//! xtask test` installs.

mod common;

use aviary_vision::{Image, Reader, Tesseract};
use common::*;

#[test]
fn tesseract_reads_a_printed_panel_as_one_line_and_again_by_its_box() {
    let tesseract = Tesseract::find().expect("cargo xtask installs Debian's tesseract-ocr");
    let mut scene = grey_scene(1000, 700);
    let (panel, _) = draw_plate(&mut scene, 200, 200, (560, 110), "GRANDE VENTE 26", 56.0);
    let image = Image::from_rgb(scene);
    let lines = tesseract.read_text(&image).unwrap();
    let line = lines
        .iter()
        .find(|l| alnum(&l.text) == "GRANDEVENTE26")
        .unwrap_or_else(|| panic!("the three words are one line: {lines:?}"));
    assert!(line.confidence > 0.5, "{line:?}");
    let (x0, y0, x1, y1) = quad_bounds(&line.corners);
    assert!(x0 >= panel.0 && y0 >= panel.1 && x1 <= panel.2 && y1 <= panel.3);
    let again = tesseract.read_region(&image, line.corners).unwrap();
    assert_eq!(alnum(&again.text), "GRANDEVENTE26", "{again:?}");
    assert_eq!(again.corners, line.corners);
}
