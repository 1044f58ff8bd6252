//! Debian's `tesseract` as a second [`Reader`]: the reference an engineer
//! reaches for first, run as a program (`tesseract-ocr`), so a host or a
//! benchmark can put it where PP-OCRv5 was and compare the two on the same
//! photos behind the same bot.
//!
//! Tesseract reads a scene with its automatic page segmentation (`--psm
//! 3`; the sparse-text mode 11 missed a plain printed panel here) and
//! reports words; words side by side at the same height are joined into
//! one [`TextLine`] here, as PP-OCRv5's detector would box them.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use image::RgbImage;

use crate::decode::Image;
use crate::engine::{Reader, TextLine};
use crate::geometry::{reading_order, rectify, Point};

/// The `tesseract` program, checked to run.
pub struct Tesseract {
    program: PathBuf,
}

impl Tesseract {
    /// The `tesseract` on `PATH`, or an error naming the package to install.
    pub fn find() -> Result<Tesseract> {
        let program = PathBuf::from("tesseract");
        let ran = Command::new(&program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match ran {
            Ok(status) if status.success() => Ok(Tesseract { program }),
            _ => bail!("`tesseract` does not run here: install Debian's `tesseract-ocr` package"),
        }
    }

    /// Runs tesseract on `image` with page segmentation mode `psm` and
    /// returns the words it read.
    fn words(&self, image: &RgbImage, psm: &str) -> Result<Vec<Word>> {
        let mut png = Vec::new();
        image
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .context("encoding the image for tesseract")?;
        let mut child = Command::new(&self.program)
            .args(["stdin", "stdout", "--psm", psm, "tsv"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tesseract")?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let feeding = std::thread::spawn(move || stdin.write_all(&png));
        let out = child.wait_with_output().context("running tesseract")?;
        feeding
            .join()
            .expect("the writer does not panic")
            .context("feeding tesseract")?;
        if !out.status.success() {
            bail!(
                "tesseract failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(parse_tsv(&String::from_utf8_lossy(&out.stdout)))
    }
}

impl Reader for Tesseract {
    fn read_text(&self, image: &Image) -> Result<Vec<TextLine>> {
        let mut lines = join_lines(self.words(image.rgb(), "3")?);
        reading_order(&mut lines, |l| l.corners);
        Ok(lines)
    }

    fn read_region(&self, image: &Image, corners: [Point; 4]) -> Result<TextLine> {
        if corners.iter().any(|p| !p.x.is_finite() || !p.y.is_finite()) {
            bail!("region corners must be finite numbers");
        }
        let crop =
            rectify(image.rgb(), &corners, None).context("the region is too small to read")?;
        // One line of text (`--psm 7`), read at the crop's own size.
        let words = self.words(&crop, "7")?;
        let mut line = join(&words).unwrap_or_else(|| TextLine {
            text: String::new(),
            confidence: 0.0,
            corners,
            chars: Vec::new(),
        });
        line.corners = corners;
        Ok(line)
    }
}

/// One word tesseract read: its text, confidence (0 to 1) and box.
#[derive(Debug, Clone, PartialEq)]
struct Word {
    text: String,
    confidence: f32,
    left: f32,
    top: f32,
    width: f32,
    height: f32,
}

/// The words (level 5 rows) of tesseract's TSV output.
fn parse_tsv(tsv: &str) -> Vec<Word> {
    tsv.lines()
        .skip(1)
        .filter_map(|row| {
            let cells: Vec<&str> = row.split('\t').collect();
            if cells.len() < 12 || cells[0] != "5" {
                return None;
            }
            let number = |i: usize| cells[i].trim().parse::<f32>().ok();
            let text = cells[11].trim();
            if text.is_empty() {
                return None;
            }
            Some(Word {
                text: text.to_owned(),
                confidence: (number(10)? / 100.0).clamp(0.0, 1.0),
                left: number(6)?,
                top: number(7)?,
                width: number(8)?,
                height: number(9)?,
            })
        })
        .collect()
}

/// Words joined into lines: a word continues a line when it is about as
/// high, at about the same height, and starts within a word's height of
/// where the line ends.
fn join_lines(mut words: Vec<Word>) -> Vec<TextLine> {
    words.sort_by(|a, b| a.left.total_cmp(&b.left));
    let mut lines: Vec<Vec<Word>> = Vec::new();
    for word in words {
        let continues = lines.iter_mut().find(|line| {
            let last = line.last().expect("lines are never empty");
            let centre = |w: &Word| w.top + w.height / 2.0;
            let gap = word.left - (last.left + last.width);
            let size = last.height.max(word.height);
            (centre(last) - centre(&word)).abs() < size * 0.35
                && (last.height / word.height).clamp(0.0, 10.0) > 0.6
                && (last.height / word.height) < 1.6
                && (-size * 0.3..size * 1.2).contains(&gap)
        });
        match continues {
            Some(line) => line.push(word),
            None => lines.push(vec![word]),
        }
    }
    lines.iter().filter_map(|line| join(line)).collect()
}

/// One [`TextLine`] of `words` (left to right), or none when there are none.
fn join(words: &[Word]) -> Option<TextLine> {
    let first = words.first()?;
    let text: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
    let text = text.join(" ");
    let chars: Vec<(char, f32)> = words
        .iter()
        .enumerate()
        .flat_map(|(i, w)| {
            let space = (i > 0).then_some((' ', w.confidence));
            space
                .into_iter()
                .chain(w.text.chars().map(|c| (c, w.confidence)))
        })
        .collect();
    let confidence = words.iter().map(|w| w.confidence).sum::<f32>() / words.len() as f32;
    let left = first.left;
    let right = words
        .iter()
        .map(|w| w.left + w.width)
        .fold(f32::MIN, f32::max);
    let top = words.iter().map(|w| w.top).fold(f32::MAX, f32::min);
    let bottom = words
        .iter()
        .map(|w| w.top + w.height)
        .fold(f32::MIN, f32::max);
    Some(TextLine {
        text,
        confidence,
        corners: [
            Point::new(left, top),
            Point::new(right, top),
            Point::new(right, bottom),
            Point::new(left, bottom),
        ],
        chars,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TSV: &str = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext
1\t1\t0\t0\t0\t0\t0\t0\t1280\t960\t-1\t
5\t1\t1\t1\t1\t1\t821\t146\t192\t40\t95.5\tGRANDE
5\t1\t2\t1\t1\t1\t1035\t153\t155\t39\t96.0\tVENTE
5\t1\t3\t1\t1\t1\t600\t650\t60\t30\t80.0\t7338
5\t1\t4\t1\t1\t1\t675\t652\t30\t29\t70.0\tGS
5\t1\t5\t1\t1\t1\t715\t651\t28\t30\t90.0\t14
5\t1\t6\t1\t1\t1\t100\t700\t20\t20\t30.0\t 
";

    #[test]
    fn words_side_by_side_become_one_line_and_the_rest_stay_apart() {
        let words = parse_tsv(TSV);
        assert_eq!(words.len(), 5, "empty words are left out: {words:?}");
        let mut lines = join_lines(words);
        reading_order(&mut lines, |l| l.corners);
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        // GRANDE and VENTE are 22 px apart at 40 px high: one line.
        assert_eq!(texts, ["GRANDE VENTE", "7338 GS 14"]);
        let plate = &lines[1];
        assert!((plate.confidence - 0.8).abs() < 1e-4);
        assert_eq!(plate.corners[0], Point::new(600.0, 650.0));
        assert_eq!(plate.corners[2], Point::new(743.0, 681.0));
        assert_eq!(plate.chars.len(), plate.text.chars().count());
    }

    #[test]
    fn a_word_far_away_or_of_another_size_starts_a_line_of_its_own() {
        let word = |left: f32, top: f32, height: f32| Word {
            text: "AB".into(),
            confidence: 0.9,
            left,
            top,
            width: 40.0,
            height,
        };
        let lines = join_lines(vec![
            word(0.0, 0.0, 30.0),
            word(200.0, 0.0, 30.0),
            word(45.0, 0.0, 80.0),
        ]);
        assert_eq!(lines.len(), 3);
    }
}
