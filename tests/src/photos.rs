//! Photos of vehicles with known plates for the plate-lookup tests, drawn
//! by `plategen` (the benchmark's generator).

/// A frontal daylight photo of a car whose plate reads `plate`, the plate
/// `plate_height` pixels high, as a JPEG of `quality`; a plate under 12
/// pixels is also blurred beyond reading.
pub fn car(plate: &str, plate_height: u32, quality: u8) -> Vec<u8> {
    let params = if plate_height < 12 {
        plategen::Params::unreadable()
    } else {
        plategen::Params {
            plate_height,
            jpeg_quality: quality,
            ..plategen::Params::easy()
        }
    };
    plategen::photo_with(plate, &params).jpeg
}
