//! Branch by abstraction for the catalog's extraction. Cart, orders and inventory read
//! products through [`ProductSource`], which has two implementations: `Local` — the
//! SQL in `cart::repo` and `orders::repo` that joins the catalog's tables, the tangle
//! that is left to delete — and `Service`, the extracted catalog service's HTTP API.
//! An admin switches between them at run time (`PUT /api/admin/catalog`), and can
//! make the catalog's writes go through to the service while both copies exist, so
//! no product change is lost during the move; and, at the end, retire the shop's own
//! catalog endpoints (410 Gone).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::catalog::repo::{Category, Product, ProductRow};
use crate::error::{ApiError, ApiResult};

/// What cart and orders need of a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductInfo {
    /// Its name now.
    pub name: String,
    /// Its price now, in cents.
    pub price_cents: i64,
}

/// Where product reads go.
#[derive(Clone, Default)]
pub enum ProductSource {
    /// The catalog's tables in the shop's own database.
    #[default]
    Local,
    /// The catalog service.
    Service(CatalogClient),
}

/// A client of the catalog service.
#[derive(Clone)]
pub struct CatalogClient {
    http: reqwest::Client,
    base_url: Arc<str>,
    token: Option<Arc<str>>,
}

fn unavailable(err: impl std::fmt::Display) -> ApiError {
    tracing::warn!(%err, "catalog service call failed");
    ApiError::Unavailable(format!("catalog service unavailable: {err}"))
}

impl CatalogClient {
    /// A client of the service at `base_url`, sending `token` on replication calls.
    pub fn new(base_url: &str, token: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client without TLS always builds");
        Self {
            http,
            base_url: base_url.trim_end_matches('/').into(),
            token: token.filter(|t| !t.is_empty()).map(Into::into),
        }
    }

    /// The service's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// One product, None when the service does not know it.
    pub async fn product(&self, id: i64) -> ApiResult<Option<ProductInfo>> {
        let resp = self.http.get(format!("{}/api/products/{id}", self.base_url)).send().await.map_err(unavailable)?;
        match resp.status() {
            s if s.is_success() => {
                let p: Product = resp.json().await.map_err(unavailable)?;
                Ok(Some(ProductInfo { name: p.name, price_cents: p.price_cents }))
            }
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            s => Err(unavailable(format!("GET /api/products/{id} answered {s}"))),
        }
    }

    /// Several products at once (concurrent requests), keyed by id; unknown ids are absent.
    pub async fn products(&self, ids: &[i64]) -> ApiResult<HashMap<i64, ProductInfo>> {
        let found = futures::future::try_join_all(
            ids.iter().map(|&id| async move { Ok::<_, ApiError>((id, self.product(id).await?)) }),
        )
        .await?;
        Ok(found.into_iter().filter_map(|(id, p)| p.map(|p| (id, p))).collect())
    }

    async fn put(&self, path: &str, body: &impl Serialize) -> ApiResult<()> {
        let mut req = self.http.put(format!("{}{path}", self.base_url)).json(body);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.map_err(unavailable)?;
        if !resp.status().is_success() {
            return Err(unavailable(format!("PUT {path} answered {}", resp.status())));
        }
        Ok(())
    }

    /// Writes a product row through to the service.
    pub async fn push_product(&self, row: &ProductRow) -> ApiResult<()> {
        self.put(&format!("/internal/products/{}", row.id), row).await
    }

    /// Writes a category row through to the service.
    pub async fn push_category(&self, row: &Category) -> ApiResult<()> {
        self.put(&format!("/internal/categories/{}", row.id), row).await
    }
}

/// The catalog's migration switches, changed at run time by an admin.
#[derive(Clone, Default)]
pub struct CatalogSwitches {
    inner: Arc<RwLock<Switches>>,
}

#[derive(Clone, Default)]
struct Switches {
    reads: ProductSource,
    write_through: Option<CatalogClient>,
    retired: bool,
}

/// The switches as the admin API shows and takes them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SwitchesView {
    /// `local` or `service`.
    pub reads: String,
    /// True while catalog writes go through to the service.
    pub write_through: bool,
    /// The catalog service's URL, when one is in use.
    pub url: Option<String>,
    /// True once the shop's own catalog endpoints answer 410 Gone.
    pub retired: bool,
}

impl CatalogSwitches {
    /// Where product reads go now.
    pub fn reads(&self) -> ProductSource {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).reads.clone()
    }

    /// The service catalog writes go through to, if any.
    pub fn write_through(&self) -> Option<CatalogClient> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).write_through.clone()
    }

    /// True once the shop's catalog endpoints are retired.
    pub fn retired(&self) -> bool {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).retired
    }

    /// Sets every switch at once.
    pub fn set(&self, reads: ProductSource, write_through: Option<CatalogClient>, retired: bool) {
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = Switches { reads, write_through, retired };
    }

    /// What an admin sees.
    pub fn view(&self) -> SwitchesView {
        let s = self.inner.read().unwrap_or_else(|e| e.into_inner()).clone();
        let url = match (&s.reads, &s.write_through) {
            (ProductSource::Service(c), _) | (_, Some(c)) => Some(c.base_url().to_string()),
            _ => None,
        };
        SwitchesView {
            reads: if matches!(s.reads, ProductSource::Service(_)) { "service" } else { "local" }.into(),
            write_through: s.write_through.is_some(),
            url,
            retired: s.retired,
        }
    }
}

impl CatalogClient {
    /// Prices `(product_id, quantity)` pairs from the service. Lines whose product it
    /// does not know are dropped, as the local join drops them.
    pub async fn priced(&self, items: &[(i64, i64)]) -> ApiResult<Vec<(i64, i64, ProductInfo)>> {
        let ids: Vec<i64> = items.iter().map(|(id, _)| *id).collect();
        let mut found = self.products(&ids).await?;
        Ok(items.iter().filter_map(|&(id, quantity)| found.remove(&id).map(|info| (id, quantity, info))).collect())
    }
}

/// `PUT /api/admin/catalog`.
#[derive(Debug, Deserialize)]
pub struct SetSwitches {
    /// `local` or `service`.
    pub reads: String,
    /// Send catalog writes through to the service too.
    #[serde(default)]
    pub write_through: bool,
    /// The catalog service, required for `service` reads and for write-through.
    pub url: Option<String>,
    /// Its admin token, for write-through.
    pub token: Option<String>,
    /// Retire the shop's own catalog endpoints (they answer 410 Gone); needs `service` reads.
    #[serde(default)]
    pub retired: bool,
}

/// The admin routes of the migration switches.
pub fn routes() -> axum::Router<crate::AppState> {
    use axum::extract::State;
    use axum::routing::get;

    use crate::extract::Json;
    use crate::users::auth::Admin;

    async fn show(State(state): State<crate::AppState>, _admin: Admin) -> Json<SwitchesView> {
        Json(state.catalog.view())
    }

    async fn set(
        State(state): State<crate::AppState>,
        _admin: Admin,
        Json(body): Json<SetSwitches>,
    ) -> ApiResult<Json<SwitchesView>> {
        let client = match body.url.as_deref().map(str::trim) {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                Some(CatalogClient::new(url, body.token.clone()))
            }
            Some(_) => return Err(ApiError::invalid("url", "url must be an http:// or https:// URL")),
            None => None,
        };
        let reads = match (body.reads.as_str(), &client) {
            ("local", _) => ProductSource::Local,
            ("service", Some(c)) => ProductSource::Service(c.clone()),
            ("service", None) => return Err(ApiError::invalid("url", "reads from the service need its url")),
            _ => return Err(ApiError::invalid("reads", "reads must be local or service")),
        };
        let write_through = match (body.write_through, client) {
            (false, _) => None,
            (true, Some(c)) => Some(c),
            (true, None) => return Err(ApiError::invalid("url", "write-through needs the service's url")),
        };
        if body.retired && !matches!(reads, ProductSource::Service(_)) {
            return Err(ApiError::invalid(
                "retired",
                "the catalog endpoints can only retire once reads go to the service",
            ));
        }
        state.catalog.set(reads, write_through, body.retired);
        let view = state.catalog.view();
        tracing::info!(
            reads = %view.reads,
            write_through = view.write_through,
            retired = view.retired,
            url = ?view.url,
            "catalog switches changed"
        );
        Ok(Json(view))
    }

    axum::Router::new().route("/api/admin/catalog", get(show).put(set))
}
