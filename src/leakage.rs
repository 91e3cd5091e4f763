//! The two checks that tell style from photo matching, run beside plain FITB-4/AUC by `lookd eval`.
//!
//! On a Shop-the-Look folder each product is a crop of the very photo it is scored against, so
//! it shares that photo's light, white balance and camera. A model can score well by matching
//! those instead of style, and then recommend badly from a studio catalog.
//!
//! * **Photometric**: every candidate product image gets its own seeded change of colour
//!   temperature, brightness and contrast before it is embedded, the same change for every
//!   method (the Python twin is `ctl.photometric`). Matching a photo's exact colour cast no
//!   longer pays; matching colours still can.
//! * **Catalog**: a photo-independent signal. The scene is ranked against a real store catalog
//!   (all categories), and the check reports the rank of the first product of the removed
//!   item's category whose coarse label agrees with the item's fine label (`jeans` is `pants`,
//!   `sandals` are `shoes`, `blouse` is a `shirt`), as a median beside random's.

use crate::rng::SplitMix64;

/// Half-widths of the uniform draws: temperature in [-0.2, 0.2] (red gain 1 + t, blue 1 - t),
/// brightness and contrast factors in [0.8, 1.2]. Fixed before any model was measured with them.
pub const TEMPERATURE: f64 = 0.2;
pub const BRIGHTNESS: f64 = 0.2;
pub const CONTRAST: f64 = 0.2;

/// FNV-1a, 64 bits: a stable hash of a product id that the Python twin computes in one line.
pub fn fnv1a64(text: &str) -> u64 {
    text.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01B3))
}

/// One product's photometric change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Photometric {
    pub temperature: f32,
    pub brightness: f32,
    pub contrast: f32,
}

impl Photometric {
    /// The change for product `id`: SplitMix64 seeded with `fnv1a64(id) ^ seed`, three uniforms.
    /// Independent of the candidate draws and of the order products are met in.
    pub fn for_product(id: &str, seed: u64) -> Photometric {
        let mut rng = SplitMix64::new(fnv1a64(id) ^ seed);
        let mut uniform = |half: f64| {
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            (-half + 2.0 * half * u) as f32
        };
        let temperature = uniform(TEMPERATURE);
        let brightness = 1.0 + uniform(BRIGHTNESS);
        let contrast = 1.0 + uniform(CONTRAST);
        Photometric { temperature, brightness, contrast }
    }

    /// Applies the change to a planar RGB image (`[3, H, W]`, 0..255): channel gains, then
    /// contrast about the image's mean, clipped to 0..255.
    pub fn apply(&self, planar: &mut [f32]) {
        let plane = planar.len() / 3;
        let gains = [1.0 + self.temperature, 1.0, 1.0 - self.temperature].map(|g| g * self.brightness);
        let mut sum = 0.0f64;
        for (c, gain) in gains.iter().enumerate() {
            for v in &mut planar[c * plane..(c + 1) * plane] {
                *v *= gain;
                sum += *v as f64;
            }
        }
        let mean = (sum / planar.len().max(1) as f64) as f32;
        for v in planar.iter_mut() {
            *v = ((*v - mean) * self.contrast + mean).clamp(0.0, 255.0);
        }
    }
}

/// The store catalog's coarse label for a Shop-the-Look fine label, where the catalog has one.
/// The catalog (clothing-dataset-small) splits tops into `t-shirt`, `shirt` and `longsleeve`
/// and has one label for each other category; bags, sunglasses and jewellery are not in it.
pub fn coarse_label(fine: &str) -> Option<&'static str> {
    Some(match fine {
        "t-shirt" | "top" | "vest" | "bodysuit" => "t-shirt",
        "shirt" | "blouse" => "shirt",
        "sweater" | "sweatshirt" | "hoodie" | "cardigan" | "jumper" => "longsleeve",
        "pants" | "jeans" | "leggings" => "pants",
        "shoes" | "sandals" | "boots" | "loafers" | "heels" | "pumps" | "sneakers" | "flats" | "wedges" => {
            "shoes"
        }
        "dress" | "romper" => "dress",
        "coat" | "jacket" | "blazer" | "cape" => "outwear",
        "hat" => "hat",
        "skirt" => "skirt",
        "shorts" => "shorts",
        _ => return None,
    })
}

/// The rank (1-based) of the first matching product when all products are ordered by ascending
/// `distances`, and random's expected rank for the same counts: (N + 1) / (M + 1) for M matches
/// among N. `None` when nothing matches.
pub fn first_match_rank(distances: &[f32], matches: &[bool]) -> Option<(usize, f64)> {
    let best = distances.iter().zip(matches).filter(|(_, &m)| m).map(|(&d, _)| d).min_by(f32::total_cmp)?;
    let rank = 1 + distances.iter().filter(|&&d| d < best).count();
    let m = matches.iter().filter(|&&m| m).count();
    Some((rank, (distances.len() + 1) as f64 / (m + 1) as f64))
}

/// The median of `values` (the mean of the middle two for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(""), 0xCBF2_9CE4_8422_2325);
        assert_eq!(fnv1a64("a"), 0xAF63_DC4C_8601_EC8C);
        assert_eq!(fnv1a64("foobar"), 0x8594_4171_F739_67E8);
    }

    #[test]
    fn photometric_draws_are_per_product_seeded_and_in_range() {
        let a = Photometric::for_product("ccp-0002-01", 0);
        assert_eq!(a, Photometric::for_product("ccp-0002-01", 0));
        assert_ne!(a, Photometric::for_product("ccp-0002-02", 0));
        assert_ne!(a, Photometric::for_product("ccp-0002-01", 1));
        for i in 0..1000 {
            let p = Photometric::for_product(&format!("p{i}"), 0);
            assert!(p.temperature.abs() <= 0.2 && (0.8..=1.2).contains(&p.brightness));
            assert!((0.8..=1.2).contains(&p.contrast));
        }
    }

    #[test]
    fn photometric_shifts_colour_keeps_order_and_clips() {
        // A grey image: warming it makes red exceed blue; brightness moves the mean.
        let mut img = vec![100.0f32; 3 * 4];
        Photometric { temperature: 0.1, brightness: 1.0, contrast: 1.0 }.apply(&mut img);
        assert!(
            (img[0] - 110.0).abs() < 1e-4 && (img[4] - 100.0).abs() < 1e-4 && (img[8] - 90.0).abs() < 1e-4
        );
        let mut ramp: Vec<f32> = (0..12).map(|i| i as f32 * 20.0).collect();
        Photometric { temperature: 0.0, brightness: 1.5, contrast: 2.0 }.apply(&mut ramp);
        assert!(ramp.windows(2).all(|w| w[0] <= w[1]), "order kept: {ramp:?}");
        assert_eq!((ramp[0], ramp[11]), (0.0, 255.0), "clipped: {ramp:?}");
        let mut same: Vec<f32> = (0..12).map(|i| i as f32 * 7.0).collect();
        let before = same.clone();
        Photometric { temperature: 0.0, brightness: 1.0, contrast: 1.0 }.apply(&mut same);
        assert!(same.iter().zip(&before).all(|(a, b)| (a - b).abs() < 1e-4));
    }

    #[test]
    fn photometric_agrees_with_the_python_twin() {
        // Printed by models/ctl.py: photometric_params(id, 0) and photometric(x, (0.1, 1.1, 0.9)).
        let p = Photometric::for_product("ccp-0002-01", 0);
        let expected = [-0.070_061_885, 1.005_362_4, 1.184_810_8];
        assert_eq!([p.temperature, p.brightness, p.contrast], expected);
        let q = Photometric::for_product("ccp-0005-03", 0);
        assert_eq!([q.temperature, q.brightness, q.contrast], [0.060_731_877, 1.019_345_9, 0.880_343_1]);
        let mut x: Vec<f32> = (0..12).map(|i| i as f32 * 20.0).collect();
        Photometric { temperature: 0.1, brightness: 1.1, contrast: 0.9 }.apply(&mut x);
        let python = [
            11.513_336,
            33.293_335,
            55.073_338,
            76.853_34,
            90.713_33,
            110.513_336,
            130.313_34,
            150.113_33,
            154.073_33,
            171.893_33,
            189.713_33,
            207.533_33,
        ];
        assert!(x.iter().zip(python).all(|(a, b)| (a - b).abs() < 1e-3), "{x:?}");
    }

    #[test]
    fn coarse_labels_cover_the_catalogs_categories() {
        assert_eq!(coarse_label("jeans"), Some("pants"));
        assert_eq!(coarse_label("sandals"), Some("shoes"));
        assert_eq!(coarse_label("blouse"), Some("shirt"));
        assert_eq!(coarse_label("blazer"), Some("outwear"));
        assert_eq!(coarse_label("bag"), None);
    }

    #[test]
    fn first_match_rank_counts_strictly_closer_products() {
        let d = [0.5, 0.1, 0.3, 0.2, 0.9];
        let m = [false, false, true, false, true];
        assert_eq!(first_match_rank(&d, &m), Some((3, 2.0)));
        assert_eq!(first_match_rank(&d, &[false; 5]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
