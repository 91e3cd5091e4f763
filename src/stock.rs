//! Which products may be recommended right now: not out of stock (the store's
//! `catalog/unavailable` list, or the catalog's own `available` column) and passing the mirror's
//! filter on catalog fields (`department = ["women"]`). Pure: the loop recomputes the mask when
//! the list, the filter or the catalog changes, and ranking skips the masked rows. No rebuild.

use std::collections::{BTreeMap, HashSet};

use crate::cache::StoredProduct;

/// The catalog column that can mark a product out of stock: `no`, `false`, `0`, `n` or `out`
/// (any case) means unavailable; anything else, or an empty cell, available.
pub const AVAILABLE_COLUMN: &str = "available";

/// A mirror's restriction: for each field, the values a product's field must have one of
/// (compared case-insensitively); every field must match.
pub type Filter = BTreeMap<String, Vec<String>>;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stock {
    /// The ids the store says are out of stock.
    pub unavailable: HashSet<String>,
    pub filter: Filter,
}

/// What a mask says, for `catalog/state`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    /// Products out of stock (either way).
    pub unavailable: usize,
    /// Products that may be recommended.
    pub allowed: usize,
}

fn out_by_column(p: &StoredProduct) -> bool {
    p.entry.fields.get(AVAILABLE_COLUMN).is_some_and(|v| {
        let v = v.trim().to_ascii_lowercase();
        ["no", "false", "0", "n", "out"].contains(&v.as_str())
    })
}

fn passes(p: &StoredProduct, filter: &Filter) -> bool {
    filter.iter().all(|(field, values)| {
        p.entry
            .fields
            .get(field)
            .is_some_and(|v| values.iter().any(|w| w.trim().eq_ignore_ascii_case(v.trim())))
    })
}

impl Stock {
    /// One flag per product, in the cache's order: true where it may be recommended.
    pub fn mask(&self, products: &[StoredProduct]) -> (Vec<bool>, Counts) {
        let mut counts = Counts::default();
        let mask = products
            .iter()
            .map(|p| {
                let out = out_by_column(p) || self.unavailable.contains(&p.entry.id);
                counts.unavailable += out as usize;
                let ok = !out && passes(p, &self.filter);
                counts.allowed += ok as usize;
                ok
            })
            .collect();
        (mask, counts)
    }
}

/// Refuses a filter that names a field no product has (a typo would empty the mirror), or that
/// no product passes.
pub fn check_filter(filter: &Filter, products: &[StoredProduct]) -> Result<(), String> {
    for field in filter.keys() {
        if !products.iter().any(|p| p.entry.fields.contains_key(field)) {
            let mut fields: Vec<&str> =
                products.iter().flat_map(|p| p.entry.fields.keys().map(String::as_str)).collect();
            fields.sort_unstable();
            fields.dedup();
            return Err(format!(
                "no product has the field {field:?}; the catalog's fields are: {}",
                if fields.is_empty() { "(none)".to_string() } else { fields.join(", ") }
            ));
        }
    }
    if !filter.is_empty() && !products.iter().any(|p| passes(p, filter)) {
        return Err("no product of the catalog passes this filter".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CatalogEntry;

    fn product(id: &str, fields: &[(&str, &str)]) -> StoredProduct {
        StoredProduct {
            entry: CatalogEntry {
                id: id.into(),
                category: "Shoes".into(),
                image: format!("{id}.jpg"),
                line: 0,
                fields: fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            },
            image_sha256: String::new(),
        }
    }

    fn catalog() -> Vec<StoredProduct> {
        vec![
            product("a", &[("department", "Women")]),
            product("b", &[("department", "kids"), ("available", "yes")]),
            product("c", &[("department", "women"), ("available", "No")]),
            product("d", &[]),
        ]
    }

    #[test]
    fn the_list_and_the_column_both_mark_out_of_stock() {
        let mut stock = Stock::default();
        assert_eq!(
            stock.mask(&catalog()),
            (vec![true, true, false, true], Counts { unavailable: 1, allowed: 3 })
        );
        stock.unavailable.insert("a".into());
        stock.unavailable.insert("nonexistent".into());
        assert_eq!(
            stock.mask(&catalog()),
            (vec![false, true, false, true], Counts { unavailable: 2, allowed: 2 })
        );
    }

    #[test]
    fn the_filter_keeps_matching_products_only() {
        let stock = Stock {
            filter: Filter::from([("department".into(), vec!["WOMEN".into()])]),
            ..Default::default()
        };
        // c is women's but out of stock; d has no department and does not pass.
        assert_eq!(stock.mask(&catalog()).0, vec![true, false, false, false]);
        assert_eq!(check_filter(&stock.filter, &catalog()), Ok(()));
        let typo = Filter::from([("departmnet".into(), vec!["women".into()])]);
        assert_eq!(
            check_filter(&typo, &catalog()),
            Err("no product has the field \"departmnet\"; the catalog's fields are: available, department"
                .into())
        );
        let none = Filter::from([("department".into(), vec!["men".into()])]);
        assert!(
            check_filter(&none, &catalog()).is_err_and(|e| e.contains("no product of the catalog passes"))
        );
    }

    #[test]
    fn every_spelling_of_out_of_stock_in_the_column_and_nothing_else() {
        for out in ["no", "false", "0", "n", "out", "NO", " False ", "Out", "N"] {
            let (mask, counts) = Stock::default().mask(&[product("x", &[("available", out)])]);
            assert_eq!((mask, counts.unavailable), (vec![false], 1), "{out:?} means out of stock");
        }
        for available in ["yes", "", "1", "true", "in", "none", "nope", "y", "o"] {
            let (mask, counts) = Stock::default().mask(&[product("x", &[("available", available)])]);
            assert_eq!((mask, counts.unavailable), (vec![true], 0), "{available:?} means available");
        }
    }

    #[test]
    fn a_filter_needs_every_field_and_any_one_of_its_values() {
        let catalog = vec![
            product("a", &[("department", "women"), ("season", "winter")]),
            product("b", &[("department", "unisex"), ("season", "winter")]),
            product("c", &[("department", "women"), ("season", "summer")]),
            product("d", &[("department", "kids"), ("season", "winter")]),
            product("e", &[("department", "women")]),
        ];
        let stock = Stock {
            filter: Filter::from([
                ("department".into(), vec!["women".into(), " Unisex".into()]),
                ("season".into(), vec!["winter".into()]),
            ]),
            ..Default::default()
        };
        let (mask, counts) = stock.mask(&catalog);
        assert_eq!(mask, vec![true, true, false, false, false]);
        assert_eq!(counts, Counts { unavailable: 0, allowed: 2 });
    }
}
