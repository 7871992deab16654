//! QR-code rendering of the login URL: a PNG for the control-plane upload, and Unicode
//! half-blocks for an operator's terminal in foreground runs.

use image::{ImageEncoder, Luma};
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;

/// Side of one QR module in the PNG, in pixels: large enough for a phone to read off a
/// screen showing the image at its natural size, small enough to keep uploads a few KiB.
pub const PNG_MODULE_PIXELS: u32 = 8;

/// Width of the light border around the code, in modules (the QR standard's minimum).
pub const QUIET_ZONE_MODULES: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    /// The content does not fit in any QR code (longer than ≈2.9 KB).
    #[error("cannot encode {len} bytes as a qr code")]
    Encode {
        len: usize,
        #[source]
        source: qrcode::types::QrError,
    },
    #[error("cannot encode the qr code as png")]
    Png(#[source] image::ImageError),
}

fn encode(content: &str) -> Result<QrCode, QrError> {
    QrCode::new(content.as_bytes()).map_err(|source| QrError::Encode {
        len: content.len(),
        source,
    })
}

/// A PNG of `content`: black modules on white, 8 px per module, with the quiet zone.
pub fn render_png(content: &str) -> Result<Vec<u8>, QrError> {
    let image = encode(content)?
        .render::<Luma<u8>>()
        .dark_color(Luma([0]))
        .light_color(Luma([255]))
        .quiet_zone(true)
        .module_dimensions(PNG_MODULE_PIXELS, PNG_MODULE_PIXELS)
        .build();
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::L8,
        )
        .map_err(QrError::Png)?;
    Ok(png)
}

/// `content` as text for a terminal: each character is one module wide and two modules tall
/// (`▀`, `▄`, `█`, space), with the quiet zone; rows end in `\n`.
///
/// Drawn for the usual light-on-dark terminal: light modules are the printed blocks and dark
/// modules are the terminal's background. On a dark-on-light terminal the code shows inverted.
/// A QR code has an odd number of modules, so the last row's lower half is background.
pub fn render_terminal(content: &str) -> Result<String, QrError> {
    let mut text = encode(content)?
        .render::<Dense1x2>()
        // Inverted on purpose: "dark" for the renderer is ink (the block glyphs), which on a
        // dark terminal is the light colour.
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .module_dimensions(1, 1)
        .build();
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGIN_URL: &str = "https://login.weixin.qq.com/l/IbwOtX1DPQ==";

    /// Decodes the single QR code in a grayscale image.
    fn decode(image: image::GrayImage) -> String {
        let mut prepared = rqrr::PreparedImage::prepare(image);
        let grids = prepared.detect_grids();
        assert_eq!(grids.len(), 1, "expected one QR code in the image");
        let (_, content) = grids[0].decode().expect("the QR code decodes");
        content
    }

    fn modules(content: &str) -> u32 {
        QrCode::new(content).unwrap().width() as u32
    }

    #[test]
    fn png_decodes_back_to_the_content() {
        for content in [LOGIN_URL, "x", &"https://login.wx.qq.com/l/".repeat(10)] {
            let png = render_png(content).unwrap();
            assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
            let image = image::load_from_memory(&png).unwrap().to_luma8();
            let side = (modules(content) + 2 * QUIET_ZONE_MODULES) * PNG_MODULE_PIXELS;
            assert_eq!(image.dimensions(), (side, side));
            // Black on white, white border.
            assert_eq!(image.get_pixel(0, 0), &Luma([255]));
            let finder = QUIET_ZONE_MODULES * PNG_MODULE_PIXELS;
            assert_eq!(image.get_pixel(finder, finder), &Luma([0]));
            assert_eq!(decode(image), content);
        }
    }

    #[test]
    fn terminal_rendering_has_the_expected_shape() {
        let text = render_terminal(LOGIN_URL).unwrap();
        let side = modules(LOGIN_URL) + 2 * QUIET_ZONE_MODULES;
        assert!(text.ends_with('\n'));
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len() as u32, side.div_ceil(2));
        for row in &rows {
            assert_eq!(row.chars().count() as u32, side, "{row:?}");
            assert!(
                row.chars().all(|c| matches!(c, ' ' | '▀' | '▄' | '█')),
                "{row:?}"
            );
        }
        // The quiet zone is light, which is printed as full blocks.
        assert!(rows[0].chars().all(|c| c == '█'), "{:?}", rows[0]);
        assert!(rows[1].chars().all(|c| c == '█'), "{:?}", rows[1]);
    }

    #[test]
    fn terminal_rendering_scans() {
        // Paint the text as a light-on-dark terminal would, then decode it like a phone.
        let text = render_terminal(LOGIN_URL).unwrap();
        let scale = 6;
        let rows: Vec<Vec<char>> = text.lines().map(|l| l.chars().collect()).collect();
        let (w, h) = (rows[0].len() as u32, rows.len() as u32 * 2);
        // A dark terminal margin around the text, as on screen.
        let margin = 4;
        let image = image::GrayImage::from_fn(
            (w + 2 * margin) * scale,
            (h + 2 * margin) * scale,
            |x, y| {
                let (mx, my) = (
                    (x / scale).checked_sub(margin),
                    (y / scale).checked_sub(margin),
                );
                let lit = match (mx, my) {
                    (Some(mx), Some(my)) if mx < w && my < h => {
                        let c = rows[(my / 2) as usize][mx as usize];
                        let upper = my % 2 == 0;
                        matches!((c, upper), ('█', _) | ('▀', true) | ('▄', false))
                    }
                    _ => false,
                };
                Luma([if lit { 230 } else { 20 }])
            },
        );
        assert_eq!(decode(image), LOGIN_URL);
    }

    #[test]
    fn oversized_content_is_an_error_not_a_panic() {
        let huge = "a".repeat(8000);
        let e = render_png(&huge).unwrap_err();
        assert!(matches!(e, QrError::Encode { len: 8000, .. }), "{e:?}");
        assert_eq!(e.to_string(), "cannot encode 8000 bytes as a qr code");
        assert!(render_terminal(&huge).is_err());
    }
}
