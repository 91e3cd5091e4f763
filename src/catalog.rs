//! The store's catalog CSV: `id,category,image` plus any extra columns (title, price, url, ...),
//! which travel with each product to the cache and the published recommendations.
//!
//! Parsing only: a bad row is reported with its line and skipped, never fatal. It must not open
//! the images (the cache builder does that).

use std::collections::HashSet;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CatalogEntry {
    pub id: String,
    pub category: String,
    /// As written in the CSV: relative to the images folder.
    pub image: String,
    /// The CSV line it came from (1-based, header = 1); not stored in the cache.
    #[serde(skip)]
    pub line: u64,
    /// Every other column, carried through untouched.
    #[serde(default, skip_serializing_if = "Fields::is_empty")]
    pub fields: Fields,
}

/// A product's extra columns, sorted by name: a map read and written like a `BTreeMap`, stored as
/// one short sorted vector. A catalog has a handful of columns and a cache up to 100k products:
/// a `BTreeMap` node costs about 540 bytes whatever it holds, two pairs here cost 96.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    /// Where `name` is, or where it would go.
    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(name))
    }
    pub fn get(&self, name: &str) -> Option<&String> {
        self.position(name).ok().map(|i| &self.0[i].1)
    }
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    /// Sets `name`, replacing its value if it has one.
    pub fn insert(&mut self, name: String, value: String) {
        match self.position(&name) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (name, value)),
        }
    }
    /// The names, in order.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }
    /// (name, value) pairs, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Like a map's: a name given twice keeps its last value.
impl FromIterator<(String, String)> for Fields {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Fields {
        let mut fields = Fields::default();
        for (k, v) in pairs {
            fields.insert(k, v);
        }
        fields.0.shrink_to_fit();
        fields
    }
}

impl<const N: usize> From<[(String, String); N]> for Fields {
    fn from(pairs: [(String, String); N]) -> Fields {
        pairs.into_iter().collect()
    }
}

impl std::ops::Index<&str> for Fields {
    type Output = String;
    fn index(&self, name: &str) -> &String {
        self.get(name).unwrap_or_else(|| panic!("no field {name:?}"))
    }
}

impl serde::Serialize for Fields {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Fields, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = Fields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of field names to strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(pair) = map.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(pairs.into_iter().collect())
            }
        }
        d.deserialize_map(Pairs)
    }
}

/// A row that was skipped, and why. `line` is 1-based, the header being line 1.
#[derive(Debug, Clone, PartialEq)]
pub struct RowProblem {
    pub line: u64,
    pub id: Option<String>,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Catalog {
    pub entries: Vec<CatalogEntry>,
    pub problems: Vec<RowProblem>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read catalog {path}: {message}")]
    Read { path: String, message: String },
    #[error("catalog {path}: header lacks column(s) {missing:?} (needs id, category, image)")]
    Columns { path: String, missing: Vec<String> },
}

const REQUIRED: [&str; 3] = ["id", "category", "image"];

impl Catalog {
    pub fn read(path: &Path) -> Result<Catalog, CatalogError> {
        let bytes = std::fs::read(path)
            .map_err(|e| CatalogError::Read { path: path.display().to_string(), message: e.to_string() })?;
        Catalog::parse(&bytes, &path.display().to_string())
    }

    /// Parses CSV text; `name` only labels the errors.
    pub fn parse(bytes: &[u8], name: &str) -> Result<Catalog, CatalogError> {
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
        let header = reader
            .headers()
            .map_err(|e| CatalogError::Read { path: name.to_string(), message: e.to_string() })?
            .clone();
        let col = |n: &str| header.iter().position(|h| h.trim() == n);
        let missing: Vec<String> =
            REQUIRED.iter().filter(|n| col(n).is_none()).map(|n| n.to_string()).collect();
        if !missing.is_empty() {
            return Err(CatalogError::Columns { path: name.to_string(), missing });
        }
        let [id_col, cat_col, img_col] = REQUIRED.map(|n| col(n).unwrap_or_default());
        let mut catalog = Catalog::default();
        let mut seen = HashSet::new();
        for (i, record) in reader.records().enumerate() {
            let line = record.as_ref().ok().and_then(|r| r.position()).map_or(i as u64 + 2, |p| p.line());
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    catalog.problems.push(RowProblem { line, id: None, reason: e.to_string() });
                    continue;
                }
            };
            let get = |c: usize| record.get(c).map(str::trim).unwrap_or("");
            let (id, category, image) = (get(id_col), get(cat_col), get(img_col));
            let problem = if id.is_empty() {
                Some("empty id")
            } else if category.is_empty() {
                Some("empty category")
            } else if image.is_empty() {
                Some("empty image path")
            } else if !seen.insert(id.to_string()) {
                Some("duplicate id")
            } else {
                None
            };
            if let Some(reason) = problem {
                let id = (!id.is_empty()).then(|| id.to_string());
                catalog.problems.push(RowProblem { line, id, reason: reason.to_string() });
                continue;
            }
            let fields = header
                .iter()
                .enumerate()
                .filter(|(c, _)| ![id_col, cat_col, img_col].contains(c))
                .map(|(c, h)| (h.trim().to_string(), get(c).to_string()))
                .collect();
            catalog.entries.push(CatalogEntry {
                line,
                id: id.to_string(),
                category: category.to_string(),
                image: image.to_string(),
                fields,
            });
        }
        Ok(catalog)
    }
}

/// The folder a catalog's image paths are relative to: `images` when the config names one, else
/// the CSV's own folder. The cache builder and the kiosk listener both read images from here.
pub fn images_dir(csv: &Path, images: Option<&Path>) -> std::path::PathBuf {
    match (images, csv.parent()) {
        (Some(dir), _) => dir.to_path_buf(),
        (None, Some(p)) if !p.as_os_str().is_empty() => p.to_path_buf(),
        (None, _) => std::path::PathBuf::from("."),
    }
}

/// A topic-safe short name of a category path: its last part, lowercased, runs of other
/// characters folded to '-' ("Apparel & Accessories|Clothing|Shirts & Tops" -> "shirts-tops").
pub fn slug(path: &str) -> String {
    let last = path.rsplit('|').next().unwrap_or(path);
    let mut s = String::new();
    for c in last.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') && !s.is_empty() {
            s.push('-');
        }
    }
    s.trim_end_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(csv: &str, ids: &[&str], problems: &[(u64, &str)]) {
        let c = Catalog::parse(csv.as_bytes(), "test.csv").unwrap();
        assert_eq!(c.entries.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ids);
        let got: Vec<(u64, &str)> = c.problems.iter().map(|p| (p.line, p.reason.as_str())).collect();
        assert_eq!(got, problems);
    }

    #[test]
    fn good_rows() {
        check(
            "id,category,label,image,split\na,Shoes,shoe,a.jpg,train\nb,Hats,hat,b.jpg,test\n",
            &["a", "b"],
            &[],
        );
    }

    #[test]
    fn bad_rows_are_reported_by_line_and_skipped() {
        let csv = "id,category,image\na,Shoes,a.jpg\n,Shoes,x.jpg\nb,,b.jpg\nc,Hats,\na,Shoes,a2.jpg\nd,Hats,d.jpg\n";
        check(
            csv,
            &["a", "d"],
            &[(3, "empty id"), (4, "empty category"), (5, "empty image path"), (6, "duplicate id")],
        );
    }

    #[test]
    fn short_row_is_reported() {
        check("id,category,image\na,Shoes\nb,Hats,b.jpg\n", &["b"], &[(2, "empty image path")]);
    }

    #[test]
    fn fields_read_and_write_like_a_sorted_map() {
        use std::collections::BTreeMap;
        let pairs = [("title", "Boot"), ("price", "9"), ("title", "Red boot"), ("", "x"), ("ärmel", "lang")];
        let owned = || pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let (fields, map): (Fields, BTreeMap<_, _>) = (owned().collect(), owned().collect());
        // The last of a repeated name wins, as in a map; names iterate in the map's order.
        assert_eq!(fields.len(), map.len());
        assert!(fields.iter().eq(map.iter()));
        assert_eq!(fields.get("title").map(String::as_str), Some("Red boot"));
        assert_eq!((fields.get("colour"), fields.contains_key("price")), (None, true));
        // The same JSON as the map it replaces, both ways (the cache's metadata is this JSON).
        let json = serde_json::to_string(&fields).unwrap();
        assert_eq!(json, serde_json::to_string(&map).unwrap());
        assert_eq!(serde_json::from_str::<Fields>(&json).unwrap(), fields);
        let repeated: Fields = serde_json::from_str(r#"{"b":"1","a":"2","b":"3"}"#).unwrap();
        assert_eq!(serde_json::to_string(&repeated).unwrap(), r#"{"a":"2","b":"3"}"#);
        assert!(serde_json::from_str::<Fields>(r#"{"a":1}"#).is_err());
    }

    #[test]
    fn extra_columns_travel() {
        let c =
            Catalog::parse(b"id,title,category,image,price\nx,Red boot,Shoes,x.jpg,49.90\n", "t").unwrap();
        let f = &c.entries[0].fields;
        assert_eq!((f["title"].as_str(), f["price"].as_str()), ("Red boot", "49.90"));
    }

    #[test]
    fn missing_column_is_an_error() {
        let err = Catalog::parse(b"id,image\na,a.jpg\n", "cat.csv").unwrap_err();
        assert_eq!(
            err.to_string(),
            "catalog cat.csv: header lacks column(s) [\"category\"] (needs id, category, image)"
        );
    }
}
