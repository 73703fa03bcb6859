//! The operator's HTTP client: finds the hub (CONTRACT.md "Locating the hub")
//! and calls its JSON API with the admin token.

use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cli::HubLocator;
use crate::config::DEFAULT_DATA_DIR;

pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// `--hub`/`--admin-token` (or their variables) win; otherwise both are
    /// read from the data dir (`--data-dir`, `GANGLION_DATA_DIR`, or ./ganglion-data).
    pub fn locate(loc: &HubLocator) -> anyhow::Result<Self> {
        let data_dir = loc
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let base = match &loc.hub_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => {
                let path = data_dir.join("run").join("endpoints.json");
                let text = std::fs::read(&path).with_context(|| {
                    format!(
                        "no --hub given and no running hub found at {} (is the hub running?)",
                        path.display()
                    )
                })?;
                let e: ganglion_hub::datadir::Endpoints = serde_json::from_slice(&text)
                    .with_context(|| format!("reading {}", path.display()))?;
                format!("http://{}", e.http)
            }
        };
        let token = match &loc.admin_token {
            Some(t) => t.trim().to_owned(),
            None => {
                let path = data_dir.join("admin.token");
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!("no --admin-token given and cannot read {}", path.display())
                    })?
                    .trim()
                    .to_owned()
            }
        };
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("--hub must be an http:// or https:// URL, not {base:?}");
        }
        Ok(Self {
            base,
            token,
            http: reqwest::Client::new(),
        })
    }

    /// Sends with the admin token; a success answer is returned as it is,
    /// anything else becomes one clear error.
    async fn exchange(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req.bearer_auth(&self.token).send().await.map_err(|e| {
            anyhow!(
                "cannot reach the hub at {}: {}",
                self.base,
                ganglion_node::tls::error_chain(&e)
            )
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<ganglion_api::ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_else(|_| body.trim().to_owned());
        match status.as_u16() {
            401 => bail!("the hub refused the admin token ({msg})"),
            413 => bail!("the request is too large for the hub ({msg})"),
            _ => bail!("{msg}"),
        }
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let resp = self.exchange(req).await?;
        resp.json().await.context("reading the hub's answer")
    }

    /// Sends a request whose answer is a stream.
    pub async fn post_stream<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<reqwest::Response> {
        self.exchange(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// GET with query parameters; the answer's body is read by the caller
    /// (streamed, e.g. a large file).
    pub async fn get_stream<Q: Serialize>(
        &self,
        path: &str,
        query: &Q,
    ) -> anyhow::Result<reqwest::Response> {
        let req = self.http.get(format!("{}{path}", self.base)).query(query);
        self.exchange(req).await
    }

    /// GET with query parameters, answered as JSON.
    pub async fn get_query<Q: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        query: &Q,
    ) -> anyhow::Result<T> {
        self.send(self.http.get(format!("{}{path}", self.base)).query(query))
            .await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.http.put(format!("{}{path}", self.base)).json(body))
            .await
    }

    pub async fn delete_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.http.delete(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// PUT of raw bytes with query parameters, answered as JSON.
    pub async fn put_bytes<Q: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        query: &Q,
        body: Vec<u8>,
    ) -> anyhow::Result<T> {
        let req = self.http.put(format!("{}{path}", self.base));
        self.send(req.query(query).body(body)).await
    }

    /// DELETE with query parameters, answered as JSON.
    pub async fn delete_query<Q: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        query: &Q,
    ) -> anyhow::Result<T> {
        self.send(
            self.http
                .delete(format!("{}{path}", self.base))
                .query(query),
        )
        .await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }
}
