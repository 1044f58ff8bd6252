//! Points, quadrilaterals and the perspective crop that turns a (possibly
//! rotated or skewed) text box into an upright strip for recognition.

use image::{Rgb, RgbImage};
use imageproc::geometric_transformations::{warp_into, Border, Interpolation, Projection};

/// A position in image pixels (x to the right, y downwards).
///
/// Floating point so that coordinates scaled between the detection
/// resolution and the original image keep sub-pixel precision.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Point {
    /// Horizontal coordinate in pixels from the left edge.
    pub x: f32,
    /// Vertical coordinate in pixels from the top edge.
    pub y: f32,
}

impl Point {
    /// Creates a point; a shorthand for the struct literal.
    pub const fn new(x: f32, y: f32) -> Point {
        Point { x, y }
    }

    /// Euclidean distance to `other`, used for side lengths of quads.
    pub fn distance(self, other: Point) -> f32 {
        ((self.x - other.x).powi(2) + (self.y - other.y).powi(2)).sqrt()
    }
}

/// Puts four corners in the order top-left, top-right, bottom-right,
/// bottom-left, whatever order a rectangle fitter produced them in.
///
/// Follows PaddleOCR: the two left-most points form the left side, and on
/// each side the upper one comes first.
pub(crate) fn order_corners(points: [Point; 4]) -> [Point; 4] {
    let mut p = points;
    p.sort_by(|a, b| a.x.total_cmp(&b.x));
    let (tl, bl) = if p[0].y <= p[1].y {
        (p[0], p[1])
    } else {
        (p[1], p[0])
    };
    let (tr, br) = if p[2].y <= p[3].y {
        (p[2], p[3])
    } else {
        (p[3], p[2])
    };
    [tl, tr, br, bl]
}

/// Length of the shorter side of an ordered quad, used to drop specks.
pub(crate) fn short_side(q: &[Point; 4]) -> f32 {
    q[0].distance(q[1]).min(q[1].distance(q[2]))
}

/// Grows a rectangle (ordered corners) outward by the DB "unclip" distance
/// `area * ratio / perimeter` on every side.
///
/// The detector's probability map marks a shrunk core of each text line;
/// this restores the full extent. For a rectangle, offsetting the polygon
/// and refitting a rectangle is the same as moving each side out by `d`.
pub(crate) fn unclip(q: &[Point; 4], ratio: f32) -> [Point; 4] {
    let w = q[0].distance(q[1]);
    let h = q[1].distance(q[2]);
    if w <= 0.0 || h <= 0.0 {
        return *q;
    }
    let d = w * h * ratio / (2.0 * (w + h));
    // Unit vectors along the top side and the right side.
    let ux = ((q[1].x - q[0].x) / w, (q[1].y - q[0].y) / w);
    let uy = ((q[2].x - q[1].x) / h, (q[2].y - q[1].y) / h);
    let shift = |p: Point, sx: f32, sy: f32| {
        Point::new(
            p.x + d * (sx * ux.0 + sy * uy.0),
            p.y + d * (sx * ux.1 + sy * uy.1),
        )
    };
    [
        shift(q[0], -1.0, -1.0),
        shift(q[1], 1.0, -1.0),
        shift(q[2], 1.0, 1.0),
        shift(q[3], -1.0, 1.0),
    ]
}

/// True when `p` lies inside the convex quad `q` (either winding).
pub(crate) fn inside_convex(q: &[Point; 4], p: Point) -> bool {
    let mut sign = 0.0f32;
    for i in 0..4 {
        let a = q[i];
        let b = q[(i + 1) % 4];
        let cross = (b.x - a.x) * (p.y - a.y) - (b.y - a.y) * (p.x - a.x);
        if cross.abs() < 1e-6 {
            continue;
        }
        if sign == 0.0 {
            sign = cross.signum();
        } else if cross.signum() != sign {
            return false;
        }
    }
    true
}

/// Cuts the quad `corners` (top-left, top-right, bottom-right, bottom-left)
/// out of `image` and maps it onto an axis-aligned rectangle.
///
/// The output size is the longer of each pair of opposite sides. When the
/// result is much taller than wide (vertical text or a quad given in the
/// wrong rotation) it is turned 90° counter-clockwise, as PaddleOCR does,
/// because the recogniser reads horizontal lines only.
///
/// With `max_line_height`, the strip is scaled down so its line height (the
/// shorter side) is at most that, saving work on huge text; the caller
/// resizes further with a proper filter.
pub(crate) fn rectify(
    image: &RgbImage,
    corners: &[Point; 4],
    max_line_height: Option<f32>,
) -> Option<RgbImage> {
    let [tl, tr, br, bl] = *corners;
    let mut w = tl.distance(tr).max(bl.distance(br));
    let mut h = tl.distance(bl).max(tr.distance(br));
    if let Some(max) = max_line_height {
        let scale = (max / w.min(h)).min(1.0);
        w *= scale;
        h *= scale;
    }
    let (w, h) = (w.round(), h.round());
    if !(w >= 2.0 && h >= 2.0) || w > 20_000.0 || h > 20_000.0 {
        return None;
    }
    let from = [(tl.x, tl.y), (tr.x, tr.y), (br.x, br.y), (bl.x, bl.y)];
    let to = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)];
    let projection = Projection::from_control_points(from, to)?;
    let mut out = RgbImage::new(w as u32, h as u32);
    warp_into(
        image,
        projection,
        Interpolation::Bilinear,
        Border::Constant(Rgb([255, 255, 255])),
        &mut out,
    );
    if h >= 1.5 * w {
        out = image::imageops::rotate270(&out);
    }
    Some(out)
}

/// Sorts quads top-to-bottom, then left-to-right within a visual line.
///
/// Boxes whose top edges differ by less than half the smaller box height
/// count as the same line, which tolerates slightly tilted text.
pub(crate) fn reading_order<T>(items: &mut [T], corners: impl Fn(&T) -> [Point; 4]) {
    let top = |q: &[Point; 4]| q.iter().map(|p| p.y).fold(f32::INFINITY, f32::min);
    let left = |q: &[Point; 4]| q.iter().map(|p| p.x).fold(f32::INFINITY, f32::min);
    let height = |q: &[Point; 4]| {
        let max = q.iter().map(|p| p.y).fold(f32::NEG_INFINITY, f32::max);
        max - top(q)
    };
    items.sort_by(|a, b| top(&corners(a)).total_cmp(&top(&corners(b))));
    // Insertion pass: within a line, order by x.
    for i in 1..items.len() {
        let mut j = i;
        while j > 0 {
            let (qa, qb) = (corners(&items[j - 1]), corners(&items[j]));
            let same_line = (top(&qb) - top(&qa)).abs() < 0.5 * height(&qa).min(height(&qb));
            if same_line && left(&qb) < left(&qa) {
                items.swap(j - 1, j);
                j -= 1;
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_shuffled_corners() {
        let q = [
            Point::new(10.0, 20.0),
            Point::new(0.0, 0.0),
            Point::new(0.0, 20.0),
            Point::new(10.0, 0.0),
        ];
        let o = order_corners(q);
        assert_eq!(o[0], Point::new(0.0, 0.0));
        assert_eq!(o[1], Point::new(10.0, 0.0));
        assert_eq!(o[2], Point::new(10.0, 20.0));
        assert_eq!(o[3], Point::new(0.0, 20.0));
    }

    #[test]
    fn unclip_grows_each_side() {
        let q = [
            Point::new(0.0, 0.0),
            Point::new(100.0, 0.0),
            Point::new(100.0, 10.0),
            Point::new(0.0, 10.0),
        ];
        let u = unclip(&q, 1.5);
        let d = 100.0 * 10.0 * 1.5 / 220.0;
        assert!((u[0].x + d).abs() < 1e-3 && (u[0].y + d).abs() < 1e-3);
        assert!((u[2].x - 100.0 - d).abs() < 1e-3 && (u[2].y - 10.0 - d).abs() < 1e-3);
    }

    #[test]
    fn reading_order_is_rows_then_columns() {
        let bx = |x: f32, y: f32| {
            [
                Point::new(x, y),
                Point::new(x + 50.0, y),
                Point::new(x + 50.0, y + 20.0),
                Point::new(x, y + 20.0),
            ]
        };
        let mut v = vec![bx(200.0, 102.0), bx(0.0, 300.0), bx(0.0, 100.0)];
        reading_order(&mut v, |q| *q);
        assert_eq!(v[0][0], Point::new(0.0, 100.0));
        assert_eq!(v[1][0], Point::new(200.0, 102.0));
        assert_eq!(v[2][0], Point::new(0.0, 300.0));
    }

    #[test]
    fn rectify_turns_tall_quads() {
        let img = RgbImage::from_pixel(100, 100, Rgb([0, 0, 0]));
        let q = [
            Point::new(10.0, 10.0),
            Point::new(30.0, 10.0),
            Point::new(30.0, 90.0),
            Point::new(10.0, 90.0),
        ];
        let out = rectify(&img, &q, None).unwrap();
        assert_eq!((out.width(), out.height()), (80, 20));
    }
}
