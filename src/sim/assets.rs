//! Deterministic media the simulator serves: a small real JPEG (avatars, images), a
//! one-pixel GIF (emoticons), stand-in MP3/MP4 bytes with the right magic, patterned file bytes,
//! and QR code images.

use std::io::Cursor;
use std::sync::OnceLock;

use image::{ImageFormat, Rgb, RgbImage};

fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    // Encoding an in-memory RGB image into a Vec cannot fail for these formats; an empty body
    // would still be served rather than panicking.
    let _ = img.write_to(&mut out, format);
    out.into_inner()
}

fn sample_image() -> RgbImage {
    RgbImage::from_fn(48, 48, |x, y| {
        Rgb([(x * 5) as u8, (y * 5) as u8, ((x + y) * 2) as u8])
    })
}

/// A 48×48 JPEG.
pub(crate) fn jpeg() -> &'static [u8] {
    static JPEG: OnceLock<Vec<u8>> = OnceLock::new();
    JPEG.get_or_init(|| encode(&sample_image(), ImageFormat::Jpeg))
}

/// A transparent 1×1 GIF89a.
pub(crate) fn gif() -> &'static [u8] {
    &[
        0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0xff, 0xff,
        0xff, 0x00, 0x00, 0x00, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00,
        0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
    ]
}

/// The byte at `i` of every patterned payload (files, and the tails of audio/video).
pub(crate) fn pattern_byte(i: u64) -> u8 {
    ((i.wrapping_mul(31).wrapping_add(7)) % 251) as u8
}

pub(crate) fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pattern_byte(offset + i)).collect()
}

fn with_magic(magic: &[u8], total: usize) -> Vec<u8> {
    let mut v = magic.to_vec();
    v.extend(pattern(v.len() as u64, total.saturating_sub(magic.len())));
    v
}

/// Stand-in voice: an ID3v2 header then patterned bytes.
pub(crate) fn mp3() -> &'static [u8] {
    static MP3: OnceLock<Vec<u8>> = OnceLock::new();
    MP3.get_or_init(|| with_magic(b"ID3\x04\x00\x00\x00\x00\x00\x00", 4096))
}

/// Stand-in video: an `ftyp` box then patterned bytes (64 KiB, enough for range requests).
pub(crate) fn mp4() -> &'static [u8] {
    static MP4: OnceLock<Vec<u8>> = OnceLock::new();
    MP4.get_or_init(|| {
        with_magic(
            b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom",
            64 * 1024,
        )
    })
}

/// A JPEG of the QR code for `text`.
pub(crate) fn qr_jpeg(text: &str) -> Option<Vec<u8>> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let img = code
        .render::<image::Luma<u8>>()
        .min_dimensions(240, 240)
        .build();
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Jpeg).ok()?;
    Some(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_decode() {
        let j = image::load_from_memory_with_format(jpeg(), ImageFormat::Jpeg).expect("jpeg");
        assert_eq!(j.width(), 48);
        assert!(gif().starts_with(b"GIF89a"));
        let q = qr_jpeg("https://login.weixin.qq.com/l/abc==").expect("qr");
        let q = image::load_from_memory_with_format(&q, ImageFormat::Jpeg).expect("qr jpeg");
        assert!(q.width() >= 240);
    }

    #[test]
    fn stand_ins_have_magic() {
        assert!(mp3().starts_with(b"ID3"));
        assert_eq!(&mp4()[4..8], b"ftyp");
        assert_eq!(mp4().len(), 64 * 1024);
        assert_eq!(
            pattern(10, 3),
            vec![pattern_byte(10), pattern_byte(11), pattern_byte(12)]
        );
    }
}
