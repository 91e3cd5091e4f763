//! Contact sheets: what the mirror would show for one scene, as one PNG.
//!
//! Layout (all sizes from `Layout`): a title line; the scene on the left, scaled to
//! `scene_height`; then one row per category: first the scene shaded by the attention over its
//! regions for that category's top product (where the model looked), then the top-K products,
//! each a `thumb` x `thumb` box with three label lines under it (rank and id; hybrid distance;
//! global and local parts). Pure rendering: the caller decodes images and ranks.

pub mod font;

use image::{imageops, Rgb, RgbImage};

use crate::recommend::Recommendation;

/// The standard report's scenes: ids of ../shared/data/ccp, chosen by models/report_scenes.py.
pub const STANDARD_SCENES: &str = include_str!("../../docs/report-scenes.txt");

/// The ids of the standard report, in order (`#` comments and blank lines skipped).
pub fn standard_scenes() -> impl Iterator<Item = &'static str> {
    STANDARD_SCENES.lines().filter_map(|l| l.split('#').next()).map(str::trim).filter(|l| !l.is_empty())
}

const PAD: u32 = 8;
const LABEL_LINES: u32 = 3;
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([20, 20, 20]);
const MUTED: Rgb<u8> = Rgb([90, 90, 90]);

/// Sizes of a sheet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layout {
    /// Side of each product box, in pixels.
    pub thumb: u32,
    /// Products per category row.
    pub top: usize,
    /// Height the scene is scaled to.
    pub scene_height: u32,
}

impl Default for Layout {
    fn default() -> Layout {
        Layout { thumb: 128, top: 5, scene_height: 384 }
    }
}

impl Layout {
    fn header(&self) -> u32 {
        font::LINE + 2 * PAD
    }
    fn row_height(&self) -> u32 {
        self.thumb + LABEL_LINES * font::LINE + PAD
    }
    /// The scene's width once scaled to `scene_height`.
    pub fn scene_width(&self, width: u32, height: u32) -> u32 {
        ((width as u64 * self.scene_height as u64) / height.max(1) as u64).max(1) as u32
    }
    /// Width and height of a sheet for a `scene_width`-wide scene and `rows` categories.
    pub fn size(&self, scene_width: u32, rows: usize) -> (u32, u32) {
        let width = PAD + scene_width + PAD + (1 + self.top as u32) * (self.thumb + PAD);
        let body = self.scene_height.max(rows as u32 * self.row_height());
        (width, self.header() + body + PAD)
    }
    /// Top-left corner of box `k` of category row `row`: `k = 0` is the attention map, `k >= 1`
    /// the k-th product.
    pub fn slot(&self, scene_width: u32, row: usize, k: usize) -> (u32, u32) {
        let x = PAD + scene_width + PAD + k as u32 * (self.thumb + PAD);
        (x, self.header() + row as u32 * self.row_height())
    }
}

/// One category's row of a sheet.
pub struct Row<'a> {
    pub category: &'a str,
    /// Attention weights over the scene's regions (a square grid, row-major) for the top product.
    pub attention: Option<&'a [f32]>,
    /// The ranked products, each with its decoded image (`None`: unreadable, drawn as a grey box).
    pub items: Vec<(&'a Recommendation, Option<&'a RgbImage>)>,
}

/// `img` scaled to fit a `side` x `side` box, centred on white.
pub fn thumbnail(img: &RgbImage, side: u32) -> RgbImage {
    let (w, h) = fit(img.width(), img.height(), side);
    let small = imageops::resize(img, w, h, imageops::FilterType::Triangle);
    let mut out = RgbImage::from_pixel(side, side, WHITE);
    imageops::replace(&mut out, &small, ((side - w) / 2) as i64, ((side - h) / 2) as i64);
    out
}

fn fit(w: u32, h: u32, side: u32) -> (u32, u32) {
    if w >= h {
        (side, ((h as u64 * side as u64) / w.max(1) as u64).max(1) as u32)
    } else {
        (((w as u64 * side as u64) / h.max(1) as u64).max(1) as u32, side)
    }
}

/// The scene thumbnail shaded by `weights` over a g x g grid of the (stretched) whole image:
/// the most-attended region keeps full brightness, the least falls to a quarter, and the
/// most-attended cell is outlined in red.
pub fn attention_map(scene: &RgbImage, weights: &[f32], side: u32) -> RgbImage {
    let g = (weights.len() as f64).sqrt().round() as u32;
    let (w, h) = fit(scene.width(), scene.height(), side);
    let mut small = imageops::resize(scene, w, h, imageops::FilterType::Triangle);
    let max = weights.iter().copied().fold(f32::MIN_POSITIVE, f32::max);
    let best = weights.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32);
    if g * g == weights.len() as u32 && g > 0 {
        for (x, y, p) in small.enumerate_pixels_mut() {
            let cell = (y * g / h) * g + x * g / w;
            let shade = 0.25 + 0.75 * (weights[cell as usize] / max).clamp(0.0, 1.0);
            let edge = cell == best && {
                let (cx, cy) = (x * g % w, y * g % h);
                cx < g * 2 || cy < g * 2 || cx >= w - g * 2 || cy >= h - g * 2
            };
            *p = if edge { Rgb([230, 30, 30]) } else { Rgb(p.0.map(|v| (v as f32 * shade) as u8)) };
        }
    }
    let mut out = RgbImage::from_pixel(side, side, WHITE);
    imageops::replace(&mut out, &small, ((side - w) / 2) as i64, ((side - h) / 2) as i64);
    out
}

/// Renders one scene's sheet.
pub fn render(title: &str, scene: &RgbImage, rows: &[Row], layout: &Layout) -> RgbImage {
    let sw = layout.scene_width(scene.width(), scene.height());
    let (width, height) = layout.size(sw, rows.len());
    let mut sheet = RgbImage::from_pixel(width, height, WHITE);
    font::draw(&mut sheet, PAD, PAD, &clip(title, font::fits(width - 2 * PAD)), INK);
    let shown = imageops::resize(scene, sw, layout.scene_height, imageops::FilterType::Triangle);
    imageops::replace(&mut sheet, &shown, PAD as i64, layout.header() as i64);
    let t = layout.thumb;
    for (r, row) in rows.iter().enumerate() {
        let (x, y) = layout.slot(sw, r, 0);
        if let Some(weights) = row.attention {
            imageops::replace(&mut sheet, &attention_map(scene, weights, t), x as i64, y as i64);
        }
        let name = row.category.rsplit('|').next().unwrap_or(row.category);
        label(&mut sheet, x, y + t, t, [name, "where it looked", "(top product)"]);
        for (k, (rec, img)) in row.items.iter().enumerate().take(layout.top) {
            let (x, y) = layout.slot(sw, r, k + 1);
            let boxed = match img {
                Some(img) => thumbnail(img, t),
                None => RgbImage::from_pixel(t, t, Rgb([200, 200, 200])),
            };
            imageops::replace(&mut sheet, &boxed, x as i64, y as i64);
            let lines = [
                format!("{} {}", rec.rank, rec.id),
                format!("d {:.3}", rec.distance),
                format!("g {:.3} l {:.3}", rec.global, rec.local),
            ];
            label(&mut sheet, x, y + t, t, [&lines[0], &lines[1], &lines[2]]);
        }
    }
    sheet
}

fn label(sheet: &mut RgbImage, x: u32, y: u32, width: u32, lines: [&str; 3]) {
    for (i, line) in lines.iter().enumerate() {
        let colour = if i == 0 { INK } else { MUTED };
        font::draw(sheet, x, y + 2 + i as u32 * font::LINE, &clip(line, font::fits(width)), colour);
    }
}

fn clip(text: &str, n: usize) -> String {
    text.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_tile_the_sheet_without_overlap() {
        let l = Layout::default();
        let sw = l.scene_width(256, 512);
        assert_eq!(sw, 192);
        let (w, h) = l.size(sw, 3);
        let last = l.slot(sw, 2, l.top);
        assert!(last.0 + l.thumb <= w && last.1 + l.thumb + LABEL_LINES * font::LINE <= h);
        let (a, b) = (l.slot(sw, 0, 1), l.slot(sw, 0, 2));
        assert!(a.0 + l.thumb < b.0);
        let (c, d) = (l.slot(sw, 0, 1), l.slot(sw, 1, 1));
        assert!(c.1 + l.thumb + LABEL_LINES * font::LINE <= d.1);
        assert!(l.slot(sw, 0, 0).0 >= PAD + sw, "rows start right of the scene");
    }

    #[test]
    fn thumbnail_keeps_aspect_on_white() {
        let tall = RgbImage::from_pixel(50, 100, Rgb([10, 200, 10]));
        let t = thumbnail(&tall, 64);
        assert_eq!(t.dimensions(), (64, 64));
        assert_eq!(*t.get_pixel(0, 32), WHITE);
        assert_eq!(*t.get_pixel(32, 32), Rgb([10, 200, 10]));
    }

    #[test]
    fn attention_map_darkens_the_ignored_regions() {
        let scene = RgbImage::from_pixel(70, 70, Rgb([200, 200, 200]));
        let mut w = vec![0.0f32; 49];
        w[0] = 1.0; // top-left cell only
        let m = attention_map(&scene, &w, 70);
        assert_eq!(*m.get_pixel(5, 5), Rgb([200, 200, 200]), "inside the attended cell");
        assert_eq!(*m.get_pixel(60, 60), Rgb([50, 50, 50]), "ignored: a quarter");
        assert_eq!(*m.get_pixel(0, 0), Rgb([230, 30, 30]), "the best cell is outlined");
    }
}
