//! The inventory API, as the catalog service sees it: which products are in stock
//! (for search's "in stock only" filter) and setting a new product's stock. Until
//! inventory leaves the monolith too, this is the shop's `/api/inventory`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shop::error::{ApiError, ApiResult};

/// A client of the inventory API.
#[derive(Clone)]
pub struct Inventory {
    client: reqwest::Client,
    base_url: Option<Arc<str>>,
    token: Option<Arc<str>>,
}

#[derive(Serialize, Deserialize)]
struct Stock {
    product_id: i64,
    stock: i64,
}

impl Inventory {
    /// A client of the API at `base_url` (None: every call answers 503).
    pub fn new(base_url: Option<String>, token: Option<String>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .expect("an HTTP client without TLS always builds");
        Self {
            client,
            base_url: base_url.map(|u| u.trim_end_matches('/').into()),
            token: token.filter(|t| !t.is_empty()).map(Into::into),
        }
    }

    fn url(&self, path: &str) -> ApiResult<String> {
        let base =
            self.base_url.as_deref().ok_or_else(|| ApiError::Unavailable("no inventory API configured".into()))?;
        Ok(format!("{base}{path}"))
    }

    fn unavailable(err: impl std::fmt::Display) -> ApiError {
        tracing::warn!(%err, "inventory API call failed");
        ApiError::Unavailable(format!("inventory API unavailable: {err}"))
    }

    /// The ids of the products that have stock, ascending.
    pub async fn in_stock_ids(&self) -> ApiResult<Vec<i64>> {
        let resp =
            self.client.get(self.url("/api/inventory?in_stock=true")?).send().await.map_err(Self::unavailable)?;
        if !resp.status().is_success() {
            return Err(Self::unavailable(format!("GET /api/inventory answered {}", resp.status())));
        }
        let levels: Vec<Stock> = resp.json().await.map_err(Self::unavailable)?;
        Ok(levels.into_iter().filter(|s| s.stock > 0).map(|s| s.product_id).collect())
    }

    /// Sets a product's stock.
    pub async fn set_stock(&self, product_id: i64, stock: i64) -> ApiResult<()> {
        let mut req = self
            .client
            .put(self.url(&format!("/api/inventory/{product_id}"))?)
            .json(&serde_json::json!({ "stock": stock }));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.map_err(Self::unavailable)?;
        if !resp.status().is_success() {
            return Err(Self::unavailable(format!("PUT /api/inventory/{product_id} answered {}", resp.status())));
        }
        Ok(())
    }
}
