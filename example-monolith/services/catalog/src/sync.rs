//! Moving the catalog's rows out of the shop's database: a backfill that copies them
//! (ids included) into the service's database, and a parity check that compares the
//! two copies row by row — counts, and a SHA-256 of every row — and names each row
//! that differs. Both read the shop's tables directly: they are migration tools, run
//! once or a few times while the two copies exist, not part of any request path.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};
use shop::db::{Dialect, Pool};

use shop::catalog::repo::{Category, ProductRow, all_categories, all_products};

use crate::repo;

/// What a backfill copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BackfillReport {
    /// Category rows written.
    pub categories: usize,
    /// Product rows written.
    pub products: usize,
}

/// Copies every category and product row from `shop` into `service`, in one
/// transaction on the service's side. Rows already there are overwritten, so running
/// it again converges the copies.
pub async fn backfill(shop: &Pool, service: &Pool, service_dialect: Dialect) -> sqlx::Result<BackfillReport> {
    let categories = all_categories(shop).await?;
    let products = all_products(shop).await?;
    let mut tx = service.begin().await?;
    for row in &categories {
        repo::upsert_category(&mut tx, row).await?;
    }
    for row in &products {
        repo::upsert_product(&mut tx, row).await?;
    }
    repo::advance_id_sequences(&mut tx, service_dialect).await?;
    tx.commit().await?;
    Ok(BackfillReport { categories: categories.len(), products: products.len() })
}

/// How one row differs between the two copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Difference {
    /// In the shop, not in the service.
    MissingInService,
    /// In the service, not in the shop.
    MissingInShop,
    /// In both, with different contents (the two rows' checksums).
    Differs {
        /// Checksum of the shop's row.
        shop: String,
        /// Checksum of the service's row.
        service: String,
    },
}

/// A row that is not the same on both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowDifference {
    /// `categories` or `products`.
    pub table: &'static str,
    /// The row's id.
    pub id: i64,
    /// How it differs.
    #[serde(flatten)]
    pub difference: Difference,
}

/// Row counts per side and every difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParityReport {
    /// Category rows in (shop, service).
    pub categories: (usize, usize),
    /// Product rows in (shop, service).
    pub products: (usize, usize),
    /// Rows that differ, by table then id.
    pub differences: Vec<RowDifference>,
}

impl ParityReport {
    /// True when both copies hold exactly the same rows.
    pub fn in_parity(&self) -> bool {
        self.differences.is_empty()
    }
}

/// A row's checksum: SHA-256 of its canonical JSON, hex, shortened to 16 digits.
fn checksum(row: &impl Serialize) -> String {
    let json = serde_json::to_vec(row).expect("rows always serialise");
    Sha256::digest(&json).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn compare<T: Serialize>(table: &'static str, shop: &[(i64, T)], service: &[(i64, T)]) -> Vec<RowDifference> {
    let shop: BTreeMap<i64, String> = shop.iter().map(|(id, r)| (*id, checksum(r))).collect();
    let service: BTreeMap<i64, String> = service.iter().map(|(id, r)| (*id, checksum(r))).collect();
    let ids: std::collections::BTreeSet<i64> = shop.keys().chain(service.keys()).copied().collect();
    ids.into_iter()
        .filter_map(|id| {
            let difference = match (shop.get(&id), service.get(&id)) {
                (Some(a), Some(b)) if a == b => return None,
                (Some(a), Some(b)) => Difference::Differs { shop: a.clone(), service: b.clone() },
                (Some(_), None) => Difference::MissingInService,
                (None, _) => Difference::MissingInShop,
            };
            Some(RowDifference { table, id, difference })
        })
        .collect()
}

/// Compares the catalog rows of the shop and the service.
pub async fn parity(shop: &Pool, service: &Pool) -> sqlx::Result<ParityReport> {
    let keyed_c = |rows: Vec<Category>| rows.into_iter().map(|r| (r.id, r)).collect::<Vec<_>>();
    let keyed_p = |rows: Vec<ProductRow>| rows.into_iter().map(|r| (r.id, r)).collect::<Vec<_>>();
    let (shop_c, service_c) = (keyed_c(all_categories(shop).await?), keyed_c(all_categories(service).await?));
    let (shop_p, service_p) = (keyed_p(all_products(shop).await?), keyed_p(all_products(service).await?));
    let mut differences = compare("categories", &shop_c, &service_c);
    differences.extend(compare("products", &shop_p, &service_p));
    Ok(ParityReport {
        categories: (shop_c.len(), service_c.len()),
        products: (shop_p.len(), service_p.len()),
        differences,
    })
}
