//! A 3x5 bitmap font for the contact sheets' labels (ids, distances, category names), so the
//! report needs no font file. Lower case only: capitals are drawn as their lower-case glyph.

use image::{Rgb, RgbImage};

/// Each glyph: five rows of three columns, `#` lit.
const GLYPHS: &[(char, [&str; 5])] = &[
    ('0', ["###", "#.#", "#.#", "#.#", "###"]),
    ('1', [".#.", "##.", ".#.", ".#.", "###"]),
    ('2', ["###", "..#", "###", "#..", "###"]),
    ('3', ["###", "..#", ".##", "..#", "###"]),
    ('4', ["#.#", "#.#", "###", "..#", "..#"]),
    ('5', ["###", "#..", "###", "..#", "###"]),
    ('6', ["###", "#..", "###", "#.#", "###"]),
    ('7', ["###", "..#", "..#", ".#.", ".#."]),
    ('8', ["###", "#.#", "###", "#.#", "###"]),
    ('9', ["###", "#.#", "###", "..#", "###"]),
    ('a', [".#.", "#.#", "###", "#.#", "#.#"]),
    ('b', ["##.", "#.#", "##.", "#.#", "##."]),
    ('c', [".##", "#..", "#..", "#..", ".##"]),
    ('d', ["##.", "#.#", "#.#", "#.#", "##."]),
    ('e', ["###", "#..", "##.", "#..", "###"]),
    ('f', ["###", "#..", "##.", "#..", "#.."]),
    ('g', [".##", "#..", "#.#", "#.#", ".##"]),
    ('h', ["#.#", "#.#", "###", "#.#", "#.#"]),
    ('i', ["###", ".#.", ".#.", ".#.", "###"]),
    ('j', ["..#", "..#", "..#", "#.#", ".#."]),
    ('k', ["#.#", "#.#", "##.", "#.#", "#.#"]),
    ('l', ["#..", "#..", "#..", "#..", "###"]),
    ('m', ["#.#", "###", "###", "#.#", "#.#"]),
    ('n', ["##.", "#.#", "#.#", "#.#", "#.#"]),
    ('o', [".#.", "#.#", "#.#", "#.#", ".#."]),
    ('p', ["##.", "#.#", "##.", "#..", "#.."]),
    ('q', [".#.", "#.#", "#.#", "##.", ".##"]),
    ('r', ["##.", "#.#", "##.", "#.#", "#.#"]),
    ('s', [".##", "#..", ".#.", "..#", "##."]),
    ('t', ["###", ".#.", ".#.", ".#.", ".#."]),
    ('u', ["#.#", "#.#", "#.#", "#.#", "###"]),
    ('v', ["#.#", "#.#", "#.#", "#.#", ".#."]),
    ('w', ["#.#", "#.#", "###", "###", "#.#"]),
    ('x', ["#.#", "#.#", ".#.", "#.#", "#.#"]),
    ('y', ["#.#", "#.#", ".#.", ".#.", ".#."]),
    ('z', ["###", "..#", ".#.", "#..", "###"]),
    ('-', ["...", "...", "###", "...", "..."]),
    ('.', ["...", "...", "...", "...", ".#."]),
    (',', ["...", "...", "...", ".#.", "#.."]),
    (':', ["...", ".#.", "...", ".#.", "..."]),
    ('=', ["...", "###", "...", "###", "..."]),
    ('/', ["..#", "..#", ".#.", "#..", "#.."]),
    ('_', ["...", "...", "...", "...", "###"]),
    ('&', [".#.", "#.#", ".#.", "#.#", ".##"]),
    ('(', [".#.", "#..", "#..", "#..", ".#."]),
    (')', [".#.", "..#", "..#", "..#", ".#."]),
    ('|', [".#.", ".#.", ".#.", ".#.", ".#."]),
    (' ', ["...", "...", "...", "...", "..."]),
    ('@', ["###", "#.#", "#.#", "#..", "###"]),
    ('?', ["###", "..#", ".#.", "...", ".#."]),
];

/// Pixels per font dot.
pub const SCALE: u32 = 2;
/// Horizontal advance and line height in pixels.
pub const ADVANCE: u32 = 4 * SCALE;
pub const LINE: u32 = 7 * SCALE;

fn glyph(c: char) -> &'static [&'static str; 5] {
    let c = c.to_ascii_lowercase();
    let found = GLYPHS.iter().find(|(g, _)| *g == c).or_else(|| GLYPHS.iter().find(|(g, _)| *g == '?'));
    &found.expect("the font has '?'").1
}

/// How many characters fit in `width` pixels.
pub fn fits(width: u32) -> usize {
    (width / ADVANCE) as usize
}

/// Draws `text` with its top-left corner at (x, y), clipped to the image.
pub fn draw(img: &mut RgbImage, x: u32, y: u32, text: &str, colour: Rgb<u8>) {
    for (n, c) in text.chars().enumerate() {
        let gx = x + n as u32 * ADVANCE;
        for (row, bits) in glyph(c).iter().enumerate() {
            for (col, bit) in bits.bytes().enumerate() {
                if bit != b'#' {
                    continue;
                }
                for dy in 0..SCALE {
                    for dx in 0..SCALE {
                        let (px, py) = (gx + col as u32 * SCALE + dx, y + row as u32 * SCALE + dy);
                        if px < img.width() && py < img.height() {
                            img.put_pixel(px, py, colour);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glyphs_are_well_formed_and_distinct() {
        for (c, rows) in GLYPHS {
            assert!(rows.iter().all(|r| r.len() == 3 && r.bytes().all(|b| b == b'#' || b == b'.')), "{c}");
        }
        for (i, a) in GLYPHS.iter().enumerate() {
            for b in &GLYPHS[i + 1..] {
                assert!(a.0 != b.0 && a.1 != b.1, "{} and {} look the same", a.0, b.0);
            }
        }
    }

    #[test]
    fn draws_lit_dots_only_inside_the_text_box() {
        let mut img = RgbImage::from_pixel(40, 20, Rgb([255, 255, 255]));
        draw(&mut img, 2, 3, "1A", Rgb([0, 0, 0]));
        let dark: Vec<(u32, u32)> =
            img.enumerate_pixels().filter(|(_, _, p)| p[0] == 0).map(|(x, y, _)| (x, y)).collect();
        assert!(!dark.is_empty());
        assert!(dark
            .iter()
            .all(|&(x, y)| (2..2 + 2 * ADVANCE).contains(&x) && (3..3 + 5 * SCALE).contains(&y)));
        assert_eq!(glyph('A'), glyph('a'));
        assert_eq!(glyph('\u{e9}'), glyph('?'));
        draw(&mut img, 38, 18, "wide text off the edge", Rgb([0, 0, 0])); // clipped, no panic
    }
}
