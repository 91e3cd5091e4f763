//! The share cap (#29 variety): a mirror's memory of what its screen showed recent shoppers, so
//! that no product is on it for more than a set share of them (`[pipeline] max-share`).
//!
//! The exposure offsets (`rank::exposure_offsets`) cap each product's share *on average* over the
//! training scenes; over a hundred real shoppers one product still reaches 15% of them by chance
//! alone in a small category (docs/variety.md). This holds it to the share itself: a product
//! already shown to `max_share` of the last `looks` shoppers waits, and the list takes the next
//! best product instead (`recommend::recommend_shared`).
//!
//! A *look* is one shopper in front of the mirror. The loop embeds the same shopper again when they
//! move, so a new ranking whose unshared list keeps at least half of the current look's is the same
//! look: it replaces that look's list instead of counting again, and the shopper's own list never
//! holds back their own products. A scene forgotten (`[privacy] forget-after-s`) ends the look.
//!
//! Pure: product ids in, ids held back out. It keeps the product ids of the lists shown, nothing
//! of the scenes (docs/privacy.md), in memory only: a restart starts it empty.

use std::collections::{HashMap, VecDeque};

/// The default `max_share`: the acceptance's 10% of shoppers.
pub const DEFAULT_MAX_SHARE: f32 = 0.1;
/// The default `looks`: about a day of shoppers at a busy mirror.
pub const DEFAULT_LOOKS: usize = 500;
/// Early on, when a tenth of the looks so far is under this, a product may still be shown this
/// many times: the first shoppers of the day all get their best picks.
pub const EARLY_ALLOWANCE: usize = 2;

/// One shopper's look: the list before the share cap, and the list shown.
#[derive(Debug, Clone, PartialEq)]
struct Look {
    unshared: Vec<String>,
    shown: Vec<String>,
}

/// What the screen showed the last `looks` shoppers, for one category.
#[derive(Debug, Clone, PartialEq)]
pub struct Rotation {
    max_share: f32,
    looks: usize,
    /// The lists shown for ended looks, oldest first: at most `looks - 1`.
    past: VecDeque<Vec<String>>,
    /// How many lists of `past` hold each product.
    counts: HashMap<String, usize>,
    current: Option<Look>,
}

impl Rotation {
    /// `None` when `max_share` is 0 (off) or `looks` is 0.
    pub fn new(max_share: f32, looks: usize) -> Option<Rotation> {
        (max_share > 0.0 && looks > 0).then(|| Rotation {
            max_share,
            looks,
            past: VecDeque::new(),
            counts: HashMap::new(),
            current: None,
        })
    }

    /// Whether a ranking whose list before the cap is `unshared` continues the current look: it
    /// keeps at least half of that look's list before the cap.
    pub fn same_look(&self, unshared: &[String]) -> bool {
        self.current.as_ref().is_some_and(|look| {
            let kept = unshared.iter().filter(|id| look.unshared.contains(id)).count();
            !unshared.is_empty() && 2 * kept >= unshared.len().max(look.unshared.len())
        })
    }

    /// Ends the current look: its shown list joins the past ones (the oldest goes past `looks`).
    pub fn end_look(&mut self) {
        let Some(look) = self.current.take() else { return };
        for id in &look.shown {
            *self.counts.entry(id.clone()).or_default() += 1;
        }
        self.past.push_back(look.shown);
        while self.past.len() >= self.looks {
            for id in self.past.pop_front().unwrap_or_default() {
                if let Some(n) = self.counts.get_mut(&id) {
                    *n -= 1;
                    if *n == 0 {
                        self.counts.remove(&id);
                    }
                }
            }
        }
    }

    /// How many times a product may be shown over the ended looks plus the current one.
    pub fn limit(&self) -> usize {
        let share = self.max_share as f64 * (self.past.len() + 1) as f64;
        (share.floor() as usize).max(EARLY_ALLOWANCE)
    }

    /// Whether `id` waits for the current look: showing it would put it in more than
    /// `max_share` of the ended looks plus this one (`limit`). Call `end_look` first for a new look.
    pub fn held(&self, id: &str) -> bool {
        self.counts.get(id).copied().unwrap_or(0) >= self.limit()
    }

    /// Sets the current look's lists: before the cap, and shown.
    pub fn show(&mut self, unshared: Vec<String>, shown: Vec<String>) {
        self.current = Some(Look { unshared, shown });
    }

    /// How many looks the memory holds (ended ones plus the current one).
    pub fn len(&self) -> usize {
        self.past.len() + usize::from(self.current.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    /// A new look: ends the current one, then shows `list` as it is.
    fn look(r: &mut Rotation, list: &str) {
        r.end_look();
        r.show(ids(list), ids(list));
    }

    #[test]
    fn a_product_waits_once_it_reached_its_share_of_the_looks() {
        let mut r = Rotation::new(0.1, 100).unwrap();
        // Early: two showings each, whatever a tenth says.
        look(&mut r, "a b");
        look(&mut r, "a c");
        r.end_look();
        assert_eq!(r.limit(), 2);
        assert!(r.held("a") && !r.held("b") && !r.held("z"));
        // Thirty looks without `a`: a tenth of 33 is 3, so `a` may come back once.
        for _ in 0..30 {
            look(&mut r, "x y");
        }
        r.end_look();
        assert_eq!((r.len(), r.limit()), (32, 3));
        assert!(!r.held("a") && r.held("x"));
    }

    #[test]
    fn the_memory_is_the_last_looks_only() {
        let mut r = Rotation::new(0.5, 4).unwrap();
        look(&mut r, "a");
        look(&mut r, "a");
        look(&mut r, "b");
        look(&mut r, "b");
        r.end_look();
        // Three ended looks kept (b b and one a), the fourth is the next one.
        assert_eq!(r.len(), 3);
        assert!(r.held("b"), "two of four");
        assert!(!r.held("a"), "the first a is forgotten");
        assert_eq!(r.counts.get("a"), Some(&1));
        look(&mut r, "c");
        look(&mut r, "c");
        look(&mut r, "c");
        r.end_look();
        assert!(!r.counts.contains_key("a") && !r.counts.contains_key("b"), "{:?}", r.counts);
    }

    #[test]
    fn the_same_shopper_is_one_look() {
        let mut r = Rotation::new(0.1, 100).unwrap();
        assert!(!r.same_look(&ids("a b c d")), "no look yet");
        r.show(ids("a b c d"), ids("a b c e"));
        assert!(r.same_look(&ids("a b x y")), "half kept");
        assert!(!r.same_look(&ids("a x y z")), "a quarter kept");
        assert!(!r.same_look(&[]));
        // The same look shown again: its list is replaced, not counted twice.
        r.show(ids("a b x y"), ids("a b x y"));
        r.end_look();
        assert_eq!((r.len(), r.counts.get("a"), r.counts.get("e")), (1, Some(&1), None));
        assert!(Rotation::new(0.0, 100).is_none() && Rotation::new(0.1, 0).is_none());
    }
}
