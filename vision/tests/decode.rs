//! Decoding tests: formats recognised by content, EXIF orientation,
//! truncation, unsupported formats and the pixel cap.

use std::io::Cursor;

use aviary_vision::{decode, sniff, DecodeError};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::{ExtendedColorType, ImageEncoder, Rgb, RgbImage};

/// 40×20 image: left half red, right half blue.
fn two_colour() -> RgbImage {
    RgbImage::from_fn(40, 20, |x, _| {
        if x < 20 {
            Rgb([220, 20, 20])
        } else {
            Rgb([20, 20, 220])
        }
    })
}

fn encode_jpeg(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 95)
        .write_image(img, img.width(), img.height(), ExtendedColorType::Rgb8)
        .unwrap();
    out
}

fn encode_png(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(img, img.width(), img.height(), ExtendedColorType::Rgb8)
        .unwrap();
    out
}

fn is_red(p: &Rgb<u8>) -> bool {
    p.0[0] > 150 && p.0[2] < 100
}

#[test]
fn png_round_trip() {
    let img = two_colour();
    let bytes = encode_png(&img);
    assert_eq!(sniff(&bytes), Some("image/png"));
    let decoded = decode(&bytes).unwrap();
    assert_eq!(decoded.rgb(), &img);
}

#[test]
fn jpeg_round_trip() {
    let img = two_colour();
    let bytes = encode_jpeg(&img);
    assert_eq!(sniff(&bytes), Some("image/jpeg"));
    let decoded = decode(&bytes).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (40, 20));
    assert!(is_red(decoded.rgb().get_pixel(5, 10)));
    assert!(!is_red(decoded.rgb().get_pixel(35, 10)));
}

#[test]
fn webp_round_trip() {
    let img = two_colour();
    let mut bytes = Vec::new();
    WebPEncoder::new_lossless(Cursor::new(&mut bytes))
        .write_image(&img, img.width(), img.height(), ExtendedColorType::Rgb8)
        .unwrap();
    assert_eq!(sniff(&bytes), Some("image/webp"));
    assert_eq!(decode(&bytes).unwrap().rgb(), &img);
}

/// Inserts an EXIF APP1 segment carrying `orientation` right after SOI.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\0\x2a"); // big-endian TIFF header
    tiff.extend_from_slice(&8u32.to_be_bytes()); // IFD0 offset
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation tag
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn exif_orientation_6_is_applied() {
    let bytes = with_exif_orientation(&encode_jpeg(&two_colour()), 6);
    let decoded = decode(&bytes).unwrap();
    // Orientation 6 = rotate 90° clockwise: 40×20 becomes 20×40 and the
    // red left half ends up on top.
    assert_eq!((decoded.width(), decoded.height()), (20, 40));
    assert!(is_red(decoded.rgb().get_pixel(10, 5)));
    assert!(!is_red(decoded.rgb().get_pixel(10, 35)));
}

#[test]
fn exif_orientation_1_keeps_layout() {
    let bytes = with_exif_orientation(&encode_jpeg(&two_colour()), 1);
    let decoded = decode(&bytes).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (40, 20));
}

#[test]
fn truncated_jpeg_is_reported() {
    let bytes = encode_jpeg(&two_colour());
    let cut = &bytes[..bytes.len() * 2 / 3];
    assert!(matches!(decode(cut), Err(DecodeError::Truncated)));
    // Also when only the end-of-image marker is missing.
    let cut = &bytes[..bytes.len() - 2];
    assert!(matches!(decode(cut), Err(DecodeError::Truncated)));
}

#[test]
fn truncated_png_is_reported() {
    let bytes = encode_png(&two_colour());
    let cut = &bytes[..bytes.len() - 20];
    let err = decode(cut).unwrap_err();
    assert!(matches!(err, DecodeError::Truncated), "{err:?}");
    assert!(err.to_string().contains("truncated"));
}

#[test]
fn random_bytes_are_not_an_image() {
    // Deterministic pseudo-random bytes.
    let mut x = 0x1234_5678u32;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    assert_eq!(sniff(&bytes), None);
    let err = decode(&bytes).unwrap_err();
    assert!(matches!(err, DecodeError::NotAnImage));
    assert!(err.to_string().contains("JPEG"));
    assert!(matches!(decode(&[]), Err(DecodeError::NotAnImage)));
}

#[test]
fn corrupt_jpeg_is_undecodable() {
    // SOI + a bogus segment + EOI: structurally complete, but no image.
    let bytes = [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x00, 0x00, 0xFF, 0xD9];
    let err = decode(&bytes).unwrap_err();
    assert!(matches!(err, DecodeError::Undecodable(_)), "{err:?}");
}

#[test]
fn heic_is_unsupported_with_advice() {
    let mut bytes = vec![0, 0, 0, 24];
    bytes.extend_from_slice(b"ftypheic\0\0\0\0mif1heic");
    bytes.extend_from_slice(&[0u8; 64]);
    assert_eq!(sniff(&bytes), Some("image/heic"));
    let err = decode(&bytes).unwrap_err();
    assert!(
        matches!(err, DecodeError::Unsupported { format: "HEIC" }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("HEIC") && msg.contains("JPEG") && msg.contains("PNG") && msg.contains("WebP")
    );
}

#[test]
fn avif_and_pdf_are_unsupported() {
    let mut avif = vec![0, 0, 0, 28];
    avif.extend_from_slice(b"ftypavif\0\0\0\0avifmif1miaf");
    assert_eq!(sniff(&avif), Some("image/avif"));
    assert!(matches!(
        decode(&avif),
        Err(DecodeError::Unsupported { format: "AVIF" })
    ));
    let pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n";
    assert_eq!(sniff(pdf), Some("application/pdf"));
    assert!(matches!(
        decode(pdf),
        Err(DecodeError::Unsupported { format: "PDF" })
    ));
}

/// CRC-32 (IEEE) for hand-made PNG chunks.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

#[test]
fn decompression_bomb_is_refused() {
    // A PNG header declaring 10000×10000 pixels (100 Mpx).
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&10_000u32.to_be_bytes());
    ihdr.extend_from_slice(&10_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut png, b"IEND", &[]);
    let err = decode(&png).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::TooLarge {
                width: 10_000,
                height: 10_000,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("too large"));
}
