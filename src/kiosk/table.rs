//! What the kiosk listener may serve, decided without I/O: the product table (id to image file,
//! content type, catalog fields) made from the cache's products, the refusal of an id taken from
//! a request, and the page's settings. A request only ever names an id; the file it gets is the
//! one the catalog gave that id.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cache::StoredProduct;
use crate::catalog::Fields;

/// The longest id a request may name (the catalog's are UUIDs, 36 characters).
pub const MAX_ID: usize = 128;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Product {
    pub id: String,
    pub category: String,
    #[serde(skip)]
    pub image: PathBuf,
    #[serde(skip)]
    pub content_type: &'static str,
    /// The image's sha256 from the cache, its HTTP entity tag.
    #[serde(skip)]
    pub etag: String,
    pub fields: Fields,
}

#[derive(Debug, PartialEq)]
pub enum Lookup<'a> {
    Found(&'a Product),
    /// Not something an id can be (400), with why.
    BadId(&'static str),
    /// A well-formed id the catalog lacks (404).
    Unknown,
}

#[derive(Debug, Default)]
pub struct ProductTable {
    by_id: HashMap<String, Product>,
}

impl ProductTable {
    /// `images` is the folder the catalog's image paths are relative to.
    pub fn new(products: &[StoredProduct], images: &Path) -> ProductTable {
        let by_id = products
            .iter()
            .map(|p| {
                let image = images.join(&p.entry.image);
                let product = Product {
                    id: p.entry.id.clone(),
                    category: p.entry.category.clone(),
                    content_type: content_type(&image),
                    image,
                    etag: format!("\"{}\"", p.image_sha256),
                    fields: p.entry.fields.clone(),
                };
                (p.entry.id.clone(), product)
            })
            .collect();
        ProductTable { by_id }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// `id` as the request gave it, percent-decoded.
    pub fn lookup(&self, id: &str) -> Lookup<'_> {
        if let Some(why) = bad_id(id) {
            return Lookup::BadId(why);
        }
        self.by_id.get(id).map_or(Lookup::Unknown, Lookup::Found)
    }
}

/// Why `id` cannot be a product id, if it cannot: path separators, `..`, percent signs left
/// after decoding (a double encoding), control characters, or too long.
pub fn bad_id(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        Some("an empty id")
    } else if id.len() > MAX_ID {
        Some("an id longer than 128 bytes")
    } else if id.contains(['/', '\\']) {
        Some("a path separator in the id")
    } else if id.contains("..") {
        Some("`..` in the id")
    } else if id.contains('%') {
        Some("a percent sign in the id (encoded twice?)")
    } else if id.chars().any(char::is_control) {
        Some("a control character in the id")
    } else {
        None
    }
}

/// The Content-Type of an image file, by its extension.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        _ => "application/octet-stream",
    }
}

/// What the page reads from `/kiosk.json` before it connects.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PageSettings {
    pub device: String,
    pub prefix: String,
    /// The MQTT-over-WebSocket URL; None: `ws_port` on the page's own host.
    pub ws_url: Option<String>,
    pub ws_port: Option<u16>,
    /// Whether the broker wants a login, and for which user (the password comes from the
    /// kiosk URL's `#token=` or is asked for).
    pub login: bool,
    pub username: Option<String>,
    pub top: usize,
    /// The notice that a camera is in use (`[privacy] notice`); empty: none.
    pub notice: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CatalogEntry;

    fn product(id: &str, image: &str) -> StoredProduct {
        let mut fields = Fields::default();
        fields.insert("title".to_string(), format!("Title of {id}"));
        StoredProduct {
            entry: CatalogEntry {
                id: id.into(),
                category: "Shoes".into(),
                image: image.into(),
                line: 2,
                fields,
            },
            image_sha256: "ab12".into(),
        }
    }

    #[test]
    fn a_request_names_an_id_never_a_path() {
        let table = ProductTable::new(
            &[product("p1", "images/p1.jpg"), product("p2", "images/p2.PNG")],
            Path::new("/srv/catalog"),
        );
        let Lookup::Found(p) = table.lookup("p1") else { panic!("p1 not found") };
        assert_eq!(p.image, Path::new("/srv/catalog/images/p1.jpg"));
        assert_eq!((p.content_type, p.etag.as_str()), ("image/jpeg", "\"ab12\""));
        let Lookup::Found(p) = table.lookup("p2") else { panic!("p2 not found") };
        assert_eq!(p.content_type, "image/png");
        assert_eq!(table.lookup("p3"), Lookup::Unknown);
        for hostile in [
            "../p1",
            "..",
            "/etc/passwd",
            "images/p1.jpg",
            "..\\p1",
            "%2e%2e",
            "p1%2F",
            "p1\0",
            "p1\n",
            "",
            &"x".repeat(129),
        ] {
            assert!(matches!(table.lookup(hostile), Lookup::BadId(_)), "{hostile:?} was not refused");
        }
        assert_eq!(bad_id(&"x".repeat(128)), None);
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type(Path::new("a.JPEG")), "image/jpeg");
        assert_eq!(content_type(Path::new("a.webp")), "image/webp");
        assert_eq!(content_type(Path::new("a")), "application/octet-stream");
    }
}
