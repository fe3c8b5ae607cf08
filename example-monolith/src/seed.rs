//! The deterministic demo catalogue: 10 categories, 200 products with stock, and three
//! demo users. Same input, same rows, same ids — tests and the walkthrough rely on it.

use crate::catalog::repo::{NewProduct, insert_product};
use crate::db::{Pool, now};
use crate::inventory::repo::set_stock;

/// The password of every demo user.
pub const DEMO_PASSWORD: &str = "ficus-demo-password";

/// Demo users: (email, name).
pub const DEMO_USERS: [(&str, &str); 3] =
    [("alice@example.com", "Alice"), ("bob@example.com", "Bob"), ("carol@example.com", "Carol")];

/// Categories: (slug, name, the nouns its products are made of).
const CATEGORIES: [(&str, &str, [&str; 5]); 10] = [
    ("kitchen", "Kitchen", ["Kettle", "Skillet", "Knife Set", "Teapot", "Cutting Board"]),
    ("garden", "Garden", ["Trowel", "Watering Can", "Planter", "Hose Reel", "Pruner"]),
    ("books", "Books", ["Atlas", "Cookbook", "Novel", "Field Guide", "Notebook"]),
    ("toys", "Toys", ["Puzzle", "Kite", "Robot", "Yo-Yo", "Building Set"]),
    ("electronics", "Electronics", ["Headphones", "Speaker", "Charger", "Keyboard", "Lamp"]),
    ("sports", "Sports", ["Football", "Yoga Mat", "Water Bottle", "Racket", "Jump Rope"]),
    ("clothing", "Clothing", ["Scarf", "Sweater", "Rain Jacket", "Beanie", "Socks"]),
    ("beauty", "Beauty", ["Soap", "Hand Cream", "Hair Brush", "Candle", "Bath Salts"]),
    ("office", "Office", ["Stapler", "Desk Organizer", "Fountain Pen", "Planner", "Monitor Stand"]),
    ("pets", "Pets", ["Dog Bowl", "Cat Tree", "Leash", "Pet Bed", "Chew Toy"]),
];

const ADJECTIVES: [&str; 20] = [
    "Classic", "Rustic", "Modern", "Compact", "Deluxe", "Everyday", "Vintage", "Nordic", "Sturdy", "Elegant", "Bright",
    "Cosy", "Handmade", "Premium", "Travel", "Urban", "Coastal", "Alpine", "Minimal", "Bold",
];

/// What a seed inserted.
#[derive(Debug, Clone, Copy)]
pub struct SeedReport {
    /// Categories inserted.
    pub categories: usize,
    /// Products inserted (each with an inventory row).
    pub products: usize,
    /// Demo users inserted.
    pub users: usize,
}

/// The deterministic attributes of product `n` (0-based) in category `c`.
fn product_spec(c: usize, j: usize) -> (String, String, String, i64, i64) {
    let (slug, cat_name, nouns) = CATEGORIES[c];
    let n = c * 20 + j;
    let adjective = ADJECTIVES[(j + c * 3) % ADJECTIVES.len()];
    let noun = nouns[j % nouns.len()];
    let name = format!("{adjective} {noun}");
    let sku = format!("{}-{:04}", slug[..3].to_uppercase(), n + 1);
    let description =
        format!("A {} {} from our {} range.", adjective.to_lowercase(), noun.to_lowercase(), cat_name.to_lowercase());
    let price_cents = 199 + ((n as i64 * 7919) % 9800);
    let stock = if n % 10 == 3 { 0 } else { 5 + (n as i64 * 37) % 60 };
    (sku, name, description, price_cents, stock)
}

/// Loads the catalogue and demo users into a database that has no products yet.
/// Returns None, changing nothing, when products already exist.
pub async fn seed_if_empty(pool: &Pool) -> sqlx::Result<Option<SeedReport>> {
    let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products").fetch_one(pool).await?;
    if existing > 0 {
        return Ok(None);
    }
    let mut hashes = Vec::with_capacity(DEMO_USERS.len());
    for _ in DEMO_USERS {
        hashes.push(
            crate::users::password::hash(DEMO_PASSWORD.to_string())
                .await
                .map_err(|e| sqlx::Error::Protocol(e.to_string()))?,
        );
    }
    let mut tx = pool.begin().await?;
    let mut products = 0;
    for (c, (slug, name, _)) in CATEGORIES.iter().enumerate() {
        let category_id: i64 = sqlx::query_scalar("INSERT INTO categories (slug, name) VALUES ($1, $2) RETURNING id")
            .bind(slug)
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        for j in 0..20 {
            let (sku, name, description, price_cents, stock) = product_spec(c, j);
            let new = NewProduct { sku: &sku, name: &name, description: &description, price_cents, category_id };
            let id = insert_product(&mut *tx, &new).await?;
            set_stock(&mut *tx, id, stock).await?;
            products += 1;
        }
    }
    for ((email, name), hash) in DEMO_USERS.iter().zip(&hashes) {
        sqlx::query("INSERT INTO users (email, password_hash, name, created_at) VALUES ($1, $2, $3, $4)")
            .bind(email)
            .bind(hash)
            .bind(name)
            .bind(now())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Some(SeedReport { categories: CATEGORIES.len(), products, users: DEMO_USERS.len() }))
}

#[cfg(test)]
mod tests {
    use super::product_spec;

    #[test]
    fn specs_are_deterministic_and_skus_unique() {
        let mut skus = std::collections::HashSet::new();
        for c in 0..10 {
            for j in 0..20 {
                let a = product_spec(c, j);
                assert_eq!(a, product_spec(c, j));
                assert!(skus.insert(a.0.clone()), "duplicate sku {}", a.0);
                assert!(a.3 > 0 && a.4 >= 0);
            }
        }
        assert_eq!(product_spec(0, 0).1, "Classic Kettle");
    }
}
