//! A small async client of the Toxiproxy HTTP API, for driving an external Toxiproxy
//! (the docker-compose cluster) or another `flowline chaos serve` from a fault schedule.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::toxic::ToxicSpec;

/// A proxy as listed by a remote Toxiproxy (only the fields the schedule needs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RemoteProxy {
    /// Name.
    pub name: String,
    /// Listen address as the server reports it.
    pub listen: String,
    /// Upstream as configured.
    pub upstream: String,
    /// Whether it accepts connections.
    pub enabled: bool,
}

/// A Toxiproxy API client (`http://host:port`).
#[derive(Debug, Clone)]
pub struct ToxiproxyClient {
    base: String,
    http: reqwest::Client,
}

impl ToxiproxyClient {
    /// A client of the API at `url` (e.g. `http://127.0.0.1:8474`). Unless
    /// `allow_non_loopback`, the host must be `localhost` or a loopback IP.
    pub fn new(url: &str, allow_non_loopback: bool) -> Result<Self> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| Error::BadRequestBody(format!("toxiproxy url {url:?}: {e}")))?;
        let host = parsed
            .host_str()
            .unwrap_or("")
            .trim_start_matches('[')
            .trim_end_matches(']');
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback && !allow_non_loopback {
            return Err(Error::NotLoopback(url.to_string()));
        }
        Ok(ToxiproxyClient {
            base: url.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .map_err(|source| Error::Remote {
                    url: url.to_string(),
                    source,
                })?,
        })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    async fn send(&self, req: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Response> {
        let resp = req.send().await.map_err(|source| Error::Remote {
            url: url.to_string(),
            source,
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(Error::RemoteStatus {
            url: url.to_string(),
            status: status.as_u16(),
            body,
        })
    }

    /// `GET /proxies`.
    pub async fn proxies(&self) -> Result<Vec<RemoteProxy>> {
        let url = format!("{}/proxies", self.base);
        let resp = self.send(self.http.get(&url), &url).await?;
        let map: BTreeMap<String, RemoteProxy> =
            resp.json().await.map_err(|source| Error::Remote {
                url: url.clone(),
                source,
            })?;
        Ok(map.into_values().collect())
    }

    /// `POST /proxies`: create a proxy listening on `listen` (port 0: the server picks)
    /// and forwarding to `upstream`. A proxy of that name left over from an earlier run is
    /// deleted and created again.
    pub async fn create_proxy(
        &self,
        name: &str,
        listen: &str,
        upstream: &str,
    ) -> Result<RemoteProxy> {
        let url = format!("{}/proxies", self.base);
        let body = serde_json::json!({
            "name": name, "listen": listen, "upstream": upstream, "enabled": true
        });
        let resp = match self.send(self.http.post(&url).json(&body), &url).await {
            Err(Error::RemoteStatus { status: 409, .. }) => {
                self.delete_proxy(name).await?;
                self.send(self.http.post(&url).json(&body), &url).await?
            }
            r => r?,
        };
        resp.json()
            .await
            .map_err(|source| Error::Remote { url, source })
    }

    /// `DELETE /proxies/{proxy}`.
    pub async fn delete_proxy(&self, name: &str) -> Result<()> {
        let url = format!("{}/proxies/{name}", self.base);
        self.send(self.http.delete(&url), &url).await?;
        Ok(())
    }

    /// The host of the API URL (where the proxies it creates can be reached, when they
    /// listen on all interfaces).
    pub fn host(&self) -> String {
        reqwest::Url::parse(&self.base)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "127.0.0.1".into())
    }

    /// `POST /proxies/{proxy}/toxics`.
    pub async fn add_toxic(&self, proxy: &str, toxic: &ToxicSpec) -> Result<()> {
        let url = format!("{}/proxies/{proxy}/toxics", self.base);
        self.send(self.http.post(&url).json(toxic), &url).await?;
        Ok(())
    }

    /// `DELETE /proxies/{proxy}/toxics/{name}`.
    pub async fn remove_toxic(&self, proxy: &str, name: &str) -> Result<()> {
        let url = format!("{}/proxies/{proxy}/toxics/{name}", self.base);
        self.send(self.http.delete(&url), &url).await?;
        Ok(())
    }

    /// `POST /proxies/{proxy}` with `{"enabled": ..}`.
    pub async fn set_enabled(&self, proxy: &str, enabled: bool) -> Result<()> {
        let url = format!("{}/proxies/{proxy}", self.base);
        let body = serde_json::json!({ "enabled": enabled });
        self.send(self.http.post(&url).json(&body), &url).await?;
        Ok(())
    }

    /// `POST /reset`: enable every proxy, remove every toxic.
    pub async fn reset(&self) -> Result<()> {
        let url = format!("{}/reset", self.base);
        self.send(self.http.post(&url), &url).await?;
        Ok(())
    }

    /// `GET /version` (the raw body).
    pub async fn version(&self) -> Result<String> {
        let url = format!("{}/version", self.base);
        let resp = self.send(self.http.get(&url), &url).await?;
        resp.text()
            .await
            .map_err(|source| Error::Remote { url, source })
    }
}
